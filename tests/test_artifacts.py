"""A run's artifacts: listed with sizes, small ones downloadable by signed-in users, nothing
outside the run's own directory reachable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from runs.models import TunixRun
from tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def run_with_files(tmp_path: Path) -> TunixRun:
    run = TunixRunFactory()
    root = Path(settings.TUNIX_ARTIFACTS_ROOT) / run.output_dir
    (root / "checkpoints" / "20").mkdir(parents=True)
    (root / "tunix_run.json").write_text('{"run_id": "x"}\n')
    (root / "checkpoints" / "20" / "model_params").write_bytes(b"\0" * 3000)
    (root / "tb").mkdir()
    (root / "tb" / "events.out").write_bytes(b"e" * 10)
    (root / ".tmp-half-written.json").write_text("{")
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    os.symlink(outside, root / "link-out")
    return run


def url(run: TunixRun, name: str = "") -> str:
    base = f"/api/tunix/runs/{run.id}/artifacts"
    return f"{base}/{name}" if name else base


def test_the_list_has_every_file_with_its_size_and_no_links(
    viewer_client: APIClient, run_with_files: TunixRun
) -> None:
    body = viewer_client.get(url(run_with_files)).json()
    listed = {item["path"]: item["size_bytes"] for item in body["data"]}
    assert listed == {
        "checkpoints/20/model_params": 3000,
        "tb/events.out": 10,
        "tunix_run.json": 16,
    }
    assert body["truncated"] is False
    first = body["data"][0]
    assert first["download_url"].endswith(url(run_with_files, first["path"]))


def test_a_run_without_artifacts_lists_nothing(viewer_client: APIClient) -> None:
    assert viewer_client.get(url(TunixRunFactory())).json() == {"data": [], "truncated": False}


def test_a_small_file_downloads_as_an_attachment(
    viewer_client: APIClient, run_with_files: TunixRun
) -> None:
    response: Any = viewer_client.get(url(run_with_files, "tunix_run.json"))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b'{"run_id": "x"}\n'
    assert 'attachment; filename="tunix_run.json"' in response["Content-Disposition"]


def test_a_file_above_the_limit_is_listed_without_a_link_and_refused(
    viewer_client: APIClient, run_with_files: TunixRun, settings: Any
) -> None:
    settings.TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES = 1000
    items = {i["path"]: i for i in viewer_client.get(url(run_with_files)).json()["data"]}
    assert items["checkpoints/20/model_params"]["download_url"] is None
    response = viewer_client.get(url(run_with_files, "checkpoints/20/model_params"))
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    assert "3000 bytes" in response.json()["detail"]


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "checkpoints/../../x",
        "link-out",  # a symbolic link to a file outside
        ".tmp-half-written.json",
        "checkpoints",  # a directory
        "missing.json",
        "%2Fetc%2Fpasswd",
    ],
)
def test_nothing_but_the_runs_own_files_is_served(
    viewer_client: APIClient, run_with_files: TunixRun, name: str
) -> None:
    response = viewer_client.get(url(run_with_files, name))
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert b"not yours" not in response.content


def test_artifacts_need_a_login(run_with_files: TunixRun) -> None:
    assert APIClient().get(url(run_with_files)).status_code == 401
    assert APIClient().get(url(run_with_files, "tunix_run.json")).status_code == 401


def test_an_unknown_run_is_404(viewer_client: APIClient) -> None:
    fake = TunixRun(id="00000000-0000-0000-0000-000000000000")
    assert viewer_client.get(url(fake)).status_code == 404


def test_the_detail_page_lists_the_files_with_download_links(
    client: Any, operator: Any, run_with_files: TunixRun, settings: Any
) -> None:
    settings.TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES = 1000
    client.force_login(operator)
    page = client.get(f"/runs/{run_with_files.id}").content.decode()
    assert "Files (3)" in page
    assert f'href="{url(run_with_files, "tunix_run.json")}" download' in page
    assert "checkpoints/20/model_params" in page
    assert f'href="{url(run_with_files, "checkpoints/20/model_params")}"' not in page  # too big
    assert "link-out" not in page
