"""Comparing runs through the API: GET tunix/runs/compare (series, the settings that differ, the
final metrics with the best marked), .../compare/items (evaluation items matched by dataset line,
paged, filtered to disagreements) and .../compare/items.csv."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import Permission, User
from django.urls import resolve
from rest_framework.test import APIClient

from runs.models import Dataset, TunixRun
from runs.scorers import SCORER_NAMES
from runs.selectors import comparison
from tests.factories import (
    DatasetFactory,
    EvaluatedRunFactory,
    TunixRunFactory,
    UserFactory,
    prediction_record,
    reference_for,
    write_predictions,
)
from tests.support.problems import problem
from tests.support.routes import BROWSER_ACCEPT

pytestmark = pytest.mark.django_db

COMPARE = "/api/tunix/runs/compare"
ITEMS = "/api/tunix/runs/compare/items"
CSV = "/api/tunix/runs/compare/items.csv"


def ids(*runs: TunixRun) -> str:
    return ",".join(str(run.id) for run in runs)


def ids_problem(response: Any) -> dict[str, Any]:
    """A 400 whose errors name ids."""
    body = problem(response, 400)
    assert body["errors"][0]["field"] == "ids", body
    assert body["detail"].startswith("ids: "), body
    return body


@pytest.fixture
def dataset() -> Dataset:
    return DatasetFactory(key="questions-v1")


@pytest.fixture
def runs(dataset: Dataset) -> list[TunixRun]:
    """Three trainings of one dataset: right on every item; wrong on lines 2 and 5 (and
    differently cased on line 3) with another learning rate and higher losses; and one with no
    evaluation at all."""
    right = [reference_for(line) for line in range(1, 9)]
    other = list(right)
    other[1] = "I do not know."
    other[2] = other[2].upper()  # the same answer once normalised
    other[4] = "Something else entirely."
    first = EvaluatedRunFactory(dataset=dataset, predictions=right)
    second = EvaluatedRunFactory(
        dataset=dataset,
        predictions=other,
        loss_scale=1.25,
        config={**first.config, "learning_rate": 0.001},
    )
    third = EvaluatedRunFactory(dataset=dataset, config={**first.config, "lora_rank": 8})
    return [first, second, third]


def test_the_comparison_has_each_runs_series_the_settings_that_differ_and_the_best_metrics(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    first, _, third = runs
    response = viewer_client.get(COMPARE, {"ids": ids(*runs)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [run["run_id"] for run in body["runs"]] == [str(run.id) for run in runs]
    assert [run["evaluated"] for run in body["runs"]] == [True, True, False]
    assert body["runs"][0]["dataset_key"] == "questions-v1"
    series = body["runs"][1]["series"]
    assert len(series["train_loss"]) == 48
    assert [point[0] for point in series["eval_loss"]] == [8, 16, 24, 32, 40, 48]
    assert set(series) == {"train_loss", "eval_loss", "learning_rate", "tokens_per_second"}
    # Only what differs, hyperparameters in PARAMS order; the shared dataset, model and mode
    # are left out.
    assert body["config"] == [
        {"name": "learning_rate", "values": [0.003, 0.001, 0.003]},
        {"name": "lora_rank", "values": [0, 0, 8]},
    ]
    metrics = {row["name"]: row for row in body["metrics"]}
    assert list(metrics) == [
        "train_loss",
        "eval_loss",
        "steps",
        "tokens_per_second",
        "wall_seconds",
        "compiled_shapes",
    ]
    # first and third have the same (lower) losses: both are the best.
    assert metrics["train_loss"]["better"] == "lower"
    assert metrics["train_loss"]["best"] == [str(first.id), str(third.id)]
    assert metrics["eval_loss"]["values"][1] > metrics["eval_loss"]["values"][0]
    assert metrics["steps"] == {
        "name": "steps",
        "better": None,
        "values": [48.0, 48.0, 48.0],
        "best": [],
    }
    assert metrics["tokens_per_second"]["best"] == []  # all equal: no best
    items = body["items"]
    assert items["comparable"] is True
    assert items["detail"] is None
    assert items["url"].endswith(f"{ITEMS}?ids={ids(*runs)}")
    assert items["csv_url"].endswith(f"{CSV}?ids={ids(*runs)}")


def test_the_best_is_the_lowest_loss_or_time_and_the_highest_score_or_throughput(
    viewer_client: APIClient, dataset: Dataset
) -> None:
    a = EvaluatedRunFactory(
        dataset=dataset,
        metrics={
            "eval_loss": 1.5,
            "wall_seconds": 30.0,
            "eval_seconds": 4.0,
            "tokens_per_second": 800.0,
            "rouge_l": 0.5,
            "exact_match": 0.25,
            "eval_items": 8,
        },
    )
    b = EvaluatedRunFactory(
        dataset=dataset,
        metrics={
            "eval_loss": 1.25,
            "wall_seconds": 40.0,
            "eval_seconds": 3.0,
            "tokens_per_second": 900.0,
            "rouge_l": 0.75,
            "exact_match": 0.125,
            "eval_items": 16,
            "token_f1": 0.5,  # only b has it: nothing to beat
        },
    )
    body = viewer_client.get(COMPARE, {"ids": ids(a, b)}).json()
    best = {row["name"]: row["best"] for row in body["metrics"]}
    assert best == {
        "eval_loss": [str(b.id)],
        "tokens_per_second": [str(b.id)],
        "wall_seconds": [str(a.id)],
        "eval_items": [],
        "eval_seconds": [str(b.id)],
        "exact_match": [str(a.id)],
        "token_f1": [],
        "rouge_l": [str(b.id)],
    }
    token_f1 = next(row for row in body["metrics"] if row["name"] == "token_f1")
    assert token_f1["values"] == [None, 0.5]


def test_runs_may_be_named_repeatedly_or_comma_separated_and_keep_that_order(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    first, second, third = runs
    query = f"ids={third.id}&ids={first.id},{second.id}&ids={third.id}"
    body = viewer_client.get(f"{COMPARE}?{query}").json()
    assert [run["run_id"] for run in body["runs"]] == [
        str(r) for r in (third.id, first.id, second.id)
    ]


@pytest.mark.parametrize("count", [0, 1, 11], ids=["no run", "one run", "eleven runs"])
def test_fewer_than_two_or_more_than_ten_runs_is_a_400_naming_ids(
    viewer_client: APIClient, dataset: Dataset, count: int
) -> None:
    chosen = [TunixRunFactory(dataset=dataset) for _ in range(count)]
    for path in (COMPARE, ITEMS, CSV):
        ids_problem(viewer_client.get(path, {"ids": ids(*chosen)}))


def test_the_same_run_twice_is_one_run_and_so_a_400(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    body = ids_problem(viewer_client.get(COMPARE, {"ids": ids(runs[0], runs[0])}))
    assert "at least 2" in body["detail"]


def test_a_malformed_id_is_a_400_naming_ids(viewer_client: APIClient, runs: list[TunixRun]) -> None:
    body = ids_problem(viewer_client.get(COMPARE, {"ids": f"{runs[0].id},not-a-run"}))
    assert "'not-a-run' is not a run id" in body["detail"]


def test_an_unknown_run_is_a_404(viewer_client: APIClient, runs: list[TunixRun]) -> None:
    missing = uuid.uuid4()
    for path in (COMPARE, ITEMS, CSV):
        body = problem(viewer_client.get(path, {"ids": f"{runs[0].id},{missing}"}), 404)
        assert body["detail"] == f"no run {missing}"


def launcher() -> User:
    member = UserFactory()
    member.user_permissions.add(
        Permission.objects.get(content_type__app_label="runs", codename="add_tunixrun")
    )
    return User.objects.get(pk=member.pk)


def test_someone_elses_run_is_a_404_as_if_it_did_not_exist(dataset: Dataset) -> None:
    alice, bob = launcher(), launcher()
    mine = EvaluatedRunFactory(dataset=dataset, created_by=alice)
    also_mine = EvaluatedRunFactory(dataset=dataset, created_by=alice)
    theirs = EvaluatedRunFactory(dataset=dataset, created_by=bob)
    client = APIClient()
    client.force_authenticate(alice)
    assert client.get(COMPARE, {"ids": ids(mine, also_mine)}).status_code == 200
    for path in (COMPARE, ITEMS, CSV):
        body = problem(client.get(path, {"ids": ids(mine, theirs)}), 404)
        assert body["detail"] == f"no run {theirs.id}"


def test_anonymous_callers_get_a_401_and_token_callers_an_answer(
    api_client: APIClient, runs: list[TunixRun], user: User
) -> None:
    from rest_framework.authtoken.models import Token

    problem(api_client.get(COMPARE, {"ids": ids(*runs)}), 401)
    token = Token.objects.create(user=user)
    answer = api_client.get(
        COMPARE, {"ids": ids(*runs)}, headers={"Authorization": f"Token {token.key}"}
    )
    assert answer.status_code == 200


def test_an_unknown_parameter_is_a_400_naming_it(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    body = problem(viewer_client.get(COMPARE, {"ids": ids(*runs), "pge": "2"}), 400)
    assert body["errors"][0]["field"] == "pge"
    body = problem(viewer_client.get(ITEMS, {"ids": ids(*runs), "page": "0"}), 400)
    assert body["errors"][0]["field"] == "page"


def test_items_are_matched_by_dataset_line_with_each_runs_prediction_and_scores(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    first, second, third = runs
    body = viewer_client.get(ITEMS, {"ids": ids(*runs)}).json()
    assert body["runs"] == [
        {"run_id": str(first.id), "evaluated": True},
        {"run_id": str(second.id), "evaluated": True},
        {"run_id": str(third.id), "evaluated": False},
    ]
    assert body["counts"] == {"items": 8, "disagree": 2}
    assert [item["line"] for item in body["data"]] == list(range(1, 9))
    line_two = body["data"][1]
    assert line_two["prompt"] == "What is the answer to question 2?"
    assert line_two["reference"] == reference_for(2)
    assert line_two["disagree"] is True
    assert line_two["predictions"] == [
        {
            "run_id": str(first.id),
            "prediction": reference_for(2),
            "scores": {"exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0},
        },
        {
            "run_id": str(second.id),
            "prediction": "I do not know.",
            "scores": {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0},
        },
        # No evaluation: no prediction, never an error.
        {"run_id": str(third.id), "prediction": None, "scores": {}},
    ]
    assert body["data"][2]["disagree"] is False  # upper-cased: the same once normalised
    assert body["pagination"] == {
        "page": 1,
        "per_page": 20,
        "pages": 1,
        "total": 8,
        "next": None,
        "previous": None,
    }


def test_the_disagreement_filter_keeps_items_whose_normalised_predictions_differ(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    body = viewer_client.get(ITEMS, {"ids": ids(*runs), "disagree": "1"}).json()
    assert [item["line"] for item in body["data"]] == [2, 5]
    assert body["counts"] == {"items": 8, "disagree": 2}
    assert body["pagination"]["total"] == 2


def test_a_line_only_some_runs_evaluated_is_shown_and_only_they_are_asked(
    viewer_client: APIClient, dataset: Dataset
) -> None:
    a = EvaluatedRunFactory(dataset=dataset, predictions=["x", "y", None])
    b = EvaluatedRunFactory(dataset=dataset, predictions=[None, "z", "w"])
    body = viewer_client.get(ITEMS, {"ids": ids(a, b)}).json()
    lines = {item["line"]: item for item in body["data"]}
    assert sorted(lines) == [1, 2, 3]
    assert [p["prediction"] for p in lines[1]["predictions"]] == ["x", None]
    assert [p["prediction"] for p in lines[3]["predictions"]] == [None, "w"]
    assert [lines[n]["disagree"] for n in (1, 2, 3)] == [False, True, False]


def test_items_are_paged_twenty_at_a_time_with_links_to_the_neighbouring_pages(
    viewer_client: APIClient, dataset: Dataset
) -> None:
    answers = [reference_for(line) for line in range(1, 46)]
    wrong = [a if line % 3 else "no" for line, a in enumerate(answers, start=1)]
    a = EvaluatedRunFactory(dataset=dataset, predictions=answers)
    b = EvaluatedRunFactory(dataset=dataset, predictions=wrong)
    first = viewer_client.get(ITEMS, {"ids": ids(a, b)}).json()
    assert [item["line"] for item in first["data"]] == list(range(1, 21))
    assert first["pagination"]["pages"] == 3
    assert first["pagination"]["previous"] is None
    second = viewer_client.get(first["pagination"]["next"]).json()
    assert [item["line"] for item in second["data"]] == list(range(21, 41))
    third = viewer_client.get(second["pagination"]["next"]).json()
    assert [item["line"] for item in third["data"]] == list(range(41, 46))
    assert third["pagination"]["next"] is None
    back = viewer_client.get(third["pagination"]["previous"]).json()
    assert back["data"] == second["data"]
    beyond = viewer_client.get(ITEMS, {"ids": ids(a, b), "page": "9"}).json()
    assert beyond["data"] == []
    assert beyond["pagination"]["previous"].endswith("page=3")
    # The filter is kept while paging: 15 disagreements, on lines 3, 6, ...
    disagreeing = viewer_client.get(ITEMS, {"ids": ids(a, b), "disagree": "true"}).json()
    assert disagreeing["pagination"]["total"] == 15
    assert [item["line"] for item in disagreeing["data"]][:3] == [3, 6, 9]
    assert disagreeing["pagination"]["next"] is None


def test_runs_of_different_datasets_compare_but_their_items_are_a_400_naming_ids(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    elsewhere = EvaluatedRunFactory(dataset=DatasetFactory(key="other-v1"), predictions=["a", "b"])
    query = {"ids": ids(runs[0], elsewhere)}
    body = viewer_client.get(COMPARE, query).json()
    assert body["config"][0] == {"name": "dataset_key", "values": ["questions-v1", "other-v1"]}
    assert body["items"] == {
        "comparable": False,
        "detail": "items can be compared only between runs of one dataset; these runs use "
        "questions-v1, other-v1",
        "url": None,
        "csv_url": None,
    }
    assert len(body["metrics"]) == 6
    for path in (ITEMS, CSV):
        assert "one dataset" in ids_problem(viewer_client.get(path, query))["detail"]


def test_malformed_prediction_lines_and_repeats_of_a_line_are_skipped(
    viewer_client: APIClient, dataset: Dataset
) -> None:
    a = EvaluatedRunFactory(dataset=dataset, predictions=["one", "two", "three"])
    b = EvaluatedRunFactory(dataset=dataset)
    write_predictions(
        b,
        [
            "{not json",
            "[1, 2]",
            json.dumps({"line": 0, "prediction": "zero"}),
            json.dumps({"line": True, "prediction": "bool"}),
            json.dumps({"line": 2, "prediction": 7}),
            json.dumps({"line": 1, "prediction": "ONE", "scores": {"rouge_l": "high"}}),
            json.dumps({"line": 1, "prediction": "a repeat"}),
            "",
            json.dumps({"line": 2, "prediction": "deux", "scores": {"exact_match": True}}),
            '{"line": 3, "prediction": "three", "scores": {"token_f1": 1e999}}',
        ],
    )
    body = viewer_client.get(ITEMS, {"ids": ids(a, b)}).json()
    predictions = {item["line"]: item["predictions"][1] for item in body["data"]}
    assert predictions[1]["prediction"] == "ONE"
    assert predictions[1]["scores"] == {}
    assert predictions[2]["prediction"] == "deux"
    assert predictions[2]["scores"] == {}
    assert predictions[3]["prediction"] is None  # a number JSON cannot hold: the line is skipped
    assert body["data"][0]["prompt"] == "What is the answer to question 1?"  # from run a


def test_a_predictions_file_is_read_only_up_to_the_limit_in_whole_lines(
    viewer_client: APIClient, dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = EvaluatedRunFactory(dataset=dataset, predictions=[f"answer {n}" for n in range(1, 31)])
    b = EvaluatedRunFactory(dataset=dataset, predictions=["answer 1"])
    size = len(json.dumps(prediction_record(1, "answer 1"))) + 1
    monkeypatch.setattr(comparison, "MAX_PREDICTIONS_BYTES", size * 10 + size // 2)
    body = viewer_client.get(ITEMS, {"ids": ids(a, b)}).json()
    assert body["counts"]["items"] == 10


def test_a_predictions_file_that_is_a_symbolic_link_is_not_followed(
    viewer_client: APIClient, dataset: Dataset, tmp_path: Any
) -> None:
    a = EvaluatedRunFactory(dataset=dataset, predictions=["x"])
    b = EvaluatedRunFactory(dataset=dataset)
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"line": 1, "prediction": "the secret"}) + "\n")
    link = write_predictions(b, [])
    link.unlink()
    link.symlink_to(secret)
    body = viewer_client.get(ITEMS, {"ids": ids(a, b)}).json()
    assert body["runs"][1]["evaluated"] is False
    assert body["data"][0]["predictions"][1]["prediction"] is None


def test_runs_without_any_predictions_compare_with_no_items(
    viewer_client: APIClient, dataset: Dataset
) -> None:
    dry = TunixRunFactory(dataset=dataset, completed=True)
    failed = TunixRunFactory(dataset=dataset, failed=True)
    body = viewer_client.get(COMPARE, {"ids": ids(dry, failed)}).json()
    assert body["metrics"] == []
    assert [run["series"]["train_loss"] for run in body["runs"]] == [[], []]
    items = viewer_client.get(ITEMS, {"ids": ids(dry, failed)}).json()
    assert items["data"] == []
    assert items["counts"] == {"items": 0, "disagree": 0}
    assert items["pagination"]["pages"] == 1


def csv_table(response: Any) -> list[list[str]]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="compare-items.csv"'
    text = response.content.decode()
    assert text.endswith("\r\n")
    return list(csv.reader(io.StringIO(text, newline="")))


def test_the_csv_has_every_item_side_by_side(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    table = csv_table(viewer_client.get(CSV, {"ids": ids(*runs)}))
    header = ["line", "prompt", "reference", "disagree"]
    for run in runs:
        header += [f"{run.id} {column}" for column in ("prediction", *SCORER_NAMES)]
    assert table[0] == header
    assert len(table) == 1 + 8
    assert table[2] == [
        "2",
        "What is the answer to question 2?",
        reference_for(2),
        "1",
        reference_for(2),
        "1.0",
        "1.0",
        "1.0",
        "I do not know.",
        "0.0",
        "0.0",
        "0.0",
        "",
        "",
        "",
        "",
    ]
    only = csv_table(viewer_client.get(CSV, {"ids": ids(*runs), "disagree": "1"}))
    assert [row[0] for row in only[1:]] == ["2", "5"]
    # A browser following the page's link asks for HTML first and gets the file all the same.
    browser = viewer_client.get(CSV, {"ids": ids(*runs)}, headers={"Accept": BROWSER_ACCEPT})
    assert csv_table(browser) == table


def test_the_browsable_api_shows_the_comparison_as_a_page(
    viewer_client: APIClient, runs: list[TunixRun]
) -> None:
    for path in (COMPARE, ITEMS):
        response = viewer_client.get(path, {"ids": ids(*runs)}, headers={"Accept": "text/html"})
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        assert str(runs[0].id) in response.content.decode()


def test_csv_cells_a_spreadsheet_would_run_as_a_formula_start_with_a_quote(
    viewer_client: APIClient, dataset: Dataset
) -> None:
    hostile = [
        '=HYPERLINK("http://evil.example")',
        "+1+2",
        "-3",
        "@SUM(A1)",
        "\tTAB",
        'a, "quoted"\r\nand two lines',
    ]
    a = EvaluatedRunFactory(
        dataset=dataset,
        predictions=[
            prediction_record(n, text, reference=text) for n, text in enumerate(hostile, 1)
        ],
    )
    b = EvaluatedRunFactory(dataset=dataset, predictions=["fine"])
    table = csv_table(viewer_client.get(CSV, {"ids": ids(a, b)}))
    predictions = [row[4] for row in table[1:]]
    assert predictions == [
        '\'=HYPERLINK("http://evil.example")',
        "'+1+2",
        "'-3",
        "'@SUM(A1)",
        "'\tTAB",
        'a, "quoted"\r\nand two lines',  # quoted by the CSV writer, kept whole
    ]
    assert [row[2] for row in table[1:]] == predictions  # references too


def test_compare_is_routed_before_the_run_detail_and_documented_in_the_schema(
    viewer_client: APIClient,
) -> None:
    assert resolve(COMPARE).url_name == "run-compare"
    assert resolve(ITEMS).url_name == "run-compare-items"
    assert resolve(CSV).url_name == "run-compare-items-csv"
    schema = yaml.safe_load(viewer_client.get("/api/schema/").content)
    paths = schema["paths"]
    for path in (COMPARE, ITEMS, CSV):
        operation = paths[path]["get"]
        parameters = {p["name"]: p for p in operation["parameters"]}
        assert parameters["ids"]["required"] is True
        assert parameters["ids"]["schema"]["maxItems"] == 10
        assert {"200", "400", "401", "404"} <= set(operation["responses"])
    assert {"page", "disagree"} <= {p["name"] for p in paths[ITEMS]["get"]["parameters"]}
    assert "text/csv" in paths[CSV]["get"]["responses"]["200"]["content"]
