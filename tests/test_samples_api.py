"""Try-it samples through the API: refusals that name the field or the reason and create
nothing, 202 with the queued task, the polled shape, who sees which sample, the per-user cap,
a registered version's samples, and the worker's side (the child process's answers recorded,
a missing runtime, a timeout) with the child replaced by what it would print."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from rest_framework.test import APIClient

from runs import artifacts, executor, services
from runs.execution import local
from runs.models import (
    ExportStatus,
    ModelVersion,
    RegisteredModel,
    RunExport,
    RunMode,
    Sample,
    SampleStatus,
    TunixRun,
)
from runs.progress import ERROR_PREFIX, RESULT_PREFIX
from tests.factories import TunixRunFactory, UserFactory
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

ITEM_KEYS = {
    "id", "status", "prompt", "completion", "max_new_tokens", "temperature", "seed", "step",
    "load_seconds", "generate_seconds", "seconds", "error_reason", "error_message", "url",
    "created_at", "completed_at",
}  # fmt: skip


def checkpoints(run: TunixRun, *steps: int) -> None:
    """Complete Orbax checkpoint directories (the metadata file is what marks one done)."""
    for step in steps:
        directory = artifacts.run_directory(run) / "checkpoints" / "attempt-1" / str(step)
        directory.mkdir(parents=True)
        (directory / "_CHECKPOINT_METADATA").write_text("{}")


@pytest.fixture
def trained(operator: Any) -> TunixRun:
    run: TunixRun = TunixRunFactory(completed=True, mode=RunMode.LOCAL, created_by=operator)
    checkpoints(run, 12, 24)
    return run


def samples_url(run: TunixRun) -> str:
    return f"/api/tunix/runs/{run.id}/samples"


def make_version(run: TunixRun, *, weights: str = "merged", step: int = 24) -> ModelVersion:
    export = RunExport.objects.create(
        run=run, step=step, weights=weights, status=ExportStatus.COMPLETED, sha256="a" * 64
    )
    model = RegisteredModel.objects.create(name="tiny-chat")
    return ModelVersion.objects.create(
        model=model, number=1, sha256=export.sha256, export=export, run=run, step=step,
        weights=weights, algorithm=run.algorithm, base_model_id=run.model_id,
        dataset_key="tunix-demo-v1", dataset_sha256="b" * 64,
    )  # fmt: skip


VERSION_URL = "/api/tunix/registry/models/tiny-chat/versions/1/samples"


# --------------------------------------------------------------------------- asking


def test_a_sample_is_queued_with_its_defaults_and_polled_at_its_location(
    operator_client: APIClient, trained: TunixRun
) -> None:
    answer = operator_client.post(samples_url(trained), {"prompt": "What is 2+2?"}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert set(body) == ITEM_KEYS
    assert answer["Location"] == body["url"]
    assert body["url"] == f"http://testserver{samples_url(trained)}/{body['id']}"
    assert (body["status"], body["step"], body["max_new_tokens"]) == ("pending", 24, 64)
    assert (body["temperature"], body["seed"], body["completion"]) == (0.0, 0, "")
    assert body["seconds"] is None
    (task,) = OrmQ.objects.all()  # committed with the row
    assert task.task["func"] == "runs.tasks.sample_run"
    assert task.task["args"] == (body["id"],)

    polled = operator_client.get(body["url"])
    assert polled.status_code == 200
    assert polled.json() == body


def test_a_completed_sample_shows_its_completion_and_how_long_it_took(
    operator_client: APIClient, trained: TunixRun
) -> None:
    body = operator_client.post(
        samples_url(trained), {"prompt": "Hi", "step": 12, "temperature": 0.7}, format="json"
    ).json()
    assert body["step"] == 12
    assert 0 <= body["seed"] <= 2**31 - 1  # drawn, and recorded so it can be asked again
    sample = Sample.objects.get(id=body["id"])
    Sample.objects.filter(id=sample.id).update(
        status=SampleStatus.COMPLETED,
        completion="Hello there",
        load_seconds=3.5,
        generate_seconds=0.25,
        completed_at=sample.created_at + timedelta(seconds=4.5),
    )
    done = operator_client.get(body["url"]).json()
    assert (done["status"], done["completion"]) == ("completed", "Hello there")
    assert (done["load_seconds"], done["generate_seconds"], done["seconds"]) == (3.5, 0.25, 4.5)


def test_the_runs_samples_are_listed_newest_first(
    operator_client: APIClient, trained: TunixRun, operator: Any
) -> None:
    for prompt in ("first", "second", "third"):
        services.sample_request(user=operator, run_id=trained.id, prompt=prompt)
    listed = operator_client.get(samples_url(trained)).json()
    assert [item["prompt"] for item in listed] == ["third", "second", "first"]
    assert [i["prompt"] for i in operator_client.get(f"{samples_url(trained)}?limit=1").json()] == [
        "third"
    ]
    problem(operator_client.get(f"{samples_url(trained)}?limit=0"), 400)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"prompt": ""}, "prompt", "must not be empty"),
        ({"prompt": " \n\t "}, "prompt", "must not be empty"),
        ({"prompt": "x" * 4001}, "prompt", "4001 characters; the limit is 4000"),
        ({}, "prompt", "required"),
        ({"prompt": "Hi", "max_new_tokens": 0}, "max_new_tokens", "from 1 to 512"),
        ({"prompt": "Hi", "max_new_tokens": 513}, "max_new_tokens", "from 1 to 512"),
        ({"prompt": "Hi", "temperature": -0.5}, "temperature", "from 0 to 2"),
        ({"prompt": "Hi", "temperature": 2.5}, "temperature", "from 0 to 2"),
        ({"prompt": "Hi", "step": 7}, "step", "no checkpoint at step 7; this run has 12, 24"),
        ({"prompt": "Hi", "seed": -1}, "seed", "from 0 to"),
        ({"prompt": "Hi", "top_k": 5}, "top_k", "unknown field"),
    ],
)
def test_a_bad_sample_request_is_a_400_naming_the_field_and_creates_nothing(
    operator_client: APIClient, trained: TunixRun, body: dict[str, Any], field: str, words: str
) -> None:
    refused = problem(operator_client.post(samples_url(trained), body, format="json"), 400)
    assert refused["errors"][0]["field"] == field
    assert words in refused["errors"][0]["message"]
    assert not Sample.objects.exists()
    assert not OrmQ.objects.exists()


def test_the_limits_come_from_the_settings(
    operator_client: APIClient, trained: TunixRun, settings: Any
) -> None:
    settings.TUNIX_SAMPLE_MAX_PROMPT_CHARS = 10
    settings.TUNIX_SAMPLE_MAX_NEW_TOKENS = 8
    refused = problem(
        operator_client.post(samples_url(trained), {"prompt": "x" * 11}, format="json"), 400
    )
    assert "the limit is 10" in refused["errors"][0]["message"]
    refused = problem(
        operator_client.post(
            samples_url(trained), {"prompt": "Hi", "max_new_tokens": 9}, format="json"
        ),
        400,
    )
    assert "from 1 to 8" in refused["errors"][0]["message"]
    # The default of 64 new tokens is held to the limit too.
    answer = operator_client.post(samples_url(trained), {"prompt": "x" * 10}, format="json")
    assert (answer.status_code, answer.json()["max_new_tokens"]) == (202, 8)


@pytest.mark.parametrize(
    ("traits", "words"),
    [
        ({"completed": True, "mode": RunMode.DRY_RUN}, "a dry-run run"),
        ({"failed": True, "mode": RunMode.LOCAL}, "a failed run"),
        ({"running": True, "mode": RunMode.LOCAL}, "a running run"),
    ],
)
def test_only_a_completed_training_can_be_sampled(
    operator_client: APIClient, operator: Any, traits: dict[str, Any], words: str
) -> None:
    run = TunixRunFactory(created_by=operator, **traits)
    checkpoints(run, 8)
    refused = problem(operator_client.post(samples_url(run), {"prompt": "Hi"}, format="json"), 409)
    assert words in refused["detail"]
    assert not Sample.objects.exists()


def test_a_run_without_a_checkpoint_has_nothing_to_sample(
    operator_client: APIClient, operator: Any
) -> None:
    run = TunixRunFactory(completed=True, mode=RunMode.LOCAL, created_by=operator)
    refused = problem(operator_client.post(samples_url(run), {"prompt": "Hi"}, format="json"), 409)
    assert "no complete checkpoint" in refused["detail"]
    assert not Sample.objects.exists()


def test_sampling_needs_launch_rights_and_someone_elses_run_is_a_404(
    trained: TunixRun, viewer_client: APIClient, operator: Any
) -> None:
    # The plain user sees every run (runs.view_tunixrun) but may not launch work.
    refused = problem(
        viewer_client.post(samples_url(trained), {"prompt": "Hi"}, format="json"), 403
    )
    assert "runs.add_tunixrun" in refused["detail"]
    sample = services.sample_request(user=operator, run_id=trained.id, prompt="mine")
    assert viewer_client.get(f"{samples_url(trained)}/{sample.id}").status_code == 200
    outsider = APIClient()
    outsider.force_authenticate(UserFactory())  # no permissions: sees only their own runs
    problem(outsider.post(samples_url(trained), {"prompt": "Hi"}, format="json"), 404)
    problem(outsider.get(samples_url(trained)), 404)
    problem(outsider.get(f"{samples_url(trained)}/{sample.id}"), 404)
    assert Sample.objects.count() == 1


def test_a_sample_is_found_only_under_its_own_run(
    operator_client: APIClient, trained: TunixRun, operator: Any
) -> None:
    sample = services.sample_request(user=operator, run_id=trained.id, prompt="Hi")
    other = TunixRunFactory(completed=True, mode=RunMode.LOCAL, created_by=operator)
    problem(operator_client.get(f"{samples_url(other)}/{sample.id}"), 404)
    problem(operator_client.get(f"{samples_url(trained)}/not-a-sample"), 404)
    problem(operator_client.get(f"/api/tunix/runs/not-a-run/samples/{sample.id}"), 404)


def test_a_user_with_four_samples_waiting_is_refused_a_fifth(
    operator_client: APIClient, trained: TunixRun, operator: Any
) -> None:
    asked = [
        operator_client.post(samples_url(trained), {"prompt": f"p{i}"}, format="json")
        for i in range(4)
    ]
    assert [a.status_code for a in asked] == [202] * 4
    Sample.objects.filter(id=asked[0].json()["id"]).update(
        status=SampleStatus.RUNNING, started_at=timezone.now()
    )
    refused = problem(
        operator_client.post(samples_url(trained), {"prompt": "p5"}, format="json"), 409
    )
    assert "4 samples waiting or running; the limit is 4" in refused["detail"]
    assert Sample.objects.count() == 4
    # Another user's queue is their own.
    other = UserFactory()
    other.user_permissions.set(operator.user_permissions.all())
    assert services.sample_request(user=other, run_id=trained.id, prompt="theirs")
    # One finished: there is room again.
    Sample.objects.filter(id=asked[1].json()["id"]).update(
        status=SampleStatus.FAILED, error_reason="timeout", completed_at=timezone.now()
    )
    again = operator_client.post(samples_url(trained), {"prompt": "p5"}, format="json")
    assert again.status_code == 202


def test_a_sample_whose_worker_was_lost_is_failed_and_frees_its_place(
    operator_client: APIClient, trained: TunixRun, operator: Any
) -> None:
    for index in range(4):
        services.sample_request(user=operator, run_id=trained.id, prompt=f"p{index}")
    lost = Sample.objects.order_by("created_at").first()
    assert lost is not None
    Sample.objects.filter(id=lost.id).update(
        status=SampleStatus.RUNNING, started_at=timezone.now() - timedelta(hours=1)
    )
    answer = operator_client.post(samples_url(trained), {"prompt": "p5"}, format="json")
    assert answer.status_code == 202
    lost.refresh_from_db()
    assert (lost.status, lost.error_reason) == (SampleStatus.FAILED, "worker_lost")
    assert lost.completed_at is not None


# --------------------------------------------------------------------------- a registered version


def test_a_registered_version_is_sampled_at_its_step_and_polled_under_the_registry(
    operator_client: APIClient, trained: TunixRun, operator: Any
) -> None:
    make_version(trained, step=12)
    answer = operator_client.post(VERSION_URL, {"prompt": "Hello"}, format="json")
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert body["step"] == 12
    assert body["url"] == f"http://testserver{VERSION_URL}/{body['id']}"
    assert answer["Location"] == body["url"]
    assert operator_client.get(body["url"]).json()["id"] == body["id"]
    assert [item["id"] for item in operator_client.get(VERSION_URL).json()] == [body["id"]]
    # The run's own list holds its checkpoint's samples, not its versions'.
    assert operator_client.get(samples_url(trained)).json() == []
    refused = problem(
        operator_client.post(VERSION_URL, {"prompt": "Hi", "step": 24}, format="json"), 400
    )
    assert refused["errors"][0]["field"] == "step"
    problem(operator_client.post(VERSION_URL, {"prompt": ""}, format="json"), 400)
    assert Sample.objects.count() == 1


def test_a_versions_samples_are_seen_by_who_asked_and_by_those_who_see_every_run(
    operator_client: APIClient, viewer_client: APIClient, trained: TunixRun, operator: Any
) -> None:
    make_version(trained)
    body = operator_client.post(VERSION_URL, {"prompt": "Hello"}, format="json").json()
    assert viewer_client.get(body["url"]).status_code == 200  # runs.view_tunixrun
    member = UserFactory()  # reads the registry, launches nothing, sees only their own runs
    outsider = APIClient()
    outsider.force_authenticate(member)
    problem(outsider.get(body["url"]), 404)
    assert outsider.get(VERSION_URL).json() == []
    problem(outsider.post(VERSION_URL, {"prompt": "Hi"}, format="json"), 403)


def test_an_unknown_version_or_model_is_a_404(
    operator_client: APIClient, trained: TunixRun
) -> None:
    make_version(trained)
    for url in (
        "/api/tunix/registry/models/tiny-chat/versions/2/samples",
        "/api/tunix/registry/models/no-such-model/versions/1/samples",
        "/api/tunix/registry/models/tiny-chat/versions/99999999999/samples",
    ):
        problem(operator_client.get(url), 404)
        problem(operator_client.post(url, {"prompt": "Hi"}, format="json"), 404)
    sample = services.sample_request(user=None, run_id=trained.id, prompt="the run's")
    problem(operator_client.get(f"{VERSION_URL}/{sample.id}"), 404)
    assert Sample.objects.count() == 1


# --------------------------------------------------------------------------- the worker's side


def fake_child(
    monkeypatch: pytest.MonkeyPatch, stdout: str, *, exit_code: int = 0, timed_out: bool = False
) -> list[dict[str, Any]]:
    """executor.execute replaced by a child that printed ``stdout``; each call's argv and the
    config file it was given, read while it existed."""
    calls: list[dict[str, Any]] = []

    def execute(argv: list[str], **options: Any) -> executor.ExecutionResult:
        config = Path(argv[-1])
        calls.append(
            {"argv": argv, "config": json.loads(config.read_text()), "path": config, **options}
        )
        return executor.ExecutionResult(
            exit_code=None if timed_out else exit_code,
            stdout=stdout,
            stderr="Traceback: boom" if exit_code else "",
            timed_out=timed_out,
            cancelled=False,
            duration_seconds=1.0,
            stdout_bytes=len(stdout),
            stderr_bytes=0,
        )

    monkeypatch.setattr(local, "tunix_runtime_available", lambda: True)
    monkeypatch.setattr(executor, "execute", execute)
    return calls


def result_line(**values: Any) -> str:
    return RESULT_PREFIX + json.dumps(values) + "\n"


def test_the_childs_completion_is_recorded_with_load_and_compile_apart_from_generation(
    trained: TunixRun, operator: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    sample = services.sample_request(
        user=operator, run_id=trained.id, prompt="Hi", temperature=0.5, seed=7, max_new_tokens=9
    )
    calls = fake_child(
        monkeypatch,
        "some noise\n"
        + result_line(
            completion="Hello\x00!",
            prompt_tokens=3,
            new_tokens=6,
            load_seconds=4.0,
            compile_seconds=1.5,
            generate_seconds=0.25,
        ),
    )
    assert services.sample_execute(sample_id=sample.id) == SampleStatus.COMPLETED
    sample.refresh_from_db()
    assert sample.status == SampleStatus.COMPLETED
    assert sample.completion == "Hello\ufffd!"  # PostgreSQL's text holds no NUL
    assert (sample.load_seconds, sample.generate_seconds) == (5.5, 0.25)
    assert sample.completed_at is not None
    assert sample.seconds is not None
    (call,) = calls
    assert call["argv"][1:3] == ["-m", "runs.sample"]
    run_dir = artifacts.run_directory(trained)
    assert call["config"] == {
        "run_dir": str(run_dir), "step": 24, "prompt": "Hi", "max_new_tokens": 9,
        "temperature": 0.5, "seed": 7,
    }  # fmt: skip
    assert call["cwd"] == run_dir
    assert call["timeout_seconds"] == 300
    assert call["env"]["JAX_COMPILATION_CACHE_DIR"] == settings.TUNIX_SAMPLE_COMPILE_CACHE_DIR
    assert call["path"].parent == run_dir
    assert not call["path"].exists()  # the config, with the prompt in it, is gone


def test_the_childs_refusal_and_a_crash_are_recorded_with_their_reason(
    trained: TunixRun, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = services.sample_request(user=operator, run_id=trained.id, prompt="Hi")
    refusal = ERROR_PREFIX + json.dumps({"reason": "model_unavailable", "message": "no base"})
    fake_child(monkeypatch, refusal + "\n", exit_code=2)
    assert services.sample_execute(sample_id=first.id) == SampleStatus.FAILED
    first.refresh_from_db()
    assert (first.error_reason, first.error_message) == ("model_unavailable", "no base")

    second = services.sample_request(user=operator, run_id=trained.id, prompt="Hi")
    fake_child(monkeypatch, "", exit_code=1)
    assert services.sample_execute(sample_id=second.id) == SampleStatus.FAILED
    second.refresh_from_db()
    assert second.error_reason == "nonzero_exit"
    assert "exit code 1" in second.error_message
    assert "Traceback: boom" in second.error_message


def test_a_sample_past_its_timeout_is_failed_as_a_timeout(
    trained: TunixRun, operator: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.TUNIX_SAMPLE_TIMEOUT_SECONDS = 7
    sample = services.sample_request(user=operator, run_id=trained.id, prompt="Hi")
    calls = fake_child(monkeypatch, "", timed_out=True)
    assert services.sample_execute(sample_id=sample.id) == SampleStatus.FAILED
    sample.refresh_from_db()
    assert (sample.error_reason, sample.error_message) == ("timeout", "the sample took over 7 s")
    assert calls[0]["timeout_seconds"] == 7


def test_without_the_runtime_a_sample_fails_as_runtime_missing(
    trained: TunixRun, operator: Any, monkeypatch: pytest.MonkeyPatch, operator_client: APIClient
) -> None:
    monkeypatch.setattr(local, "tunix_runtime_available", lambda: False)
    sample = services.sample_request(user=operator, run_id=trained.id, prompt="Hi")
    assert services.sample_execute(sample_id=sample.id) == SampleStatus.FAILED
    polled = operator_client.get(f"{samples_url(trained)}/{sample.id}").json()
    assert (polled["status"], polled["error_reason"]) == ("failed", "runtime_missing")
    assert "Tunix runtime" in polled["error_message"]
    assert "not installed" in polled["error_message"]
    assert polled["completed_at"] is not None


def test_a_sample_task_delivered_twice_runs_once_and_a_stale_one_is_taken_again(
    trained: TunixRun, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_child(monkeypatch, result_line(completion="ok"))
    sample = services.sample_request(user=operator, run_id=trained.id, prompt="Hi")
    assert services.sample_execute(sample_id=sample.id) == SampleStatus.COMPLETED
    assert services.sample_execute(sample_id=sample.id) == "skipped"
    running = services.sample_request(user=operator, run_id=trained.id, prompt="Hi")
    Sample.objects.filter(id=running.id).update(
        status=SampleStatus.RUNNING, started_at=timezone.now()
    )
    assert services.sample_execute(sample_id=running.id) == "skipped"  # another worker has it
    Sample.objects.filter(id=running.id).update(started_at=timezone.now() - timedelta(hours=1))
    assert services.sample_execute(sample_id=running.id) == SampleStatus.COMPLETED  # it died
    assert len(calls) == 2


def test_a_version_is_sampled_from_its_export_or_for_an_adapter_from_its_checkpoint(
    trained: TunixRun, operator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_child(monkeypatch, result_line(completion="ok"))
    version = make_version(trained, step=12)
    export_dir = artifacts.run_directory(trained) / version.export.directory
    export_dir.mkdir(parents=True)
    (export_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (export_dir / "model.safetensors").write_bytes(b"weights")
    merged = services.sample_request(user=operator, version=version, prompt="Hi")
    assert services.sample_execute(sample_id=merged.id) == SampleStatus.COMPLETED
    assert calls[-1]["config"]["export_dir"] == str(export_dir)
    assert "run_dir" not in calls[-1]["config"]

    # An adapter holds no whole model: the checkpoint it came from, at its step.
    ModelVersion.objects.filter(id=version.id).update(weights="adapter")
    version.refresh_from_db()
    adapter = services.sample_request(user=operator, version=version, prompt="Hi")
    assert services.sample_execute(sample_id=adapter.id) == SampleStatus.COMPLETED
    assert calls[-1]["config"]["run_dir"] == str(artifacts.run_directory(trained))
    assert calls[-1]["config"]["step"] == 12
    assert "export_dir" not in calls[-1]["config"]
