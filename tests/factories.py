"""factory_boy factories for the models tests need, and submitted_run() for a run made the
way clients make them (through the submission service)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import factory
from django.contrib.auth.models import User
from django.utils import timezone

from runs import services, training_config
from runs.execution.base import RunSpec
from runs.models import (
    Dataset,
    DeliveryStatus,
    RunMode,
    RunStatus,
    TunixRun,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpointState,
)
from runs.resources import Resources

DEMO_KEY = "tunix-demo-v1"  # the key of the conftest's demo_dataset


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")


class DatasetFactory(factory.django.DjangoModelFactory):
    """A registry row only; use services.dataset_import when the file must exist."""

    class Meta:
        model = Dataset

    key = factory.Sequence(lambda n: f"dataset{n}-v1")
    format = "prompt_completion"
    record_count = 10
    size_bytes = 1000
    sha256 = "0" * 64
    file_path = factory.LazyAttribute(lambda o: f"{o.key}.jsonl")


class TunixRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TunixRun

    dataset = factory.SubFactory(DatasetFactory)
    model_id = "google/gemma-3-270m"
    mode = RunMode.DRY_RUN
    status = RunStatus.PENDING
    config: Any = factory.LazyFunction(dict)

    class Params:
        running = factory.Trait(
            status=RunStatus.RUNNING,
            attempt=1,
            started_at=factory.LazyFunction(timezone.now),
            heartbeat_at=factory.LazyFunction(timezone.now),
        )
        completed = factory.Trait(
            status=RunStatus.COMPLETED,
            attempt=1,
            exit_code=0,
            started_at=factory.LazyFunction(timezone.now),
            completed_at=factory.LazyFunction(timezone.now),
        )
        failed = factory.Trait(
            status=RunStatus.FAILED,
            attempt=1,
            exit_code=1,
            error_reason="nonzero_exit",
            started_at=factory.LazyFunction(timezone.now),
            completed_at=factory.LazyFunction(timezone.now),
        )


def submit(
    *,
    user: Any = None,
    dataset_key: str = DEMO_KEY,
    model_id: str = "tunix-rt/tiny-llama3",
    mode: str = RunMode.DRY_RUN,
    config: dict[str, Any] | None = None,
    enqueue: bool = True,
    timeout_seconds: int | None = None,
    client_request_id: str | None = None,
    resources: Resources | None = None,
) -> services.Submission:
    """A run submitted through the service, as the API and the launch page do: validated,
    fingerprinted and (with ``enqueue``, the default) queued in the same transaction. The tests'
    only call of services.run_submit."""
    request = services.RunRequest(
        dataset_key=dataset_key,
        model_id=model_id,
        mode=mode,
        config=config or {},
        timeout_seconds=timeout_seconds,
        client_request_id=client_request_id,
        resources=resources,
    )
    return services.run_submit(user=user, request=request, enqueue=enqueue)


def submitted_run(**fields: Any) -> TunixRun:
    """The run of submit(**fields): pending, with its queue task unless enqueue=False."""
    return submit(**fields).run


class WebhookDeliveryFactory(factory.django.DjangoModelFactory):
    """A queued run.completed event for one endpoint; the traits are the other outcomes."""

    class Meta:
        model = WebhookDelivery

    run = factory.SubFactory(TunixRunFactory, completed=True)
    event_type = "run.completed"
    endpoint = factory.Sequence(lambda n: f"https://hooks.example/{n}")
    payload: Any = factory.LazyAttribute(
        lambda o: {"type": o.event_type, "data": {"run_id": str(o.run.id)}}
    )
    status = DeliveryStatus.QUEUED

    class Params:
        pending = factory.Trait(
            status=DeliveryStatus.PENDING,
            attempts=1,
            last_status_code=503,
            next_attempt_at=factory.LazyFunction(timezone.now),
        )
        succeeded = factory.Trait(
            status=DeliveryStatus.SUCCEEDED,
            attempts=1,
            last_status_code=200,
            completed_at=factory.LazyFunction(timezone.now),
        )


class WebhookAttemptFactory(factory.django.DjangoModelFactory):
    """One attempt of a delivery: the receiver answered 200 after 12.5 ms."""

    class Meta:
        model = WebhookAttempt

    delivery = factory.SubFactory(WebhookDeliveryFactory)
    number = factory.LazyAttribute(lambda o: o.delivery.attempt_log.count() + 1)
    status_code = 200
    latency_ms = 12.5


class WebhookEndpointStateFactory(factory.django.DjangoModelFactory):
    """An endpoint disabled after it answered 410 Gone."""

    class Meta:
        model = WebhookEndpointState
        django_get_or_create = ("url",)

    url = factory.Sequence(lambda n: f"https://hooks.example/gone-{n}")
    disabled_at = factory.LazyFunction(timezone.now)
    reason = "410 Gone"


def reference_for(line: int) -> str:
    """The reference answer of the test datasets' record on ``line``."""
    return f"The answer is {line}."


def prediction_record(
    line: int, prediction: str, reference: str | None = None, prompt: str | None = None
) -> dict[str, Any]:
    """A line of eval/predictions.jsonl as the trainer writes it, scored by runs.scorers (ROUGE-L
    stood in for by token F1: the tests need a number of the right shape, not the package)."""
    from runs.scorers import ExactMatch, TokenF1

    expected = reference_for(line) if reference is None else reference
    f1 = TokenF1().score(prediction, expected)
    return {
        "line": line,
        "prompt": f"What is the answer to question {line}?" if prompt is None else prompt,
        "reference": expected,
        "prediction": prediction,
        "scores": {
            "exact_match": ExactMatch().score(prediction, expected),
            "token_f1": f1,
            "rouge_l": f1,
        },
    }


def write_predictions(run: TunixRun, records: Iterable[dict[str, Any] | str]) -> Path:
    """The run's eval/predictions.jsonl in its artifact directory (dicts dumped, strings written
    as raw lines)."""
    from runs.artifacts import run_directory

    path = run_directory(run) / "eval" / "predictions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


class EvaluatedRunFactory(TunixRunFactory):
    """A completed local training: a loss curve of ``steps`` steps (scaled by ``loss_scale``),
    an evaluation every 8 steps, final metrics, and, given ``predictions`` (one a dataset line
    from line 1: a string, a raw record dict, or None to leave the line out), its
    eval/predictions.jsonl. Without ``predictions`` the run has no evaluation file."""

    class Meta:
        skip_postgeneration_save = True  # the hook writes a file, not the row

    class Params:
        steps = 48
        loss_scale = 1.0

    mode = RunMode.LOCAL
    status = RunStatus.COMPLETED
    attempt = 1
    exit_code = 0
    started_at = factory.LazyFunction(timezone.now)
    completed_at = factory.LazyFunction(timezone.now)
    config: Any = factory.LazyFunction(
        lambda: training_config.defaults(training_config.SFT) | {"learning_rate": 0.003}
    )
    loss_curve: Any = factory.LazyAttribute(
        lambda o: [
            [step, round(o.loss_scale * 4.0 / (1 + 0.1 * step), 6)]
            for step in range(1, o.steps + 1)
        ]
    )
    series: Any = factory.LazyAttribute(
        lambda o: {
            "eval_loss": [
                [step, round(o.loss_scale * 4.4 / (1 + 0.1 * step), 6)]
                for step in range(8, o.steps + 1, 8)
            ],
            "learning_rate": [[step, 0.003] for step in range(1, o.steps + 1)],
            "tokens_per_second": [[step, 900.0] for step in range(1, o.steps + 1)],
        }
    )
    metrics: Any = factory.LazyAttribute(
        lambda o: {
            "train_loss": o.loss_curve[-1][1],
            "eval_loss": o.series["eval_loss"][-1][1],
            "steps": o.steps,
            "tokens_per_second": 900.0,
            "wall_seconds": 12.5,
            "compiled_shapes": 3,
        }
    )

    @factory.post_generation
    def predictions(run: TunixRun, create: bool, extracted: Any, **kwargs: Any) -> None:
        if extracted is None:
            return
        records = [
            entry if isinstance(entry, dict) else prediction_record(line, entry)
            for line, entry in enumerate(extracted, start=1)
            if entry is not None
        ]
        write_predictions(run, records)


def run_spec(output_dir: Path, **fields: Any) -> RunSpec:
    """One attempt of a run as a backend is handed it, without a database row: ``fields``
    override the defaults (run r1, attempt 1, a scripted mode, 60 s)."""
    values: dict[str, Any] = {
        "run_id": "r1",
        "attempt": 1,
        "mode": "scripted",
        "output_dir": output_dir,
        "spec": {},
        "dataset_sha256": "0" * 64,
        "dataset_records": 1,
        "timeout_seconds": 60,
        "loss_curve": [],
        **fields,
    }
    return RunSpec(**values)
