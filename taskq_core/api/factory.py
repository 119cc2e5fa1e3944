"""The FastAPI application factory: settings, backends and plugins are bound in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import taskq_core
from taskq_core import artifacts, broker, devstate
from taskq_core.api import errors, openapi, ui
from taskq_core.api.auth import KeyRing, env_keys
from taskq_core.api.deps import Backends
from taskq_core.api.fastpath import SubmitFastPath
from taskq_core.api.hosts import OpenModeHosts
from taskq_core.api.limits import BodySizeLimit
from taskq_core.api.ratelimit import RateLimit, parse_rate
from taskq_core.api.routes import artifacts as artifact_routes
from taskq_core.api.routes import bulk, health, metrics, schedules, task_types, tasks, workers
from taskq_core.api.waiting import StatusHub
from taskq_core.db import engines
from taskq_core.db.storage import Storage
from taskq_core.enqueue import GroupSubmitter
from taskq_core.inputs import InputLimits
from taskq_core.plugins import Registry, load_registry
from taskq_core.settings import Settings

log = logging.getLogger("taskq.api")


def create_app(settings: Settings | None = None, registry: Registry | None = None) -> FastAPI:
    """Build the API; settings default to the environment's, plugins are loaded at start-up."""
    config = settings or Settings()
    rate = parse_rate(config.rate_limit) if config.rate_limit else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database_url, redis_url = devstate.resolve_urls(config)
        types = registry if registry is not None else load_registry()
        engine = engines.async_engine(
            database_url, pool_size=config.db_pool_size, prepare=config.database_prepare
        )
        redis = broker.connect(redis_url)
        app.state.settings = config
        app.state.artifact_store = artifacts.ArtifactStore(artifacts.configured_url(config))
        storage = Storage(engine, config.queue)
        queue = broker.Broker(redis, config.queue)
        submitter = GroupSubmitter(storage, queue)
        limits = InputLimits(config.max_input_bytes, config.max_input_depth)
        app.state.backends = Backends(storage, queue, types, submitter, limits)
        # Its own connection: a subscribed connection can issue no other command.
        subscriber = broker.connect(redis_url, blocking=True)
        app.state.status_hub = hub = StatusHub(
            broker.Broker(subscriber, config.queue), storage.get_many
        )
        hub.start()
        app.state.keyring = keyring = KeyRing(engine, env_keys(config))
        log.info("task types: %s", types.known_names())
        await keyring.start()
        try:
            yield
        finally:
            await keyring.close()
            await hub.close()
            await subscriber.aclose()
            await submitter.close()
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="taskq",
        version=getattr(taskq_core, "__version__", "0.1.0"),
        description="Submit tasks, follow them, list the task types the installed plugins provide.",
        lifespan=lifespan,
        docs_url=None,  # served by `openapi.install`, from local files
        redoc_url=None,
    )
    # The last added runs first: the body is read (bounded) before a request is counted, so a
    # refused one's client hears the 413 or 429.
    app.add_middleware(SubmitFastPath)
    if rate is not None:
        app.add_middleware(RateLimit, rate=rate)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(OpenModeHosts)  # outermost: a rebinding page's request is read no further
    errors.install(app)
    openapi.install(app, config)
    app.include_router(bulk.router)
    app.include_router(tasks.router)
    app.include_router(artifact_routes.router)
    app.include_router(schedules.router)
    app.include_router(task_types.router)
    app.include_router(workers.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    ui.mount(app)
    return app
