"""The API's viewsets behind a router: every route at the seed's path and URL name, the
browsable API's root listing the collections, and a trailing slash still a problem+json 404
that names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.urls import URLPattern, resolve, reverse
from rest_framework.test import APIClient

from runs.api import urls as api_urls
from runs.models import Dataset, TunixRun
from tests.factories import TunixRunFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

RUN = "/api/tunix/runs/{run_id}"
MODEL = "/api/tunix/registry/models/{model_name}"
VERSION = "/api/tunix/registry/models/{model_name}/versions/{number}"
# URL name -> the path it answers at: the seed's paths, no trailing slashes.
PATHS = {
    "api-root": "/api/tunix",
    "run-submit": "/api/tunix/run",
    "run-list": "/api/tunix/runs",
    "run-compare": "/api/tunix/runs/compare",
    "run-compare-items": "/api/tunix/runs/compare/items",
    "run-compare-items-csv": "/api/tunix/runs/compare/items.csv",
    "run-detail": RUN,
    "run-status": f"{RUN}/status",
    "run-cancel": f"{RUN}/cancel",
    "run-artifacts": f"{RUN}/artifacts",
    "run-artifact": f"{RUN}/artifacts/{{name}}",
    "run-exports": f"{RUN}/exports",
    "run-export": f"{RUN}/exports/{{export_id}}",
    "run-export-archive": f"{RUN}/exports/{{export_id}}/archive",
    "run-samples": f"{RUN}/samples",
    "run-sample": f"{RUN}/samples/{{sample_id}}",
    "registry-model-version-samples": f"{VERSION}/samples",
    "registry-model-version-sample": f"{VERSION}/samples/{{sample_id}}",
    "dataset-list": "/api/tunix/datasets",
    "dataset-detail": "/api/tunix/datasets/{key}",
    "model-list": "/api/tunix/models",
    "registry-model-list": "/api/tunix/registry/models",
    "registry-model-detail": MODEL,
    "registry-model-versions": f"{MODEL}/versions",
    "registry-model-version": VERSION,
    "registry-model-aliases": f"{MODEL}/aliases",
    "registry-model-alias": f"{MODEL}/aliases/{{alias}}",
    "registry-model-alias-moves": f"{MODEL}/aliases/{{alias}}/moves",
    "registry-model-moves": f"{MODEL}/moves",
    "sweep-list": "/api/tunix/sweeps",
    "sweep-detail": "/api/tunix/sweeps/{sweep_id}",
    "sweep-cancel": "/api/tunix/sweeps/{sweep_id}/cancel",
}
# How each route is called, and what it answers when that works.
CALLS = {
    "api-root": ("get", 200),
    "run-submit": ("post", 202),
    "run-list": ("get", 200),
    # Asked for nothing to compare: their own 400 naming ids, not the catch-all 404.
    "run-compare": ("get", 400),
    "run-compare-items": ("get", 400),
    "run-compare-items-csv": ("get", 400),
    "run-detail": ("get", 200),
    "run-status": ("get", 200),
    "run-cancel": ("post", 200),
    "run-artifacts": ("get", 200),
    "run-artifact": ("get", 200),
    "run-exports": ("get", 200),
    # The run has no such export (test_exports_api.py has the ones that exist).
    "run-export": ("get", 404),
    "run-export-archive": ("get", 404),
    "run-samples": ("get", 200),
    # No such sample, model or version (test_samples_api.py has the ones that exist).
    "run-sample": ("get", 404),
    "registry-model-version-samples": ("get", 404),
    "registry-model-version-sample": ("get", 404),
    "dataset-list": ("get", 200),
    "dataset-detail": ("get", 200),
    "model-list": ("get", 200),
    "registry-model-list": ("get", 200),
    # No such registered model (test_registry_api.py has the ones that exist).
    "registry-model-detail": ("get", 404),
    "registry-model-versions": ("get", 404),
    "registry-model-version": ("get", 404),
    "registry-model-aliases": ("get", 404),
    "registry-model-alias": ("get", 404),
    "registry-model-alias-moves": ("get", 404),
    "registry-model-moves": ("get", 404),
    "sweep-list": ("get", 200),
    # No such sweep (test_sweeps_api.py has the ones that exist).
    "sweep-detail": ("get", 404),
    "sweep-cancel": ("post", 404),
}
ARTIFACT = "checkpoints/1/params.json"  # a name with directories: the path converter's case
EXPORT_ID = "0b5c2b8e-6f5d-4d8a-9a51-3c2f1e0d9a77"
SAMPLE_ID = "5d0c8a3e-2b7f-4e1a-9c6d-7f8e9a0b1c2d"
SWEEP_ID = "7a1e4c2b-3d5f-4a6b-8c9d-0e1f2a3b4c5d"
MODEL_NAME, NUMBER = "no-such-model", "3"
ALIAS = "production"


@pytest.fixture
def run(operator: Any, demo_dataset: Dataset) -> TunixRun:
    run = TunixRunFactory(dataset=demo_dataset, created_by=operator)
    file = Path(settings.TUNIX_ARTIFACTS_ROOT) / run.output_dir / ARTIFACT
    file.parent.mkdir(parents=True)
    file.write_text("{}")
    return run


def path_of(name: str, run_id: object = "r1") -> str:
    return PATHS[name].format(
        run_id=run_id,
        key="tunix-demo-v1",
        name=ARTIFACT,
        export_id=EXPORT_ID,
        sample_id=SAMPLE_ID,
        model_name=MODEL_NAME,
        number=NUMBER,
        alias=ALIAS,
        sweep_id=SWEEP_ID,
    )


def kwargs_of(name: str, run_id: object = "r1") -> dict[str, str]:
    values = {
        "run_id": str(run_id),
        "key": "tunix-demo-v1",
        "name": ARTIFACT,
        "export_id": EXPORT_ID,
        "sample_id": SAMPLE_ID,
        "model_name": MODEL_NAME,
        "number": NUMBER,
        "alias": ALIAS,
        "sweep_id": SWEEP_ID,
    }
    return {k: v for k, v in values.items() if f"{{{k}}}" in PATHS[name]}


def test_the_api_routes_are_exactly_the_listed_ones() -> None:
    named = {p.name for p in api_urls.urlpatterns if isinstance(p, URLPattern)}
    assert named - {"unknown"} == set(PATHS)
    # Everything the router builds is one of them (a new action must be added above).
    assert {p.name for p in api_urls.router.urls if isinstance(p, URLPattern)} <= set(PATHS)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_each_route_keeps_its_path_and_url_name(name: str) -> None:
    expected = path_of(name)
    assert reverse(f"api:{name}", kwargs=kwargs_of(name)) == expected
    assert resolve(expected).view_name == f"api:{name}"


@pytest.mark.parametrize("name", sorted(PATHS))
def test_each_route_answers_at_its_path(
    operator_client: APIClient, run: TunixRun, name: str
) -> None:
    method, expected = CALLS[name]
    url = path_of(name, run.id)
    if name == "run-submit":
        url += "?mode=async"
    body = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}
    response = getattr(operator_client, method)(url, body if method == "post" else None)
    assert response.status_code == expected, response.content


def test_the_root_lists_runs_datasets_and_models_as_json(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/tunix", headers={"Accept": "application/json"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "runs": "http://testserver/api/tunix/runs",
        "datasets": "http://testserver/api/tunix/datasets",
        "models": "http://testserver/api/tunix/models",
        "registry": "http://testserver/api/tunix/registry/models",
        "sweeps": "http://testserver/api/tunix/sweeps",
    }


def test_the_browsable_root_links_runs_datasets_and_models(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/tunix", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Django REST framework" in page
    for collection in ("runs", "datasets", "models"):
        assert f'href="http://testserver/api/tunix/{collection}"' in page


def test_the_root_needs_a_login_like_the_rest(api_client: APIClient) -> None:
    problem(api_client.get("/api/tunix"), 401)


def test_the_root_is_no_operation_in_the_schema(viewer_client: APIClient) -> None:
    response = viewer_client.get("/api/schema/", {"format": "json"})
    assert "/api/tunix" not in response.json()["paths"]


@pytest.mark.parametrize("name", sorted(PATHS))
def test_a_trailing_slash_is_a_404_problem_naming_the_path_without_it(
    operator_client: APIClient, run: TunixRun, name: str
) -> None:
    method, _ = CALLS[name]
    url = path_of(name, run.id)
    body = problem(getattr(operator_client, method)(f"{url}/"), 404)
    if name == "run-artifact":
        # An artifact's name is a path: the slash is part of it, and no file has that name.
        assert body["detail"].endswith(f"has no artifact '{ARTIFACT}/'")
    else:
        assert body["detail"].endswith(f"paths have no trailing slash: {url}")


def test_posting_to_the_run_list_is_not_a_second_submit_path(
    operator_client: APIClient, demo_dataset: Dataset
) -> None:
    # One way to submit (POST /api/tunix/run): the collection stays read-only.
    body = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}
    problem(operator_client.post("/api/tunix/runs", body, format="json"), 405)
    assert not TunixRun.objects.exists()


def test_browsable_breadcrumbs_lead_from_the_root_without_the_catch_all(
    viewer_client: APIClient,
) -> None:
    page = viewer_client.get("/api/tunix/runs", headers={"Accept": "text/html"}).content.decode()
    crumbs = page.split('class="breadcrumb"', 1)[1].split("</ul>", 1)[0]
    assert 'href="/api/tunix"' in crumbs
    assert "Run List" in crumbs
    assert "Unknown Path" not in crumbs
