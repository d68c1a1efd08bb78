"""Runs declare resources, workers declare devices: a request is checked at submit time, a
training goes to its resource class's queue, only a cluster on a host with those devices serves
that queue, and a run nobody alive can serve says so on its page, in the API and in /metrics."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django_q.models import OrmQ
from rest_framework.test import APIClient

from runs import resources, selectors, services
from runs.api.serializers import RunCreateSerializer, plain_run_request
from runs.management.commands.qcluster import refusal
from runs.models import Dataset, RunMode, RunStatus, TunixRun, WorkerHeartbeat
from runs.resources import Resources
from tests.factories import submitted_run
from tests.support.clusters import REPO_ROOT, cluster_env, wait_for
from tests.support.problems import problem

SUBMIT = "/api/tunix/run"
BODY = {"dataset_key": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3", "mode": "local"}
CLASSES = "cpu:1,gpu:8,tpu-v5e:4"
X = resources.TIMES
GPU = Resources(kind="gpu", count=1)
CPU_HOST = [{"platform": "cpu", "kind": "", "count": 2}]
A100_HOST = [{"platform": "gpu", "kind": "NVIDIA A100-SXM4-80GB", "count": 8}, *CPU_HOST]


@pytest.fixture
def classes(settings: Any) -> str:
    settings.TUNIX_RESOURCE_CLASSES = CLASSES
    return CLASSES


def gpu_queue() -> str:
    from django.conf import settings

    return f"{settings.TUNIX_RESOURCE_QUEUE_BASE}-gpu"


# The registry.


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        ({"kind": "gpu"}, Resources("gpu", 1, "")),
        ({"kind": "tpu", "count": 4, "device_type": "v5e"}, Resources("tpu", 4, "v5e")),
        ({"kind": "cpu", "count": 2, "device_type": None}, Resources("cpu", 2, "")),
    ],
)
def test_a_well_formed_request_reads_as_kind_count_and_device_type(
    value: dict[str, Any], wanted: Resources
) -> None:
    assert resources.parse(value) == wanted


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"kind": "fpga"}, "kind must be one of cpu, gpu, tpu"),
        ({"kind": "gpu", "count": 0}, "at least 1"),
        ({"kind": "gpu", "count": True}, "integer"),
        ({"kind": "gpu", "count": 1.5}, "integer"),
        ({"kind": "gpu", "cores": 2}, "unknown field 'cores'"),
        ({"kind": "cpu", "device_type": "a100"}, "gpu and tpu only"),
        ({"kind": "gpu", "device_type": "A100 80GB"}, "device_type"),
        ("gpu", "must be an object"),
    ],
)
def test_a_malformed_request_is_refused_saying_why(value: object, says: str) -> None:
    with pytest.raises(resources.ResourceError, match=says):
        resources.parse(value)


def test_the_class_a_request_routes_to_names_its_kind_and_device_type() -> None:
    assert GPU.resource_class == "gpu"
    assert Resources("gpu", 2, "a100").resource_class == "gpu-a100"
    assert resources.class_queue("training", "tpu-v5e") == "training-tpu-v5e"
    assert resources.class_queue("training", "cpu") == "training"  # today's queue


def test_configured_classes_always_include_cpu_and_refuse_unknown_kinds() -> None:
    assert resources.parse_classes("gpu:8") == {"gpu": 8, "cpu": 1}
    assert resources.parse_classes(CLASSES) == {"cpu": 1, "gpu": 8, "tpu-v5e": 4}
    with pytest.raises(resources.ResourceError, match="fpga"):
        resources.parse_classes("fpga:2")


def test_a_host_satisfies_a_request_with_enough_devices_of_its_kind_and_type() -> None:
    assert resources.satisfies(A100_HOST, Resources("gpu", 8, "a100"))
    assert not resources.satisfies(A100_HOST, Resources("gpu", 9))
    assert not resources.satisfies(A100_HOST, Resources("gpu", 1, "h100"))
    assert not resources.satisfies(CPU_HOST, GPU)
    tpu_host = [{"platform": "tpu", "kind": "TPU v5 lite", "count": 4}]
    assert resources.satisfies(tpu_host, Resources("tpu", 4, "v5e"))


@pytest.mark.processes
def test_a_host_without_jax_reports_its_cpu_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # The child process's import of JAX fails, as on a web-only install.
    monkeypatch.setattr(resources, "_DETECT", "import jax_is_not_installed_here")
    cores = {"platform": "cpu", "kind": "", "count": os.cpu_count() or 1}
    assert resources.detect_devices() == [cores]


@pytest.mark.processes
def test_this_hosts_devices_are_read_in_a_child_process() -> None:
    had_jax = "jax" in sys.modules
    devices = resources.detect_devices()
    assert devices[-1] == {"platform": "cpu", "kind": "", "count": os.cpu_count() or 1}
    assert ("jax" in sys.modules) == had_jax  # JAX was imported by the child, not here


def test_a_cluster_for_a_class_its_host_cannot_serve_is_refused(classes: str) -> None:
    reason = refusal(CPU_HOST, "gpu")
    assert reason is not None
    assert "cannot serve resource class gpu" in reason
    assert f"gpu {X} 8" in reason
    assert refusal(A100_HOST, "gpu") is None
    assert refusal(CPU_HOST, "cpu") is None


def test_declared_devices_are_checked_like_detected_ones() -> None:
    declared = '[{"platform": "gpu", "kind": "A100", "count": 8}]'
    assert resources.declared_devices(declared) == [{"platform": "gpu", "kind": "A100", "count": 8}]
    for bad in ("gpu", '[{"platform": "fpga", "count": 1}]', '[{"platform": "gpu"}]'):
        with pytest.raises(resources.ResourceError):
            resources.declared_devices(bad)


# Submitting.


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"kind": "fpga"}, "fpga"),
        ({"kind": "gpu", "count": 0}, "at least 1"),
        ({"kind": "gpu", "count": 9}, f"no worker class serves gpu {X} 9"),
        ({"kind": "tpu", "count": 1}, f"no worker class serves tpu {X} 1; configured: cpu {X} 1"),
        ({"kind": "gpu", "device_type": "h100"}, f"no worker class serves gpu-h100 {X} 1"),
        (["gpu"], "must be an object"),
    ],
)
def test_a_resources_request_no_worker_could_serve_is_a_400_naming_resources(
    operator_client: APIClient, demo_dataset: Dataset, settings: Any, value: Any, says: str
) -> None:
    settings.TUNIX_RESOURCE_CLASSES = "cpu:1,gpu:8"
    for path in (SUBMIT, f"{SUBMIT}?mode=async"):
        body = problem(operator_client.post(path, {**BODY, "resources": value}, format="json"), 400)
        assert body["errors"][0]["field"] == "resources", body
        assert says in body["detail"], body
    assert not TunixRun.objects.exists()
    assert not OrmQ.objects.exists()


@pytest.mark.django_db
def test_a_gpu_training_is_queued_on_the_gpu_queue_and_shows_what_it_asked_for(
    operator_client: APIClient, demo_dataset: Dataset, classes: str
) -> None:
    asked = {"kind": "gpu", "count": 2}
    response = operator_client.post(
        f"{SUBMIT}?mode=async", {**BODY, "resources": asked}, format="json"
    )
    assert response.status_code == 202, response.content
    run = TunixRun.objects.get()
    assert (run.resources, run.resource_class) == (asked, "gpu")
    assert list(OrmQ.objects.values_list("key", flat=True)) == [gpu_queue()]
    detail = operator_client.get(f"/api/tunix/runs/{run.id}").json()
    assert (detail["resources"], detail["resource_class"]) == (asked, "gpu")


@pytest.mark.django_db
def test_runs_that_ask_for_cpu_or_nothing_or_only_dry_run_stay_on_todays_queue(
    demo_dataset: Dataset, classes: str
) -> None:
    from django_q.conf import Conf

    plain = submitted_run(mode=RunMode.LOCAL)
    cpu = submitted_run(mode=RunMode.LOCAL, resources=Resources("cpu", 1))
    dry = submitted_run(mode=RunMode.DRY_RUN, resources=GPU)
    assert [r.resource_class for r in (plain, cpu, dry)] == ["cpu"] * 3
    assert plain.resources == {}
    assert dry.resources == {"kind": "gpu", "count": 1}
    assert set(OrmQ.objects.values_list("key", flat=True)) == {Conf.CLUSTER_NAME}


@pytest.mark.django_db
def test_run_again_and_a_replayed_key_keep_the_resources(
    demo_dataset: Dataset, classes: str, operator: Any
) -> None:
    first = submitted_run(mode=RunMode.LOCAL, resources=GPU, user=operator, client_request_id="k")
    again = services.run_submit(
        user=operator, request=services.RunRequest.like(first), enqueue=False
    ).run
    assert (again.resources, again.resource_class) == (first.resources, "gpu")
    replay = services.RunRequest.like(first).with_key("k")
    assert services.run_submit(user=operator, request=replay, enqueue=True).replayed
    changed = dataclasses.replace(replay, resources=Resources("gpu", 2))
    with pytest.raises(services.IdempotencyMismatch):
        services.run_submit(user=operator, request=changed, enqueue=True)


def test_the_fast_reader_leaves_resources_to_the_serializer() -> None:
    body = {**BODY, "resources": {"kind": "gpu", "count": 2}}
    assert plain_run_request(body) is None
    serializer = RunCreateSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert serializer.run_request().resources == Resources("gpu", 2)
    assert plain_run_request({**BODY, "resources": None}) == plain_run_request(BODY)


@pytest.mark.django_db
def test_the_launch_form_refuses_a_class_no_worker_serves_next_to_the_field(
    demo_dataset: Dataset, operator: Any, settings: Any
) -> None:
    client = Client()
    client.force_login(operator)
    form = {
        "dataset": "tunix-demo-v1",
        "model_id": "tunix-rt/tiny-llama3",
        "mode": "local",
        "execution": "async",
        "resource_kind": "gpu",
        "resource_count": "2",
    }
    response = client.post("/runs/new", form)
    assert response.status_code == 200
    assert f"no worker class serves gpu {X} 2" in response.content.decode()
    assert not TunixRun.objects.exists()
    settings.TUNIX_RESOURCE_CLASSES = CLASSES
    response = client.post("/runs/new", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert TunixRun.objects.get().resources == {"kind": "gpu", "count": 2}


@pytest.mark.django_db
def test_the_launch_page_prefills_resources_from_a_link(
    demo_dataset: Dataset, operator: Any
) -> None:
    client = Client()
    client.force_login(operator)
    page = client.get(
        "/runs/new?resource_kind=tpu&resource_count=8&resource_device_type=v5e"
    ).content.decode()
    assert '<option value="tpu" selected>tpu</option>' in page
    assert 'name="resource_count" value="8"' in page
    assert 'name="resource_device_type" value="v5e"' in page


@pytest.mark.django_db
def test_a_ray_run_may_ask_the_cluster_only_for_what_its_classes_allow(
    operator_client: Any, demo_dataset: Dataset, settings: Any
) -> None:
    settings.TUNIX_RAY_ADDRESS = "http://ray-head:8265"
    settings.TUNIX_RAY_RESOURCE_CLASSES = "cpu:16,gpu-a100:8"
    body = {"dataset_key": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3", "mode": "ray"}
    too_many = {**body, "resources": {"kind": "gpu", "count": 16, "device_type": "a100"}}
    response = operator_client.post("/api/tunix/run?mode=async", too_many, format="json")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == "resources"
    assert "TUNIX_RAY_RESOURCE_CLASSES" in error["message"]
    assert not TunixRun.objects.exists()
    fits = {**body, "resources": {"kind": "gpu", "count": 8, "device_type": "a100"}}
    response = operator_client.post("/api/tunix/run?mode=async", fits, format="json")
    assert response.status_code == 202, response.content


# Waiting, and what /metrics shows.


@pytest.mark.django_db
def test_a_run_whose_class_has_no_live_worker_says_so_until_one_reports(
    operator: Any, operator_client: APIClient, demo_dataset: Dataset, classes: str
) -> None:
    services.worker_heartbeat(worker_id="worker:cpu-host:1", signing_key_id="")
    run = submitted_run(mode=RunMode.LOCAL, resources=Resources("gpu", 2))
    waiting = f"waiting for a worker with gpu {X} 2; none alive (live workers serve: cpu)"
    assert selectors.run_wait_reason(run=run) == waiting
    assert operator_client.get(f"/api/tunix/runs/{run.id}").json()["wait_reason"] == waiting
    page = Client()
    page.force_login(operator)
    assert waiting in page.get(f"/runs/{run.id}").content.decode()
    services.worker_heartbeat(
        worker_id="worker:gpu-host:1", signing_key_id="", devices=A100_HOST, resource_class="gpu"
    )
    assert selectors.run_wait_reason(run=run) is None
    cpu_run = submitted_run(mode=RunMode.LOCAL)
    assert selectors.run_wait_reason(run=cpu_run) is None


@pytest.mark.django_db
def test_metrics_count_pending_runs_and_live_workers_per_resource_class(
    client: Client, demo_dataset: Dataset, classes: str
) -> None:
    from tests.test_metrics_health import sample, scrape

    submitted_run(mode=RunMode.LOCAL, resources=GPU)
    submitted_run(mode=RunMode.LOCAL, resources=GPU)
    submitted_run(mode=RunMode.LOCAL)
    services.worker_heartbeat(worker_id="worker:cpu-host:1", signing_key_id="")
    text = scrape(client)
    pending, alive = "tunix_runs_pending_by_class", "tunix_workers_alive_by_class"
    assert sample(text, pending, resource_class="gpu") == 2
    assert sample(text, pending, resource_class="cpu") == 1
    assert sample(text, pending, resource_class="tpu-v5e") == 0
    assert sample(text, alive, resource_class="cpu") == 1
    assert sample(text, alive, resource_class="gpu") == 0
    assert sample(text, "tunix_runs_pending") == 3


# Real clusters.


@pytest.mark.processes
def test_a_cluster_started_for_the_gpu_queue_on_a_cpu_only_host_refuses_to_start(
    tmp_path: Path,
) -> None:
    queue = "tunix_rt-gpu"
    env = cluster_env(tmp_path, TUNIX_RESOURCE_CLASSES="cpu:1,gpu:1", Q_CLUSTER_NAME=queue)
    result = subprocess.run(
        [sys.executable, "manage.py", "qcluster", "--name", queue],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"this host cannot serve resource class gpu (gpu {X} 1 per run)" in result.stderr
    assert "Q Cluster" not in result.stdout + result.stderr  # no cluster ever started


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_cpu_cluster_takes_cpu_runs_and_leaves_a_gpu_run_waiting_with_its_reason(
    clusters: Callable[..., Any], settings: Any
) -> None:
    settings.TUNIX_RESOURCE_CLASSES = "cpu:1,gpu:1"
    gpu = submitted_run(model_id="fake/ok", mode=RunMode.LOCAL, resources=GPU)
    cpu = submitted_run(model_id="fake/ok", mode=RunMode.LOCAL, resources=Resources("cpu", 1))
    plain = submitted_run(model_id="fake/ok", mode=RunMode.LOCAL)
    clusters(1, TUNIX_RESOURCE_CLASSES="cpu:1,gpu:1")

    def status_of(run: TunixRun) -> str:
        return TunixRun.objects.values_list("status", flat=True).get(id=run.id)

    wait_for(
        lambda: status_of(cpu) == status_of(plain) == RunStatus.COMPLETED,
        60,
        what="the cpu runs",
    )
    # A few reaper ticks later the gpu run's task is still queued, unclaimed, and the run waits.
    wait_for(lambda: selectors.worker_fleet().alive > 0, 30, what="a heartbeat")
    assert selectors.worker_fleet().classes_alive.keys() == {"cpu"}
    # The host's devices, read when the cluster started, are in its workers' heartbeats.
    reported = WorkerHeartbeat.objects.values_list("devices", flat=True).first()
    assert reported
    assert reported[-1]["platform"] == "cpu"
    # A run's ending is written before django-q2 acknowledges its task (deletes the row), so
    # the cpu tasks leave the queue a moment after their runs complete; the gpu task stays.
    wait_for(
        lambda: list(OrmQ.objects.values_list("key", flat=True)) == [gpu_queue()],
        30,
        what="only the gpu run's task left in the queue",
    )
    gpu.refresh_from_db()
    assert gpu.status == RunStatus.PENDING
    assert selectors.run_wait_reason(run=gpu) == (
        f"waiting for a worker with gpu {X} 1; none alive (live workers serve: cpu)"
    )


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_cluster_started_for_the_gpu_queue_takes_the_gpu_run_and_not_the_cpu_one(
    clusters: Callable[..., Any], settings: Any
) -> None:
    settings.TUNIX_RESOURCE_CLASSES = "cpu:1,gpu:2"
    gpu = submitted_run(model_id="fake/ok", mode=RunMode.LOCAL, resources=Resources("gpu", 2))
    cpu = submitted_run(model_id="fake/ok", mode=RunMode.LOCAL)
    # This host has no GPU: the cluster is told what a GPU host would report.
    clusters(
        1,
        TUNIX_RESOURCE_CLASSES="cpu:1,gpu:2",
        Q_CLUSTER_NAME=gpu_queue(),
        TUNIX_WORKER_DEVICES='[{"platform": "gpu", "kind": "A100", "count": 2}]',
    )
    wait_for(
        lambda: TunixRun.objects.filter(id=gpu.id, status=RunStatus.COMPLETED).exists(),
        60,
        what="the gpu run",
    )
    wait_for(lambda: selectors.worker_fleet().alive > 0, 30, what="a heartbeat")
    assert selectors.worker_fleet().classes_alive.keys() == {"gpu"}
    assert TunixRun.objects.values_list("status", flat=True).get(id=cpu.id) == RunStatus.PENDING
    cpu.refresh_from_db()
    assert selectors.run_wait_reason(run=cpu) == (
        f"waiting for a worker with cpu {X} 1; none alive (live workers serve: gpu)"
    )


@pytest.mark.django_db
def test_a_sweeps_trials_ask_for_the_resources_of_its_base_request(
    operator_client: APIClient, demo_dataset: Dataset, classes: str
) -> None:
    from tests.test_sweeps_api import URL, body

    base = {**body()["base"], "mode": "local", "resources": {"kind": "gpu", "count": 2}}
    response = operator_client.post(URL, body(base=base), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["base"]["resources"] == {"kind": "gpu", "count": 2}
    trials = list(TunixRun.objects.filter(sweep_id=response.json()["id"]))
    assert len(trials) == 2
    assert {(t.resource_class, t.resources["count"]) for t in trials} == {("gpu", 2)}
    assert set(OrmQ.objects.values_list("key", flat=True)) == {gpu_queue()}
    refused = {**base, "resources": {"kind": "gpu", "count": 9}}
    response = operator_client.post(URL, body(base=refused), format="json")
    assert problem(response, 400)["errors"][0]["field"] == "base.resources"


@pytest.mark.django_db
def test_a_gpu_training_cannot_run_synchronously_in_the_web_process(
    operator_client: APIClient, demo_dataset: Dataset, classes: str
) -> None:
    body = {**BODY, "resources": {"kind": "gpu"}}
    response = operator_client.post(SUBMIT, body, format="json")
    refused = problem(response, 400)
    assert refused["errors"][0]["field"] == "resources"
    assert "queue it" in refused["detail"]
    assert not TunixRun.objects.exists()
    dry = operator_client.post(SUBMIT, {**body, "mode": "dry-run"}, format="json")
    assert dry.status_code == 201, dry.content  # a dry-run needs no accelerator
