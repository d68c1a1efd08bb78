"""Error answers that say what is wrong and where: a chunked body Django cannot read is a 411,
not a misleading "field is required"; a huge integer names its field, not Python's limits;
JSON syntax errors name the line and column, NaN and Infinity name their field."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from runs.models import Dataset, TunixRun
from tests.support.problems import problem

pytestmark = pytest.mark.django_db

SUBMIT = "/api/tunix/run?mode=async"
DATASETS = "/api/tunix/datasets"
GOOD = {"prompt": "What is 2+2?", "completion": "4"}
REPO = Path(__file__).resolve().parent.parent


def post_json(client: APIClient, body: str, path: str = SUBMIT) -> Any:
    return client.post(path, body.encode("utf-8"), content_type="application/json")


def only_error(body: dict[str, Any]) -> dict[str, str]:
    assert isinstance(body.get("errors"), list), body
    assert len(body["errors"]) == 1, body
    error: dict[str, str] = body["errors"][0]
    return error


# -- (a) chunked bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [SUBMIT, DATASETS])
def test_a_chunked_body_without_content_length_is_a_411(
    operator_client: APIClient, demo_dataset: Any, path: str
) -> None:
    # What a WSGI server hands Django for `Transfer-Encoding: chunked`: no CONTENT_LENGTH, so
    # Django reads the body as empty.
    response = operator_client.generic(
        "POST",
        path,
        "",
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="chunked",
        CONTENT_LENGTH="",
    )
    body = problem(response, 411)
    assert "Content-Length" in body["detail"]
    assert "required" not in body["detail"]
    assert TunixRun.objects.count() == 0
    assert Dataset.objects.count() == 1  # only the demo dataset


def test_a_body_with_content_length_is_read_as_before(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    body = '{"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}'
    assert post_json(operator_client, body).status_code == 202


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def gunicorn_server(live_database_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "python:tunix_rt.gunicorn_conf",
            "--workers",
            "1",
            "--threads",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "tunix_rt.wsgi",
        ],
        cwd=REPO,
        env=live_database_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def live_database_env(tmp_path: Path, settings: Any) -> dict[str, str]:
    from tests.support.clusters import database_url

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
        "DATABASE_URL": database_url(),
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "TUNIX_DATASETS_ROOT": str(settings.TUNIX_DATASETS_ROOT),
        "TUNIX_ARTIFACTS_ROOT": str(settings.TUNIX_ARTIFACTS_ROOT),
        "TUNIX_VAR_DIR": str(tmp_path / "var"),
    }


@pytest.mark.processes
@pytest.mark.django_db(transaction=True)
def test_gunicorn_answers_a_chunked_submit_with_411_and_keeps_the_connection_usable(
    gunicorn_server: tuple[str, int], operator: Any, demo_dataset: Any
) -> None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=operator).key
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    body = b'{"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m"}'
    conn = http.client.HTTPConnection(*gunicorn_server, timeout=10)
    # An iterable body with no Content-Length: http.client sends it chunked.
    conn.request("POST", "/api/tunix/run?mode=async", body=iter([body]), headers=headers)
    response = conn.getresponse()
    answer = response.read()
    assert response.status == 411, answer
    assert response.getheader("Content-Type") == "application/problem+json"
    assert b"Content-Length" in answer
    assert TunixRun.objects.count() == 0
    # The unread chunked body did not poison the kept-alive connection.
    conn.request("POST", "/api/tunix/run?mode=async", body=body, headers=headers)
    response = conn.getresponse()
    assert response.status == 202, response.read()
    conn.close()
    assert TunixRun.objects.count() == 1


# -- (b) huge integers ------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["seed", "timeout_seconds", "learning_rate", "dataset_key"])
def test_a_5000_digit_integer_names_its_field_without_python_internals(
    operator_client: APIClient, demo_dataset: Any, field: str
) -> None:
    body = (
        '{"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m", '
        f'"{field}": {"7" * 5000}}}'
    )
    answer = problem(post_json(operator_client, body), 400)
    error = only_error(answer)
    assert error["field"] == field
    assert "digits" in error["message"]
    for leak in ("sys.", "set_int_max_str_digits", "Exceeds the limit", "JSON parse error"):
        assert leak not in answer["detail"]
    assert not TunixRun.objects.exists()


def test_a_huge_integer_in_a_form_body_is_a_field_error(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    response = operator_client.post(
        SUBMIT,
        {"dataset_key": "tunix-demo-v1", "model_id": "google/gemma-3-270m", "seed": "7" * 5000},
    )
    error = only_error(problem(response, 400))
    assert error["field"] == "seed"
    assert "sys." not in error["message"]


def test_a_huge_integer_in_a_dataset_line_is_a_400_naming_the_line(
    operator_client: APIClient, jsonl: Callable[..., bytes]
) -> None:
    data = jsonl(GOOD, '{"prompt": "p", "completion": "c", "n": ' + "9" * 5000 + "}")
    form = {"key": "big-int-v1", "file": SimpleUploadedFile("d.jsonl", data)}
    answer = problem(operator_client.post(DATASETS, form, format="multipart"), 400)
    error = only_error(answer)
    assert error["field"] == "file"
    assert error["message"].startswith("line 2: ")
    assert "digits" in error["message"]
    assert "sys." not in error["message"]
    assert not Dataset.objects.exists()


# -- (c) syntax errors, NaN and Infinity ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        ('{"dataset_key": "tunix-demo-v1",}', 1, 33),
        ('{\n  "dataset_key": "tunix-demo-v1"\n  "model_id": "x"\n}', 3, 3),
        ("[1, 2", 1, 6),
        ("{", 1, 2),
    ],
)
def test_a_json_syntax_error_names_line_and_column(
    operator_client: APIClient, demo_dataset: Any, body: str, line: int, column: int
) -> None:
    answer = problem(post_json(operator_client, body), 400)
    error = only_error(answer)
    assert f"line {line}, column {column}" in error["message"]
    assert answer["detail"] == error["message"]
    assert "JSON parse error -" not in answer["detail"]
    assert not TunixRun.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "constant"),
    [
        ('{"learning_rate": NaN}', "learning_rate", "NaN"),
        ('{"num_epochs": Infinity}', "num_epochs", "Infinity"),
        ('{"eval_fraction": -Infinity}', "eval_fraction", "-Infinity"),
        ('{"learning_rate": 1e999}', "learning_rate", "1e999"),
        ('{"extra": {"deep": [1, NaN]}}', "extra.deep.1", "NaN"),
    ],
)
def test_nan_and_infinity_name_their_field(
    operator_client: APIClient, demo_dataset: Any, body: str, field: str, constant: str
) -> None:
    answer = problem(post_json(operator_client, body), 400)
    error = only_error(answer)
    assert error["field"] == field
    assert constant in error["message"]
    assert answer["detail"] == f"{field}: {error['message']}"
    assert not TunixRun.objects.exists()


def test_a_body_that_is_not_utf8_names_the_byte(
    operator_client: APIClient, demo_dataset: Any
) -> None:
    response = operator_client.post(
        SUBMIT, b'{"dataset_key": "\xff"}', content_type="application/json"
    )
    error = only_error(problem(response, 400))
    assert "byte 17" in error["message"]


def test_a_body_nested_too_deeply_lists_its_error(operator_client: APIClient) -> None:
    body = '{"x": ' + "[" * 20 + "]" * 20 + "}"
    error = only_error(problem(post_json(operator_client, body), 400))
    assert error["field"] == ""
    assert "nested more than 16" in error["message"]
