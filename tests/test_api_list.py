"""GET /api/tunix/runs (keyset pages, filters) and GET /api/tunix/runs/{id}."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import DatasetFactory, TunixRunFactory

pytestmark = pytest.mark.django_db

URL = "/api/tunix/runs"


def test_newest_first_without_heavy_fields(viewer_client: APIClient) -> None:
    now = timezone.now()
    old = TunixRunFactory(queued_at=now - timedelta(minutes=5), stdout="secret output")
    new = TunixRunFactory(queued_at=now)
    body = viewer_client.get(URL).json()
    assert [r["run_id"] for r in body["data"]] == [str(new.id), str(old.id)]
    for item in body["data"]:
        assert not {"stdout", "stderr", "config"} & set(item)
    assert body["pagination"] == {"limit": 20, "next_cursor": None, "next": None}


def test_cursor_walks_every_run_exactly_once_even_with_equal_timestamps(
    viewer_client: APIClient,
) -> None:
    moment = timezone.now()
    dataset = DatasetFactory()
    runs = [TunixRunFactory(dataset=dataset, queued_at=moment) for _ in range(25)]
    runs += [
        TunixRunFactory(dataset=dataset, queued_at=moment - timedelta(seconds=i)) for i in range(20)
    ]
    seen: list[str] = []
    url: str | None = f"{URL}?limit=20"
    pages = 0
    while url:
        body = viewer_client.get(url).json()
        seen += [r["run_id"] for r in body["data"]]
        url = body["pagination"]["next"]
        pages += 1
    assert pages == 3
    assert len(seen) == len(set(seen)) == 45
    assert set(seen) == {str(r.id) for r in runs}
    stamps = [(r.queued_at, str(r.id)) for r in runs]
    assert seen == [run_id for _, run_id in sorted(stamps, reverse=True)]


def test_filters_narrow_the_list(viewer_client: APIClient) -> None:
    a, b = DatasetFactory(key="alpha-v1"), DatasetFactory(key="beta-v1")
    done = TunixRunFactory(dataset=a, completed=True)
    local = TunixRunFactory(dataset=b, mode="local")

    def ids(**params: str) -> set[str]:
        return {r["run_id"] for r in viewer_client.get(URL, params).json()["data"]}

    assert ids(status="completed") == {str(done.id)}
    assert ids(mode="local") == {str(local.id)}
    assert ids(dataset_key="alpha-v1") == {str(done.id)}
    assert ids(dataset_key="unknown-v1") == set()
    assert ids(status="pending", dataset_key="beta-v1") == {str(local.id)}


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=abc",
        "status=exploded",
        "mode=remote",
        "cursor=garbage",
        "offset=10001",
        "dataset_key=../x",
    ],
)
def test_bad_query_parameters_are_400_problems(viewer_client: APIClient, query: str) -> None:
    response = viewer_client.get(f"{URL}?{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_offset_for_old_clients(viewer_client: APIClient) -> None:
    now = timezone.now()
    runs = [TunixRunFactory(queued_at=now - timedelta(seconds=i)) for i in range(5)]
    body = viewer_client.get(URL, {"offset": 3, "limit": 10}).json()
    assert [r["run_id"] for r in body["data"]] == [str(runs[3].id), str(runs[4].id)]


def test_detail_returns_the_full_record(viewer_client: APIClient) -> None:
    run = TunixRunFactory(failed=True, stdout="out", stderr="err", error_message="boom")
    body = viewer_client.get(f"{URL}/{run.id}").json()
    assert body["run_id"] == str(run.id)
    assert (body["stdout"], body["stderr"], body["error_reason"]) == ("out", "err", "nonzero_exit")
    assert body["message"] == "boom"
    assert body["output_dir"] == str(run.id)


@pytest.mark.parametrize("run_id", ["00000000-0000-0000-0000-000000000000", "nope", "1' or 1=1"])
def test_detail_of_unknown_or_malformed_ids_is_404(viewer_client: APIClient, run_id: str) -> None:
    response = viewer_client.get(f"{URL}/{run_id}")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_list_does_not_count_the_table(
    viewer_client: APIClient, django_assert_max_num_queries: Any
) -> None:
    for _ in range(30):
        TunixRunFactory()
    with django_assert_max_num_queries(3) as queries:
        viewer_client.get(URL, {"limit": 20})
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def test_fast_list_items_match_the_documented_serializer(viewer_client: APIClient) -> None:
    from runs import selectors
    from runs.api.serializers import RunListItemSerializer, list_item

    TunixRunFactory(failed=True)
    TunixRunFactory()
    page = selectors.run_list(filters=selectors.RunFilters(), limit=10)
    documented = [dict(item) for item in RunListItemSerializer(page.items, many=True).data]
    assert [list_item(run) for run in page.items] == documented
