"""The dashboard at `/ui`: server-rendered pages over the API's own storage and broker, with
local assets only (templates/, static/) and a few lines of JavaScript for the live parts."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from taskq_core.api.ui import actions, pages
from taskq_core.api.ui.views import HERE


def mount(app: FastAPI) -> None:
    """Serve the dashboard from `app` under /ui."""
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(pages.router)
    app.include_router(actions.router)
