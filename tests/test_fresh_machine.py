"""`make test` on a fresh machine, with real make and real pytest passes: it gets Chromium for
the browser tests itself when it can (as root, with apt-get) and otherwise stops at once with
the command to run; it runs and reports both database passes even when one fails, and fails if
either did."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.support.clusters import database_url

pytestmark = pytest.mark.processes

REPO = Path(__file__).resolve().parent.parent
PROBE = "tests/support/pass_probe.py"


def executable(path: Path, script: str) -> Path:
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Not the variables of a make this suite may itself run under: they would leak its
    # command-line settings into this one.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def as_user(tmp_path: Path) -> dict[str, str]:
    """Commands first on PATH for make: `id` saying who runs it (FAKE_UID), and an `apt-get`
    that logs its arguments and, on install, puts an executable where TUNIX_CHROMIUM points."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "id", 'echo "$FAKE_UID"')
    apt_log = tmp_path / "apt-get.log"
    executable(
        bin_dir / "apt-get",
        f'echo "$*" >> {apt_log}\n'
        'case "$*" in *install*) printf "#!/bin/sh\\n" > "$TUNIX_CHROMIUM"; '
        'chmod +x "$TUNIX_CHROMIUM";; esac',
    )
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.postgres
@pytest.mark.parametrize("fail_in", ["sqlite", "postgresql", ""])
def test_make_test_runs_and_reports_both_passes_whichever_fails(
    tmp_path: Path, fail_in: str
) -> None:
    probe_log = tmp_path / "passes.log"
    chromium = executable(tmp_path / "chromium", "exit 0")  # no browser test runs here
    result = make(
        "test",
        "TEST_CHECKS=test-sqlite test-postgres",
        f"PYTEST_ARGS=-q -p no:cacheprovider {PROBE}",
        f"TEST_RESULTS={tmp_path / 'results'}",
        f"TEST_DATABASE_URL={database_url()}_make",
        f"TUNIX_CHROMIUM={chromium}",
        env={
            "TUNIX_PROBE_FAIL": fail_in,
            "TUNIX_PROBE_LOG": str(probe_log),
            "TUNIX_VAR_DIR": str(tmp_path / "var"),
        },
    )
    output = result.stdout + result.stderr
    assert probe_log.read_text().split() == ["sqlite", "postgresql"], output
    report = output[output.rindex("make test:") :]
    sqlite = "FAILED: 0 passed, 1 failed" if fail_in == "sqlite" else "passed: 1 passed"
    postgres = "FAILED: 0 passed, 1 failed" if fail_in == "postgresql" else "passed: 1 passed"
    assert f"test-sqlite    {sqlite} in " in report, output
    assert f"test-postgres  {postgres} in " in report, output
    assert (result.returncode != 0) == bool(fail_in), output


def test_make_test_installs_debians_chromium_when_it_runs_as_root_with_apt_get(
    tmp_path: Path, as_user: dict[str, str]
) -> None:
    chromium = tmp_path / "chromium"
    result = make("chromium", f"TUNIX_CHROMIUM={chromium}", env={**as_user, "FAKE_UID": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "apt-get.log").read_text().splitlines() == [
        "update -qq",
        "install -y -qq chromium",
    ]
    assert os.access(chromium, os.X_OK)


def test_make_test_says_what_to_run_when_it_cannot_install_chromium(
    tmp_path: Path, as_user: dict[str, str]
) -> None:
    probe_log = tmp_path / "passes.log"
    result = make(
        "test",
        "TEST_CHECKS=test-sqlite test-postgres",
        f"PYTEST_ARGS=-q -p no:cacheprovider {PROBE}",
        f"TEST_RESULTS={tmp_path / 'results'}",
        f"TUNIX_CHROMIUM={tmp_path / 'chromium'}",
        env={**as_user, "FAKE_UID": "1000", "TUNIX_PROBE_LOG": str(probe_log)},
    )
    assert result.returncode != 0
    assert "    sudo apt-get install -y chromium\n" in result.stderr
    assert f"need Chromium at {tmp_path / 'chromium'}" in result.stderr
    assert not (tmp_path / "apt-get.log").exists()  # not root: nothing attempted
    assert not probe_log.exists()  # stopped before a pass that would fail at the end
