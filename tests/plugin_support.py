"""What the plugins' own tests (plugins/*/tests) share: an environment without the plugin's
settings, and a self-signed certificate for their TLS servers. Each plugin's conftest keeps
what is its own (the certificate's names, the servers)."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import pytest


def isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefix: str) -> None:
    """Keep a developer's `prefix`* variables, SSL_CERT_FILE and `.env` out of a test."""
    for name in list(os.environ):
        if name.upper().startswith(prefix):
            monkeypatch.delenv(name)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env


def self_signed(folder: Path, common_name: str, alt_names: str) -> tuple[Path, Path]:
    """A certificate for `alt_names` (openssl's subjectAltName, e.g. "DNS:localhost") and its
    key, made by openssl in `folder`."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-nodes", "-days", "1",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", f"/CN={common_name}", "-addext", f"subjectAltName={alt_names}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context presenting `cert`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
