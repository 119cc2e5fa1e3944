"""Secrets out of output (URL passwords, API keys) and secrets through URLs: Redis ACL users,
`rediss://`, PostgreSQL `sslmode`, on the real servers."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid

import psycopg
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from taskq_core import broker, redaction
from taskq_core.db import urls
from taskq_core.redaction import RedactingFilter, redact, redact_url
from tests.conftest import Servers


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://taskq:s3cret@db:5432/taskq", "postgresql://taskq:***@db:5432/taskq"),
        (
            "postgresql+psycopg://u:p%40ss@db/x?sslmode=verify-full",
            "postgresql+psycopg://u:***@db/x?sslmode=verify-full",
        ),
        ("postgresql://db/x?user=u&password=pw", "postgresql://db/x?user=u&password=%2A%2A%2A"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:s3cret@cache:6380/1", "rediss://app:***@cache:6380/1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("postgresql://taskq@db/taskq", "postgresql://taskq@db/taskq"),
    ],
)
def test_redact_url_masks_the_password_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_masks_urls_keys_and_bearer_credentials_inside_text() -> None:
    key = "tq_" + "A1b2-_" * 8
    text = (
        f"connect to postgresql://u:pw1@h/db failed; redis://:pw2@r:1/0 too; key {key}; "
        "header Authorization: Bearer abcdefghijkl"
    )
    cleaned = redact(text)
    for secret in ("pw1", "pw2", key, "abcdefghijkl"):
        assert secret not in cleaned
    assert "postgresql://u:***@h/db" in cleaned
    assert "tq_***" in cleaned


def test_the_log_filter_cleans_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"taskq.test.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    key = "tq_" + "z" * 43
    logger.warning("cannot reach %s with %s", "postgresql://u:hunter2@h/db", key)
    try:
        raise ValueError("DSN redis://:hunter3@r:6379/0 refused")
    except ValueError:
        logger.exception("failed")
    output = stream.getvalue()
    assert "hunter2" not in output
    assert "hunter3" not in output
    assert key not in output
    assert "postgresql://u:***@h/db" in output
    assert "ValueError: DSN redis://:***@r:6379/0 refused" in output


def test_a_redis_acl_user_connects_through_the_url(servers: Servers) -> None:
    user, password = f"taskq-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    with servers.redis() as admin:
        admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    host = servers.redis_url.split("://", 1)[1].split("@")[-1]
    try:

        async def round_trip(url: str) -> str | None:
            client = broker.connect(url)
            try:
                await client.set(f"acl-check-{user}", "ok")
                value: str | None = await client.get(f"acl-check-{user}")
                return value
            finally:
                await client.aclose()

        assert asyncio.run(round_trip(f"redis://{user}:{password}@{host}")) == "ok"
        with pytest.raises(Exception, match=r"(?i)WRONGPASS|invalid username-password"):
            asyncio.run(round_trip(f"redis://{user}:wrong@{host}"))
    finally:
        with servers.redis() as admin:
            admin.execute_command("ACL", "DELUSER", user)
            admin.delete(f"acl-check-{user}")


def test_rediss_urls_make_tls_connections() -> None:
    client = broker.connect("rediss://app:pw@cache.example:6380/2?ssl_cert_reqs=required")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is aioredis.SSLConnection
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "pw", 2)
    assert kwargs["ssl_cert_reqs"] == "required"
    asyncio.run(client.aclose())


def test_postgresql_sslmode_in_the_url_reaches_libpq(servers: Servers) -> None:
    # The session's server has no TLS: `disable` connects, `require` is refused by libpq itself,
    # which shows the parameter travels from the URL through taskq's normalisation.
    base = urls.conninfo(servers.database_url)
    separator = "&" if "?" in base else "?"
    with psycopg.connect(f"{base}{separator}sslmode=disable") as conn:
        assert conn.info.parameter_status("server_version")
    with pytest.raises(psycopg.OperationalError, match=r"(?i)ssl"):
        psycopg.connect(f"{base}{separator}sslmode=require", connect_timeout=5)


# Texts built from the pieces the patterns look for, so that many of them hold a secret.
_PIECES = st.sampled_from(
    [
        *("://", "u:", "pw", "@", "?", "&", "password=", "?token=", "&secret=", "x", "tq_"),
        *("A" * 24, "Bearer ", "bearer ", "b", " "),
    ]
)


@given(st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=12).map("".join))
def test_the_quick_check_skips_only_texts_no_pattern_would_change(text: str) -> None:
    every_pattern = text
    for pattern, replacement in (
        (redaction._URL_PASSWORD, rf"\1{redaction.MASK}@"),
        (redaction._QUERY_PASSWORD, rf"\1{redaction.MASK}"),
        (redaction._BEARER, rf"\1{redaction.MASK}"),
        (redaction._API_KEY, f"tq_{redaction.MASK}"),
    ):
        every_pattern = pattern.sub(replacement, every_pattern)
    assert redact(text) == every_pattern
