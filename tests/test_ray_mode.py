"""Mode "ray" without a cluster: what a run asks Ray for, how it is submitted, and what is refused
before anything is written. tests/test_ray_backend.py runs it on a real Ray head."""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runs import services
from runs.execution.base import RunSpec
from runs.execution.ray import entrypoint, entrypoint_resources, runtime_env, submission_id
from runs.models import TunixRun
from runs.resources import Resources
from runs.services.queue import run_task_queue
from tests.factories import run_spec, submitted_run
from tests.support.problems import problem as assert_problem

REPO_ROOT = Path(__file__).resolve().parent.parent


def spec(output_dir: Path) -> RunSpec:
    return run_spec(output_dir, run_id="0b5c", attempt=2, mode="ray")


@pytest.mark.parametrize(
    ("asked", "placement"),
    [
        (None, {"entrypoint_num_cpus": 1}),
        (Resources("cpu", 4), {"entrypoint_num_cpus": 4}),
        (Resources("gpu", 8), {"entrypoint_num_gpus": 8}),
        (
            Resources("gpu", 2, "a100"),
            {"entrypoint_num_gpus": 2, "entrypoint_resources": {"accelerator_type:A100": 0.001}},
        ),
        (Resources("tpu", 4), {"entrypoint_resources": {"TPU": 4}}),
        (
            Resources("tpu", 8, "v5e"),
            {"entrypoint_resources": {"TPU": 8, "accelerator_type:TPU-V5LITEPOD": 0.001}},
        ),
        (
            Resources("tpu", 4, "v6e"),
            {"entrypoint_resources": {"TPU": 4, "accelerator_type:TPU-V6E": 0.001}},
        ),
    ],
)
def test_a_runs_resources_become_its_ray_jobs_entrypoint_resources(
    asked: Resources | None, placement: dict[str, Any]
) -> None:
    assert entrypoint_resources(asked) == placement


def test_each_attempt_submits_under_its_own_id() -> None:
    assert submission_id("0b5c", 1) == "0b5c-a1"
    assert submission_id("0b5c", 2) != submission_id("0b5c", 1)


def test_the_entrypoint_runs_the_trainer_from_the_run_directory_every_word_quoted(
    tmp_path: Path, settings: Any
) -> None:
    settings.TUNIX_TRAINER_COMMAND = None
    settings.TUNIX_RAY_PYTHON = "/opt/venv/bin/python"
    run_dir = tmp_path / "it's a dir; rm -rf x"
    words = shlex.split(entrypoint(spec(run_dir)))
    assert words[:3] == ["cd", str(run_dir), "&&"]
    assert words[3:] == [
        "exec",
        "/opt/venv/bin/python",
        "-m",
        "runs.trainer",
        str(run_dir / "tunix_config.json"),
    ]


def test_a_custom_trainer_command_is_the_jobs_command_too(tmp_path: Path, settings: Any) -> None:
    settings.TUNIX_TRAINER_COMMAND = ["/usr/bin/my-trainer", "--fast"]
    words = shlex.split(entrypoint(spec(tmp_path)))
    assert words[4:] == ["/usr/bin/my-trainer", "--fast", str(tmp_path / "tunix_config.json")]


def test_the_jobs_environment_is_ours_and_the_operators_never_the_workers(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_worker_secret")  # the worker's: stays on the worker
    settings.TUNIX_MODEL_DOWNLOAD = False
    settings.TUNIX_RAY_PROJECT_DIR = "/srv/tunix-rt"
    settings.TUNIX_RAY_RUNTIME_ENV = {
        "env_vars": {"HF_TOKEN": "hf_for_ray", "PYTHONUNBUFFERED": "0"},
        "pip": ["einops"],
    }
    env = runtime_env()
    assert env["pip"] == ["einops"]
    assert env["env_vars"]["PYTHONPATH"] == "/srv/tunix-rt"
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert env["env_vars"]["HF_TOKEN"] == "hf_for_ray"
    assert env["env_vars"]["PYTHONUNBUFFERED"] == "0"  # the operator's word is last
    settings.TUNIX_RAY_RUNTIME_ENV = {}
    assert "HF_TOKEN" not in runtime_env()["env_vars"]
    # Reading it twice never changes the setting.
    assert settings.TUNIX_RAY_RUNTIME_ENV == {}


@pytest.mark.django_db
def test_mode_ray_without_a_cluster_is_refused_naming_mode_and_nothing_is_written(
    operator_client: Any, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_RAY_ADDRESS = ""
    body = {"dataset_key": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3", "mode": "ray"}
    response = operator_client.post("/api/tunix/run?mode=async", body, format="json")
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["field"] == "mode"
    assert "TUNIX_RAY_ADDRESS" in problem["detail"]
    assert not TunixRun.objects.exists()


@pytest.mark.django_db
def test_a_ray_run_asks_ray_for_its_devices_and_is_supervised_by_any_worker(
    operator_client: Any, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_RAY_ADDRESS = "http://ray-head:8265"
    settings.TUNIX_RESOURCE_CLASSES = "cpu:1"  # no worker here has a GPU
    body = {
        "dataset_key": "tunix-demo-v1",
        "model_id": "tunix-rt/tiny-llama3",
        "mode": "ray",
        "resources": {"kind": "gpu", "count": 8, "device_type": "h100"},
    }
    response = operator_client.post("/api/tunix/run?mode=async", body, format="json")
    assert response.status_code == 202, response.content
    run = TunixRun.objects.get(id=response.json()["run_id"])
    assert run.resources == {"kind": "gpu", "count": 8, "device_type": "h100"}
    assert run.resource_class == "cpu"
    assert run_task_queue(run) == services.queue.task_queue("ray")


@pytest.mark.django_db
def test_the_launch_form_offers_ray_only_where_a_cluster_is_configured(
    web: Any, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_RAY_ADDRESS = ""
    assert 'value="ray"' not in web.get("/runs/new").content.decode()
    settings.TUNIX_RAY_ADDRESS = "http://ray-head:8265"
    assert 'value="ray"' in web.get("/runs/new").content.decode()


@pytest.mark.django_db
def test_an_unreachable_cluster_fails_a_synchronous_ray_run_naming_the_address(
    operator_client: Any, demo_dataset: Any, settings: Any
) -> None:
    if importlib.util.find_spec("ray") is None:
        reason = "Ray is not installed (make install-ray)"
        if os.environ.get("TUNIX_REQUIRE_RAY") == "1":
            pytest.fail(f"{reason}; TUNIX_REQUIRE_RAY=1 makes this a failure")
        pytest.skip(reason)
    nowhere = "http://127.0.0.1:9"  # the discard port: nothing answers
    settings.TUNIX_RAY_ADDRESS = nowhere
    settings.TUNIX_STALE_AFTER_SECONDS = 2  # connecting gives up within a quarter of it
    body = {"dataset_key": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3", "mode": "ray"}
    response = operator_client.post("/api/tunix/run", body, format="json")
    assert response.status_code == 201, response.content
    run = TunixRun.objects.get(id=response.json()["run_id"])
    assert (run.status, run.error_reason) == ("failed", "backend_unavailable")
    assert nowhere in run.error_message
    assert nowhere in run.stderr
    # Whatever the cluster may still run for it is stopped later, by a worker's task; tried
    # now, it says the cluster is still away.
    assert queued_funcs().count(services.recovery.RELEASE_FUNC) == 1
    assert services.run_release(run_id=run.id) == "unavailable"


@pytest.mark.processes
def test_every_process_refuses_to_start_with_a_ray_cluster_but_no_shared_storage() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
        "TUNIX_RAY_ADDRESS": "http://ray-head:8265",
        "TUNIX_SHARED_STORAGE": "0",
    }
    code = "import django; django.setup()"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "TUNIX_SHARED_STORAGE=1" in done.stderr
    env["TUNIX_SHARED_STORAGE"] = "1"
    allowed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.django_db
def test_a_ray_runs_page_links_to_its_job_on_the_dashboard_people_reach(
    web: Any, demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_RAY_ADDRESS = "http://ray-head.ray.svc:8265"
    settings.TUNIX_RAY_DASHBOARD_URL = "https://ray.example.org/"
    run = submitted_run(mode="ray")
    page = web.get(f"/runs/{run.id}").content.decode()
    assert f"run-execution-ref-{run.id}" not in page  # nothing submitted yet
    TunixRun.objects.filter(id=run.id).update(execution_ref=f"{run.id}-a1")
    page = web.get(f"/runs/{run.id}").content.decode()
    assert f'<a href="https://ray.example.org/#/jobs/{run.id}-a1" rel="noopener">' in page
    api = web.get(f"/api/tunix/runs/{run.id}").json()
    assert api["execution_ref"] == f"{run.id}-a1"


def queued_funcs() -> list[str]:
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    return [SignedPackage.loads(row.payload)["func"] for row in OrmQ.objects.all()]


@pytest.mark.django_db
def test_cancelling_a_requeued_ray_run_queues_the_release_of_its_job(
    demo_dataset: Any, settings: Any
) -> None:
    settings.TUNIX_RAY_ADDRESS = "http://ray-head:8265"
    never_started = submitted_run(mode="ray")
    services.run_cancel(run_id=never_started.id)
    assert services.recovery.RELEASE_FUNC not in queued_funcs()  # no job was ever submitted
    requeued = submitted_run(mode="ray")
    TunixRun.objects.filter(id=requeued.id).update(attempt=1)  # its attempt 1 was lost
    services.run_cancel(run_id=requeued.id)
    assert queued_funcs().count(services.recovery.RELEASE_FUNC) == 1
    dry = submitted_run()
    TunixRun.objects.filter(id=dry.id).update(attempt=1)
    services.run_cancel(run_id=dry.id)
    assert queued_funcs().count(services.recovery.RELEASE_FUNC) == 1  # nothing elsewhere
