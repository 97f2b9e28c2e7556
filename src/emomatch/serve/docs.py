"""``/docs`` that works offline: Swagger UI's files come from the ``swagger-ui-bundle`` package.

FastAPI's own page loads Swagger UI from a CDN, so on a machine without the internet (where a
model service often runs) ``/docs`` was a blank page. ReDoc has no packaged copy and is left
out: the OpenAPI document itself stays at ``/openapi.json``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: where Swagger UI's script, style and icon are served
ASSETS = "/docs-assets"


def add_offline_docs(app: FastAPI) -> None:
    """Serve the interactive API page at ``/docs`` from local files (create the app with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN page is not there too)."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
