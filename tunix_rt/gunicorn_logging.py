"""gunicorn's logger, building only the access-log atoms its format names.

gunicorn's stock ``Logger.atoms`` builds every atom for every request: the timestamp formatted
with strftime, the request line, and one entry per request header, response header and WSGI
environ variable, lower-cased (about 60 here), only for the format to read two or three of them.
With an access log on, that was 7 to 14 % of a hot-path request's CPU in the bench
(docs/PERFORMANCE_BASELINE.md). This logger reads the format once, at setup, and builds only
what it names; what it writes is the stock logger's, byte for byte (tests/test_access_log.py
checks every atom). With the access log off (the default) neither builds anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from gunicorn import glogging  # type: ignore[import-untyped]

# %(name)s in a logging format string: the atoms the access log reads.
_NAMED = re.compile(r"%\(([^)]+)\)")

Atom = Callable[["AccessLogger", Any, Any, dict[str, Any], timedelta], Any]


def _status(resp: Any) -> Any:
    status = resp.status
    return status.split(None, 1)[0] if isinstance(status, str) else status


def _sent(resp: Any) -> str:
    return str(resp.sent) if getattr(resp, "sent", None) is not None else "-"


# Each simple atom as gunicorn 27's Logger.atoms computes it.
SIMPLE: dict[str, Atom] = {
    "h": lambda log, resp, req, env, t: env.get("REMOTE_ADDR", "-"),
    "l": lambda log, resp, req, env, t: "-",
    "u": lambda log, resp, req, env, t: log._get_user(env) or "-",
    "t": lambda log, resp, req, env, t: log.now(),
    "r": lambda log, resp, req, env, t: (
        f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"
    ),
    "s": lambda log, resp, req, env, t: _status(resp),
    "m": lambda log, resp, req, env, t: env.get("REQUEST_METHOD"),
    "U": lambda log, resp, req, env, t: env.get("PATH_INFO"),
    "q": lambda log, resp, req, env, t: env.get("QUERY_STRING"),
    "H": lambda log, resp, req, env, t: env.get("SERVER_PROTOCOL"),
    "b": lambda log, resp, req, env, t: _sent(resp),
    "B": lambda log, resp, req, env, t: getattr(resp, "sent", None),
    "f": lambda log, resp, req, env, t: env.get("HTTP_REFERER", "-"),
    "a": lambda log, resp, req, env, t: env.get("HTTP_USER_AGENT", "-"),
    "T": lambda log, resp, req, env, t: t.seconds,
    "D": lambda log, resp, req, env, t: t.seconds * 1_000_000 + t.microseconds,
    "M": lambda log, resp, req, env, t: t.seconds * 1000 + int(t.microseconds / 1000),
    "L": lambda log, resp, req, env, t: "%d.%06d" % (t.seconds, t.microseconds),  # noqa: UP031
    "p": lambda log, resp, req, env, t: f"<{os.getpid()}>",
}


def _pairs(source: Any) -> Iterable[tuple[str, Any]]:
    headers = source.headers if hasattr(source, "headers") else source
    pairs: Iterable[tuple[str, Any]] = headers.items() if hasattr(headers, "items") else headers
    return pairs


_MISSING = object()


def _last(pairs: Iterable[tuple[str, Any]], name: str) -> Any:
    """The value gunicorn's dict would keep for lower-cased ``name``: the last one."""
    found: Any = _MISSING
    for key, value in pairs:
        if key.lower() == name:
            found = value
    return found


class AccessLogger(glogging.Logger):  # type: ignore[misc]
    """The stock logger, with atoms() building only the atoms the access-log format names."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        names = set(_NAMED.findall(cfg.access_log_format or ""))
        self.simple_atoms = {name: SIMPLE[name] for name in names if name in SIMPLE}
        # {name}i / {name}o / {name}e, looked up case-insensitively as the stock atoms are.
        self.braced_atoms = [
            (name, name[1:-2].lower(), name[-1])
            for name in names
            if name.startswith("{") and name[-2:] in ("}i", "}o", "}e")
        ]

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> Any:
        if not hasattr(self, "simple_atoms"):  # never set up: the stock behaviour
            return super().atoms(resp, req, environ, request_time)
        atoms = {
            name: build(self, resp, req, environ, request_time)
            for name, build in self.simple_atoms.items()
        }
        for name, lookup, source in self.braced_atoms:
            if source == "i":
                value = _last(_pairs(req), lookup)
            elif source == "o":
                value = _last(_pairs(resp), lookup)
            else:
                value = _last(environ.items(), lookup)
            if value is not _MISSING:
                # SafeAtoms reads a braced name lower-cased; "-" stands for a missing one.
                atoms[name.lower()] = value
        return atoms
