"""The OpenAPI schema, the Swagger UI page and the browsable API, served without any CDN."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db

EXPECTED_PATHS = {
    "/api/tunix/run",
    "/api/tunix/runs",
    "/api/tunix/runs/{run_id}",
    "/api/tunix/runs/{run_id}/status",
    "/api/tunix/datasets",
}


@pytest.fixture
def schema(viewer_client: APIClient) -> dict[str, Any]:
    response = viewer_client.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    loaded: dict[str, Any] = yaml.safe_load(response.content)
    return loaded


def test_schema_lists_the_api_paths(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Tunix RT API"
    assert set(schema["paths"]) >= EXPECTED_PATHS | {"/api/tunix/datasets/{key}"}
    # The catch-all that answers unknown paths with a 404 is not an endpoint.
    assert not [p for p in schema["paths"] if "path" in p or ".*" in p]


def test_schema_documents_methods_and_error_answers(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    assert "post" in paths["/api/tunix/run"]
    assert {"201", "400", "401", "403"} <= set(paths["/api/tunix/run"]["post"]["responses"])
    assert {"get", "post"} <= set(paths["/api/tunix/datasets"])
    assert {"400", "409", "413"} <= set(paths["/api/tunix/datasets"]["post"]["responses"])
    assert "404" in paths["/api/tunix/runs/{run_id}"]["get"]["responses"]
    list_params = {p["name"]: p for p in paths["/api/tunix/runs"]["get"]["parameters"]}
    assert {"limit", "cursor", "offset", "status", "mode", "dataset_key"} <= set(list_params)
    assert list_params["limit"]["schema"]["maximum"] == 100


def test_schema_documents_the_submit_body(schema: dict[str, Any]) -> None:
    body = schema["paths"]["/api/tunix/run"]["post"]["requestBody"]["content"]
    ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][ref]["properties"]
    assert {
        "dataset_key",
        "model_id",
        "dry_run",
        "timeout_seconds",
        "client_request_id",
        "learning_rate",
        "num_epochs",
        "batch_size",
        "max_seq_length",
        "max_steps",
        "eval_fraction",
        "seed",
        "lora_rank",
        "lora_alpha",
        "eval_max_items",
        "max_new_tokens",
        "temperature",
    } <= set(properties)
    assert properties["dry_run"]["default"] is True


def test_schema_is_also_served_as_json(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert set(response.json()["paths"]) >= EXPECTED_PATHS


def test_docs_page_renders_with_local_assets_only(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "cdn.jsdelivr" not in page
    assert "unpkg" not in page
    assert "<script>" not in page  # no inline script: the start-up script is its own file
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    startup = viewer_client.get("/api/docs/?script=")
    assert startup.status_code == 200
    assert "SwaggerUIBundle" in startup.content.decode()
    assert '"/api/schema/"' in startup.content.decode()
    for asset in (a for a in assets if a != "/api/docs/?script="):
        # Every asset is a static file of this deployment (drf-spectacular-sidecar's copy, and
        # the page's own layout as a file).
        assert asset.startswith(("/static/drf_spectacular_sidecar/", "/static/runs/")), asset
        assert finders.find(asset.removeprefix("/static/")), asset


def test_browsable_api_renders_the_run_list_as_html(viewer_client: APIClient) -> None:
    run = TunixRunFactory(queued_at=timezone.now())
    response = viewer_client.get("/api/tunix/runs", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Django REST framework" in page
    assert str(run.id) in page


def test_browsable_api_shows_errors_as_html_too(viewer_client: APIClient) -> None:
    # A browser that asked for HTML gets the browsable error page, not raw problem+json.
    response = viewer_client.get("/api/tunix/runs?limit=0", headers={"Accept": "text/html"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "limit" in response.content.decode()


def test_anonymous_schema_request_is_a_json_problem(api_client: APIClient) -> None:
    response = api_client.get("/api/schema/")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 401


def test_the_schema_builds_without_a_warning(tmp_path: Any) -> None:
    """A warning means a client generator meets something ambiguous (an enum named after a
    hash, an operation without a type): each new endpoint has to settle it."""
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert (tmp_path / "schema.yml").stat().st_size > 0
