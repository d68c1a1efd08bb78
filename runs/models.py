"""Tunix RT data model. Invariants live in the database as constraints, not only in Python."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from runs.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from runs.execution.registry import MODES
from runs.outcomes import REASON_LABELS, Ending, Reason
from runs.tuning import DEFAULT_SAMPLER, PRUNERS, SAMPLERS

# name-version, lower case; no slash, no leading dot, so a key is always a plain file name.
DATASET_KEY_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,127}$"
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127})?$"


class DatasetFormat(models.TextChoices):
    PROMPT_COMPLETION = "prompt_completion", "prompt / completion"
    CHAT = "chat", "chat messages"
    PREFERENCE = "preference", "preference pairs"
    PROMPT_ANSWER = "prompt_answer", "prompt / answer"


class Dataset(models.Model):
    key = models.CharField(
        max_length=128,
        unique=True,
        validators=[RegexValidator(DATASET_KEY_PATTERN)],
        help_text="name-version, e.g. tunix-demo-v1",
    )
    format = models.CharField(max_length=32, choices=DatasetFormat.choices)
    record_count = models.PositiveIntegerField()
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    # Relative to TUNIX_DATASETS_ROOT; never an absolute path.
    file_path = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=Q(format__in=DatasetFormat.values), name="dataset_format_valid"
            ),
            models.CheckConstraint(condition=Q(record_count__gt=0), name="dataset_not_empty"),
            models.CheckConstraint(
                condition=~Q(file_path__startswith="/") & ~Q(file_path__contains=".."),
                name="dataset_file_path_relative",
            ),
        ]

    def __str__(self) -> str:
        return self.key


class RunMode(models.TextChoices):
    """The modes code names; every mode a run may have is an execution backend
    (runs.execution.BACKENDS), which the column's choices and constraint list."""

    DRY_RUN = "dry-run", "dry-run"
    LOCAL = "local", "local"
    RAY = "ray", "ray"


class RunStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    # The endings an execution reports (runs.outcomes.Ending).
    COMPLETED = Ending.COMPLETED.value, "completed"
    FAILED = Ending.FAILED.value, "failed"
    CANCELLED = Ending.CANCELLED.value, "cancelled"


MODE_CHOICES = [(mode, mode) for mode in MODES]
ALGORITHM_CHOICES = [(name, algorithm.label) for name, algorithm in ALGORITHMS.items()]

ACTIVE_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING)
TERMINAL_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class FailureReason(models.TextChoices):
    # The values are runs.outcomes.Reason's, which the trainer and the dry-run report.
    NONE = Reason.NONE.value, REASON_LABELS[Reason.NONE]
    DATASET_INVALID = Reason.DATASET_INVALID.value, REASON_LABELS[Reason.DATASET_INVALID]
    CONFIG_INVALID = Reason.CONFIG_INVALID.value, REASON_LABELS[Reason.CONFIG_INVALID]
    RUNTIME_MISSING = Reason.RUNTIME_MISSING.value, REASON_LABELS[Reason.RUNTIME_MISSING]
    MODEL_UNAVAILABLE = Reason.MODEL_UNAVAILABLE.value, REASON_LABELS[Reason.MODEL_UNAVAILABLE]
    NONZERO_EXIT = Reason.NONZERO_EXIT.value, REASON_LABELS[Reason.NONZERO_EXIT]
    TIMEOUT = Reason.TIMEOUT.value, REASON_LABELS[Reason.TIMEOUT]
    WORKER_LOST = Reason.WORKER_LOST.value, REASON_LABELS[Reason.WORKER_LOST]
    INTERNAL_ERROR = Reason.INTERNAL_ERROR.value, REASON_LABELS[Reason.INTERNAL_ERROR]
    PRUNED = Reason.PRUNED.value, REASON_LABELS[Reason.PRUNED]
    BACKEND_UNAVAILABLE = (
        Reason.BACKEND_UNAVAILABLE.value,
        REASON_LABELS[Reason.BACKEND_UNAVAILABLE],
    )


def duration_seconds(started_at: datetime | None, completed_at: datetime | None) -> float | None:
    """Seconds from start to end, or None while either is unknown."""
    if started_at is None or completed_at is None:
        return None
    return (completed_at - started_at).total_seconds()


class TunixRun(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The list filters by dataset through the composite index below, so no separate FK index.
    dataset = models.ForeignKey(
        Dataset, on_delete=models.PROTECT, related_name="runs", db_index=False
    )
    model_id = models.CharField(max_length=256)
    mode = models.CharField(max_length=16, choices=MODE_CHOICES, default=RunMode.DRY_RUN)
    # How the run trains (runs/algorithms/); config holds that algorithm's hyperparameters.
    algorithm = models.CharField(
        max_length=16, choices=ALGORITHM_CHOICES, default=DEFAULT_ALGORITHM
    )
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    config = models.JSONField(default=dict, blank=True)

    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    exit_code = models.IntegerField(null=True, blank=True)
    stdout = models.TextField(blank=True, default="")
    stderr = models.TextField(blank=True, default="")
    error_reason = models.CharField(
        max_length=32, choices=FailureReason.choices, blank=True, default=FailureReason.NONE
    )
    error_message = models.TextField(blank=True, default="")

    # Training progress as the trainer reports it (runs/progress.py), written with heartbeats:
    # {"step", "total_steps", "loss"} (and "phase", "item", "items" while evaluating);
    # [[step, loss], ...] (thinned to a few hundred points); the other per-step series
    # {"eval_loss": [[step, value], ...], "learning_rate": ..., "tokens_per_second": ...},
    # thinned alike; final metrics {"train_loss", "eval_loss", "steps", "tokens_per_second",
    # "wall_seconds", and the generation eval's "eval_items" and scorer means}.
    progress = models.JSONField(default=dict, blank=True)
    loss_curve = models.JSONField(default=list, blank=True)
    series = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)

    # Execution bookkeeping: each claim increments attempt; writes by a worker are fenced on it.
    attempt = models.PositiveIntegerField(default=0)
    worker_id = models.CharField(max_length=128, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)

    # True when the submitter did not wait for the run (the API's ?mode=async, the launch page's
    # queue): a replay of its idempotency key answers as the first request did (202, not 201).
    submitted_async = models.BooleanField(default=False)

    # NULL, not "", means "no key": the unique constraint applies only to given keys.
    client_request_id = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tunix_runs",
        db_index=False,
    )
    # A run that continues from an earlier run's export (model_id "exports:/<id>") or from a
    # registered version ("models:/<name>/<n>", "models:/<name>@<alias>", stored pinned to the
    # version the alias named at submit). PROTECT: what a run trained from cannot disappear.
    # Partial indexes below: almost every run has neither, and the submit path pays for none.
    base_export = models.ForeignKey(
        "RunExport",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="continued_by",
        db_index=False,
    )
    base_version = models.ForeignKey(
        "ModelVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="continued_by",
        db_index=False,
    )
    # A trial of a hyperparameter sweep (runs/services/sweeps.py), numbered from 0 within it.
    # Indexed by the unique constraint below, whose leading column it is.
    sweep = models.ForeignKey(
        "Sweep",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="trials",
        db_index=False,
    )
    trial_number = models.PositiveIntegerField(null=True, blank=True)
    # What the run asked of a worker host (runs/resources.py; {} = nothing, served as cpu) and
    # the resource class whose queue its task went to. Stored, not derived, so a deployment
    # that later changes TUNIX_RESOURCE_CLASSES still knows where each pending run waits.
    resources = models.JSONField(default=dict, blank=True)
    resource_class = models.CharField(max_length=40, default="cpu")
    # What executes the run outside its worker, as its backend names it (a Ray job's submission
    # id): written by the attempt that starts or reattaches to it, kept after the run ends.
    execution_ref = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["-queued_at", "-id"]
        indexes = [
            models.Index(fields=["-queued_at", "-id"], name="run_list_idx"),
            models.Index(fields=["status", "-queued_at", "-id"], name="run_status_list_idx"),
            models.Index(fields=["dataset", "-queued_at", "-id"], name="run_dataset_list_idx"),
            models.Index(fields=["mode", "-queued_at", "-id"], name="run_mode_list_idx"),
            # A user without runs.view_tunixrun lists only the runs they launched.
            models.Index(fields=["created_by", "-queued_at", "-id"], name="run_owner_list_idx"),
            # Workers and the reaper look only at active rows: these stay small however many
            # finished runs the table holds.
            models.Index(
                fields=["queued_at"], condition=Q(status="pending"), name="run_pending_idx"
            ),
            models.Index(
                fields=["heartbeat_at"], condition=Q(status="running"), name="run_running_idx"
            ),
            models.Index(
                fields=["base_export"],
                condition=Q(base_export__isnull=False),
                name="run_base_export_idx",
            ),
            models.Index(
                fields=["base_version"],
                condition=Q(base_version__isnull=False),
                name="run_base_version_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(condition=Q(mode__in=list(MODES)), name="run_mode_valid"),
            models.CheckConstraint(
                condition=Q(algorithm__in=list(ALGORITHMS)), name="run_algorithm_valid"
            ),
            models.CheckConstraint(
                condition=Q(error_reason__in=FailureReason.values), name="run_error_reason_valid"
            ),
            # completed_at is set exactly when the run is terminal.
            models.CheckConstraint(
                condition=(
                    Q(status__in=ACTIVE_STATUSES, completed_at__isnull=True)
                    | Q(status__in=TERMINAL_STATUSES, completed_at__isnull=False)
                ),
                name="run_completed_at_iff_terminal",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=[RunStatus.RUNNING, RunStatus.COMPLETED])
                | Q(started_at__isnull=False),
                name="run_started_has_started_at",
            ),
            models.CheckConstraint(
                condition=~Q(status=RunStatus.PENDING) | Q(started_at__isnull=True),
                name="run_pending_not_started",
            ),
            models.CheckConstraint(
                condition=~Q(status=RunStatus.COMPLETED) | Q(exit_code=0),
                name="run_completed_exit_zero",
            ),
            models.CheckConstraint(
                condition=~Q(status=RunStatus.FAILED) | ~Q(error_reason=""),
                name="run_failed_has_reason",
            ),
            models.CheckConstraint(
                condition=~Q(status=RunStatus.RUNNING) | Q(attempt__gt=0),
                name="run_running_has_attempt",
            ),
            models.UniqueConstraint(
                fields=["created_by", "client_request_id"],
                condition=Q(client_request_id__isnull=False),
                name="run_client_request_id_unique",
            ),
            # A registered version is always one export: the run names both.
            models.CheckConstraint(
                condition=Q(base_version__isnull=True) | Q(base_export__isnull=False),
                name="run_base_version_has_export",
            ),
            # One run per trial number: two askers racing for the same trial cannot both
            # insert it.
            models.UniqueConstraint(
                fields=["sweep", "trial_number"],
                condition=Q(sweep__isnull=False),
                name="run_sweep_trial_unique",
            ),
            models.CheckConstraint(
                condition=Q(sweep__isnull=True, trial_number__isnull=True)
                | Q(sweep__isnull=False, trial_number__isnull=False),
                name="run_sweep_has_trial_number",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        return duration_seconds(self.started_at, self.completed_at)

    @property
    def output_dir(self) -> str:
        """Artifact directory, relative to TUNIX_ARTIFACTS_ROOT."""
        return str(self.id)


class ExportStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"


class ExportWeights(models.TextChoices):
    MERGED = "merged", "full weights (LoRA merged in)"
    ADAPTER = "adapter", "LoRA adapter (PEFT)"


class WorkerJob(models.Model):
    """What a row a worker's queue task writes has (an export, a sample): who asked, when,
    when a worker took it and when it ended, and why it failed (runs/services/worker_tasks.py
    claims and ends them)."""

    error_reason = models.CharField(
        max_length=32, choices=FailureReason.choices, blank=True, default=FailureReason.NONE
    )
    error_message = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class RunExport(WorkerJob):
    """A checkpoint of a finished training written as a Hugging Face model directory by a
    worker (runs/export.py), into the run's ``exports/<step>-<weights>/``."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(TunixRun, on_delete=models.PROTECT, related_name="exports")
    step = models.PositiveIntegerField()
    weights = models.CharField(
        max_length=16, choices=ExportWeights.choices, default=ExportWeights.MERGED
    )
    status = models.CharField(
        max_length=16, choices=ExportStatus.choices, default=ExportStatus.PENDING
    )
    # The export's content address (export.json's): what a model registry version names.
    sha256 = models.CharField(max_length=64, blank=True, default="")
    size_bytes = models.BigIntegerField(null=True, blank=True)
    files = models.JSONField(default=list, blank=True)  # [{"path", "size_bytes", "sha256"}]

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ExportStatus.values), name="export_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(weights__in=ExportWeights.values), name="export_weights_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status=ExportStatus.COMPLETED) | ~Q(sha256=""),
                name="export_completed_has_sha256",
            ),
            models.CheckConstraint(
                condition=~Q(status=ExportStatus.FAILED) | ~Q(error_reason=""),
                name="export_failed_has_reason",
            ),
            # One live export of a checkpoint in a format: asking again returns it.
            models.UniqueConstraint(
                fields=["run", "step", "weights"],
                condition=~Q(status=ExportStatus.FAILED),
                name="export_one_live_per_checkpoint",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id} step {self.step} ({self.weights}, {self.status})"

    @property
    def directory(self) -> str:
        """Where it is written, relative to the run's directory."""
        return f"{EXPORTS_DIR}/{self.step}-{self.weights}"


EXPORTS_DIR = "exports"

# Lower case, digits, ".", "_" and "-": a registered model's name is a URL path segment and the
# <name> of "models:/<name>/<n>".
REGISTRY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
# An alias starts with a letter, so "models:/m/3" (a version) and "models:/m@prod" never mix.
ALIAS_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
# Resolves to the highest version without being stored: no row may take the name.
LATEST_ALIAS = "latest"


class RegisteredModel(models.Model):
    """A name that versions of trained weights are promoted under (runs/services/registry.py)."""

    name = models.CharField(
        max_length=100, unique=True, validators=[RegexValidator(REGISTRY_NAME_PATTERN)]
    )
    description = models.TextField(blank=True, default="")
    # The next version number is taken by an UPDATE of this row (one writer at a time per
    # model), so two concurrent promotions get distinct numbers without a read-then-write.
    latest_number = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(name__regex=REGISTRY_NAME_PATTERN), name="registry_name_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    """One content-addressed version of a registered model: an export's files, named by the
    export's sha256. The same content promoted again is this version, not a new one.

    Lineage is copied from the run when it is promoted (dataset, its sha256, config, algorithm,
    base model, final metrics): what the version is stays readable as it was, whatever later
    happens to the run's row."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    export = models.ForeignKey(RunExport, on_delete=models.PROTECT, related_name="versions")
    run = models.ForeignKey(
        TunixRun, on_delete=models.PROTECT, related_name="model_versions", db_index=False
    )
    step = models.PositiveIntegerField()
    weights = models.CharField(max_length=16, choices=ExportWeights.choices)
    algorithm = models.CharField(max_length=16, choices=ALGORITHM_CHOICES)
    base_model_id = models.CharField(max_length=256)
    dataset_key = models.CharField(max_length=128)
    dataset_sha256 = models.CharField(max_length=64)
    config = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    description = models.TextField(blank=True, default="")
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    promoted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="version_number_unique"),
            models.UniqueConstraint(fields=["model", "sha256"], name="version_content_unique"),
            models.CheckConstraint(condition=Q(number__gte=1), name="version_number_positive"),
            models.CheckConstraint(
                condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="version_sha256_valid"
            ),
        ]
        indexes = [models.Index(fields=["run"], name="version_run_idx")]

    def __str__(self) -> str:
        return f"{self.model_id}/{self.number}"

    @property
    def uri(self) -> str:
        """What a run names it by as its base model."""
        return f"models:/{self.model.name}/{self.number}"


class ModelAlias(models.Model):
    """A movable name (candidate, production, …) for one version of a model."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.CharField(max_length=64, validators=[RegexValidator(ALIAS_NAME_PATTERN)])
    # PROTECT: a version an alias names cannot be deleted (the alias must move first).
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model", "name"]
        verbose_name_plural = "model aliases"
        constraints = [
            models.UniqueConstraint(fields=["model", "name"], name="alias_name_unique"),
            models.CheckConstraint(
                condition=Q(name__regex=ALIAS_NAME_PATTERN) & ~Q(name=LATEST_ALIAS),
                name="alias_name_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_id}@{self.name}"


class AliasMove(models.Model):
    """Every change of an alias, kept by version number (a version may later be deleted):
    from_number null = the alias was created, to_number null = it was removed."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="alias_moves")
    alias = models.CharField(max_length=64)
    from_number = models.PositiveIntegerField(null=True, blank=True)
    to_number = models.PositiveIntegerField(null=True, blank=True)
    moved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    moved_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-moved_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(from_number__isnull=False) | Q(to_number__isnull=False),
                name="alias_move_moves",
            ),
        ]
        indexes = [models.Index(fields=["model", "alias", "-moved_at"], name="alias_move_idx")]

    def __str__(self) -> str:
        return f"{self.alias}: {self.from_number} -> {self.to_number}"


class SampleStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"


class Sample(WorkerJob):
    """One try-it completion: a prompt given to a finished run's checkpoint or to a registered
    version, generated by a worker (runs/sample.py) and polled by the page or the API."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(
        TunixRun, null=True, blank=True, on_delete=models.CASCADE, related_name="samples"
    )
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="samples"
    )
    step = models.PositiveIntegerField(null=True, blank=True)  # the run's checkpoint sampled
    prompt = models.TextField()
    max_new_tokens = models.PositiveIntegerField()
    temperature = models.FloatField()
    seed = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=SampleStatus.choices, default=SampleStatus.PENDING
    )
    completion = models.TextField(blank=True, default="")
    # Seconds: loading the weights and compiling the sampler, then generating; reported apart
    # because the first is the model's cost and the second the sample's.
    load_seconds = models.FloatField(null=True, blank=True)
    generate_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Exactly one of the two: a run's checkpoint or a registered version.
            models.CheckConstraint(
                condition=Q(run__isnull=False, version__isnull=True)
                | Q(run__isnull=True, version__isnull=False),
                name="sample_one_source",
            ),
            models.CheckConstraint(
                condition=Q(status__in=SampleStatus.values), name="sample_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status=SampleStatus.FAILED) | ~Q(error_reason=""),
                name="sample_failed_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[SampleStatus.COMPLETED, SampleStatus.FAILED],
                    completed_at__isnull=False,
                )
                | Q(
                    status__in=[SampleStatus.PENDING, SampleStatus.RUNNING],
                    completed_at__isnull=True,
                ),
                name="sample_completed_at_iff_done",
            ),
            models.CheckConstraint(condition=Q(max_new_tokens__gte=1), name="sample_tokens"),
        ]

    def __str__(self) -> str:
        return f"sample {self.id} ({self.status})"

    @property
    def seconds(self) -> float | None:
        """Submit to answer, as the person who asked waited for it."""
        return duration_seconds(self.created_at, self.completed_at)


class WorkerHeartbeat(models.Model):
    """One row per qcluster worker process, refreshed by its reaper thread: shows a worker is
    alive even while it has nothing to run."""

    worker_id = models.CharField(max_length=128, primary_key=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Which SECRET_KEY the worker signs and reads queue tasks with, as a short keyed digest that
    # reveals nothing of the key: web hosts compare it with their own, since a worker with
    # another key cannot read a single task they queue.
    signing_key_id = models.CharField(max_length=32, blank=True, default="")
    # What the worker's host has ([{"platform", "kind", "count"}], read once at cluster start in
    # a child process: runs/resources.py) and the resource class its cluster's queue serves.
    devices = models.JSONField(default=list, blank=True)
    resource_class = models.CharField(max_length=40, default="cpu")

    def __str__(self) -> str:
        return self.worker_id


class ProcessMetrics(models.Model):
    """Cumulative Prometheus samples of one process (web or worker, any host).

    Each process writes its own row every few seconds; /metrics on any web process sums all rows,
    so what a worker on another host did is visible there. Rows of processes that are gone are
    folded into one archive row, so counters never go back.
    """

    process_key = models.CharField(max_length=200, primary_key=True)
    role = models.CharField(max_length=16)
    updated_at = models.DateTimeField(default=timezone.now, db_index=True)
    data = models.JSONField(default=dict)

    def __str__(self) -> str:
        return self.process_key


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending (waiting for its next attempt)"
    QUEUED = "queued", "queued"
    DELIVERING = "delivering", "delivering"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed (attempts exhausted)"
    DISABLED = "disabled", "endpoint disabled"


class WebhookDelivery(models.Model):
    """One event for one endpoint. Its id is the Standard Webhooks `webhook-id`, so retries of
    the same event carry the same id; the unique constraint makes it one event per transition."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The run a run.* event is about, or the sweep a sweep.* event is about: exactly one.
    run = models.ForeignKey(
        TunixRun,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhook_deliveries",
    )
    sweep = models.ForeignKey(
        "Sweep",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="webhook_deliveries",
        db_index=False,  # the unique constraint's index leads with it
    )
    event_type = models.CharField(max_length=32)
    endpoint = models.CharField(max_length=2000)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["run", "event_type", "endpoint"], name="webhook_one_event_per_endpoint"
            ),
            models.UniqueConstraint(
                fields=["sweep", "event_type", "endpoint"],
                condition=Q(sweep__isnull=False),
                name="webhook_one_sweep_event_per_endpoint",
            ),
            models.CheckConstraint(
                condition=Q(run__isnull=False, sweep__isnull=True)
                | Q(run__isnull=True, sweep__isnull=False),
                name="webhook_one_subject",
            ),
            models.CheckConstraint(
                condition=Q(status__in=DeliveryStatus.values), name="webhook_status_valid"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_due_idx",
            ),
            models.Index(
                fields=["updated_at"],
                condition=Q(status__in=["queued", "delivering"]),
                name="webhook_inflight_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.endpoint} ({self.status})"

    @property
    def message_id(self) -> str:
        return f"msg_{self.id.hex}"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.FloatField()
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"


class WebhookEndpointState(models.Model):
    """An endpoint that answered 410 Gone is disabled until an operator re-enables it."""

    url = models.CharField(max_length=2000, unique=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return self.url


class SweepStatus(models.TextChoices):
    RUNNING = "running", "running"
    COMPLETED = "completed", "completed"
    CANCELLED = "cancelled", "cancelled"


class SweepDirection(models.TextChoices):
    MINIMIZE = "minimize", "minimize"
    MAXIMIZE = "maximize", "maximize"


SAMPLER_CHOICES = [(name, sampler.label) for name, sampler in SAMPLERS.items()]
PRUNER_CHOICES = [("", "none"), *((name, pruner.label) for name, pruner in PRUNERS.items())]


class Sweep(models.Model):
    """A hyperparameter search: Optuna chooses each trial's values (runs/tuning.py), and each
    trial is an ordinary run submitted through the submission service, linked by
    TunixRun.sweep and numbered by TunixRun.trial_number. The trial rows are the study: nothing
    of Optuna's is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # The base run request every trial shares; config holds the fixed hyperparameters.
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="sweeps")
    model_id = models.CharField(max_length=256)
    algorithm = models.CharField(
        max_length=16, choices=ALGORITHM_CHOICES, default=DEFAULT_ALGORITHM
    )
    mode = models.CharField(max_length=16, choices=MODE_CHOICES, default=RunMode.DRY_RUN)
    config = models.JSONField(default=dict, blank=True)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    resources = models.JSONField(default=dict, blank=True)  # every trial asks for these
    # {"<hyperparameter>": {"low", "high", "log"?, "step"?} | {"choices": [...]}}
    space = models.JSONField()
    metric = models.CharField(max_length=64)
    direction = models.CharField(max_length=8, choices=SweepDirection.choices)
    n_trials = models.PositiveIntegerField()
    concurrency = models.PositiveIntegerField()
    sampler = models.CharField(max_length=32, choices=SAMPLER_CHOICES, default=DEFAULT_SAMPLER)
    pruner = models.CharField(max_length=32, choices=PRUNER_CHOICES, blank=True, default="")
    seed = models.PositiveBigIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=SweepStatus.choices, default=SweepStatus.RUNNING
    )
    best_run = models.ForeignKey(
        TunixRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="sweep_list_idx"),
            models.Index(fields=["created_by", "-created_at"], name="sweep_owner_list_idx"),
            # The reaper's safety net looks at running sweeps only.
            models.Index(
                fields=["created_at"], condition=Q(status="running"), name="sweep_running_idx"
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(n_trials__gte=1), name="sweep_n_trials_positive"),
            models.CheckConstraint(
                condition=Q(concurrency__gte=1), name="sweep_concurrency_positive"
            ),
            models.CheckConstraint(
                condition=Q(status__in=SweepStatus.values), name="sweep_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(direction__in=SweepDirection.values), name="sweep_direction_valid"
            ),
            models.CheckConstraint(
                condition=Q(sampler__in=list(SAMPLERS)), name="sweep_sampler_valid"
            ),
            models.CheckConstraint(
                condition=Q(pruner__in=["", *PRUNERS]), name="sweep_pruner_valid"
            ),
            models.CheckConstraint(condition=Q(mode__in=list(MODES)), name="sweep_mode_valid"),
            models.CheckConstraint(
                condition=Q(algorithm__in=list(ALGORITHMS)), name="sweep_algorithm_valid"
            ),
            models.CheckConstraint(
                condition=Q(status=SweepStatus.RUNNING, completed_at__isnull=True)
                | Q(
                    status__in=[SweepStatus.COMPLETED, SweepStatus.CANCELLED],
                    completed_at__isnull=False,
                ),
                name="sweep_completed_at_iff_ended",
            ),
        ]

    def __str__(self) -> str:
        return f"sweep {self.id} ({self.status})"

    @property
    def is_running(self) -> bool:
        return self.status == SweepStatus.RUNNING
