"""The measured systems, one module each; a module is imported only when its system runs."""

from __future__ import annotations

import importlib

from bench.peers.base import Peer

# --peers name -> rows (system names); each row -> "module:class".
SYSTEMS = {
    "taskq": "bench.peers.taskq:Taskq",
    "taskq-base": "bench.peers.taskq:TaskqBase",
    "celery-redis": "bench.peers.celery:CeleryRedis",
    "celery-pg": "bench.peers.celery:CeleryPostgres",
    "rq": "bench.peers.rq:Rq",
    "dramatiq": "bench.peers.dramatiq:Dramatiq",
    "procrastinate": "bench.peers.procrastinate:Procrastinate",
}
ALIASES = {"celery": ("celery-redis", "celery-pg")}
DEFAULT = "taskq,celery,rq,dramatiq,procrastinate"


def expand(names: str) -> list[str]:
    """`taskq,celery` -> the systems to run, in order; unknown names raise ValueError."""
    systems: list[str] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name not in SYSTEMS and name not in ALIASES:
            known = ", ".join([*SYSTEMS, *ALIASES])
            raise ValueError(f"unknown peer {name!r}; known: {known}")
        systems += [s for s in ALIASES.get(name, (name,)) if s not in systems]
    return systems


def load(system: str) -> type[Peer]:
    module, cls = SYSTEMS[system].split(":")
    peer: type[Peer] = getattr(importlib.import_module(module), cls)
    return peer
