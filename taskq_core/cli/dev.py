"""`taskq dev`: PostgreSQL and Redis (embedded unless configured), migrations, API and workers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.markup import escape

from taskq_core import devstate, logs
from taskq_core.cli import output
from taskq_core.db import engines, urls
from taskq_core.errors import ConfigurationError, TaskqError
from taskq_core.processes import child_env, python_module, set_parent_death_signal, spawn, terminate
from taskq_core.redaction import redact_url
from taskq_core.settings import Settings

API_START_TIMEOUT = 30.0  # seconds


@contextlib.contextmanager
def servers_for(
    settings: Settings, folder: str, *, durable: bool = True
) -> Iterator[tuple[str, str]]:
    """The configured PostgreSQL and Redis URLs, or embedded servers started in `folder` of the
    per-user data folder and stopped on exit."""
    if settings.database_url or settings.redis_url:
        yield devstate.resolve_urls(settings)
        return
    from taskq_core.embedded import EmbeddedServers

    servers = EmbeddedServers(
        devstate.data_dir(settings) / folder,
        durable=durable,
        postgres_bin=settings.embedded_postgres_bin,
        redis_server=settings.embedded_redis_server,
    )
    servers.start()
    try:
        yield servers.database_url, servers.redis_url
    finally:
        servers.stop()


class _StopRequested(Exception):
    pass


def wait_until_serving(api: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise TaskqError(
                f"the API exited at start-up (code {api.returncode}); see its log above"
            )
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TaskqError(f"the API did not answer on {url} within {API_START_TIMEOUT:g}s")


def run_dev(settings: Settings, *, host: str, port: int, workers: int) -> int:
    """Run the whole system in the foreground; returns the exit code."""
    # If whatever started us (make, a shell) is killed, stop cleanly instead of living on.
    set_parent_death_signal(signal.SIGTERM)
    logs.set_title(f"taskq-dev {host}:{port}")
    console = output.console()
    state_path = devstate.data_dir(settings) / devstate.STATE_FILE
    running = devstate.read(state_path)
    if running is not None:
        raise ConfigurationError(
            f"taskq dev is already running (pid {running.pid}, API {running.api_url}); "
            "stop it first"
        )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        raise _StopRequested

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        with servers_for(settings, "dev") as (database_url, redis_url):
            engines.upgrade(database_url, prepare=settings.database_prepare)
            children: list[subprocess.Popen[bytes]] = []
            try:
                _supervise(
                    console, children, state_path, database_url, redis_url, host, port, workers
                )
            finally:
                # Stop in order, ignoring further signals: children first, servers after.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                terminate(children)
                devstate.remove(state_path, os.getpid())
    except _StopRequested:
        pass
    except TaskqError as exc:
        console.print(f"[red]taskq dev: {escape(str(exc))}[/]")
        code = 1
    console.print("stopped")
    return code


def _supervise(
    console: Console,
    children: list[subprocess.Popen[bytes]],
    state_path: Path,
    database_url: str,
    redis_url: str,
    host: str,
    port: int,
    workers: int,
) -> None:
    """Start the API and workers into `children`, then watch them until a signal or a death."""
    env = child_env(database_url, redis_url)
    api_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    api_url = f"http://{api_host}:{port}"
    children.append(
        spawn(python_module("taskq_core.cli", "api", "--host", host, "--port", str(port)), env=env)
    )
    children.extend(
        spawn(python_module("taskq_core.cli", "worker"), env=env) for _ in range(workers)
    )
    wait_until_serving(children[0], api_url)
    devstate.write(state_path, devstate.DevState(os.getpid(), database_url, redis_url, api_url))
    from taskq_core.cli.keys import keys_exist

    settings = Settings(database_url=database_url, redis_url=redis_url)
    _banner(console, api_url, database_url, redis_url, workers, state_path, keys_exist(settings))
    try:
        while True:
            for child in children:
                if child.poll() is not None:
                    raise TaskqError(f"{child.args!r} exited with code {child.returncode}")
            time.sleep(0.2)
    except _StopRequested:
        console.print("\n[bold]stopping[/] (workers finish what they run)…")
        raise


def _banner(
    console: Console,
    api_url: str,
    database_url: str,
    redis_url: str,
    workers: int,
    state: Path,
    keyed: bool,
) -> None:
    # URLs only through redact_url: a configured URL may carry a password.
    if keyed:
        access = "API keys   required: send `Authorization: Bearer KEY` (taskq keys list)"
        auth = ' -H "Authorization: Bearer $TASKQ_API_KEY"'
    else:
        access = (
            "API keys   none: the API is OPEN to anyone on this machine; "
            "`taskq keys create --scope admin` ends that"
        )
        auth = ""
    console.print(
        f"[bold green]taskq is running[/]\n"
        f"  dashboard  {escape(api_url)}/ui\n"
        f"  API        {escape(api_url)}   (docs: {escape(api_url)}/docs)\n"
        f"  {escape(access)}\n"
        f"  workers    {workers}\n"
        f"  PostgreSQL {escape(redact_url(urls.conninfo(database_url)))}\n"
        f"  Redis      {escape(redact_url(redis_url))}\n"
        f"  state      {escape(str(state))}  (other taskq commands find these servers through it)\n"
        "Try:\n"
        f"  curl -X POST {escape(api_url)}/tasks/{auth} -H 'Content-Type: application/json' "
        """-d '{"task_type": "FibonacciTask", "input_data": {"n": 10}, "priority": 4}'\n"""
        f"  curl{auth} {escape(api_url)}/tasks/1\n"
        "Ctrl-C stops everything."
    )
