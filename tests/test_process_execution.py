"""runs.executor: process groups, deadlines, cancellation and bounded output capture."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runs.executor import BoundedCapture, execute, truncate_text
from tests.support.clusters import pid_alive, wait_for

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.processes
def test_exit_code_and_both_streams_are_kept() -> None:
    result = execute(
        [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
        timeout_seconds=30,
        max_output_bytes=1024,
    )
    assert result.exit_code == 3
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert not result.timed_out
    assert not result.cancelled


@pytest.mark.processes
def test_arguments_reach_the_child_literally_without_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    nasty = f"$(touch {marker}); `touch {marker}` | cat > {marker} && echo *"
    result = execute(
        [PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", nasty, "a b"],
        timeout_seconds=30,
        max_output_bytes=4096,
    )
    assert json.loads(result.stdout) == [nasty, "a b"]
    assert not marker.exists()


def test_empty_argv_is_refused() -> None:
    with pytest.raises(ValueError, match="argv"):
        execute([], timeout_seconds=1, max_output_bytes=1024)


@pytest.mark.processes
def test_a_missing_program_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        execute(["/nonexistent/trainer"], timeout_seconds=1, max_output_bytes=1024)


@pytest.mark.parametrize("char", ["a", "é", "€", "𝄞"])
def test_truncation_never_splits_a_character(char: str) -> None:
    for limit in range(64, 400, 7):
        for offset in range(4):
            text = "x" * offset + char * 500
            cut = truncate_text(text, limit)
            data = cut.encode("utf-8")
            assert len(data) <= limit
            assert "\ufffd" not in cut
            assert "bytes omitted" in cut
            assert cut.startswith(text[:2])  # keeps the start
            assert cut.endswith(char * 2)  # and the end


def test_short_output_is_kept_whole() -> None:
    assert truncate_text("héllo", 64) == "héllo"
    capture = BoundedCapture(64)
    capture.feed("é".encode() * 10)
    assert capture.text() == "é" * 10


def test_capture_counts_everything_but_keeps_head_and_tail() -> None:
    capture = BoundedCapture(100)
    for i in range(1000):
        capture.feed(f"line {i}\n".encode())
    text = capture.text()
    assert capture.total == sum(len(f"line {i}\n") for i in range(1000))
    assert text.startswith("line 0\n")
    assert text.endswith("line 999\n")
    assert len(text.encode()) <= 100
    assert len(capture.head) + len(capture.tail) <= 100


@pytest.mark.processes
def test_an_output_flood_keeps_memory_bounded() -> None:
    # A separate interpreter, so its peak RSS measures the executor alone: 256 MiB of output
    # must not grow it by anything near that.
    probe = f"""
import json, resource, sys
sys.path.insert(0, {str(REPO)!r})
from runs.executor import execute
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
flood = "import sys\\nchunk = b'x' * 1048576\\nfor _ in range(256): sys.stdout.buffer.write(chunk)"
result = execute([sys.executable, "-c", flood], timeout_seconds=120, max_output_bytes=10240)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"bytes": result.stdout_bytes, "kept": len(result.stdout.encode()),
                  "grew_kib": after - before, "exit": result.exit_code}}))
"""
    out = subprocess.run([PY, "-c", probe], capture_output=True, text=True, timeout=180, check=True)
    report = json.loads(out.stdout)
    assert report["exit"] == 0
    assert report["bytes"] == 256 * 1024 * 1024
    assert report["kept"] <= 10240
    assert report["grew_kib"] < 32 * 1024  # well under the 256 MiB that went through


@pytest.mark.processes
def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    code = f"""
import subprocess, time
children = [subprocess.Popen(["sleep", "120"]) for _ in range(2)]
open({str(pids)!r}, "w").write(" ".join(str(c.pid) for c in children))
time.sleep(120)
"""
    started = time.monotonic()
    result = execute([PY, "-c", code], timeout_seconds=1.5, max_output_bytes=1024)
    assert result.timed_out
    assert time.monotonic() - started < 15  # returned, not hung
    children = [int(p) for p in pids.read_text().split()]
    wait_for(lambda: not any(pid_alive(p) for p in children), 5, what="no child to survive")


@pytest.mark.processes
def test_a_child_ignoring_sigterm_is_killed_after_the_grace() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('up', flush=True); time.sleep(120)"
    )
    started = time.monotonic()
    result = execute(
        [PY, "-c", code], timeout_seconds=1, max_output_bytes=1024, kill_grace_seconds=0.5
    )
    assert result.timed_out
    assert result.exit_code == -9
    assert result.stdout == "up\n"
    assert time.monotonic() - started < 15


@pytest.mark.processes
def test_a_background_child_holding_the_pipes_does_not_hang_the_call(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"""
import subprocess
child = subprocess.Popen(["sleep", "120"])
open({str(pid_file)!r}, "w").write(str(child.pid))
print("leader done")
"""
    started = time.monotonic()
    result = execute([PY, "-c", code], timeout_seconds=60, max_output_bytes=1024)
    assert result.exit_code == 0
    assert result.stdout == "leader done\n"
    assert time.monotonic() - started < 15
    wait_for(lambda: not pid_alive(int(pid_file.read_text())), 5, what="the straggler to die")


@pytest.mark.processes
def test_on_tick_heartbeats_and_can_cancel() -> None:
    ticks: list[float] = []

    def tick() -> bool:
        ticks.append(time.monotonic())
        return len(ticks) >= 3

    result = execute(
        [PY, "-c", "import time; time.sleep(60)"],
        timeout_seconds=60,
        max_output_bytes=1024,
        tick_seconds=0.2,
        on_tick=tick,
    )
    assert result.cancelled
    assert not result.timed_out
    assert len(ticks) == 3
    assert result.duration_seconds < 10
