"""FastAPI dependencies: the shared storage, broker and registry of the running app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from taskq_core.broker import Broker
from taskq_core.db.storage import Storage
from taskq_core.enqueue import GroupSubmitter
from taskq_core.inputs import DEFAULT_LIMITS, InputLimits
from taskq_core.plugins import Registry
from taskq_core.settings import Settings


@dataclass
class Backends:
    """What a request handler talks to; built once in the app's lifespan."""

    storage: Storage
    broker: Broker
    registry: Registry
    submitter: GroupSubmitter
    limits: InputLimits = DEFAULT_LIMITS


async def get_backends(request: Request) -> Backends:
    # async on purpose: FastAPI runs plain-function dependencies in a thread pool.
    backends: Backends = request.app.state.backends
    return backends


BackendsDep = Annotated[Backends, Depends(get_backends)]


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]
