"""The OpenAPI document as the API really is, and the docs pages served offline.

The limits its settings chose are written over the static bounds on the models (batch and page
sizes, the task types' caps on attempts and timeouts).

FastAPI only knows `input_data` as an object: validation against each task type's `Input` happens
in `enqueue.prepare`, the same code for the route and the fast path. So the types are written into
the generated document instead, once, on its first request after start-up: the body of
`POST /tasks/` (and each item of `/tasks/batch`) becomes a union discriminated by `task_type`,
one branch per registered type with its `Input` schema, and each type's `Output` is a component.
Validation and the fast path are untouched; an unknown type is still a 422 naming the known ones.
`/docs` and `/redoc` load Swagger UI and ReDoc from the `fastapi-offline` package's files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from taskq_core.plugins import Registry
from taskq_core.settings import Settings

ASSETS_URL = "/docs-assets"
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
REF = "#/components/schemas/"
UNION = "TaskRequest"  # the discriminated union's component name


def _component(schemas: dict[str, Any], name: str, model: Any) -> dict[str, str]:
    """Add `model`'s JSON Schema as component `name` (its nested models as `name_Nested`);
    a reference to it."""
    schema = model.model_json_schema(ref_template=f"{REF}{name}_{{model}}")
    for nested, definition in schema.pop("$defs", {}).items():
        schemas[f"{name}_{nested}"] = definition
    schema["title"] = name
    schemas[name] = schema
    return {"$ref": f"{REF}{name}"}


def add_task_types(document: dict[str, Any], registry: Registry) -> None:
    """Rewrite `document`'s task request bodies as a union by `task_type` over `registry`."""
    schemas: dict[str, Any] = document["components"]["schemas"]
    generic = schemas.get("TaskCreate")
    if generic is None or not registry.types:
        return
    branches: dict[str, str] = {}
    for task_type in registry:
        name = task_type.name
        input_ref = _component(schemas, f"{name}Input", task_type.input_model)
        _component(schemas, f"{name}Output", task_type.cls.Output)
        properties = dict(generic["properties"])
        properties["task_type"] = {"type": "string", "const": name, "title": "Task Type"}
        properties["input_data"] = {**input_ref, "description": f"The input of {name}."}
        properties["priority"] = {**properties["priority"], "default": task_type.cls.priority}
        required = ["task_type"]
        if task_type.input_model.model_json_schema().get("required"):
            required.append("input_data")
        schemas[f"{name}Request"] = {
            "type": "object",
            "title": f"{name}Request",
            "description": f"{task_type.cls.description} (plugin {task_type.plugin.name}; "
            f"result: {name}Output)",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        branches[name] = f"{REF}{name}Request"
    schemas[UNION] = {
        "title": UNION,
        "description": "A task to create; `task_type` chooses which fields `input_data` has.",
        "oneOf": [{"$ref": ref} for ref in branches.values()],
        "discriminator": {"propertyName": "task_type", "mapping": branches},
    }
    body = document["paths"]["/tasks/"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {"$ref": f"{REF}{UNION}"}
    schemas["TaskBatch"]["properties"]["tasks"]["items"] = {"$ref": f"{REF}{UNION}"}
    if json.dumps(document).count(f'"{REF}TaskCreate"') == 0:
        del schemas["TaskCreate"]


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
    """Serve the typed document at /openapi.json and the docs pages with local assets. Build
    `app` with `docs_url=None, redoc_url=None`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _limits(document, app, settings)
            backends = getattr(app.state, "backends", None)
            if backends is not None:
                add_task_types(document, backends.registry)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
