"""The runs API: synchronous submit, keyset listing, detail and status, as a client sees them."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from runs.api.renderers import FastJSONRenderer
from runs.execution import local
from runs.models import Dataset, RunMode, RunStatus, TunixRun
from tests.conftest import DEMO_DATASET
from tests.factories import DatasetFactory, TunixRunFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

SUBMIT = "/api/tunix/run"
RUNS = "/api/tunix/runs"
BODY = {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}
LIST_ITEM_KEYS = {
    "run_id",
    "status",
    "mode",
    "algorithm",
    "dataset_key",
    "model_id",
    "queued_at",
    "started_at",
    "completed_at",
    "duration_seconds",
    "exit_code",
    "error_reason",
}


def field_problem(response: Any, field: str) -> dict[str, Any]:
    """A 400 whose errors list and detail both name ``field`` first."""
    body = problem(response, 400)
    assert body["errors"][0]["field"] == field, body
    assert body["detail"].startswith(f"{field}: "), body
    return body


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["run_id"] for item in response.json()["data"]]


def newest_first(runs: list[Any]) -> list[str]:
    """The API's order: queued_at descending, then id descending to break ties."""
    return [str(r.id) for r in sorted(runs, key=lambda r: (r.queued_at, r.id), reverse=True)]


def cursor_of(payload: object) -> str:
    """A cursor in the server's encoding, holding whatever payload a client forged."""
    raw = json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --------------------------------------------------------------------------- submit (sync)


def test_sync_dry_run_completes_with_the_real_validation_summary(
    operator_client: APIClient, demo_dataset: Dataset, operator: Any
) -> None:
    response = operator_client.post(SUBMIT, BODY, format="json")

    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["status"], run["mode"], run["exit_code"]) == ("completed", "dry-run", 0)
    assert run["error_reason"] == ""
    assert run["message"] == "dry-run validation passed"
    assert run["created_by"] == operator.username
    # The summary comes from reading the file, not from the registry row.
    file_sha256 = hashlib.sha256(DEMO_DATASET.read_bytes()).hexdigest()
    config = Path(settings.TUNIX_ARTIFACTS_ROOT).resolve() / run["run_id"] / "tunix_config.json"
    assert "records:          64 " in run["stdout"]
    assert f"sha256 {file_sha256}" in run["stdout"]
    assert f"config written:   {config}" in run["stdout"]
    assert response["Location"] == f"http://testserver{RUNS}/{run['run_id']}"
    assert run["output_dir"] == run["run_id"]
    assert TunixRun.objects.get(id=run["run_id"]).status == RunStatus.COMPLETED
    written = json.loads(config.read_text())
    assert written["run_id"] == run["run_id"]
    # A real model: the worker host's checkpoint directory for it, downloads off by default.
    assert written["model"] == {
        "id": "google/gemma-3-270m",
        "checkpoint_dir": str(Path(settings.TUNIX_MODELS_DIR) / "google" / "gemma-3-270m"),
        "allow_download": False,
    }
    assert written["dataset"]["key"] == "tunix-demo-v1"


def test_every_hyperparameter_is_accepted_and_stored(
    operator_client: APIClient, demo_dataset: Dataset
) -> None:
    hyperparameters = {
        "learning_rate": 0.001,
        "num_epochs": 2,
        "batch_size": 4,
        "max_seq_length": 512,
        "max_steps": 10,
        "eval_fraction": 0.25,
        "seed": 7,
        "lora_rank": 8,
        "lora_alpha": 32.0,
        "eval_max_items": 16,
        "max_new_tokens": 64,
        "temperature": 0.7,
    }
    body = {**BODY, **hyperparameters, "dry_run": True, "timeout_seconds": 60}
    response = operator_client.post(SUBMIT, body, format="json")

    assert response.status_code == 201, response.content
    run = response.json()
    assert run["config"] == hyperparameters
    assert run["timeout_seconds"] == 60
    assert "records:          64 (48 train / 16 eval)" in run["stdout"]
    assert "steps:            10 " in run["stdout"]  # max_steps caps 2 epochs x 12 steps


def test_omitted_hyperparameters_get_their_defaults(
    operator_client: APIClient, demo_dataset: Dataset
) -> None:
    run = operator_client.post(SUBMIT, BODY, format="json").json()
    assert run["config"]["learning_rate"] == 2e-5
    assert run["config"]["eval_fraction"] == 0.1
    assert run["config"]["max_steps"] is None
    assert (
        run["config"]["eval_max_items"],
        run["config"]["max_new_tokens"],
        run["config"]["temperature"],
    ) == (64, 32, 0.0)


def test_missing_dataset_is_a_400_naming_dataset_key_and_creates_no_run(
    operator_client: APIClient, demo_dataset: Dataset
) -> None:
    response = operator_client.post(SUBMIT, {**BODY, "dataset_key": "nope-v1"}, format="json")
    body = field_problem(response, "dataset_key")
    assert "nope-v1" in body["detail"]
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model_id": "bad id with spaces"}, "model_id"),
        ({"model_id": "org/name/extra"}, "model_id"),
        ({"model_id": "../../etc/passwd"}, "model_id"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"batch_size": -1}, "batch_size"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"eval_fraction": 0.9}, "eval_fraction"),
        ({"timeout_seconds": 10**9}, "timeout_seconds"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"unknown_knob": 1}, "unknown_knob"),
        ({"output_dir": "/tmp/elsewhere"}, "output_dir"),
        ({"dataset_key": "../x"}, "dataset_key"),
        ({"dataset_key": "a/b"}, "dataset_key"),
        ({"dataset_key": "x;rm -rf ~"}, "dataset_key"),
        ({"dataset_key": "UPPER-v1"}, "dataset_key"),
        ({"dry_run": "maybe"}, "dry_run"),
        ({"seed": None}, "seed"),
    ],
)
def test_each_bad_field_is_a_400_naming_it_and_creates_no_run(
    operator_client: APIClient, demo_dataset: Dataset, change: dict[str, Any], field: str
) -> None:
    response = operator_client.post(SUBMIT, {**BODY, **change}, format="json")
    field_problem(response, field)
    assert not TunixRun.objects.exists()


def test_missing_required_fields_are_all_named(operator_client: APIClient) -> None:
    body = problem(operator_client.post(SUBMIT, {}, format="json"), 400)
    assert {e["field"] for e in body["errors"]} == {"dataset_key", "model_id"}


@pytest.mark.parametrize("raw", ["{not json", '{"dataset_key": "tunix-demo-v1",', "[1, 2]", '"x"'])
def test_a_malformed_or_non_object_json_body_is_a_400_problem(
    operator_client: APIClient, demo_dataset: Dataset, raw: str
) -> None:
    problem(operator_client.post(SUBMIT, raw, content_type="application/json"), 400)
    assert not TunixRun.objects.exists()


def test_an_unknown_submit_mode_is_a_400_naming_mode(
    operator_client: APIClient, demo_dataset: Dataset
) -> None:
    response = operator_client.post(f"{SUBMIT}?mode=bogus", BODY, format="json")
    assert "bogus" in field_problem(response, "mode")["detail"]
    assert not TunixRun.objects.exists()


def test_local_mode_without_the_tunix_runtime_records_a_failed_run(
    operator_client: APIClient, demo_dataset: Dataset, monkeypatch: Any, settings: Any
) -> None:
    # Simulate a host without Tunix, whatever this machine has installed.
    settings.TUNIX_TRAINER_COMMAND = None
    monkeypatch.setattr(local, "tunix_runtime_available", lambda: False)

    body = {**BODY, "dry_run": False, "model_id": "tunix-rt/tiny-llama3"}
    response = operator_client.post(SUBMIT, body, format="json")

    assert response.status_code == 201  # the run exists; its outcome is in the body
    run = response.json()
    assert (run["mode"], run["status"]) == ("local", "failed")
    assert run["error_reason"] == "runtime_missing"
    assert "Tunix runtime" in run["message"]
    assert "pip install -r requirements-tunix.txt" in run["message"]
    assert response["Location"].endswith(f"{RUNS}/{run['run_id']}")
    row = TunixRun.objects.get(id=run["run_id"])
    assert (row.status, row.error_reason) == (RunStatus.FAILED, "runtime_missing")


def test_a_repeated_client_request_id_returns_the_first_run(
    operator_client: APIClient, demo_dataset: Dataset
) -> None:
    body = {**BODY, "client_request_id": "retry-1"}
    first = operator_client.post(SUBMIT, body, format="json")
    again = operator_client.post(SUBMIT, body, format="json")

    assert first.status_code == again.status_code == 201
    assert again.json()["run_id"] == first.json()["run_id"]
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert TunixRun.objects.count() == 1


# --------------------------------------------------------------------------- list


def test_list_is_newest_first_and_items_carry_no_output_or_config(
    viewer_client: APIClient,
) -> None:
    now = timezone.now()
    old = TunixRunFactory(queued_at=now - timedelta(minutes=5), stdout="out", stderr="err")
    middle = TunixRunFactory(queued_at=now - timedelta(minutes=1), config={"seed": 1})
    new = TunixRunFactory(queued_at=now)

    body = viewer_client.get(RUNS).json()

    assert [r["run_id"] for r in body["data"]] == [str(new.id), str(middle.id), str(old.id)]
    for item in body["data"]:
        assert set(item) == LIST_ITEM_KEYS
    assert body["pagination"] == {"limit": 20, "next_cursor": None, "next": None}


def test_default_limit_is_20(viewer_client: APIClient) -> None:
    TunixRunFactory.create_batch(21, dataset=DatasetFactory())
    body = viewer_client.get(RUNS).json()
    assert len(body["data"]) == 20
    assert body["pagination"]["next_cursor"]


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds_are_accepted(viewer_client: APIClient, limit: str) -> None:
    TunixRunFactory.create_batch(2, dataset=DatasetFactory())
    body = viewer_client.get(RUNS, {"limit": limit}).json()
    assert len(body["data"]) == min(int(limit), 2)
    assert body["pagination"]["limit"] == int(limit)


@pytest.mark.parametrize("limit", ["0", "-1", "101", "abc", "20.0", "1e1"])
def test_limit_out_of_bounds_is_a_400(viewer_client: APIClient, limit: str) -> None:
    field_problem(viewer_client.get(RUNS, {"limit": limit}), "limit")


def test_each_filter_narrows_the_list(viewer_client: APIClient) -> None:
    alpha, beta = DatasetFactory(key="alpha-v1"), DatasetFactory(key="beta-v1")
    done = TunixRunFactory(dataset=alpha, completed=True)
    failed = TunixRunFactory(dataset=beta, failed=True)
    local = TunixRunFactory(dataset=beta, mode=RunMode.LOCAL)
    pending = TunixRunFactory(dataset=alpha)

    def listed(**params: str) -> set[str]:
        return set(ids(viewer_client.get(RUNS, params)))

    assert listed() == {str(r.id) for r in (done, failed, local, pending)}
    assert listed(status="completed") == {str(done.id)}
    assert listed(status="failed") == {str(failed.id)}
    assert listed(status="pending") == {str(local.id), str(pending.id)}
    assert listed(mode="local") == {str(local.id)}
    assert listed(mode="dry-run") == {str(done.id), str(failed.id), str(pending.id)}
    assert listed(dataset_key="alpha-v1") == {str(done.id), str(pending.id)}
    assert listed(dataset_key="beta-v1", status="pending") == {str(local.id)}


def test_an_unknown_dataset_key_filter_is_an_empty_list_not_an_error(
    viewer_client: APIClient,
) -> None:
    TunixRunFactory()
    assert ids(viewer_client.get(RUNS, {"dataset_key": "unknown-v1"})) == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"mode": "remote"}, "mode"),
        ({"dataset_key": "../x"}, "dataset_key"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_filters_are_a_400_naming_the_parameter(
    viewer_client: APIClient, params: dict[str, str], field: str
) -> None:
    field_problem(viewer_client.get(RUNS, params), field)


def test_cursor_pages_return_every_run_once_in_order_even_with_equal_timestamps(
    viewer_client: APIClient,
) -> None:
    moment = timezone.now()
    dataset = DatasetFactory()
    # 25 runs share one queued_at, so a page boundary falls inside the tie.
    runs = TunixRunFactory.create_batch(25, dataset=dataset, queued_at=moment)
    runs += [
        TunixRunFactory(dataset=dataset, queued_at=moment - timedelta(seconds=s))
        for s in range(1, 11)
    ]
    runs += TunixRunFactory.create_batch(10, dataset=dataset, queued_at=moment + timedelta(hours=1))

    seen: list[str] = []
    pages: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "20"}
    while True:
        body = viewer_client.get(RUNS, params).json()
        pages.append(body)
        seen += [item["run_id"] for item in body["data"]]
        cursor = body["pagination"]["next_cursor"]
        if cursor is None:
            assert body["pagination"]["next"] is None
            break
        # next is the same request with the cursor filled in
        assert body["pagination"]["next"].startswith(f"http://testserver{RUNS}?")
        assert f"cursor={cursor}" in body["pagination"]["next"]
        params = {"limit": "20", "cursor": cursor}

    assert [len(p["data"]) for p in pages] == [20, 20, 5]
    assert seen == newest_first(runs)
    assert len(set(seen)) == 45


def test_following_next_keeps_the_filters(viewer_client: APIClient) -> None:
    dataset = DatasetFactory()
    failed = TunixRunFactory.create_batch(3, dataset=dataset, failed=True)
    TunixRunFactory.create_batch(3, dataset=dataset)

    first = viewer_client.get(RUNS, {"status": "failed", "limit": "2"}).json()
    assert "status=failed" in first["pagination"]["next"]
    second = viewer_client.get(first["pagination"]["next"]).json()

    walked = [r["run_id"] for r in first["data"] + second["data"]]
    assert walked == newest_first(failed)
    assert second["pagination"]["next_cursor"] is None


@pytest.mark.parametrize("cursor", ["garbage", "!!!", cursor_of(["yesterday", "nope"]), "e30"])
def test_a_garbage_cursor_is_a_400(viewer_client: APIClient, cursor: str) -> None:
    TunixRunFactory()
    field_problem(viewer_client.get(RUNS, {"cursor": cursor}), "cursor")


def test_a_forged_cursor_with_a_non_string_id_is_a_400(viewer_client: APIClient) -> None:
    TunixRunFactory()
    forged = cursor_of(["2024-01-01T00:00:00+00:00", 5])
    field_problem(viewer_client.get(RUNS, {"cursor": forged}), "cursor")


@pytest.mark.parametrize(
    "stamp",
    ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],  # outside years 1-9999 in UTC
)
def test_a_forged_cursor_at_the_edge_of_time_is_never_a_server_error(
    viewer_client: APIClient, stamp: str
) -> None:
    TunixRunFactory()
    response = viewer_client.get(RUNS, {"cursor": cursor_of([stamp, str(uuid.UUID(int=0))])})
    # A well-formed cursor may list from that instant or be refused; it must not crash.
    if response.status_code != 200:
        field_problem(response, "cursor")


def test_offset_skips_runs_for_old_clients(viewer_client: APIClient) -> None:
    now = timezone.now()
    runs = [TunixRunFactory(queued_at=now - timedelta(seconds=s)) for s in range(5)]
    assert ids(viewer_client.get(RUNS, {"offset": "2", "limit": "2"})) == [
        str(runs[2].id),
        str(runs[3].id),
    ]
    assert ids(viewer_client.get(RUNS, {"offset": "10000"})) == []


@pytest.mark.parametrize("offset", ["10001", "-1", "abc", "0.0"])
def test_offset_out_of_bounds_is_a_400(viewer_client: APIClient, offset: str) -> None:
    field_problem(viewer_client.get(RUNS, {"offset": offset}), "offset")


# --------------------------------------------------------------------------- detail and status


def test_detail_returns_the_full_record(viewer_client: APIClient) -> None:
    run = TunixRunFactory(
        failed=True, stdout="out", stderr="err", error_message="boom", config={"seed": 3}
    )
    response = viewer_client.get(f"{RUNS}/{run.id}")

    assert response.status_code == 200
    body = response.json()
    assert body["run_id"] == str(run.id)
    assert (body["status"], body["exit_code"], body["error_reason"]) == (
        "failed",
        1,
        "nonzero_exit",
    )
    assert (body["stdout"], body["stderr"], body["config"]) == ("out", "err", {"seed": 3})
    assert body["message"] == "boom"
    assert body["dataset_key"] == run.dataset.key
    assert body["output_dir"] == str(run.id)


def test_status_returns_the_pollers_view_with_an_etag(viewer_client: APIClient) -> None:
    run = TunixRunFactory(completed=True)
    response = viewer_client.get(f"{RUNS}/{run.id}/status")

    assert response.status_code == 200
    body = response.json()
    assert (body["run_id"], body["status"], body["exit_code"]) == (str(run.id), "completed", 0)
    assert body["attempt"] == 1
    assert "stdout" not in body
    unchanged = viewer_client.get(
        f"{RUNS}/{run.id}/status", headers={"If-None-Match": response["ETag"]}
    )
    assert unchanged.status_code == 304


@pytest.mark.parametrize("suffix", ["", "/status"])
@pytest.mark.parametrize(
    "run_id",
    [
        str(uuid.uuid4()),  # well-formed, no such run
        "nope",
        "12345",
        "1' or '1'='1",
        f"{uuid.uuid4()}x",
    ],
)
def test_unknown_or_malformed_run_ids_are_404_problems(
    viewer_client: APIClient, run_id: str, suffix: str
) -> None:
    TunixRunFactory()
    problem(viewer_client.get(f"{RUNS}/{run_id}{suffix}"), 404)


@pytest.mark.parametrize("path", [f"{RUNS}/", f"{SUBMIT}/", "/api/tunix/nothing-here"])
def test_unknown_api_paths_are_404_problems(viewer_client: APIClient, path: str) -> None:
    body = problem(viewer_client.get(path), 404)
    if path.endswith("/"):
        assert "no trailing slash" in body["detail"]


@pytest.mark.parametrize("renderer", ["json", "api"])
def test_the_format_override_is_not_taken_for_a_filter(
    viewer_client: APIClient, renderer: str
) -> None:
    # The browsable API links to ?format=json; DRF reads it to choose the renderer.
    run = TunixRunFactory()
    response = viewer_client.get(RUNS, {"format": renderer})
    assert response.status_code == 200
    assert str(run.id) in response.content.decode()


def test_sync_output_is_truncated_to_the_configured_limit(
    operator_client: APIClient, demo_dataset: Dataset, settings: Any
) -> None:
    settings.TUNIX_OUTPUT_MAX_BYTES = 256
    run = operator_client.post(SUBMIT, BODY, format="json").json()
    assert len(run["stdout"].encode()) <= 256
    assert "bytes omitted" in run["stdout"]


def test_list_does_not_count_the_table(
    viewer_client: APIClient, django_assert_max_num_queries: Any, settings: Any
) -> None:
    TunixRunFactory.create_batch(30)
    # The budget is the list's own: this process's metrics flush (every
    # TUNIX_METRICS_FLUSH_SECONDS, after whichever request comes due) is not part of it.
    settings.TUNIX_METRICS_FLUSH_SECONDS = 10**9
    with django_assert_max_num_queries(3) as queries:
        viewer_client.get(RUNS, {"limit": 20})
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def _as_clients_read_it(data: Any) -> Any:
    """What a client parses from the API's renderer (datetimes become DRF's strings)."""
    return json.loads(FastJSONRenderer().render(data))


def _as_drf_renders(data: Any) -> Any:
    return json.loads(JSONRenderer().render(data))


def test_fast_list_items_match_the_documented_serializer() -> None:
    from runs import selectors
    from runs.api.serializers import RunListItemSerializer, list_item

    TunixRunFactory(failed=True)
    TunixRunFactory()
    runs = selectors.run_list(filters=selectors.RunFilters(), limit=10).items
    rows = selectors.run_list_rows(filters=selectors.RunFilters(), limit=10).items
    documented = RunListItemSerializer(runs, many=True).data
    assert len(rows) == 2
    assert _as_clients_read_it([list_item(row) for row in rows]) == _as_drf_renders(documented)


def test_fast_status_items_match_the_documented_serializer() -> None:
    from runs import selectors
    from runs.api.serializers import RunStatusSerializer, status_item
    from runs.selectors import STATUS_FIELDS

    runs = [
        TunixRunFactory(failed=True),
        TunixRunFactory(),
        TunixRunFactory(
            progress={"step": 3, "total_steps": 24, "loss": 2, "loss_mean": None, "note": "x"}
        ),
    ]
    for run in runs:
        orm_row = TunixRun.objects.filter(id=run.id).values(*STATUS_FIELDS).get()
        row = selectors.run_status(run_id=run.id)
        assert row == orm_row
        documented = RunStatusSerializer(orm_row).data
        assert _as_clients_read_it(status_item(row)) == _as_drf_renders(documented)
    assert selectors.run_status(run_id=runs[0].id, owner=-1) is None


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"status": "failed"},
        {"mode": "local"},
        {"dataset_key": "other-v1"},
        {"status": "completed", "mode": "dry-run", "dataset_key": "other-v1"},
        {"dataset_key": "missing-v1"},
    ],
)
def test_the_api_rows_and_the_page_models_walk_the_same_pages(filters: dict[str, Any]) -> None:
    from runs import selectors

    base, other = DatasetFactory(key="base-v1"), DatasetFactory(key="other-v1")
    moment = timezone.now()
    for i in range(9):
        # Three runs share each timestamp, so ties are broken by id across page ends.
        TunixRunFactory(
            queued_at=moment - timedelta(seconds=i // 3),
            dataset=other if i % 2 else base,
            mode=RunMode.LOCAL if i % 3 == 0 else RunMode.DRY_RUN,
            failed=i % 4 == 0,
        )
    chosen = selectors.RunFilters(**filters)
    walked_rows, walked_models = [], []
    row_cursor = model_cursor = None
    for _ in range(10):
        rows = selectors.run_list_rows(filters=chosen, limit=2, cursor=row_cursor)
        models = selectors.run_list(filters=chosen, limit=2, cursor=model_cursor)
        walked_rows += [(r.id, r.dataset_key, r.status, r.queued_at) for r in rows.items]
        walked_models += [(m.id, m.dataset.key, m.status, m.queued_at) for m in models.items]
        assert rows.next_cursor == models.next_cursor
        row_cursor, model_cursor = rows.next_cursor, models.next_cursor
        if row_cursor is None:
            break
    assert walked_rows == walked_models
    assert (
        len(walked_rows)
        == TunixRun.objects.filter(
            **{("dataset__key" if k == "dataset_key" else k): v for k, v in filters.items()}
        ).count()
    )


def test_the_fast_accepted_body_matches_the_documented_serializer() -> None:
    from rest_framework.test import APIRequestFactory

    from runs.api.serializers import RunAcceptedSerializer, accepted_item

    run = TunixRunFactory()
    request = APIRequestFactory().get("/")
    documented = RunAcceptedSerializer(run, context={"request": request}).data
    fast = accepted_item(run, documented["status_url"])
    assert _as_clients_read_it(fast) == _as_drf_renders(documented)
    assert documented["status_url"].endswith(f"/api/tunix/runs/{run.id}/status")
