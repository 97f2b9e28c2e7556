"""The service's /docs page works offline: every file it loads is served by the service."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from emomatch.serve import ServeSettings, create_app, load_predictors
from tests.support.serve_fixtures import running, tiny_bundle


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> object:
    bundle: Path = tiny_bundle(tmp_path_factory)
    with running(create_app(load_predictors(bundle, 1, transcribe=False), ServeSettings())) as base:
        yield base


def test_docs_page_loads_only_from_the_service(url: str) -> None:
    page = httpx.get(f"{url}/docs", timeout=30)
    assert page.status_code == 200
    loaded = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    loaded += re.findall(r"""url: ?['"]([^'"]+)['"]""", page.text)
    assert loaded, page.text
    assert not [u for u in loaded if u.startswith(("http:", "https:", "//"))], loaded
    for path in loaded:
        response = httpx.get(f"{url}{path}", timeout=30)
        assert response.status_code == 200, path
    assert "swagger-ui-bundle.js" in page.text
    assert httpx.get(f"{url}/openapi.json", timeout=30).json()["info"]["title"] == "emomatch"
    assert httpx.get(f"{url}/redoc", timeout=30).status_code == 404
