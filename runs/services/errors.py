"""What a service refuses with. The API maps each to an RFC 9457 status (runs/api/problems.py),
the pages to a form error or a message."""

from __future__ import annotations


class ServiceError(Exception):
    """A refused request; ``field`` names the input at fault when there is one. (400)"""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(ServiceError):
    """No such thing, or none this user may see. (404)"""


class Forbidden(ServiceError):
    """The user may see it but not do this to it. (403)"""


class Conflict(ServiceError):
    """The thing is not in a state that allows this. (409)"""


class IllegalTransition(Conflict):
    def __init__(self, source: str, target: str) -> None:
        super().__init__(f"a run cannot go from {source} to {target}")
        self.source = source
        self.target = target


class IdempotencyMismatch(ServiceError):
    """The idempotency key was used before with a different request. (422)"""
