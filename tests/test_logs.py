"""Structured log lines: key=value for people, JSON when TUNIX_LOG_JSON=1."""

from __future__ import annotations

import json
import logging
import uuid

from runs.logs import JsonFormatter, KeyValueFormatter


def record(**fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("tunix_rt.runs", logging.INFO, __file__, 1, "run_transition", (), None)
    rec.fields = fields
    return rec


def test_json_lines_carry_the_fields() -> None:
    run_id = uuid.uuid4()
    line = JsonFormatter().format(
        record(run_id=run_id, attempt=2, duration_s=1.5, **{"from": "running", "to": "completed"})
    )
    payload = json.loads(line)
    assert payload["event"] == "run_transition"
    assert payload["run_id"] == str(run_id)
    assert (payload["attempt"], payload["duration_s"]) == (2, 1.5)
    assert payload["level"] == "INFO"
    assert "\n" not in line


def test_key_value_lines_quote_what_needs_it() -> None:
    line = KeyValueFormatter().format(record(op="run_claim", ms=1.25, note="two words", empty=""))
    assert line.endswith('run_transition op=run_claim ms=1.25 note="two words" empty=""')
