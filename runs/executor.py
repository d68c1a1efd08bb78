"""Run a command as a child process group with a deadline and bounded output capture.

This module imports nothing from Django on purpose: a worker's process handling can be read
and tested alone. The caller decides what the result means for a run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:  # Linux: let the kernel kill a training whose worker died
    _prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - other platforms
    _prctl = None

TRUNCATION_MARKER = "\n[… {omitted} bytes omitted …]\n"
_READ_CHUNK = 65536


class BoundedCapture:
    """Keeps the first and last bytes of a stream, never more than ``limit`` in memory.

    The head shows how a process started, the tail how it ended; the middle of a flood is
    counted and dropped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 64)
        self.head_limit = self.limit // 2
        self.tail_limit = self.limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        """Decoded output, at most ``limit`` UTF-8 bytes including the truncation marker."""
        if self.total <= self.limit:
            return bytes(self.head + self.tail).decode("utf-8", errors="replace")
        return truncate_utf8(bytes(self.head), bytes(self.tail), self.total, self.limit)


def _cut_end(data: bytes, size: int) -> bytes:
    """The first ``size`` bytes of data, shortened so no UTF-8 sequence is split."""
    cut = data[:size]
    # Step back over continuation bytes and a lead byte whose sequence was cut short.
    end = len(cut)
    back = 0
    while back < 4 and end - back - 1 >= 0 and (cut[end - back - 1] & 0xC0) == 0x80:
        back += 1
    if end - back - 1 >= 0:
        lead = cut[end - back - 1]
        need = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
        if lead >= 0xC0 and need > back + 1:
            return cut[: end - back - 1]
    return cut


def _cut_start(data: bytes, size: int) -> bytes:
    """The last ``size`` bytes of data, starting on a UTF-8 character boundary."""
    cut = data[len(data) - size :] if size < len(data) else data
    start = 0
    while start < len(cut) and start < 4 and (cut[start] & 0xC0) == 0x80:
        start += 1
    return cut[start:]


def truncate_utf8(head: bytes, tail: bytes, total: int, limit: int) -> str:
    """Join head and tail with a visible marker so the result fits ``limit`` UTF-8 bytes."""
    marker_len = len(TRUNCATION_MARKER.format(omitted=total).encode())
    budget = max(limit - marker_len, 0)
    head_part = _cut_end(head, min(len(head), budget // 2))
    tail_part = _cut_start(tail, min(len(tail), budget - len(head_part)))
    omitted = total - len(head_part) - len(tail_part)
    marker = TRUNCATION_MARKER.format(omitted=omitted)
    return (
        head_part.decode("utf-8", errors="replace")
        + marker
        + tail_part.decode("utf-8", errors="replace")
    )


def truncate_text(text: str, limit: int) -> str:
    """Truncate an in-memory string the same way captured output is truncated."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    capture = BoundedCapture(limit)
    capture.feed(data)
    return capture.text()


@dataclass(frozen=True)
class ExecutionResult:
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    cancelled: bool
    duration_seconds: float
    stdout_bytes: int
    stderr_bytes: int


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_group(pgid: int, grace_seconds: float) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after the grace period."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def _prepare_child() -> None:
    """Runs in the child between fork and exec.

    The child starts its own session (so its whole group can be signalled), dies with the
    worker that started it (the kernel sends SIGKILL if the worker is killed), and gets default
    signal handling back (a qcluster worker ignores SIGTERM; a training must not).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Job(Protocol):
    """Something started that produces output, ends with an exit code and can be stopped: a
    child process group here, a job on a cluster elsewhere. ``supervise`` drives any of them."""

    def read(self, timeout: float) -> list[tuple[str, bytes]]:
        """Output that arrived within ``timeout`` seconds, as (stream name, chunk) pairs."""

    def drained(self) -> bool:
        """True once the job's output has ended (every stream closed)."""

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, waiting at most ``timeout`` seconds (None: until it ends); None if
        it is still running then. Negative: killed by that signal."""

    def stop(self, grace_seconds: float) -> None:
        """Ask the job to end, and force it after ``grace_seconds``; returns once it is told."""

    def close(self) -> None:
        """Leave nothing of the job behind, whatever state it is in."""


class ProcessJob:
    """``argv`` (never through a shell) in a new session and process group."""

    def __init__(
        self, argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_prepare_child,  # only signal() and prctl(): safe between fork and exec
        )
        self.pgid = self.proc.pid  # start_new_session makes the child its group leader
        self.selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.selector.register(self.proc.stdout, selectors.EVENT_READ, "stdout")
        self.selector.register(self.proc.stderr, selectors.EVENT_READ, "stderr")
        self.exited_at: float | None = None

    def read(self, timeout: float) -> list[tuple[str, bytes]]:
        now = time.monotonic()
        if self.exited_at is None and self.proc.poll() is not None:
            self.exited_at = now
        # The leader is gone but a descendant still holds the pipes open: give it a moment to
        # finish writing, then take the group down so the pipes close.
        if self.exited_at is not None and now - self.exited_at > 0.5:
            _signal_group(self.pgid, signal.SIGKILL)
        chunks: list[tuple[str, bytes]] = []
        for key, _ in self.selector.select(timeout=timeout):
            fileobj = cast("IO[bytes]", key.fileobj)
            chunk = os.read(fileobj.fileno(), _READ_CHUNK)
            if chunk:
                chunks.append((key.data, chunk))
            else:
                self.selector.unregister(fileobj)
                fileobj.close()
        return chunks

    def drained(self) -> bool:
        return not self.selector.get_map()

    def wait(self, timeout: float | None) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace_seconds: float) -> None:
        terminate_group(self.pgid, grace_seconds)

    def close(self) -> None:
        self.selector.close()
        # Leave nothing of the group behind, even after a normal exit or an exception.
        _signal_group(self.pgid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def supervise(
    job: Job,
    *,
    timeout_seconds: float,
    max_output_bytes: int,
    kill_grace_seconds: float = 5.0,
    tick_seconds: float = 1.0,
    on_tick: Callable[[], bool] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    captures: Mapping[str, BoundedCapture] | None = None,
) -> ExecutionResult:
    """Follow ``job`` until it ends: its output, its deadline and the caller's ticks.

    ``on_tick`` is called about every ``tick_seconds`` while the job runs (heartbeats); if it
    returns True the run was cancelled and the job is stopped. At ``timeout_seconds`` the job
    is stopped too. ``on_output`` sees every chunk as it arrives, with its stream's name
    ("stdout" or "stderr"), whatever the capture keeps (progress lines). ``captures`` (keys
    "stdout" and "stderr") lets the caller read the output while the job runs; by default each
    stream gets a new BoundedCapture of ``max_output_bytes``. Whatever the outcome, nothing of
    the job outlives this call.
    """
    started = time.monotonic()
    deadline = started + timeout_seconds
    if captures is None:
        captures = {name: BoundedCapture(max_output_bytes) for name in ("stdout", "stderr")}
    timed_out = cancelled = False
    next_tick = started + tick_seconds
    try:
        while not job.drained():
            now = time.monotonic()
            if not timed_out and not cancelled and now >= deadline:
                timed_out = True
                job.stop(kill_grace_seconds)
            if on_tick is not None and now >= next_tick:
                next_tick = now + tick_seconds
                if not timed_out and not cancelled and on_tick():
                    cancelled = True
                    job.stop(kill_grace_seconds)
            wait = max(0.0, min(next_tick, deadline) - now) if not (timed_out or cancelled) else 0.1
            for stream, chunk in job.read(min(wait, 0.25)):
                captures[stream].feed(chunk)
                if on_output is not None:
                    on_output(stream, chunk)
        remaining = max(deadline - time.monotonic(), 0.0)
        exit_code = job.wait(remaining if not (timed_out or cancelled) else kill_grace_seconds + 1)
        if exit_code is None:
            timed_out = True
            job.stop(kill_grace_seconds)
            exit_code = job.wait(None)
    finally:
        job.close()
    return ExecutionResult(
        exit_code=exit_code,
        stdout=captures["stdout"].text(),
        stderr=captures["stderr"].text(),
        timed_out=timed_out,
        cancelled=cancelled,
        duration_seconds=time.monotonic() - started,
        stdout_bytes=captures["stdout"].total,
        stderr_bytes=captures["stderr"].total,
    )


def execute(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    **supervision: Any,
) -> ExecutionResult:
    """Run ``argv`` as a ProcessJob under ``supervise`` (which takes the other keyword
    arguments): no process of its group outlives this call."""
    return supervise(ProcessJob(argv, cwd=cwd, env=env), **supervision)
