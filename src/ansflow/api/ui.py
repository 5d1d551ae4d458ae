"""The web UI at ``/`` (its files under ``/ui/``), from the package ``ansflow.ui``."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

# the UI loads only its own files; log text is inserted as text, never as markup
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                               "style-src 'self'; script-src 'self'; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def mount(app: FastAPI) -> None:
    index = (resources.files("ansflow.ui") / "static" / "index.html").read_text("utf-8")

    @app.get("/", include_in_schema=False)
    async def ui_index() -> HTMLResponse:
        return HTMLResponse(index, headers=SECURITY_HEADERS)

    app.mount("/ui", StaticFiles(packages=[("ansflow.ui", "static")]), name="ui")
