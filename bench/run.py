"""One invocation: start the servers, measure every system run after run, print, write JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import http_load, report
from bench.config import SessionSpec, Sizes
from bench.peers.taskq import write_site
from bench.procs import die_with_parent, kill_groups
from bench.servers import DATABASES, Servers
from bench.session import PHASES

REPO = Path(__file__).resolve().parent.parent
SESSION_SLACK = 180.0  # seconds a session may take beyond its phases' bounds (start-up, stops)
# What the systems under test import from a checkout rather than from site-packages: taskq, its
# plugins and client (installed editable) and the bench's own plugin.
SOURCE_TREES = ("taskq_core", "plugins", "clients/python", "bench")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _base_env(site: Path) -> dict[str, str]:
    # A developer's own TASKQ_* settings must not reach the systems under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _system_wiring(system: str, servers: Servers) -> tuple[str, dict[str, str], dict[str, str]]:
    """The system's database URL, Redis URLs by role, and the variables its processes read."""
    if system.startswith("taskq"):  # taskq, and taskq-base: the same wiring but the database
        db, redis = servers.url(DATABASES[system]), {"queue": servers.redis_url("taskq")}
        return db, redis, {"TASKQ_DATABASE_URL": db, "TASKQ_REDIS_URL": redis["queue"]}
    if system.startswith("celery"):
        db = servers.url(DATABASES["celery"])
        redis = {
            "broker": servers.redis_url("celery-broker"),
            "results": servers.redis_url("celery-results"),
        }
        backend = redis["results"] if system == "celery-redis" else f"db+{db}"
        return db, redis, {"BENCH_CELERY_BROKER": redis["broker"], "BENCH_CELERY_BACKEND": backend}
    if system == "procrastinate":
        db = servers.url(DATABASES["procrastinate"])
        return db, {}, {"BENCH_PROCRASTINATE_DSN": db}
    redis = {"queue": servers.redis_url(system)}
    env = {"BENCH_DRAMATIQ_URL": redis["queue"]} if system == "dramatiq" else {}
    return servers.url("postgres"), redis, env


def compile_sources(checkouts: list[Path]) -> None:
    """Write the bytecode of the checkouts' source trees, as pip does for an installed package:
    with PYTHONDONTWRITEBYTECODE set, an editable taskq would otherwise compile its modules again
    in every process (some 50 ms of each taskq-worker's start-up, which the peers, installed from
    wheels, never pay). Up-to-date files are skipped; a stale one is only recompiled in memory."""
    for checkout in checkouts:
        trees = [str(checkout / tree) for tree in SOURCE_TREES if (checkout / tree).is_dir()]
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-j", "0", *trees],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def _run_session(spec: SessionSpec, work: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """Run one session process within its bound; kill whatever it leaves; read its results."""
    path = spec.save(work / f"{spec.system}-{spec.run}.json")
    budget = spec.sizes.phase_timeout * len(PHASES) + SESSION_SLACK
    with open(Path(spec.logs) / f"session-{spec.system}-{spec.run}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.session", str(path)],
            cwd=REPO,
            env=env,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        ended = "ended early"
        try:
            proc.wait(budget)
        except subprocess.TimeoutExpired:
            ended = f"timeout (the session passed {budget:.0f}s)"
        finally:
            groups = [proc.pid]
            with contextlib.suppress(FileNotFoundError):
                groups += [int(x) for x in Path(spec.pgid_file).read_text().split()]
            kill_groups(groups, [proc])
            proc.wait()
    records: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        records = [json.loads(line) for line in Path(spec.output).read_text().splitlines()]
    seen = {r["phase"] for r in records}
    for phase in PHASES:
        if phase not in seen:
            reason = f"{ended} (exit {proc.returncode})" if "timeout" not in ended else ended
            record = {"system": spec.system, "run": spec.run, "phase": phase}
            records.append({**record, "status": "error", "reason": reason})
    return records


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        # Anything else running on the machine skews every figure: the load says if it did.
        "load_average_at_start": os.getloadavg(),
    }


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip()

    changed = git("status", "--porcelain", "--", "taskq_core", "plugins").splitlines()
    return {"head": git("rev-parse", "--short", "HEAD"), "uncommitted_product_files": changed}


def _source_note(records: list[dict[str, Any]]) -> str:
    """A warning when taskq_core changed between sessions: its runs measured different code."""
    sources = {r["run"]: r["taskq_source"] for r in records if "taskq_source" in r}
    if len(set(sources.values())) <= 1:
        return ""
    runs = ", ".join(f"run {run}: {digest}" for run, digest in sorted(sources.items()))
    return f"\nWarning: taskq_core changed during this invocation ({runs}); its runs differ."


def _wrk_version() -> str:
    wrk = http_load.wrk_path()
    if wrk is None:
        return "not installed (Python httpx client used instead)"
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0]


def main(sizes: Sizes, systems: list[str], results_dir: Path) -> int:
    started = datetime.now(UTC)
    host = machine()
    git = _git()
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-"))
    logs = work / "logs"
    logs.mkdir()
    site = write_site(work / "site")
    env = _base_env(site)
    compile_sources([REPO, *([Path(sizes.taskq_base)] if sizes.taskq_base else [])])
    servers = Servers()
    print(f"taskq bench: {', '.join(systems)}; {sizes.runs} run(s); logs in {logs}", flush=True)
    if http_load.wrk_path() is None:
        print("wrk is not installed: HTTP load comes from a Python client (slower)", flush=True)
    servers.start()
    records: list[dict[str, Any]] = []
    try:
        server_info = servers.describe()
        for run in range(1, sizes.runs + 1):
            for system in systems:
                servers.flush()
                database_url, redis_urls, extra = _system_wiring(system, servers)
                stamps = servers.redis_url("stamps")
                spec = SessionSpec(
                    system=system,
                    run=run,
                    sizes=sizes,
                    database_url=database_url,
                    redis_urls=redis_urls,
                    stamps_url=stamps,
                    env={**extra, "BENCH_STAMPS_URL": stamps},
                    logs=str(logs),
                    output=str(work / f"{system}-{run}.jsonl"),
                    pgid_file=str(work / f"pgids-{system}-{run}"),
                    options={"api_port": _free_port()},
                )
                records += _run_session(spec, work, env)
    finally:
        servers.stop()
    meta = {r["system"]: r for r in records if r["phase"] == "_meta"}
    labels = {s: meta.get(s, {}).get("label", s) for s in systems}
    summary = report.summarize(records, systems, sizes.runs, sizes.phases)
    text = report.table(summary, labels, vars(sizes)) + _source_note(records)
    host["load_average_at_end"] = os.getloadavg()
    document = {
        "date": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": host,
        "servers": server_info,
        "versions": {
            "bench": {"wrk": _wrk_version(), "python": platform.python_version()},
            "taskq-core": metadata.version("taskq-core"),
            "git": git,
            **{s: m.get("versions", {}) for s, m in meta.items()},
        },
        "settings": {
            "sizes": vars(sizes),
            "knobs": {s: m.get("knobs", {}) for s, m in meta.items()},
        },
        "systems": labels,
        "summary": summary,
        "table": text,
        "raw": [r for r in records if r["phase"] != "_meta"],
        "logs": str(logs),
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = report.write_json(results_dir / f"{stamp}.json", document)
    print()
    print(text)
    print(f"\nJSON: {path}\nlogs: {logs}")
    return 0
