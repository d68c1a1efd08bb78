"""Request parsing and response shapes. Field names follow the seed system's clients."""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

from django.conf import settings
from django.contrib.auth.models import User
from django.core.validators import RegexValidator
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from runs import resources, selectors, training_config
from runs.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from runs.datasets import REASONING_CHOICES, REASONING_INCLUDE
from runs.execution import MODES
from runs.models import (
    ALGORITHM_CHOICES,
    DATASET_KEY_PATTERN,
    Dataset,
    RunMode,
    RunStatus,
    TunixRun,
)
from runs.progress import (
    PHASE_EVALUATING,
    SERIES,
    TRAIN_LOSS_WINDOW,
    algorithm_results,
    algorithm_signals,
    ranking_metrics,
)
from runs.resources import Resources
from runs.selectors import RunRow
from runs.services import RunRequest

MAX_LIST_LIMIT = 100


def _param_help(rows: list[training_config.Param]) -> str:
    """Each row's help with the algorithms it applies to and its default there."""
    parts = []
    for row in rows:
        notes = [] if row.algorithms is None else [", ".join(training_config.owners_of(row))]
        if row.default is not None:
            notes.append(f"default {row.default}")
        parts.append(f"{row.help} ({'; '.join(notes)})" if notes else row.help)
    return " · ".join(parts)


def _param_field(rows: list[training_config.Param]) -> serializers.Field[Any, Any, Any, Any]:
    """The field of a hyperparameter name, for the rows of every algorithm that has it. No
    default: a value the request leaves out is filled by the run's algorithm, and one it
    gives is checked against that algorithm's row (training_config.normalise)."""
    first = rows[0]
    common: dict[str, Any] = {
        "required": False,
        "help_text": _param_help(rows),
        "allow_null": any(row.default is None for row in rows),
    }
    if first.kind is str:
        invalid = f'"{{input}}" is not one of {", ".join(first.choices)}'
        return serializers.ChoiceField(
            choices=list(first.choices), error_messages={"invalid_choice": invalid}, **common
        )
    low, high = min(row.minimum for row in rows), max(row.maximum for row in rows)
    if first.kind is int:
        return serializers.IntegerField(min_value=int(low), max_value=int(high), **common)
    return serializers.FloatField(min_value=float(low), max_value=float(high), **common)


_PARAM_ROWS: dict[str, list[training_config.Param]] = {}
for _row in training_config.PARAMS:
    _PARAM_ROWS.setdefault(_row.name, []).append(_row)


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not know, so a typo is a 400 instead of a silent default."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        initial = getattr(self, "initial_data", None)
        if isinstance(initial, dict):
            unknown = sorted(set(initial) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return attrs


_RESOURCES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind"],
    "properties": {
        "kind": {"type": "string", "enum": list(resources.KINDS)},
        "count": {"type": "integer", "minimum": 1, "default": 1},
        "device_type": {
            "type": "string",
            "pattern": resources.DEVICE_TYPE_PATTERN,
            "description": "gpu or tpu only, e.g. a100 or v5e",
        },
    },
}


@extend_schema_field(_RESOURCES_SCHEMA)
class ResourcesField(serializers.Field[Resources, Any, Any, Any]):
    """A run's `resources` object, checked by runs.resources (which resource classes this
    deployment serves, and how many devices each, is the service's check)."""

    def to_internal_value(self, data: Any) -> Resources:
        try:
            return resources.parse(data)
        except resources.ResourceError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def to_representation(self, value: Any) -> Any:
        return value.as_json() if isinstance(value, Resources) else value


class RunCreateSerializer(StrictSerializer):
    dataset_key = serializers.CharField(
        max_length=128, validators=[RegexValidator(DATASET_KEY_PATTERN)]
    )
    model_id = serializers.CharField(
        max_length=256,
        validators=[
            RegexValidator(
                selectors.RUN_MODEL_ID_PATTERN,
                message="model_id must look like 'org/name' or 'name' (letters, digits, _ . -), "
                "or name earlier weights: models:/<name>/<version>, models:/<name>@<alias> or "
                "exports:/<export id>",
            )
        ],
        help_text="A catalog model (GET /api/tunix/models), or earlier weights to continue "
        "training from: models:/<name>/<version>, models:/<name>@<alias> (resolved when the "
        "run is submitted) or exports:/<export id> (a full or merged export)",
    )
    mode = serializers.ChoiceField(
        choices=MODES,
        required=False,
        help_text="How the run executes: dry-run validates and writes the config, local trains "
        "on a worker host, ray trains as a job on the configured Ray cluster (TUNIX_RAY_ADDRESS). "
        "Default: from dry_run.",
    )
    algorithm = serializers.ChoiceField(
        choices=ALGORITHM_CHOICES,
        default=DEFAULT_ALGORITHM,
        help_text="How the run trains: "
        + "; ".join(f"{name}: {a.summary} (on {a.trains_on})" for name, a in ALGORITHMS.items())
        + ". Each has its own hyperparameters; one of another algorithm is refused.",
    )
    dry_run = serializers.BooleanField(
        default=True,
        help_text="The older way to choose: true is mode dry-run, false is mode local. Ignored "
        "when mode is given (and refused if it disagrees).",
    )
    timeout_seconds = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="Per-run timeout override"
    )
    client_request_id = serializers.CharField(
        required=False, allow_null=True, max_length=128, help_text="Idempotency key"
    )
    output_dir = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="Not accepted: the server chooses each run's artifact directory",
    )
    resources = ResourcesField(
        required=False,
        allow_null=True,
        help_text="What a local run needs of its worker host: an accelerator kind (cpu, gpu, "
        "tpu), a count (default 1) and optionally a device type (a100, v5e). Only a worker of "
        "that resource class takes it; one no configured class serves is refused. Default: "
        "none (cpu).",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        for name, rows in _PARAM_ROWS.items():
            fields[name] = _param_field(rows)
        return fields

    def validate_output_dir(self, value: str | None) -> None:
        if value:
            raise serializers.ValidationError(
                "output_dir is chosen by the server (see output_dir in the response)"
            )

    def validate_timeout_seconds(self, value: int | None) -> int | None:
        if value is not None and value > settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS:
            raise serializers.ValidationError(
                f"must be at most {settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS}"
            )
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        implied = RunMode.DRY_RUN if attrs["dry_run"] else RunMode.LOCAL
        if "mode" not in attrs:
            attrs["mode"] = implied
        elif "dry_run" in self.initial_data and attrs["mode"] != implied:
            raise serializers.ValidationError(
                {"dry_run": [f"dry_run={str(attrs['dry_run']).lower()} disagrees with mode"]}
            )
        # Range rules the field types cannot say (e.g. learning_rate > 0), and which algorithm
        # takes which hyperparameter, live in one table.
        values = {name: attrs[name] for name in _PARAM_ROWS if name in attrs}
        _, errors = training_config.normalise(values, attrs["algorithm"])
        if errors:
            raise serializers.ValidationError({name: [reason] for name, reason in errors.items()})
        return attrs

    def run_request(self) -> RunRequest:
        data = self.validated_data
        return RunRequest(
            dataset_key=data["dataset_key"],
            model_id=data["model_id"],
            mode=data["mode"],
            algorithm=data["algorithm"],
            config={name: data[name] for name in _PARAM_ROWS if name in data},
            timeout_seconds=data.get("timeout_seconds"),
            client_request_id=data.get("client_request_id"),
            resources=data.get("resources"),
        )


_DATASET_KEY = re.compile(DATASET_KEY_PATTERN)
_MODEL_ID = re.compile(selectors.RUN_MODEL_ID_PATTERN)
_SURROGATE = re.compile("[\ud800-\udfff]")
_RUN_FIELDS = {
    "dataset_key",
    "model_id",
    "mode",
    "algorithm",
    "dry_run",
    "timeout_seconds",
    "client_request_id",
    "output_dir",
    "resources",
    *_PARAM_ROWS,
}


def _plain_text(value: object, max_length: int) -> TypeGuard[str]:
    """A string DRF's CharField keeps as it is: not blank, no surrounding whitespace, no NUL or
    surrogate, within its length."""
    return (
        type(value) is str
        and 0 < len(value) <= max_length
        and value == value.strip()
        and "\x00" not in value
        and (value.isascii() or not _SURROGATE.search(value))
    )


def plain_run_request(data: object) -> RunRequest | None:
    """The RunRequest that RunCreateSerializer makes of a body it takes exactly as written
    (JSON strings, booleans and numbers of the right types and ranges, nothing to coerce), or
    None: then the serializer decides, and words any error.

    About 20 µs where the serializer takes 350 (it builds its 19 fields anew for each request),
    on the path every submit takes. tests/test_run_request_parsing.py checks, on generated
    bodies, that this never takes a body the serializer refuses and never reads one
    differently."""
    if type(data) is not dict or not data.keys() <= _RUN_FIELDS:
        return None
    dataset_key, model_id = data.get("dataset_key"), data.get("model_id")
    if not (_plain_text(dataset_key, 128) and _DATASET_KEY.search(dataset_key)):
        return None
    if not (_plain_text(model_id, 256) and _MODEL_ID.search(model_id)):
        return None
    dry_run = data.get("dry_run", True)
    if type(dry_run) is not bool:
        return None
    implied = RunMode.DRY_RUN if dry_run else RunMode.LOCAL
    mode = data.get("mode", implied)
    if "mode" in data and (type(mode) is not str or mode not in MODES):
        return None
    if "dry_run" in data and mode != implied:
        return None
    timeout = data.get("timeout_seconds")
    if timeout is not None and not (
        type(timeout) is int and 1 <= timeout <= settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS
    ):
        return None
    key = data.get("client_request_id")
    if key is not None and not _plain_text(key, 128):
        return None
    if data.get("output_dir", None) is not None:
        return None
    # Resources are rare on the hot path: the serializer (with runs.resources) reads them.
    if data.get("resources", None) is not None:
        return None
    algorithm = data.get("algorithm", DEFAULT_ALGORITHM)
    if type(algorithm) is not str or algorithm not in ALGORITHMS:
        return None
    config: dict[str, Any] = {}
    for param in training_config.params_for(algorithm):
        name = param.name
        if name not in data:
            continue  # the service fills the algorithm's default
        value = data[name]
        if value is None:
            if param.default is not None:
                return None
        elif param.kind is str:
            if type(value) is not str or value not in param.choices:
                return None
        elif param.kind is int:
            if type(value) is not int or not param.minimum <= value <= param.maximum:
                return None
        elif type(value) not in (int, float) or not math.isfinite(value):
            return None
        else:
            value = float(value)
            if not param.minimum <= value <= param.maximum:
                return None
        config[name] = value
    # A hyperparameter of another algorithm: the serializer words that refusal.
    if not config.keys() >= data.keys() & _PARAM_ROWS.keys():
        return None
    if training_config.normalise(dict(config), algorithm)[1]:
        return None
    return RunRequest(
        dataset_key=dataset_key,
        model_id=model_id,
        mode=mode,
        algorithm=algorithm,
        config=config,
        timeout_seconds=timeout,
        client_request_id=key,
    )


class QueryIntegerField(serializers.IntegerField):
    """An integer written as one in the query string: DRF's field also takes "1.0" or "1.00",
    which the schema (type integer) refuses, so clients and server would disagree on it."""

    DIGITS = re.compile(r"-?[0-9]+")

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not self.DIGITS.fullmatch(data.strip()):
            self.fail("invalid")
        return super().to_internal_value(data)


class RunListQuerySerializer(StrictSerializer):
    limit = QueryIntegerField(default=20, min_value=1, max_value=MAX_LIST_LIMIT)
    cursor = serializers.CharField(required=False, max_length=256)
    offset = QueryIntegerField(
        required=False, default=0, min_value=0, max_value=10_000, help_text="Prefer cursor"
    )
    status = serializers.ChoiceField(choices=RunStatus.choices, required=False)
    mode = serializers.ChoiceField(choices=MODES, required=False)
    algorithm = serializers.ChoiceField(choices=ALGORITHM_CHOICES, required=False)
    dataset_key = serializers.CharField(
        required=False, max_length=128, validators=[RegexValidator(DATASET_KEY_PATTERN)]
    )
    sort = serializers.ChoiceField(
        choices=list(ranking_metrics()),
        required=False,
        help_text="Rank the dataset's completed runs by this final metric, best first (highest "
        "score, lowest loss); needs dataset_key, takes no status, mode, algorithm or offset, and "
        "each item then carries its metrics",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs.get("sort"):
            if not attrs.get("dataset_key"):
                raise serializers.ValidationError(
                    {"sort": "ranking compares runs of one dataset: give dataset_key"}
                )
            clash = [name for name in ("status", "mode", "algorithm") if attrs.get(name)]
            if attrs.get("offset"):
                clash.append("offset")
            if clash:
                raise serializers.ValidationError(
                    {"sort": f"a ranking takes no {', '.join(clash)} (it lists completed runs)"}
                )
        return attrs


class RunListItemSerializer(serializers.ModelSerializer[TunixRun]):
    run_id = serializers.UUIDField(source="id")
    dataset_key = serializers.CharField(source="dataset.key")
    duration_seconds = serializers.FloatField(allow_null=True)

    class Meta:
        model = TunixRun
        fields = [
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
        ]
        read_only_fields = fields


def list_item(run: RunRow) -> dict[str, Any]:
    """RunListItemSerializer's output, built directly: the list is the hottest endpoint and a
    ModelSerializer costs about 0.1 ms a row. Times stay datetimes: the JSON renderer writes
    them as DRF's DateTimeField does (ISO 8601, UTC as Z), in compiled code.
    tests/test_api_runs.py checks that both render the same bytes."""
    return {
        "run_id": str(run.id),
        "status": run.status,
        "mode": run.mode,
        "algorithm": run.algorithm,
        "dataset_key": run.dataset_key,
        "model_id": run.model_id,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "duration_seconds": run.duration_seconds,
        "exit_code": run.exit_code,
        "error_reason": run.error_reason,
    }


PROGRESS_FIELDS = {"step": int, "total_steps": int, "loss": float, "loss_mean": float}


def status_item(row: dict[str, Any]) -> dict[str, Any]:
    """RunStatusSerializer's output for a selectors.run_status row, built directly: it is what
    every open run page and API client polls. Times stay datetimes, as in list_item.
    tests/test_api_runs.py checks that both render the same bytes."""
    progress = row["progress"] or {}
    return {
        "run_id": str(row["id"]),
        "status": row["status"],
        "queued_at": row["queued_at"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "exit_code": row["exit_code"],
        "error_reason": row["error_reason"],
        "error_message": row["error_message"],
        "attempt": row["attempt"],
        # The documented fields only, with their types, as RunProgressSerializer gives them.
        "progress": {
            name: None if progress[name] is None else kind(progress[name])
            for name, kind in PROGRESS_FIELDS.items()
            if name in progress
        },
    }


def accepted_item(run: TunixRun, status_url: str) -> dict[str, Any]:
    """RunAcceptedSerializer's output, built directly: the enqueue path is hot too."""
    return {**list_item(RunRow.from_run(run)), "status_url": status_url}


class RunAcceptedSerializer(RunListItemSerializer):
    """The 202 answer to an async submit: enough to start polling."""

    status_url = serializers.SerializerMethodField()

    class Meta(RunListItemSerializer.Meta):
        fields = [*RunListItemSerializer.Meta.fields, "status_url"]
        read_only_fields = fields

    def get_status_url(self, run: TunixRun) -> str:
        path = reverse("api:run-status", kwargs={"run_id": run.id})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path


class RunPaginationSerializer(serializers.Serializer[Any]):
    limit = serializers.IntegerField()
    next_cursor = serializers.CharField(allow_null=True)
    next = serializers.CharField(allow_null=True, help_text="URL of the next page")


# The run list's answer, for the schema only (the view builds these dicts itself). many=False:
# the answer is one object, where a viewset's list action would otherwise be documented as an
# array of them.
@extend_schema_serializer(many=False)
class RunListSerializer(serializers.Serializer[Any]):
    # A field named like Serializer.data: DRF's metaclass takes declared fields off the class,
    # so the property stays; the stubs cannot know that.
    data = RunListItemSerializer(many=True)  # type: ignore[assignment]
    pagination = RunPaginationSerializer()


class RunProgressSerializer(serializers.Serializer[Any]):
    """Empty until a training reports its first step."""

    step = serializers.IntegerField(required=False)
    total_steps = serializers.IntegerField(required=False)
    loss = serializers.FloatField(required=False, help_text="this step's batch loss")
    loss_mean = serializers.FloatField(
        required=False,
        help_text=f"mean batch loss of the last {TRAIN_LOSS_WINDOW} steps (all, if fewer)",
    )
    phase = serializers.ChoiceField(
        choices=[PHASE_EVALUATING],
        required=False,
        help_text="after training: generating completions for the held-out records",
    )
    item = serializers.IntegerField(required=False, help_text="held-out records generated so far")
    items = serializers.IntegerField(required=False, help_text="held-out records to generate")


class RunMetricsSerializer(serializers.Serializer[Any]):
    """A finished training's summary, as its trainer reported it."""

    train_loss = serializers.FloatField(
        required=False,
        help_text=f"mean batch loss of the last {TRAIN_LOSS_WINDOW} steps (all, if fewer)",
    )
    eval_loss = serializers.FloatField(required=False)
    steps = serializers.FloatField(required=False)
    tokens_per_second = serializers.FloatField(
        required=False, help_text="tokens trained on per second, padding not counted"
    )
    wall_seconds = serializers.FloatField(required=False)
    compiled_shapes = serializers.FloatField(
        required=False,
        help_text="padded batch shapes the training compiled (train and eval steps); each "
        "costs a compilation",
    )
    eval_items = serializers.FloatField(
        required=False, help_text="held-out records generated and scored after training"
    )
    eval_seconds = serializers.FloatField(
        required=False, help_text="wall time of the generation eval (not in wall_seconds)"
    )
    exact_match = serializers.FloatField(
        required=False,
        help_text="share of predictions equal to the reference after normalising case, "
        "whitespace and punctuation",
    )
    token_f1 = serializers.FloatField(
        required=False, help_text="mean token-level F1 of prediction against reference"
    )
    rouge_l = serializers.FloatField(required=False, help_text="mean ROUGE-L F-measure")

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        signals = algorithm_signals()
        for name in algorithm_results():
            fields[name] = serializers.FloatField(
                required=False,
                help_text=f"{signals.get(name, name)} over the last {TRAIN_LOSS_WINDOW} steps "
                f"({', '.join(a for a, c in ALGORITHMS.items() if name in c.results)})",
            )
        return fields


class RunSeriesSerializer(serializers.Serializer[Any]):
    """Per-step series, [step, value] pairs, each thinned to at most a few hundred points."""

    train_loss = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="each step's batch loss (the loss curve)",
    )
    eval_loss = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="each evaluation's loss, at the step it followed",
    )
    learning_rate = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2)
    )
    tokens_per_second = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="real (non-padding) tokens a second since the previous step's report",
    )

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        for name, label in algorithm_signals().items():
            takers = ", ".join(a for a, c in ALGORITHMS.items() if name in c.signals)
            fields[name] = serializers.ListField(
                child=serializers.ListField(
                    child=serializers.FloatField(), min_length=2, max_length=2
                ),
                required=False,
                help_text=f"each step's {label} (only on {takers} runs)",
            )
        return fields


def run_series(run: TunixRun) -> dict[str, list[list[float]]]:
    """Every series of a run, the train loss included, and its algorithm's signals; empty lists
    where none was reported."""
    stored = run.series or {}
    algorithm = ALGORITHMS.get(run.algorithm)
    names = (*SERIES, *(algorithm.signals if algorithm else ()))
    return {"train_loss": run.loss_curve or [], **{name: stored.get(name, []) for name in names}}


class RunDetailSerializer(RunListItemSerializer):
    output_dir = serializers.CharField()
    progress = RunProgressSerializer(read_only=True)
    metrics = RunMetricsSerializer(read_only=True)
    loss_curve = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        read_only=True,
        help_text="[step, loss] pairs, thinned to at most a few hundred (series.train_loss)",
    )
    series = serializers.SerializerMethodField()
    message = serializers.SerializerMethodField()
    wait_reason = serializers.SerializerMethodField(
        help_text="Why a pending run is not picked up (no live worker, or none that can read "
        "its queue task); null when it is simply waiting its turn"
    )
    created_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(
        slug_field="username", read_only=True
    )
    sweep = serializers.UUIDField(
        source="sweep_id",
        read_only=True,
        allow_null=True,
        help_text="The sweep this run is a trial of (GET /api/tunix/sweeps/{id}); null for a "
        "run of its own",
    )
    trial_number = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Its number within the sweep, from 0"
    )
    resources = serializers.SerializerMethodField(
        help_text="What the run asked of its worker host; null when it asked for nothing (cpu)"
    )
    resource_class = serializers.CharField(
        read_only=True,
        help_text="The resource class whose workers take it: cpu, gpu, gpu-a100, tpu-v5e, …",
    )
    execution_ref = serializers.CharField(
        read_only=True,
        help_text="What executes the run outside its worker, as its mode names it: a ray run's "
        "Ray job submission id (<run id>-a<attempt>); empty for other modes",
    )

    class Meta(RunListItemSerializer.Meta):
        fields = [
            *RunListItemSerializer.Meta.fields,
            "config",
            "stdout",
            "stderr",
            "error_message",
            "message",
            "wait_reason",
            "output_dir",
            "progress",
            "loss_curve",
            "series",
            "metrics",
            "attempt",
            "timeout_seconds",
            "client_request_id",
            "created_by",
            "sweep",
            "trial_number",
            "resources",
            "resource_class",
            "execution_ref",
        ]
        read_only_fields = fields

    @extend_schema_field({**_RESOURCES_SCHEMA, "nullable": True})
    def get_resources(self, run: TunixRun) -> dict[str, Any] | None:
        return run.resources or None

    def get_wait_reason(self, run: TunixRun) -> str | None:
        return selectors.run_wait_reason(run=run)

    @extend_schema_field(RunSeriesSerializer)
    def get_series(self, run: TunixRun) -> dict[str, list[list[float]]]:
        return run_series(run)

    def get_message(self, run: TunixRun) -> str:
        if run.status == RunStatus.COMPLETED:
            return "dry-run validation passed" if run.mode == RunMode.DRY_RUN else "training done"
        if run.status == RunStatus.FAILED:
            return run.error_message or run.error_reason
        return str(run.status)


class RunStatusSerializer(serializers.Serializer[Any]):
    run_id = serializers.UUIDField(source="id")
    status = serializers.ChoiceField(choices=RunStatus.choices)
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    exit_code = serializers.IntegerField(allow_null=True)
    error_reason = serializers.CharField(allow_blank=True)
    error_message = serializers.CharField(allow_blank=True)
    attempt = serializers.IntegerField()
    progress = RunProgressSerializer()


class DatasetSerializer(serializers.ModelSerializer[Dataset]):
    created_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="Username of the uploader; null for datasets imported on the command line",
    )

    class Meta:
        model = Dataset
        fields = [
            "key",
            "format",
            "record_count",
            "size_bytes",
            "sha256",
            "created_at",
            "created_by",
        ]
        read_only_fields = fields


class DatasetUploadSerializer(StrictSerializer):
    key = serializers.CharField(max_length=128, help_text="name-version, e.g. my-data-v1")
    file = serializers.FileField(
        help_text="JSONL: prompt/completion, chat messages, or reasoning traces (prompt, "
        "final_answer, steps), which are stored as prompt/completion"
    )
    reasoning = serializers.ChoiceField(
        choices=REASONING_CHOICES,
        default=REASONING_INCLUDE,
        help_text="Reasoning traces only: include stores each completion as the numbered steps "
        "then 'Answer: <final_answer>'; omit stores the final answer alone. Ignored for other "
        "formats.",
    )
