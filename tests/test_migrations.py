"""Migrations run both ways, and models never drift from them."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def _runs_tables() -> set[str]:
    return {t for t in connection.introspection.table_names() if t.startswith("runs_")}


@pytest.mark.django_db(transaction=True)
def test_runs_migrations_roll_back_to_zero_and_forward_again() -> None:
    assert {"runs_tunixrun", "runs_dataset"} <= _runs_tables()
    call_command("migrate", "runs", "zero", verbosity=0)
    assert _runs_tables() == set()
    call_command("migrate", "runs", verbosity=0)
    assert {"runs_tunixrun", "runs_dataset"} <= _runs_tables()
    executor = MigrationExecutor(connection)
    assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []


@pytest.mark.django_db
def test_models_have_no_missing_migrations() -> None:
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    assert "No changes detected" in out.getvalue()
