"""Every read the API, the pages and the admin make. Lists are keyset-paginated: the cost of a
page does not depend on how deep it is or how many runs the table holds."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Count, F, FloatField, Max, Min, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.utils import timezone

from runs import resources
from runs.models import (
    Dataset,
    ProcessMetrics,
    RunExport,
    RunStatus,
    TunixRun,
    WorkerHeartbeat,
    duration_seconds,
)
from runs.progress import LOWER_IS_BETTER, ranking_metrics
from runs.selectors.bases import BASE_REFERENCE_PATTERN as BASE_REFERENCE_PATTERN
from runs.selectors.bases import RUN_MODEL_ID_PATTERN as RUN_MODEL_ID_PATTERN
from runs.selectors.bases import BaseChoice as BaseChoice
from runs.selectors.bases import BaseModel as BaseModel
from runs.selectors.bases import BaseModelError as BaseModelError
from runs.selectors.bases import base_model_choices as base_model_choices
from runs.selectors.bases import base_model_resolve as base_model_resolve
from runs.selectors.bases import is_base_reference as is_base_reference
from runs.selectors.bases import run_base_model as run_base_model
from runs.selectors.comparison import ITEMS_PER_PAGE as ITEMS_PER_PAGE
from runs.selectors.comparison import MAX_RUNS as MAX_RUNS
from runs.selectors.comparison import MIN_RUNS as MIN_RUNS
from runs.selectors.comparison import Comparison as Comparison
from runs.selectors.comparison import InvalidComparison as InvalidComparison
from runs.selectors.comparison import ItemSet as ItemSet
from runs.selectors.comparison import Prediction as Prediction
from runs.selectors.comparison import RunsNotFound as RunsNotFound
from runs.selectors.comparison import comparison_items as comparison_items
from runs.selectors.comparison import run_comparison as run_comparison
from runs.selectors.ids import as_uuid
from runs.selectors.registry import MAX_VERSION_NUMBER as MAX_VERSION_NUMBER
from runs.selectors.registry import ResolvedAlias as ResolvedAlias
from runs.selectors.registry import registry_alias_get as registry_alias_get
from runs.selectors.registry import registry_alias_list as registry_alias_list
from runs.selectors.registry import registry_alias_moves as registry_alias_moves
from runs.selectors.registry import registry_latest_version as registry_latest_version
from runs.selectors.registry import registry_model_get as registry_model_get
from runs.selectors.registry import registry_model_list as registry_model_list
from runs.selectors.registry import registry_version_get as registry_version_get
from runs.selectors.registry import registry_version_list as registry_version_list
from runs.selectors.registry import registry_version_users as registry_version_users
from runs.selectors.registry import registry_versions_of_run as registry_versions_of_run
from runs.selectors.registry import valid_alias_name as valid_alias_name
from runs.selectors.registry import valid_model_name as valid_model_name
from runs.selectors.registry import valid_version_number as valid_version_number
from runs.selectors.samples import sample_get as sample_get
from runs.selectors.samples import sample_list as sample_list
from runs.selectors.samples import sample_visible as sample_visible
from runs.selectors.sweeps import SweepDetail as SweepDetail
from runs.selectors.sweeps import SweepProgress as SweepProgress
from runs.selectors.sweeps import Trial as Trial
from runs.selectors.sweeps import best_trial as best_trial
from runs.selectors.sweeps import sweep_detail as sweep_detail
from runs.selectors.sweeps import sweep_get as sweep_get
from runs.selectors.sweeps import sweep_list as sweep_list
from runs.selectors.sweeps import sweep_progress as sweep_progress
from runs.selectors.sweeps import sweep_trials as sweep_trials

LIST_FIELDS = (
    "id",
    "dataset__key",
    "model_id",
    "mode",
    "algorithm",
    "status",
    "queued_at",
    "started_at",
    "completed_at",
    "exit_code",
    "error_reason",
)
STATUS_FIELDS = (
    "id",
    "status",
    "queued_at",
    "started_at",
    "completed_at",
    "exit_code",
    "error_reason",
    "error_message",
    "attempt",
    "progress",
)
MAX_OFFSET = 10_000


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class RunFilters:
    status: str | None = None
    dataset_key: str | None = None
    mode: str | None = None
    algorithm: str | None = None
    # Set for a user who may see only their own runs (authorization.visible_owner).
    created_by_id: int | None = None


@dataclass(frozen=True)
class RunPage:
    items: list[TunixRun]
    next_cursor: str | None


class RunRow(NamedTuple):
    """One line of the API's run list, in LIST_FIELDS order."""

    id: UUID
    dataset_key: str
    model_id: str
    mode: str
    algorithm: str
    status: str
    queued_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    exit_code: int | None
    error_reason: str

    @property
    def duration_seconds(self) -> float | None:
        return duration_seconds(self.started_at, self.completed_at)

    @classmethod
    def from_run(cls, run: TunixRun) -> RunRow:
        return cls(
            id=run.id,
            dataset_key=run.dataset.key,
            model_id=run.model_id,
            mode=run.mode,
            algorithm=run.algorithm,
            status=run.status,
            queued_at=run.queued_at,
            started_at=run.started_at,
            completed_at=run.completed_at,
            exit_code=run.exit_code,
            error_reason=run.error_reason,
        )


@dataclass(frozen=True)
class RunRowPage:
    items: list[RunRow]
    next_cursor: str | None


def _pack(values: list[Any]) -> str:
    """A cursor: the position's values as compact JSON, URL-safe base64 without padding."""
    raw = json.dumps(values, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _unpack(cursor: str) -> Any:
    """_pack's values back (raises ValueError, binascii.Error or UnicodeDecodeError)."""
    padded = cursor + "=" * (-len(cursor) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode()))


def encode_cursor(run: TunixRun | RunRow) -> str:
    return _pack([run.queued_at.isoformat(), str(run.id)])


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        stamp, run_id = _unpack(cursor)
        if not isinstance(stamp, str) or not isinstance(run_id, str):
            raise TypeError("cursor fields are strings")
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            raise ValueError("naive timestamp")
        # Normalise to UTC here: an instant outside years 1-9999 in UTC is refused now,
        # not when the database adapter converts it.
        return moment.astimezone(UTC), UUID(run_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this server issued") from None


def _filtered_runs(filters: RunFilters) -> QuerySet[TunixRun]:
    runs = TunixRun.objects.all()
    if filters.created_by_id is not None:
        runs = runs.filter(created_by_id=filters.created_by_id)
    if filters.status:
        runs = runs.filter(status=filters.status)
    if filters.mode:
        runs = runs.filter(mode=filters.mode)
    if filters.algorithm:
        runs = runs.filter(algorithm=filters.algorithm)
    if filters.dataset_key:
        # Resolve the key first so the list query walks (dataset_id, queued_at) alone.
        dataset_id = Dataset.objects.filter(key=filters.dataset_key).values_list("id", flat=True)
        runs = runs.filter(dataset_id__in=list(dataset_id) or [-1])
    return runs


def _page(filters: RunFilters, cursor: str | None, offset: int) -> QuerySet[TunixRun]:
    """Newest first. ``cursor`` continues after a previous page; ``offset`` is kept for old
    clients and capped at MAX_OFFSET."""
    runs = _filtered_runs(filters)
    if cursor:
        queued_at, run_id = decode_cursor(cursor)
        # "<=" is the index condition; the OR only breaks ties within one timestamp.
        runs = runs.filter(
            Q(queued_at__lte=queued_at) & (Q(queued_at__lt=queued_at) | Q(id__lt=run_id))
        )
    runs = runs.order_by("-queued_at", "-id")
    return runs[offset:] if offset else runs


def run_list(
    *, filters: RunFilters, limit: int, cursor: str | None = None, offset: int = 0
) -> RunPage:
    """A page of runs as model instances (for the pages)."""
    page = (
        _page(filters, cursor, offset)
        .select_related("dataset")
        .only(*LIST_FIELDS, "progress")  # the pages show a training's step
    )
    runs = list(page[: limit + 1])
    has_more = len(runs) > limit
    runs = runs[:limit]
    return RunPage(items=runs, next_cursor=encode_cursor(runs[-1]) if has_more else None)


def run_list_rows(
    *, filters: RunFilters, limit: int, cursor: str | None = None, offset: int = 0
) -> RunRowPage:
    """The page run_list returns, as plain rows, for the API's hottest read.

    Written in SQL because building the ORM query costs as much as running it, and building
    model instances as much again (docs/PERFORMANCE_BASELINE.md has the profile). The clauses
    are the ORM's (same indexes, same keyset condition); tests/test_api_runs.py checks that
    both give the same pages on SQLite and PostgreSQL."""
    run_table = connection.ops.quote_name(TunixRun._meta.db_table)
    dataset_table = connection.ops.quote_name(Dataset._meta.db_table)
    where: list[str] = []
    params: list[Any] = []
    if filters.created_by_id is not None:
        where.append("r.created_by_id = %s")
        params.append(filters.created_by_id)
    if filters.status:
        where.append("r.status = %s")
        params.append(filters.status)
    if filters.mode:
        where.append("r.mode = %s")
        params.append(filters.mode)
    if filters.algorithm:
        where.append("r.algorithm = %s")
        params.append(filters.algorithm)
    if filters.dataset_key:
        # A scalar subquery runs once, so the scan walks (dataset_id, queued_at) alone.
        where.append(f"r.dataset_id = (SELECT id FROM {dataset_table} WHERE key = %s)")  # noqa: S608
        params.append(filters.dataset_key)
    if cursor:
        queued_at, run_id = decode_cursor(cursor)
        stamp = connection.ops.adapt_datetimefield_value(queued_at)
        key = TunixRun._meta.pk.get_db_prep_value(run_id, connection)
        # "<=" is the index condition; the OR only breaks ties within one timestamp.
        where.append("r.queued_at <= %s AND (r.queued_at < %s OR r.id < %s)")
        params += [stamp, stamp, key]
    # Table names come from model meta and every value is a parameter.
    sql = (
        "SELECT r.id, d.key, r.model_id, r.mode, r.algorithm, r.status, r.queued_at, "  # noqa: S608
        "r.started_at, "
        "r.completed_at, r.exit_code, r.error_reason "
        f"FROM {run_table} r INNER JOIN {dataset_table} d ON d.id = r.dataset_id "
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + "ORDER BY r.queued_at DESC, r.id DESC LIMIT %s OFFSET %s"
    )
    params += [limit + 1, offset]
    with connection.cursor() as cur:
        cur.execute(sql, params)
        rows = [_row(values) for values in cur.fetchall()]
    has_more = len(rows) > limit
    rows = rows[:limit]
    return RunRowPage(items=rows, next_cursor=encode_cursor(rows[-1]) if has_more else None)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive UTC datetimes; PostgreSQL aware ones.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _row(values: tuple[Any, ...]) -> RunRow:
    run_id, key, model_id, mode, algorithm, status, queued_at, started_at, completed_at = values[:9]
    code, reason = values[9:]
    return RunRow(
        id=run_id if isinstance(run_id, UUID) else UUID(run_id),
        dataset_key=key,
        model_id=model_id,
        mode=mode,
        algorithm=algorithm,
        status=status,
        queued_at=_aware(queued_at),
        started_at=started_at and _aware(started_at),
        completed_at=completed_at and _aware(completed_at),
        exit_code=code,
        error_reason=reason,
    )


def _visible(runs: QuerySet[TunixRun], owner: int | None) -> QuerySet[TunixRun]:
    return runs if owner is None else runs.filter(created_by_id=owner)


def run_get(*, run_id: UUID | str, owner: int | None = None) -> TunixRun | None:
    """The run, if it exists and (``owner`` set) that user launched it."""
    key = as_uuid(run_id)
    if key is None:
        return None
    runs = TunixRun.objects.select_related("dataset", "created_by").filter(id=key)
    return _visible(runs, owner).first()


@functools.cache
def _status_sql(vendor: str, by_owner: bool) -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    columns = ", ".join(quote(name) for name in STATUS_FIELDS)
    table = quote(TunixRun._meta.db_table)
    sql = f"SELECT {columns} FROM {table} WHERE id = %s"  # noqa: S608 (names from model meta)
    return sql + " AND created_by_id = %s" if by_owner else sql


def run_status(*, run_id: UUID | str, owner: int | None = None) -> dict[str, Any] | None:
    """A poller's view: one primary-key lookup of a few columns (STATUS_FIELDS), as a dict.

    In SQL for the same reason as run_list_rows: every open run page and API client polls it,
    and the ORM took longer to build the query than PostgreSQL took to answer it.
    tests/test_api_runs.py checks it against the ORM's answer."""
    key = as_uuid(run_id)
    if key is None:
        return None
    db = connections[DEFAULT_DB_ALIAS]
    params: list[Any] = [TunixRun._meta.pk.get_db_prep_value(key, db)]
    if owner is not None:
        params.append(owner)
    with db.cursor() as cur:
        cur.execute(_status_sql(db.vendor, owner is not None), params)
        values = cur.fetchone()
    if values is None:
        return None
    row = dict(zip(STATUS_FIELDS, values, strict=True))
    # The database's own types, as the ORM converts them: SQLite keeps the UUID as hex text and
    # datetimes naive; neither backend decodes the JSON column for a raw cursor.
    row["id"] = key
    for name in ("queued_at", "started_at", "completed_at"):
        if row[name] is not None:
            row[name] = _aware(row[name])
    progress = row["progress"]
    row["progress"] = json.loads(progress) if isinstance(progress, str | bytes) else progress
    return row


@dataclass(frozen=True)
class RankedRun:
    run: TunixRun
    value: float  # the ranking metric's final value


@dataclass(frozen=True)
class Ranking:
    items: list[RankedRun]
    next_cursor: str | None


def _decode_ranking_cursor(cursor: str) -> tuple[float, UUID]:
    try:
        value, run_id = _unpack(cursor)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("the value is a number")
        return float(value), UUID(str(run_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor("cursor is not one this server issued") from None


def run_ranking(
    *,
    dataset_key: str,
    metric: str,
    owner: int | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Ranking:
    """A dataset's completed runs that have ``metric``, best first (progress.ranking_metrics;
    lower is better for a loss), ties newest run id first. Keyset-paginated on (value, id), so
    a page deep into a long sweep costs what the first does."""
    if metric not in ranking_metrics():
        raise ValueError(f"cannot rank by {metric}")
    lower_first = metric in LOWER_IS_BETTER
    runs = _visible(
        TunixRun.objects.filter(dataset__key=dataset_key, status=RunStatus.COMPLETED), owner
    ).annotate(value=Cast(KeyTextTransform(metric, "metrics"), FloatField()))
    runs = runs.filter(value__isnull=False)
    if cursor:
        value, run_id = _decode_ranking_cursor(cursor)
        beyond = Q(value__gt=value) if lower_first else Q(value__lt=value)
        runs = runs.filter(beyond | Q(value=value, id__lt=run_id))
    order = F("value").asc() if lower_first else F("value").desc()
    page = list(runs.select_related("dataset").order_by(order, "-id")[: limit + 1])
    items = [RankedRun(run=run, value=run.value) for run in page[:limit]]
    next_cursor = None
    if len(page) > limit:
        last = items[-1]
        next_cursor = _pack([last.value, str(last.run.id)])
    return Ranking(items=items, next_cursor=next_cursor)


def dataset_list() -> QuerySet[Dataset]:
    return Dataset.objects.order_by("key")


def dataset_get(*, key: str) -> Dataset | None:
    return Dataset.objects.filter(key=key).first()


def worker_last_seen(*, host: str | None = None) -> datetime | None:
    """When a worker process (on ``host``, or anywhere) last reported its heartbeat, if ever."""
    heartbeats = WorkerHeartbeat.objects.all()
    if host is not None:
        heartbeats = heartbeats.filter(host=host)
    seen: datetime | None = heartbeats.aggregate(newest=Max("seen_at"))["newest"]
    return seen


def process_metrics_data() -> Iterator[dict[str, Any]]:
    """Every process's last metrics snapshot (runs/metrics.py)."""
    return ProcessMetrics.objects.values_list("data", flat=True).iterator()


@dataclass(frozen=True)
class WorkerFleet:
    """The workers as a web host sees them."""

    newest_seen: datetime | None  # None before any worker reported
    alive: int  # worker processes with a heartbeat within TUNIX_STALE_AFTER_SECONDS
    # Hosts of live workers that read queue tasks with another SECRET_KEY (or queue name) than
    # this process, so cannot run what it queues. Workers that do not report a key (an older
    # release) are given the benefit of the doubt.
    foreign_hosts: list[str]
    foreign: int  # how many live worker processes that is
    # Live worker processes per resource class their cluster serves (runs/resources.py).
    classes_alive: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def readable(self) -> int:
        """Live workers that can read the tasks this process queues."""
        return self.alive - self.foreign


def worker_fleet(*, signing_key_id: str | None = None) -> WorkerFleet:
    """Live workers, and which of them sign queue tasks with another key than
    ``signing_key_id`` (this process's, runs.broker.signing_key_id, by default)."""
    from runs.broker import signing_key_id as own_key_id

    key_id = own_key_id() if signing_key_id is None else signing_key_id
    alive = WorkerHeartbeat.objects.filter(
        seen_at__gte=timezone.now() - timedelta(seconds=settings.TUNIX_STALE_AFTER_SECONDS)
    )
    foreign = list(alive.exclude(signing_key_id__in=["", key_id]).values_list("host", flat=True))
    classes = dict(
        alive.order_by()
        .values("resource_class")
        .annotate(n=Count("worker_id"))
        .values_list("resource_class", "n")
    )
    return WorkerFleet(
        newest_seen=worker_last_seen(),
        alive=sum(classes.values()),
        foreign_hosts=sorted(set(foreign)),
        foreign=len(foreign),
        classes_alive=classes,
    )


def describe_foreign_workers(hosts: list[str]) -> str:
    """Why a web host's runs are not picked up by these worker hosts, in one sentence."""
    named = ", ".join(hosts)
    subject = f"worker host {named} signs" if len(hosts) == 1 else f"worker hosts {named} sign"
    return (
        f"{subject} queue tasks with a different SECRET_KEY (or TUNIX_Q_NAME) than this web "
        "host, so cannot read the runs it queues; give every host the same SECRET_KEY"
    )


def run_wait_reason(*, run: TunixRun) -> str | None:
    """Why a pending run is not being picked up, when the cause is that no worker can take it:
    none is alive, none serves its resource class, or every live one reads queue tasks with
    another key. None otherwise (it is simply waiting its turn), and for a run that is not
    pending."""
    if run.status != RunStatus.PENDING:
        return None
    fleet = worker_fleet()
    if (fleet.alive or run.resource_class != resources.CPU) and not fleet.classes_alive.get(
        run.resource_class
    ):
        return describe_missing_class(run, fleet)
    if fleet.alive == 0:
        if fleet.newest_seen is None:
            return "no worker has ever reported: start one with manage.py qcluster"
        age = (timezone.now() - fleet.newest_seen).total_seconds()
        return f"no worker is running: the newest worker heartbeat is {age:.0f} s old"
    if fleet.readable == 0:
        return describe_foreign_workers(fleet.foreign_hosts)
    return None


def describe_missing_class(run: TunixRun, fleet: WorkerFleet) -> str:
    """Why a run of a resource class no live worker serves waits, in one sentence."""
    asked = resources.from_stored(run.resources)
    count = asked.count if asked is not None else 1
    served = ", ".join(sorted(name for name, n in fleet.classes_alive.items() if n)) or "none"
    return (
        f"waiting for a worker with {run.resource_class} {resources.TIMES} {count}; none alive "
        f"(live workers "
        f"serve: {served})"
    )


@dataclass(frozen=True)
class QueueGauges:
    pending: int
    oldest_pending_age_seconds: float  # 0 when none waits
    running: int
    workers_alive: int
    newest_heartbeat_age_seconds: float | None  # None before any worker reported
    # Live workers that sign queue tasks with another key than this process (a gauge for
    # /metrics: above 0, they cannot read what this web host queues).
    workers_foreign_key: int = 0
    # Per resource class: pending runs, and live workers that serve it (every configured class
    # is listed, with 0, so an alert on "pending while none alive" has both series).
    pending_by_class: dict[str, int] = dataclasses.field(default_factory=dict)
    workers_by_class: dict[str, int] = dataclasses.field(default_factory=dict)


def queue_gauges() -> QueueGauges:
    """The queue as /metrics shows it, read through the partial indexes on pending and
    running rows: the same cost at 10k and 1M runs."""
    now = timezone.now()
    pending = TunixRun.objects.filter(status=RunStatus.PENDING)
    oldest = pending.aggregate(oldest=Min("queued_at"))["oldest"]
    fleet = worker_fleet()
    newest = fleet.newest_seen
    configured = dict.fromkeys(resources.configured(settings.TUNIX_RESOURCE_CLASSES), 0)
    by_class = configured | dict(
        pending.order_by()
        .values("resource_class")
        .annotate(n=Count("id"))
        .values_list("resource_class", "n")
    )
    return QueueGauges(
        pending=sum(by_class.values()),
        pending_by_class=by_class,
        workers_by_class=configured | fleet.classes_alive,
        oldest_pending_age_seconds=(now - oldest).total_seconds() if oldest else 0.0,
        running=TunixRun.objects.filter(status=RunStatus.RUNNING).count(),
        workers_alive=fleet.alive,
        newest_heartbeat_age_seconds=(now - newest).total_seconds() if newest else None,
        workers_foreign_key=fleet.foreign,
    )


def export_list(*, run: TunixRun) -> list[RunExport]:
    """A run's exports, newest first."""
    return list(RunExport.objects.filter(run=run).select_related("run"))


def export_get(
    *, run_id: UUID | str, export_id: UUID | str, owner: int | None = None
) -> RunExport | None:
    """The export, if it is ``run_id``'s and (``owner`` set) that user launched the run."""
    run_key, export_key = as_uuid(run_id), as_uuid(export_id)
    if run_key is None or export_key is None:
        return None
    exports = RunExport.objects.select_related("run").filter(id=export_key, run_id=run_key)
    if owner is not None:
        exports = exports.filter(run__created_by_id=owner)
    return exports.first()
