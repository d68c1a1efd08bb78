"""The PostgreSQL engine (DATABASES ENGINE ``tunix_rt.postgresql``): django-prometheus' wrapper,
which counts queries and errors, with a connection check that costs no round trip and
timestamps read by psycopg's compiled parser.

Django checks a kept-alive connection at the start of each request (CONN_HEALTH_CHECKS) with a
``SELECT 1``: a round trip per request, about an eighth of a status poll's time. A connection
that PostgreSQL has ended (restart, failover, ``pg_terminate_backend``, an idle timeout, a
proxy closing it) tells the client so: the server sends its FATAL message and closes the
socket, and both make the idle socket readable. An idle connection that is fine has nothing to
read. So the check looks at the socket without waiting, and only when something arrived asks
the server (``SELECT 1``) as Django would. What it cannot see is a peer that vanished without
closing (a cable pulled): that request fails, Django closes the connection as unusable, and the
next request opens a new one, as it would after a ``SELECT 1`` timed out.

Django reads ``timestamptz`` columns with its own loader, a Python subclass of psycopg's pure
Python one, so it can set the tzinfo it wants: each value is parsed by a regular expression in
Python. The list reads three per row, and those parses took a fifth of its time. Where
psycopg's compiled loaders are installed (psycopg[binary], as here), the same subclass is made
around the compiled one: same values, same tzinfo.
"""

from __future__ import annotations

import select
from datetime import datetime, tzinfo
from typing import Any

from django_prometheus.db.backends.postgresql import base
from psycopg import pq
from psycopg.adapt import Loader

try:
    from psycopg_binary._psycopg import (  # type: ignore[attr-defined]
        TimestamptzLoader as CompiledTimestamptzLoader,
    )
except ImportError:  # pure-Python psycopg: Django's own loader stays
    CompiledTimestamptzLoader = None


def _timestamptz_loader(zone: tzinfo | None) -> type[Loader]:
    class TimestamptzLoader(Loader):
        timezone = zone  # Django compares it before each cursor (create_cursor)

        def __init__(self, oid: int, context: Any = None) -> None:
            super().__init__(oid, context)
            # Compiled classes cannot be subclassed: this one delegates to an instance.
            self._parse = CompiledTimestamptzLoader(oid, context).load

        def load(self, data: Any) -> datetime:
            value: datetime = self._parse(data)
            return value.replace(tzinfo=zone)

    return TimestamptzLoader


__all__ = ["CompiledTimestamptzLoader", "DatabaseWrapper"]


class DatabaseWrapper(base.DatabaseWrapper):  # type: ignore[misc]
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        if CompiledTimestamptzLoader is not None:
            connection.adapters.register_loader("timestamptz", _timestamptz_loader(self.timezone))
        return connection

    def is_usable(self) -> bool:
        connection = self.connection
        if connection is None or connection.closed:
            return False
        info = connection.info
        if info.status != pq.ConnStatus.OK or info.transaction_status != pq.TransactionStatus.IDLE:
            # Broken, or between requests inside a transaction (never expected): ask the server.
            return bool(super().is_usable())
        try:
            readable, _, _ = select.select([connection.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return True if not readable else bool(super().is_usable())
