"""The web process's gunicorn setup: the configuration loads, and the worker measures how long
a request waited for a thread (the signal load shedding uses), in a real gunicorn."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.processes
def test_the_configuration_loads() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--check-config",
            "-c",
            "python:tunix_rt.gunicorn_conf",
            "tunix_rt.wsgi",
        ],
        cwd=REPO,
        env={**os.environ, "SECRET_KEY": "check-config-only", "DEBUG": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def one_thread_server() -> Iterator[str]:
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
            "1",
            "--bind",
            f"127.0.0.1:{port}",
            "tests.support.queue_probe:app",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def queue_ms(url: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as response:
        return float(json.loads(response.read())["queue_ms"])


@pytest.mark.processes
def test_the_worker_reports_how_long_a_request_waited_for_a_thread(one_thread_server: str) -> None:
    assert queue_ms(f"{one_thread_server}/?ms=0") < 100  # an idle worker serves at once

    busy: list[float] = []
    blocker = threading.Thread(target=lambda: busy.append(queue_ms(f"{one_thread_server}/?ms=800")))
    blocker.start()
    time.sleep(0.2)  # the only thread is now asleep in the first request
    waited = queue_ms(f"{one_thread_server}/?ms=0")
    blocker.join(10)
    assert busy
    assert busy[0] < 100
    assert 400 <= waited <= 2000  # queued behind the 800 ms request, from about 0.2 s in


def test_the_worker_and_the_middleware_agree_on_the_environ_key() -> None:
    from runs import shedding
    from tunix_rt import gunicorn_worker

    assert shedding.QUEUE_MS_KEY == gunicorn_worker.QUEUE_MS_KEY
