"""The REST API: HTTP only. `uvicorn taskq_core.api:app` serves it; `create_app()` builds one.

`factory` builds the app, `routes/` mirrors the URLs (`routes/tasks.py` serves `/tasks`),
`deps` names the dependencies routes take, `schemas` the request and response models, `errors`
maps taskq's exceptions to status codes in one table, `limits` and `fastpath` keep the hot
`POST /tasks/` cheap. May import the shared top level, `broker`, `enqueue` and `db`; never
`worker` or `cli`.
"""

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
