"""`taskq keys create|list|revoke`: API keys in PostgreSQL; a new key is printed once, only then.

`create` writes the key alone on stdout (so `KEY=$(taskq keys create --scope submit)` works) and
what it made on stderr. `list` prints like every listing (`output.print_table`): a table on a
terminal, else a header line and tab-separated rows; JSON with `--json`. It never prints a key,
which is not stored anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from taskq_core.cli import output
from taskq_core.db.keys import NAME_PATTERN, Scope
from taskq_core.settings import Settings

T = TypeVar("T")


def keys_exist(settings: Settings) -> bool:
    """Whether any API key was ever created here or is configured (then no request is open)."""
    from taskq_core.api.auth import env_keys
    from taskq_core.db import keys

    return bool(env_keys(settings)) or _with_engine(settings, keys.any_created)


def _with_engine(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    from taskq_core import devstate
    from taskq_core.db import engines

    database_url, _ = devstate.resolve_urls(settings)

    async def main() -> T:
        engine = engines.async_engine(database_url, pool_size=1, prepare=settings.database_prepare)
        try:
            return await action(engine)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _name(value: str) -> str:
    import re

    if not re.fullmatch(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r}: 1-64 letters, digits and . _ @ - (no spaces)")
    return value


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core.db import keys

    scopes = [Scope(s) for s in args.scope]
    name = args.name or f"{scopes[0]}-{secrets.token_hex(3)}"
    token = _with_engine(settings, lambda engine: keys.create(engine, name, scopes))
    print(token)
    print(
        f"created API key {name!r} with scope {', '.join(sorted(set(scopes)))}; it is shown "
        "only this once. Send it as `Authorization: Bearer KEY`.",
        file=sys.stderr,
    )
    return 0


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core.db import keys

    rows = _with_engine(settings, keys.listing)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": r["name"],
                        "scopes": r["scopes"],
                        "created_at": _when(r["created_at"]),
                        "last_used_at": _when(r["last_used_at"]) or None,
                        "revoked_at": _when(r["revoked_at"]) or None,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    fields = [
        (
            r["name"],
            ",".join(r["scopes"]),
            _when(r["created_at"]),
            _when(r["last_used_at"]),
            _when(r["revoked_at"]),
        )
        for r in rows
    ]
    if not rows and output.to_terminal():
        print("no API keys: the API runs open (loopback only)")
        return 0
    columns = ("name", "scopes", "created", "last_used", "revoked")
    output.print_table("API keys", columns, fields, {}, times=(2, 3, 4))
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from taskq_core.db import keys

    before = _with_engine(settings, lambda engine: keys.revoke(engine, args.name))
    if before is not None:
        print(f"API key {args.name!r} was already revoked ({_when(before)})")
    else:
        print(f"revoked API key {args.name!r}; APIs refuse it within a few seconds")
    return 0


def add_parser(commands: Any) -> None:
    """Add `keys` and its actions to the `taskq` command's subparsers."""
    parser = commands.add_parser("keys", help="API keys: create, list, revoke")
    actions = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create", help="create a key and print it (once: only its hash is kept)"
    )
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="read (every GET), submit (POST /tasks/ and /tasks/batch, and GET of its own "
        "tasks) or admin (everything); repeat for several",
    )
    create.add_argument("--name", type=_name, help="a unique name (default: SCOPE-xxxxxx)")
    create.set_defaults(func=cmd_create)
    listing = actions.add_parser("list", help="every key's name, scopes, creation and last use")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)
    revoke = actions.add_parser("revoke", help="revoke a key: APIs refuse it within seconds")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(func=cmd_revoke)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the API on this machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def check_exposure(host: str, settings: Settings, *, insecure: bool) -> None:
    """Refuse (ConfigurationError, exit 2) to serve beyond loopback while no key exists, unless
    `insecure`; then warn. Also refuses a TASKQ_API_KEYS entry too short to be a secret."""
    import logging

    from taskq_core.api.auth import env_keys
    from taskq_core.db import keys
    from taskq_core.errors import ConfigurationError
    from taskq_core.redaction import redact

    if env_keys(settings) or is_loopback(host):
        return
    try:
        exists = _with_engine(settings, keys.any_created)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "; run `taskq db upgrade`" if "api_keys" in first else ""
        raise ConfigurationError(
            f"cannot tell whether an API key exists before serving on {host} "
            f"(PostgreSQL: {redact(first)}){hint}"
        ) from None
    if exists:
        return
    if not insecure:
        raise ConfigurationError(
            f"refusing to serve on {host} with no API key (anyone reaching it could run tasks): "
            "create one with `taskq keys create --scope admin`, set TASKQ_API_KEYS, "
            "or pass --insecure"
        )
    logging.getLogger("taskq.api").warning(
        "--insecure: serving on %s with NO API key; anyone who can reach the port can submit, "
        "read and cancel tasks",
        host,
    )
