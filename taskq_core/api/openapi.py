"""/openapi.json as this API really is: the limits its settings chose and the task types its
plugins installed, not only the static bounds written on the models."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from taskq_core.settings import Settings


def _limits(spec: dict[str, Any], app: FastAPI, settings: Settings) -> None:
    schemas = spec.get("components", {}).get("schemas", {})
    batch = schemas.get("TaskBatch", {}).get("properties", {}).get("tasks")
    if batch is not None:
        batch["maxItems"] = settings.max_batch_size
    for parameter in spec["paths"].get("/tasks/", {}).get("get", {}).get("parameters", []):
        if parameter["name"] == "limit":
            parameter["schema"]["maximum"] = settings.max_page_size
    backends = getattr(app.state, "backends", None)
    create = schemas.get("TaskCreate", {}).get("properties")
    if backends is None or create is None or not backends.registry.types:
        return
    types = list(backends.registry)
    create["task_type"]["enum"] = [t.name for t in types]
    # What every type accepts: a request within these is refused by none of them.
    create["max_attempts"]["anyOf"][0]["maximum"] = min(t.cls.max_attempts_cap for t in types)
    create["timeout_seconds"]["anyOf"][0]["maximum"] = min(t.cls.max_timeout_seconds for t in types)


def install(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _limits(spec, app, settings)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
