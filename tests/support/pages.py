"""Helpers for tests that read the server-rendered pages."""

from __future__ import annotations

from typing import Any


def html(response: Any) -> str:
    """A page's body as text."""
    return str(response.content.decode())
