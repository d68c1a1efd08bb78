"""Paths derived from user input, always confined below their configured root."""

from __future__ import annotations

from pathlib import Path


class UnsafePathError(ValueError):
    pass


def safe_join(root: Path, *parts: str) -> Path:
    """``root / parts`` resolved, refused if it would land outside ``root``."""
    base = root.resolve()
    for part in parts:
        if not part or "\x00" in part or Path(part).is_absolute():
            raise UnsafePathError(f"unsafe path component: {part!r}")
    candidate = base.joinpath(*parts).resolve()
    if candidate != base and base not in candidate.parents:
        raise UnsafePathError(f"path escapes its root: {'/'.join(parts)!r}")
    return candidate
