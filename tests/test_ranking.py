"""Best runs: the run list ranked by an evaluation metric within one dataset, best first, in
the API (?sort=) and on the pages (the list and a dataset's own page)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from runs.models import RunStatus, TunixRun
from tests.factories import DatasetFactory, TunixRunFactory, UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

RUNS = "/api/tunix/runs"


def scored(dataset: Any, rouge_l: float | None, eval_loss: float, **extra: Any) -> TunixRun:
    metrics = {"eval_loss": eval_loss, "steps": 24.0}
    if rouge_l is not None:
        metrics["rouge_l"] = rouge_l
    run: TunixRun = TunixRunFactory(dataset=dataset, completed=True, metrics=metrics, **extra)
    return run


@pytest.fixture
def board() -> dict[str, Any]:
    """Five completed runs of one dataset, one of another, one still running."""
    dataset, other = DatasetFactory(key="board-v1"), DatasetFactory(key="other-v1")
    runs = {
        "a": scored(dataset, 0.30, 2.0),
        "b": scored(dataset, 0.70, 2.5),
        "c": scored(dataset, 0.50, 1.5),
        "d": scored(dataset, 0.50, 1.7),  # ties c on rouge_l
        "unscored": scored(dataset, None, 1.0),  # eval turned off: no rouge_l
        "elsewhere": scored(other, 0.99, 0.1),
    }
    runs["running"] = TunixRunFactory(
        dataset=dataset, running=True, metrics={"rouge_l": 1.0, "eval_loss": 0.01}
    )
    return runs


def ranked(client: APIClient, **params: Any) -> tuple[list[str], dict[str, Any]]:
    response = client.get(RUNS, {"dataset_key": "board-v1", **params})
    assert response.status_code == 200, response.content
    body = response.json()
    return [item["run_id"] for item in body["data"]], body


def test_runs_rank_best_first_by_a_score_and_ties_by_newest_id(
    viewer_client: APIClient, board: dict[str, Any]
) -> None:
    order, body = ranked(viewer_client, sort="rouge_l")
    tie = sorted([board["c"], board["d"]], key=lambda r: r.id, reverse=True)
    expected = [board["b"], *tie, board["a"]]
    assert order == [str(r.id) for r in expected]
    # Each item carries its metrics: a leaderboard shows the value it ranked by.
    assert [item["metrics"]["rouge_l"] for item in body["data"]] == [0.7, 0.5, 0.5, 0.3]


def test_a_loss_ranks_lowest_first(viewer_client: APIClient, board: dict[str, Any]) -> None:
    order, _ = ranked(viewer_client, sort="eval_loss")
    names = ["unscored", "c", "d", "a", "b"]
    assert order == [str(board[name].id) for name in names]


def test_a_ranking_pages_with_a_cursor_through_ties(
    viewer_client: APIClient, board: dict[str, Any]
) -> None:
    whole, _ = ranked(viewer_client, sort="rouge_l")
    seen: list[str] = []
    params: dict[str, Any] = {"sort": "rouge_l", "limit": 1}
    while True:
        page, body = ranked(viewer_client, **params)
        seen += page
        cursor = body["pagination"]["next_cursor"]
        if cursor is None:
            break
        assert "sort=rouge_l" in body["pagination"]["next"]
        params["cursor"] = cursor
    assert seen == whole


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"sort": "rouge_l"}, "dataset_key"),
        ({"sort": "rouge_l", "dataset_key": "board-v1", "status": "failed"}, "status"),
        ({"sort": "rouge_l", "dataset_key": "board-v1", "offset": "5"}, "offset"),
        ({"sort": "wall_seconds", "dataset_key": "board-v1"}, "wall_seconds"),
    ],
)
def test_a_ranking_without_one_dataset_or_with_list_only_filters_is_a_400_naming_sort(
    viewer_client: APIClient, params: dict[str, str], reason: str
) -> None:
    body = problem(viewer_client.get(RUNS, params), 400)
    assert body["errors"][0]["field"] == "sort", body
    assert reason in body["detail"], body


def test_a_forged_ranking_cursor_is_a_400_naming_cursor(
    viewer_client: APIClient, board: dict[str, Any]
) -> None:
    response = viewer_client.get(
        RUNS, {"sort": "rouge_l", "dataset_key": "board-v1", "cursor": "bm90IGEgY3Vyc29y"}
    )
    assert problem(response, 400)["errors"][0]["field"] == "cursor"


def test_a_user_who_sees_only_their_runs_gets_only_theirs_ranked(board: dict[str, Any]) -> None:
    member = UserFactory()
    member.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="add_tunixrun")
    )
    mine = scored(board["a"].dataset, 0.1, 3.0, created_by=member)
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=member.pk))
    order, _ = ranked(client, sort="rouge_l")
    assert order == [str(mine.id)]


def test_the_list_page_ranks_a_dataset_and_shows_the_value(
    board: dict[str, Any], user: User
) -> None:
    web = Client()
    web.force_login(user)
    page = web.get("/", {"dataset_key": "board-v1", "sort": "rouge_l"})
    assert page.status_code == 200
    text = page.content.decode()
    positions = [text.index(f'data-testid="run-row-{board[n].id}"') for n in ("b", "c", "a")]
    assert positions == sorted(positions)
    assert f'data-testid="run-row-{board["elsewhere"].id}"' not in text
    assert f'data-testid="run-row-{board["running"].id}"' not in text
    assert 'data-testid="run-metric-' in text
    assert "0.7000" in text


def test_the_list_page_asks_for_a_dataset_before_ranking(user: User) -> None:
    web = Client()
    web.force_login(user)
    page = web.get("/", {"sort": "rouge_l"})
    assert page.status_code == 400
    assert "Choose a dataset" in page.content.decode()


def test_a_datasets_page_lists_its_best_runs(board: dict[str, Any], user: User) -> None:
    web = Client()
    web.force_login(user)
    page = web.get("/datasets/board-v1")
    assert page.status_code == 200
    text = page.content.decode()
    best = text.index('data-testid="best-runs"')
    first, second = (text.index(str(board[n].id)[:8], best) for n in ("b", "c"))
    assert first < second
    assert str(board["elsewhere"].id)[:8] not in text
    by_loss = web.get("/datasets/board-v1", {"metric": "eval_loss"}).content.decode()
    assert by_loss.index(str(board["unscored"].id)[:8]) < by_loss.index(str(board["b"].id)[:8])
    assert web.get("/datasets/no-such-v1").status_code == 404


def test_a_dataset_without_scored_runs_says_so(user: User) -> None:
    DatasetFactory(key="fresh-v1")
    TunixRunFactory(dataset__key="fresh2-v1", status=RunStatus.PENDING)
    web = Client()
    web.force_login(user)
    page = web.get("/datasets/fresh-v1")
    assert page.status_code == 200
    assert "No evaluated runs yet" in page.content.decode()
