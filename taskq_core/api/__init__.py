"""The REST API. `uvicorn taskq_core.api:app` serves it; `create_app()` builds one."""

from __future__ import annotations

from typing import Any

from taskq_core.api.factory import create_app

__all__ = ["app", "create_app"]


def __getattr__(name: str) -> Any:
    # Built on first access, not at import: importing the package loads no settings or plugins.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(name)
