"""The access logger writes exactly what gunicorn's stock logger writes, for every atom a
format may name, while building only the atoms its format names."""

from __future__ import annotations

import base64
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn import glogging  # type: ignore[import-untyped]
from gunicorn.config import Config  # type: ignore[import-untyped]

from tunix_rt import gunicorn_conf
from tunix_rt.gunicorn_logging import SIMPLE, AccessLogger

BRACED = (
    "%({x-forwarded-for}i)s %({X-Request-Id}i)s %({missing}i)s %({content-type}o)s "
    "%({X-Dup}o)s %({server_name}e)s %({REMOTE_PORT}e)s %({nothing}e)s %({none}e)s"
)
EVERY_FORMAT = " ".join(f"%({name})s" for name in SIMPLE) + " " + BRACED


def exchange() -> tuple[Any, Any, dict[str, Any], timedelta]:
    credentials = base64.b64encode(b"alice:secret").decode()
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/api/tunix/run?mode=async",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/api/tunix/run",
        "QUERY_STRING": "mode=async",
        "REMOTE_ADDR": "10.0.0.7",
        "REMOTE_PORT": "51234",
        "SERVER_NAME": "tunix",
        "HTTP_REFERER": "https://example.test/runs",
        "HTTP_USER_AGENT": 'curl/8 "quoted"',
        "HTTP_AUTHORIZATION": f"Basic {credentials}",
        "NONE": None,
    }
    request = SimpleNamespace(
        headers=[("X-FORWARDED-FOR", "1.2.3.4"), ("X-REQUEST-ID", "abc"), ("HOST", "tunix")]
    )
    response = SimpleNamespace(
        status="202 Accepted",
        sent=321,
        headers=[("Content-Type", "application/json"), ("X-Dup", "one"), ("x-dup", "two")],
    )
    return response, request, environ, timedelta(seconds=1, microseconds=234_567)


def logger(cls: type[glogging.Logger], access_log_format: str) -> glogging.Logger:
    cfg = Config()
    cfg.set("access_log_format", access_log_format)
    log = cls(cfg)
    log.now = lambda: "[30/Nov/2026:20:00:00 +0000]"  # one clock for both
    return log


def line(log: glogging.Logger, access_log_format: str) -> str:
    return str(access_log_format % log.atoms_wrapper_class(log.atoms(*exchange())))


@pytest.mark.parametrize(
    "access_log_format",
    [
        EVERY_FORMAT,
        Config().access_log_format,  # gunicorn's default
        "%(D)s %(s)s %(U)s",  # the bench's
        "%(t)s %(unknown)s %(h)s",
    ],
)
def test_every_atom_is_written_as_the_stock_logger_writes_it(access_log_format: str) -> None:
    stock = line(logger(glogging.Logger, access_log_format), access_log_format)
    lean = line(logger(AccessLogger, access_log_format), access_log_format)
    assert lean == stock


def test_only_the_named_atoms_are_built() -> None:
    atoms = logger(AccessLogger, "%(D)s %(s)s %(U)s").atoms(*exchange())
    assert atoms == {"D": 1_234_567, "s": "202", "U": "/api/tunix/run"}


def test_the_web_process_uses_it() -> None:
    assert gunicorn_conf.logger_class == "tunix_rt.gunicorn_logging.AccessLogger"
