"""Every read the API, the pages and the admin make. Lists are keyset-paginated: the cost of a
page does not depend on how deep it is or how many runs the table holds."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from django.db.models import Q, QuerySet

from runs.models import Dataset, TunixRun

LIST_FIELDS = (
    "id",
    "dataset__key",
    "model_id",
    "mode",
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
)
MAX_OFFSET = 10_000


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class RunFilters:
    status: str | None = None
    dataset_key: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class RunPage:
    items: list[TunixRun]
    next_cursor: str | None


def encode_cursor(run: TunixRun) -> str:
    raw = json.dumps([run.queued_at.isoformat(), str(run.id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
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
    if filters.status:
        runs = runs.filter(status=filters.status)
    if filters.mode:
        runs = runs.filter(mode=filters.mode)
    if filters.dataset_key:
        # Resolve the key first so the list query walks (dataset_id, queued_at) alone.
        dataset_id = Dataset.objects.filter(key=filters.dataset_key).values_list("id", flat=True)
        runs = runs.filter(dataset_id__in=list(dataset_id) or [-1])
    return runs


def run_list(
    *, filters: RunFilters, limit: int, cursor: str | None = None, offset: int = 0
) -> RunPage:
    """Newest first. ``cursor`` continues after a previous page; ``offset`` is kept for old
    clients and capped at MAX_OFFSET."""
    runs = _filtered_runs(filters).select_related("dataset").only(*LIST_FIELDS)
    if cursor:
        queued_at, run_id = decode_cursor(cursor)
        # "<=" is the index condition; the OR only breaks ties within one timestamp.
        runs = runs.filter(
            Q(queued_at__lte=queued_at) & (Q(queued_at__lt=queued_at) | Q(id__lt=run_id))
        )
    runs = runs.order_by("-queued_at", "-id")
    if offset:
        runs = runs[offset:]
    rows = list(runs[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    return RunPage(items=rows, next_cursor=encode_cursor(rows[-1]) if has_more else None)


def run_get(*, run_id: UUID | str) -> TunixRun | None:
    key = _as_uuid(run_id)
    if key is None:
        return None
    return TunixRun.objects.select_related("dataset", "created_by").filter(id=key).first()


def _as_uuid(run_id: UUID | str) -> UUID | None:
    if isinstance(run_id, UUID):
        return run_id
    try:
        return UUID(str(run_id))
    except ValueError:
        return None


def run_status(*, run_id: UUID | str) -> dict[str, object] | None:
    """A poller's view: one primary-key lookup of a few columns."""
    key = _as_uuid(run_id)
    if key is None:
        return None
    row: dict[str, object] | None = TunixRun.objects.filter(id=key).values(*STATUS_FIELDS).first()
    return row


def dataset_list() -> QuerySet[Dataset]:
    return Dataset.objects.order_by("key")


def dataset_get(*, key: str) -> Dataset | None:
    return Dataset.objects.filter(key=key).first()
