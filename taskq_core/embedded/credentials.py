"""The embedded servers' passwords: random, made once per data folder, kept in a 0600 file.

Both servers listen on 127.0.0.1, where every local user can connect: without a password any of
them could read the developer's tasks, or (PostgreSQL's `COPY ... TO PROGRAM`) run commands as
the developer. The passwords are URL-safe, so they go into the URLs as they are.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from taskq_core.embedded.errors import EmbeddedError

FILE = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    postgres_password: str
    redis_password: str


def _new() -> Credentials:
    return Credentials(secrets.token_urlsafe(24), secrets.token_urlsafe(24))


def load_or_create(data_dir: Path) -> Credentials:
    """The credentials kept in `data_dir`, made (0600, atomically) on first use."""
    path = data_dir / FILE
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    fresh = _new()
    scratch = path.with_name(f".{FILE}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(fresh), out)
    try:
        os.link(scratch, path)  # fails if another process made it first: keep theirs
    except FileExistsError:
        pass
    finally:
        scratch.unlink()
    return _read(path)


def _read(path: Path) -> Credentials:
    os.chmod(path, 0o600)  # whatever an earlier umask or a copy left
    try:
        return Credentials(**json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise EmbeddedError(f"{path} is not a credentials file ({error}); remove it") from None
