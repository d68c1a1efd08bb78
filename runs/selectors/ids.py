"""Ids from a request as the database takes them: a malformed one names no row (None), so a
lookup answers "absent" instead of raising."""

from __future__ import annotations

from uuid import UUID


def as_uuid(value: UUID | str) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        return None
