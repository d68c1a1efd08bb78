"""A one-test suite that tests/test_fresh_machine.py runs as `make test`'s passes. Its name does
not match test_*.py, so pytest collects it only when it is named on the command line.

It fails in the passes TUNIX_PROBE_FAIL names (sqlite, postgresql; comma-separated), and writes
the database of each pass it ran in to TUNIX_PROBE_LOG."""

from __future__ import annotations

import os


def test_this_pass_fails_only_where_asked() -> None:
    from django.db import connection

    with open(os.environ["TUNIX_PROBE_LOG"], "a") as log:
        log.write(f"{connection.vendor}\n")
    assert connection.vendor not in os.environ.get("TUNIX_PROBE_FAIL", "").split(",")
