"""Submitting runs: validation of a RunRequest, idempotent replays, and the run row with its
queue task in one transaction."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection
from django_q.models import OrmQ

from runs import algorithms, authorization, metrics, model_catalog, resources, training_config
from runs.execution import UnknownMode, get_backend
from runs.models import Dataset, RunMode, RunStatus, TunixRun
from runs.resources import Resources
from runs.selectors.bases import REFERENCE_PREFIXES, BaseModel, BaseModelError, base_model_resolve
from runs.services.errors import Forbidden, IdempotencyMismatch, ServiceError
from runs.services.queue import QueueRow, enqueue_run, run_queue_row
from runs.services.telemetry import timed_write

log = logging.getLogger("tunix_rt.runs")


@dataclass(frozen=True)
class RunRequest:
    """What a client asks to run: everything but who asks and how it is delivered. The API's
    serializer, the launch form, "run again" and sweeps all build one."""

    dataset_key: str
    model_id: str
    mode: str = RunMode.DRY_RUN
    config: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: int | None = None
    client_request_id: str | None = None  # the idempotency key
    algorithm: str = algorithms.DEFAULT_ALGORITHM
    resources: Resources | None = None  # None: asks for nothing (served as cpu)

    @classmethod
    def like(cls, run: TunixRun) -> RunRequest:
        """The same run again (a new one: no idempotency key)."""
        return cls(
            dataset_key=run.dataset.key,
            model_id=run.model_id,
            mode=run.mode,
            config=dict(run.config),
            timeout_seconds=run.timeout_seconds,
            algorithm=run.algorithm,
            resources=resources.from_stored(run.resources),
        )

    def with_key(self, client_request_id: str | None) -> RunRequest:
        return dataclasses.replace(self, client_request_id=client_request_id)


@dataclass(frozen=True)
class Submission:
    run: TunixRun
    replayed: bool  # True: the key matched an earlier identical request; nothing new was made


def request_fingerprint(payload: dict[str, Any]) -> str:
    """A stable hash of a run request, to tell a retry from a different request."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _unknown_dataset(request: RunRequest) -> ServiceError:
    return ServiceError(f"unknown dataset {request.dataset_key!r}", field="dataset_key")


def _refused_dataset(request: RunRequest) -> ServiceError:
    """Why the statement found no dataset row it may use: none has the key, or its format is
    not one the run's algorithm trains on (looked up only on this error path)."""
    dataset = Dataset.objects.filter(key=request.dataset_key).only("format").first()
    if dataset is None:
        return _unknown_dataset(request)
    reason = algorithms.format_refusal(
        request.algorithm, dataset.format, dataset_key=request.dataset_key
    )
    return ServiceError(reason or f"dataset {request.dataset_key!r} refused", field="dataset_key")


def _validated_fields(request: RunRequest, user: authorization.UserLike = None) -> dict[str, Any]:
    """Everything checkable at submit time but the dataset, as the run's columns; raises
    ServiceError naming the field. (The dataset is looked up by the statement that writes the
    run: see _write.) ``user`` is who asks: an exports:/ base must be a run they may view."""
    try:
        backend = get_backend(request.mode)
    except UnknownMode as exc:
        raise ServiceError(str(exc), field="mode") from None
    if refusal := backend.unavailable():
        raise ServiceError(refusal, field="mode")
    base = _check_model(request.model_id, trains=backend.trains, user=user)
    if request.algorithm not in algorithms.ALGORITHMS:
        raise ServiceError(
            algorithms.unknown_algorithm_message(request.algorithm), field="algorithm"
        )
    clean, errors = training_config.normalise(dict(request.config), request.algorithm)
    if errors:
        name, reason = sorted(errors.items())[0]
        raise ServiceError(f"{name}: {reason}", field=name)
    if clean["learning_rate"] is None:  # stored resolved: the run shows what it trains with
        clean["learning_rate"] = (
            model_catalog.default_learning_rate(request.model_id)
            if base is None
            else base.learning_rate
        )
    timeout = request.timeout_seconds
    if timeout is not None and not 1 <= timeout <= settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS:
        raise ServiceError(
            f"timeout_seconds must be in [1, {settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS}]",
            field="timeout_seconds",
        )
    fields: dict[str, Any] = {
        "model_id": request.model_id,
        "mode": request.mode,
        "algorithm": request.algorithm,
        "config": clean,
        "timeout_seconds": timeout,
    }
    # An SFT request without resources hashes as it did before runs chose an algorithm or
    # resources, so a key used then still replays.
    hashed = {k: v for k, v in fields.items() if k != "algorithm"}
    if request.algorithm != algorithms.DEFAULT_ALGORITHM:
        hashed["algorithm"] = request.algorithm
    if request.resources is not None:
        hashed["resources"] = request.resources.as_json()
        if too_much := backend.refuse_resources(request.resources):
            raise ServiceError(too_much, field="resources")
        fields.update(_resource_fields(request.resources, routed=backend.routes_by_resources))
    fingerprint = request_fingerprint({"dataset_key": request.dataset_key, **hashed})
    if base is not None:
        # Hashed as asked, so a retry of "models:/m@prod" replays after the alias moved; the
        # run keeps what the reference named when it was first submitted.
        fields.update(model_id=base.model_id, base_export=base.export, base_version=base.version)
    return {**fields, "request_fingerprint": fingerprint}


def _resource_fields(asked: Resources, *, routed: bool) -> dict[str, Any]:
    """The run's resources columns; refuses a request no configured worker class could ever
    serve, so it is not queued forever. Only a training on a worker host routes by class: a
    dry-run needs no accelerator, and a job on a cluster (mode ray) has its resources placed by
    the cluster, so either goes to the cpu queue whatever it asks."""
    if not routed:
        return {"resources": asked.as_json(), "resource_class": resources.CPU}
    if reason := resources.servable(asked, resources.configured(settings.TUNIX_RESOURCE_CLASSES)):
        raise ServiceError(reason, field="resources")
    return {"resources": asked.as_json(), "resource_class": asked.resource_class}


def checkpoint_directory(model_id: str) -> Path | None:
    """Where this host keeps a real model's checkpoint (None for the preset or an id outside
    the catalog, which a custom trainer interprets itself)."""
    entry = model_catalog.lookup(model_id)
    if entry is None or entry.is_preset:
        return None
    return model_catalog.checkpoint_directory(Path(settings.TUNIX_MODELS_DIR), model_id)


def _check_model(
    model_id: str, *, trains: bool, user: authorization.UserLike = None
) -> BaseModel | None:
    """Refuse at submit time a model the built-in trainer would refuse later. A custom
    TUNIX_TRAINER_COMMAND interprets model ids itself, so any well-formed id passes. A base
    reference (models:/…, exports:/…) is resolved and returned; a catalog id costs no query."""
    if model_id.startswith(REFERENCE_PREFIXES):
        return _resolve_base(model_id, user)
    if settings.TUNIX_TRAINER_COMMAND:
        return None
    if model_catalog.lookup(model_id) is None:
        raise ServiceError(model_catalog.unknown_model_message(model_id), field="model_id")
    directory = checkpoint_directory(model_id)
    # Checked only where it can be known here: a training, no download allowed, and the
    # workers' model directory visible from this host.
    if (
        directory is None
        or not trains
        or settings.TUNIX_MODEL_DOWNLOAD
        or not settings.TUNIX_MODELS_DIR_SHARED
    ):
        return None
    if missing := model_catalog.missing_checkpoint_files(directory):
        raise ServiceError(
            model_catalog.missing_checkpoint_message(model_id, directory, missing),
            field="model_id",
        )
    return None


def _resolve_base(model_id: str, user: authorization.UserLike) -> BaseModel:
    try:
        base = base_model_resolve(model_id=model_id, user=user)
    except BaseModelError as exc:
        raise ServiceError(str(exc), field="model_id") from None
    # The built-in trainer rebuilds a model of a catalog family only; a custom trainer reads
    # the export's directory its own way.
    if base.family is None and not settings.TUNIX_TRAINER_COMMAND:
        raise ServiceError(
            f"{base.model_id} continues {base.root_model_id!r}, which local training does not "
            "support",
            field="model_id",
        )
    return base


def _replay(user: User | None, key: str, fingerprint: str) -> TunixRun | None:
    """The run an earlier request with this key made, if any; refuses a changed request."""
    if user is None:
        return None
    earlier = (
        TunixRun.objects.select_related("dataset")
        .filter(created_by=user, client_request_id=key)
        .first()
    )
    if earlier is not None and earlier.request_fingerprint != fingerprint:
        raise IdempotencyMismatch(
            f"idempotency key {key!r} was already used with a different request",
            field="client_request_id",
        )
    return earlier


def _write(run: TunixRun, request: RunRequest, *, enqueue: bool) -> None:
    """Write the run (and, with ``enqueue``, its queue task), or nothing: one transaction.

    On PostgreSQL that is one statement, sent in autocommit: it looks the dataset up, inserts the
    run and inserts its task, and its commit is the one durable commit an enqueue waits for.
    One round trip instead of four (lookup, two inserts, commit), and no ORM query building on
    the path every async submit takes. Elsewhere (SQLite) the same rows are written through the
    ORM in a transaction."""
    operation = "run_enqueue" if enqueue else "run_create"
    if connection.vendor != "postgresql":
        with timed_write(operation):
            dataset = Dataset.objects.filter(
                key=request.dataset_key,
                format__in=algorithms.ALGORITHMS[request.algorithm].formats,
            ).first()
            if dataset is None:
                raise _refused_dataset(request)
            run.dataset = dataset
            run.save(force_insert=True)
            if enqueue:
                enqueue_run(run)
        return
    task = run_queue_row(run) if enqueue else None
    # Inside a caller's transaction the statement gets a savepoint, so a refused key leaves that
    # transaction usable; on its own it needs none.
    with timed_write(operation, atomic=connection.in_atomic_block), connection.cursor() as cursor:
        cursor.execute(*_insert_statement(run, request.dataset_key, task))
        values = cursor.fetchone()
    if values is None:
        raise _refused_dataset(request)
    run.dataset = Dataset.from_db(connection.alias, DATASET_COLUMNS, values)


DATASET_COLUMNS = [f.attname for f in Dataset._meta.concrete_fields]


_RUN_FIELDS = [f for f in TunixRun._meta.concrete_fields if f.attname != "dataset_id"]


def _insert_statement(
    run: TunixRun, dataset_key: str, task: QueueRow | None
) -> tuple[str, list[Any]]:
    """The run's INSERT … SELECT from its dataset's row (nothing when no dataset has that key),
    then its task's INSERT from what the first one inserted, returning the dataset's row. Every
    value goes through its model field's own conversion, as the ORM's INSERT does."""
    values = [f.get_db_prep_save(f.pre_save(run, add=True), connection) for f in _RUN_FIELDS]
    formats = sorted(algorithms.ALGORITHMS[run.algorithm].formats)
    params: list[Any] = [dataset_key, formats, *values]
    if task is not None:
        params += [task.key, task.payload, task.lock]
    return _insert_sql(connection.vendor, with_task=task is not None), params


@functools.cache
def _insert_sql(vendor: str, *, with_task: bool) -> str:
    """The statement's text, the same for every submit: built once per process."""
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in _RUN_FIELDS)
    placeholders = ", ".join(["%s"] * len(_RUN_FIELDS))
    dataset_columns = ", ".join(f"d.{quote(name)}" for name in DATASET_COLUMNS)
    # Table and column names come from model meta; every value is a parameter. (S608: so.)
    dataset_table, run_table = quote(Dataset._meta.db_table), quote(TunixRun._meta.db_table)
    sql = (
        f"WITH d AS (SELECT * FROM {dataset_table} WHERE key = %s AND format = ANY(%s)), "  # noqa: S608
        f"r AS (INSERT INTO {run_table} ({columns}, dataset_id) "
        f"SELECT {placeholders}, d.id FROM d RETURNING id)"
    )
    sources = "d, r"
    if with_task:
        sql += (
            f", t AS (INSERT INTO {quote(OrmQ._meta.db_table)} (key, payload, lock) "  # noqa: S608
            "SELECT %s, %s, %s FROM r RETURNING id)"
        )
        sources += ", t"
    return f"{sql} SELECT {dataset_columns} FROM {sources}"  # noqa: S608


def run_submit(*, user: authorization.UserLike, request: RunRequest, enqueue: bool) -> Submission:
    """Register a pending run (and, with ``enqueue``, its queue task in the same transaction).

    With a client_request_id the same request from the same user returns the first run; two
    concurrent ones are settled by the unique constraint, not by a read-then-write.
    """
    if not authorization.can_launch(user):
        raise Forbidden("launching runs needs the runs.add_tunixrun permission")
    owner = authorization.real_user(user)
    fields = _validated_fields(request, user)
    fingerprint = fields["request_fingerprint"]
    key = request.client_request_id
    # Recorded so a replay of this key answers as this request was answered (202 or 201),
    # whatever delivery the replay asks for.
    run = TunixRun(**fields, client_request_id=key, created_by=owner, submitted_async=enqueue)
    try:
        # The first request with a key writes as one without; a repeat of it meets the unique
        # constraint on (user, key) and is answered with the run the first one made. Trying the
        # write first saves the common case a lookup, and two concurrent requests with one key
        # are settled by the constraint, not by a read-then-write.
        _write(run, request, enqueue=enqueue)
    except IntegrityError:
        if key and (earlier := _replay(owner, key, fingerprint)):
            return Submission(run=earlier, replayed=True)
        raise
    metrics.RUNS_TOTAL.labels(RunStatus.PENDING).inc()
    log.info(
        "run_transition",
        extra={"fields": {"run_id": run.id, "from": "", "to": RunStatus.PENDING, "attempt": 0}},
    )
    return Submission(run=run, replayed=False)
