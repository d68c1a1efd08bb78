"""The PostgreSQL engine's check of a kept-alive connection (tunix_rt/postgresql): no round trip
while the connection is fine, a new connection once the server has ended the old one."""

from __future__ import annotations

import select
from typing import Any

import psycopg
import pytest
from django.db import close_old_connections, connection, connections
from psycopg import pq

from tests.factories import submitted_run

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _terminate_backend() -> int:
    """Ends this test's database connection from the server side, as a restart would."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # The server's FATAL message and its close reach the socket a moment later.
    select.select([connection.connection.fileno()], [], [], 5)
    return int(pid)


def test_a_healthy_idle_connection_is_judged_usable_without_asking_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection.ensure_connection()
    asked: list[Any] = []

    def cursor(*args: Any, **kwargs: Any) -> Any:
        asked.append(args)
        raise AssertionError("the check sent a query")

    monkeypatch.setattr(connection.connection, "cursor", cursor)
    assert connection.is_usable()
    assert asked == []


def test_a_connection_the_server_ended_is_judged_unusable() -> None:
    _terminate_backend()
    try:
        assert not connection.is_usable()
    finally:
        connection.close()  # what Django does with an unusable one; the teardown needs a new one


def test_a_request_after_the_server_ended_the_connection_is_answered_on_a_new_one(
    operator_client: Any, demo_dataset: Any
) -> None:
    run = submitted_run()
    url = f"/api/tunix/runs/{run.id}/status"
    assert operator_client.get(url).status_code == 200
    old_pid = _terminate_backend()
    # What the WSGI handler does at the start of each request (request_started), and the test
    # client leaves out: mark kept connections for a check before their next query.
    close_old_connections()
    answer = operator_client.get(url)
    assert answer.status_code == 200, answer.content
    assert answer.json()["run_id"] == str(run.id)
    assert connection.connection.info.backend_pid != old_pid


def test_postgresql_connections_use_this_engine_with_the_check_on() -> None:
    """Django asks is_usable() at the start of each request only with CONN_HEALTH_CHECKS."""
    from tunix_rt.postgresql.base import DatabaseWrapper

    assert isinstance(connections["default"], DatabaseWrapper)
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_timestamps_read_back_as_the_aware_utc_datetimes_written() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from tunix_rt.postgresql.base import CompiledTimestamptzLoader

    assert CompiledTimestamptzLoader is not None  # psycopg[binary] is what requirements pin
    moments = [
        datetime(2026, 11, 30, 9, 1, 2, 345678, tzinfo=UTC),
        datetime(2026, 11, 30, 9, 1, 2, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    ]
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(%s::timestamptz[])", [[m.isoformat() for m in moments]])
        read = [row[0] for row in cursor.fetchall()]
    assert read == moments
    assert {value.tzinfo for value in read} == {UTC}
    loader = connection.connection.adapters.get_loader(1184, pq.Format.TEXT)  # timestamptz
    assert loader.__module__ == "tunix_rt.postgresql.base"
    assert [value.isoformat() for value in read[:2]] == [
        "2026-11-30T09:01:02.345678+00:00",
        "2026-11-30T09:01:02+00:00",
    ]
