"""The OpenAPI schema, its docs page and the browsable API are served, offline."""

from __future__ import annotations

import pytest
import yaml
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_schema_describes_every_endpoint(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    expected = {
        "/api/tunix/run",
        "/api/tunix/runs",
        "/api/tunix/runs/{run_id}",
        "/api/tunix/runs/{run_id}/status",
        "/api/tunix/runs/{run_id}/cancel",
        "/api/tunix/datasets",
        "/api/tunix/datasets/{key}",
    }
    assert expected <= set(schema["paths"])
    submit = schema["paths"]["/api/tunix/run"]["post"]
    assert {"201", "202", "400", "422"} <= set(submit["responses"])


def test_docs_page_uses_no_cdn(viewer_client: APIClient) -> None:
    page = viewer_client.get("/api/docs/").content.decode()
    assert "swagger" in page.lower()
    assert "cdn.jsdelivr" not in page
    assert "unpkg.com" not in page


def test_browsable_api_renders_html(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/tunix/runs", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "Run List" in response.content.decode()
