"""The container files: Dockerfile, docker/entrypoint.sh and docker-compose.yml.

No Docker engine is needed: the files are parsed and checked against the repository and the
settings, and the entrypoint script is run with stub programs in place of gunicorn and python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.urls import resolve

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
COMPOSE = REPO / "docker-compose.yml"
APP_DIR = "/app"  # the image's WORKDIR, where the repository's files are copied

# --------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages in order, each with its (INSTRUCTION, arguments) pairs; continuation lines joined
    and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", args, flags=re.IGNORECASE)
            assert match, f"unexpected FROM line: {line}"
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1)))
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, args))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(DOCKERFILE.read_text())}


@pytest.fixture(scope="module")
def final_stage() -> Stage:
    return parse_dockerfile(DOCKERFILE.read_text())[-1]


def chain(stages: dict[str, Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it is built FROM, the base first."""
    found = [stage]
    while found[0].base in stages:
        found.insert(0, stages[found[0].base])
    return found


def effective(stages: dict[str, Stage], stage: Stage, instruction: str) -> list[str]:
    """Every value of an instruction in the stage and its parents, in build order."""
    return [
        args for s in chain(stages, stage) for name, args in s.instructions if name == instruction
    ]


def copy_sources(args: str) -> tuple[str | None, list[str]]:
    """(--from stage or None, source paths) of a COPY instruction."""
    words = args.split()
    from_stage = None
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if flag.startswith("--from="):
            from_stage = flag.removeprefix("--from=")
    assert len(words) >= 2, f"COPY needs a source and a destination: {args}"
    return from_stage, words[:-1]


def test_the_build_is_multi_stage_on_python_3_11_slim(
    stages: dict[str, Stage], final_stage: Stage
) -> None:
    roots = {chain(stages, stage)[0].base for stage in stages.values()}
    assert roots == {"python:3.11-slim"}
    assert {"builder", "worker-tunix", "worker-cuda"} <= set(stages)
    # The final images get the virtualenv from a builder, not a pip install of their own.
    for stage in (final_stage, stages["worker-tunix"], stages["worker-cuda"]):
        runs = " ".join(effective(stages, stage, "RUN"))
        assert "pip install" not in runs
        venv_from = [
            copy_sources(args)[0]
            for args in effective(stages, stage, "COPY")
            if "/opt/venv" in args
        ]
        assert venv_from, f"{stage.name} copies no virtualenv"
        assert all(name and name.startswith("builder") for name in venv_from)


def test_every_copied_path_exists_in_the_repository(stages: dict[str, Stage]) -> None:
    checked = 0
    for stage in stages.values():
        for instruction, args in stage.instructions:
            if instruction not in {"COPY", "ADD"}:
                continue
            from_stage, sources = copy_sources(args)
            if from_stage is not None:
                assert from_stage in stages, f"COPY --from={from_stage}: no such stage"
                continue
            for source in sources:
                assert (REPO / source).exists(), f"{stage.name}: COPY {source}: not in the repo"
                checked += 1
    assert checked >= 5


def test_the_requirements_files_are_installed_where_they_belong(stages: dict[str, Stage]) -> None:
    def copied(stage: Stage) -> set[str]:
        return {
            source
            for args in effective(stages, stage, "COPY")
            for source in copy_sources(args)[1]
            if copy_sources(args)[0] is None
        }

    assert "requirements.txt" in copied(stages["builder"])
    assert "requirements-tunix.txt" not in copied(stages["builder"])
    tunix_builders = [s for s in stages.values() if "requirements-tunix.txt" in copied(s)]
    assert tunix_builders, "no stage installs requirements-tunix.txt"
    venv_sources = {
        copy_sources(args)[0]
        for args in effective(stages, stages["worker-tunix"], "COPY")
        if "/opt/venv" in args
    }
    assert venv_sources <= {s.name for s in tunix_builders}


def venv_source(stages: dict[str, Stage], stage: Stage) -> Stage:
    """The builder stage a final image copies its virtualenv from."""
    sources = {
        copy_sources(args)[0] for args in effective(stages, stage, "COPY") if "/opt/venv" in args
    }
    assert len(sources) == 1, f"{stage.name} copies its virtualenv from {sources}"
    (name,) = sources
    assert name in stages
    return stages[name]


def installed_requirements(stages: dict[str, Stage], stage: Stage) -> set[str]:
    """The requirements files a stage's virtualenv was built from: each `pip install -r FILE`
    of the stage and its parents, where FILE was copied from the repository."""
    copied = {
        source
        for args in effective(stages, stage, "COPY")
        if copy_sources(args)[0] is None
        for source in copy_sources(args)[1]
    }
    installed = {
        Path(path).name
        for args in effective(stages, stage, "RUN")
        if "pip install" in args
        for path in re.findall(r"-r\s+(\S+)", args)
    }
    missing = installed - copied
    assert not missing, f"{stage.name} installs {sorted(missing)} without copying them"
    return installed


def test_the_cuda_worker_target_installs_the_gpu_and_ray_stacks(
    stages: dict[str, Stage], final_stage: Stage
) -> None:
    cuda = installed_requirements(stages, venv_source(stages, stages["worker-cuda"]))
    assert {
        "requirements.txt",
        "requirements-tunix.txt",
        "requirements-ray.txt",
        "requirements-cuda.txt",
    } <= cuda
    # The other images stay as they were: no CUDA wheels (several GB) and no Ray.
    for stage in (final_stage, stages["worker-tunix"]):
        others = installed_requirements(stages, venv_source(stages, stage))
        assert not {"requirements-cuda.txt", "requirements-ray.txt"} & others, stage.name
    assert final_stage.name == "runtime", "the default target changed"
    # GPUs are the operator's to hand out (--gpus, the device plugin), not the image's.
    env = " ".join(effective(stages, stages["worker-cuda"], "ENV"))
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert "TUNIX_RESOURCE_CLASSES" not in env
    assert "TUNIX_WORKER_DEVICES" not in env


def pins(path: Path) -> dict[str, tuple[str, str]]:
    """A requirements file's lines as {name: (extras, version)}; every line must pin exactly."""
    found: dict[str, tuple[str, str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;=]+)", line)
        assert match, f"{path.name}: not an exact pin: {raw!r}"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        found[name] = (match.group(2) or "", match.group(3))
    return found


def test_requirements_cuda_pins_the_cuda_build_of_the_same_jax() -> None:
    tunix = pins(REPO / "requirements-tunix.txt")
    cuda = pins(REPO / "requirements-cuda.txt")
    version = tunix["jax"][1]
    assert tunix["jaxlib"][1] == version
    assert cuda["jax"] == ("[cuda12]", version)
    # jax[cuda12] requires its plugin at exactly jax's version: a mismatch would not install.
    assert cuda["jax-cuda12-plugin"][1] == version
    assert cuda["jax-cuda12-pjrt"][1] == version
    assert "jaxlib" not in cuda or cuda["jaxlib"][1] == version
    assert any(name.startswith("nvidia-cudnn-") for name in cuda)
    # Only the CUDA build here: anything else belongs in requirements-tunix.txt, pinned once.
    assert all(name.startswith(("jax", "nvidia-")) for name in cuda), sorted(cuda)


def test_the_final_image_runs_as_a_non_root_user(
    stages: dict[str, Stage], final_stage: Stage
) -> None:
    for stage in (final_stage, stages["worker-tunix"], stages["worker-cuda"]):
        users = effective(stages, stage, "USER")
        assert users, f"{stage.name} sets no USER"
        user = users[-1].split(":")[0]
        assert user not in {"root", "0"}


def test_the_final_image_has_python_settings_and_the_app_port(
    stages: dict[str, Stage], final_stage: Stage
) -> None:
    env = " ".join(effective(stages, final_stage, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert effective(stages, final_stage, "EXPOSE") == ["8000"]
    import tunix_rt.gunicorn_conf as gunicorn_conf

    if "TUNIX_WEB_BIND" not in os.environ:
        assert gunicorn_conf.bind.endswith(":8000")


def test_entrypoint_and_cmd_are_exec_form(stages: dict[str, Stage], final_stage: Stage) -> None:
    entrypoint = json.loads(effective(stages, final_stage, "ENTRYPOINT")[-1])
    cmd = json.loads(effective(stages, final_stage, "CMD")[-1])
    assert entrypoint == [f"{APP_DIR}/docker/entrypoint.sh"]
    assert cmd == ["web"]
    # The script is in the image at that path: copied from the repository below WORKDIR.
    script = entrypoint[0].removeprefix(f"{APP_DIR}/")
    assert (REPO / script).is_file()
    assert any(
        script in copy_sources(args)[1]
        for s in stages.values()
        for n, args in s.instructions
        if n == "COPY"
    )
    assert effective(stages, final_stage, "WORKDIR")[-1] == APP_DIR
    for name in ("worker-tunix", "worker-cuda"):
        assert json.loads(effective(stages, stages[name], "CMD")[-1]) == ["worker"]
        assert json.loads(effective(stages, stages[name], "ENTRYPOINT")[-1]) == entrypoint


def test_static_files_are_collected_at_build_time(stages: dict[str, Stage]) -> None:
    runs = [args for stage in stages.values() for name, args in stage.instructions if name == "RUN"]
    collect = [args for args in runs if "collectstatic" in args]
    assert collect
    assert "SECRET_KEY=" in collect[0]
    assert "--noinput" in collect[0]


@pytest.mark.processes
def test_collectstatic_succeeds_with_only_the_build_time_environment(tmp_path: Path) -> None:
    """The build runs collectstatic with no DATABASE_URL, DEBUG or ALLOWED_HOSTS."""
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=REPO,
        env={
            "PATH": os.environ["PATH"],
            "SECRET_KEY": "collectstatic-only",
            "TUNIX_VAR_DIR": str(tmp_path / "var"),
            "STATIC_ROOT": str(tmp_path / "static"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "static" / "favicon.svg").is_file()
    assert (tmp_path / "static" / "admin").is_dir()


def test_the_healthcheck_uses_python_against_a_routed_health_url(
    stages: dict[str, Stage], final_stage: Stage
) -> None:
    from runs import health

    checks = effective(stages, final_stage, "HEALTHCHECK")
    assert checks
    assert checks[-1].upper() != "NONE"
    command = json.loads(checks[-1][checks[-1].index("CMD") + 3 :].strip())
    assert command[0] == "python"
    assert "curl" not in checks[-1]
    match = re.search(r"http://127\.0\.0\.1:8000(/[^'\"\s]*)", command[-1])
    assert match, command
    view = resolve(match.group(1))
    assert view.func is health.healthz


@pytest.mark.processes
def test_the_healthcheck_probe_reaches_the_health_view(
    stages: dict[str, Stage], final_stage: Stage
) -> None:
    """Run the HEALTHCHECK's own python snippet with urlopen replaced: it asks for /healthz on
    the container's own address (no Host header needed: probes skip the host check)."""
    command = json.loads(
        effective(stages, final_stage, "HEALTHCHECK")[-1].split("CMD", 1)[1].strip()
    )
    probe = (
        "import json, urllib.request\n"
        "seen = {}\n"
        "def fake(request, timeout):\n"
        "    seen['url'] = getattr(request, 'full_url', request)\n"
        "urllib.request.urlopen = fake\n"
        f"exec({command[-1]!r})\n"
        "print(json.dumps(seen))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"url": "http://127.0.0.1:8000/healthz"}


def test_the_health_url_answers_any_probe_host(client: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["tunix.example.com"]
    assert client.get("/healthz", HTTP_HOST="tunix.example.com").status_code == 200
    # A probe by the container's address: not an allowed host, answered all the same.
    assert client.get("/healthz", HTTP_HOST="127.0.0.1:8000").status_code == 200
    assert client.get("/api/tunix/runs", HTTP_HOST="127.0.0.1:8000").status_code == 400


# --------------------------------------------------------------------------- entrypoint

STUB = """#!/bin/sh
printf 'cmd=%s\\n' "${0##*/}"
printf 'pid=%s\\n' "$$"
for arg in "$@"; do printf 'arg=%s\\n' "$arg"; done
exit "${STUB_EXIT:-0}"
"""


@dataclass
class Invocation:
    cmd: str
    pid: int
    args: list[str]


@dataclass
class Outcome:
    pid: int  # of the process Popen started
    returncode: int
    calls: list[Invocation]


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """gunicorn, python and another program that print their name, PID and argv."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("gunicorn", "python", "some-tool"):
        stub = directory / name
        stub.write_text(STUB)
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def run_entrypoint(fake_bin: Path, *args: str, **env: str) -> Outcome:
    sh = shutil.which("sh")
    assert sh
    proc = subprocess.Popen(
        [sh, str(ENTRYPOINT), *args],
        cwd=REPO,
        env={"PATH": f"{fake_bin}{os.pathsep}/usr/bin{os.pathsep}/bin", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=30)
    calls: list[Invocation] = []
    for line in stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "cmd":
            calls.append(Invocation(cmd=value, pid=0, args=[]))
        elif key == "pid":
            calls[-1].pid = int(value)
        elif key == "arg":
            calls[-1].args.append(value)
        else:
            raise AssertionError(f"unexpected output {line!r}; stderr: {stderr}")
    return Outcome(pid=proc.pid, returncode=proc.returncode, calls=calls)


@pytest.mark.processes
def test_the_entrypoint_is_posix_sh_and_executable() -> None:
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert "set -eu" in ENTRYPOINT.read_text()
    assert os.access(ENTRYPOINT, os.X_OK), "chmod +x docker/entrypoint.sh"
    result = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if dash := shutil.which("dash"):
        result = subprocess.run([dash, "-n", str(ENTRYPOINT)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "cmd", "argv"),
    [
        (["web"], "gunicorn", ["-c", "python:tunix_rt.gunicorn_conf", "tunix_rt.wsgi"]),
        ([], "gunicorn", ["-c", "python:tunix_rt.gunicorn_conf", "tunix_rt.wsgi"]),
        (
            ["web", "--workers", "3"],
            "gunicorn",
            ["-c", "python:tunix_rt.gunicorn_conf", "tunix_rt.wsgi", "--workers", "3"],
        ),
        (["worker"], "python", ["manage.py", "qcluster"]),
        (["migrate"], "python", ["manage.py", "migrate", "--noinput"]),
        (
            ["migrate", "runs", "0004_run_progress"],
            "python",
            ["manage.py", "migrate", "--noinput", "runs", "0004_run_progress"],
        ),
        (["some-tool", "--flag", "two words"], "some-tool", ["--flag", "two words"]),
        (["python", "manage.py", "ensure_admin"], "python", ["manage.py", "ensure_admin"]),
    ],
)
@pytest.mark.processes
def test_each_role_execs_its_command(
    fake_bin: Path, args: list[str], cmd: str, argv: list[str]
) -> None:
    outcome = run_entrypoint(fake_bin, *args)
    assert outcome.returncode == 0
    assert [(c.cmd, c.args) for c in outcome.calls] == [(cmd, argv)]
    # Same PID as the shell Popen started: the command replaced it (exec), so it gets the
    # container's signals directly.
    assert outcome.calls[0].pid == outcome.pid


@pytest.mark.processes
def test_the_command_exit_status_is_the_containers(fake_bin: Path) -> None:
    outcome = run_entrypoint(fake_bin, "worker", STUB_EXIT="3")
    assert outcome.returncode == 3


@pytest.mark.processes
def test_migrate_on_start_migrates_then_execs_gunicorn(fake_bin: Path) -> None:
    outcome = run_entrypoint(fake_bin, "web", TUNIX_MIGRATE_ON_START="1")
    assert outcome.returncode == 0
    assert [(c.cmd, c.args) for c in outcome.calls] == [
        ("python", ["manage.py", "migrate", "--noinput"]),
        ("gunicorn", ["-c", "python:tunix_rt.gunicorn_conf", "tunix_rt.wsgi"]),
    ]
    migrate, web = outcome.calls
    assert migrate.pid != outcome.pid  # a child: the shell went on afterwards
    assert web.pid == outcome.pid


@pytest.mark.processes
def test_a_failed_migration_on_start_does_not_start_the_server(fake_bin: Path) -> None:
    outcome = run_entrypoint(fake_bin, "web", TUNIX_MIGRATE_ON_START="1", STUB_EXIT="1")
    assert outcome.returncode != 0
    assert [c.cmd for c in outcome.calls] == ["python"]


@pytest.mark.processes
def test_migrate_on_start_is_off_unless_asked(fake_bin: Path) -> None:
    for value in ("", "0"):
        outcome = run_entrypoint(fake_bin, "web", TUNIX_MIGRATE_ON_START=value)
        assert [c.cmd for c in outcome.calls] == ["gunicorn"]


# --------------------------------------------------------------------------- compose

# Values for the variables the compose file requires (${NAME:?...}).
COMPOSE_VARS = {"SECRET_KEY": "compose-test-secret-key", "POSTGRES_PASSWORD": "pw"}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, for the forms this file uses."""

    def replace(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        if operator in {":?", "?"}:
            raise KeyError(f"{name} is required: {word}")
        return word or ""

    return INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


APP_SERVICES = ["migrate", "web", "worker", "worker-tunix"]


def environment(
    service: dict[str, Any], variables: dict[str, str] = COMPOSE_VARS
) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping"
    return {key: interpolate(str(value), variables) for key, value in env.items()}


def duration_seconds(value: str) -> float:
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts, f"not a duration: {value}"
    assert "".join(n + u for n, u in parts) == value, f"not a duration: {value}"
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in parts)


def test_compose_has_the_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", *APP_SERVICES}


def test_postgres_has_a_healthcheck_and_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert postgres["volumes"][0].endswith(":/var/lib/postgresql/data")


def test_each_service_runs_its_role(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    assert services["web"]["command"] == ["web"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker-tunix"]["command"] == ["worker"]
    assert "8000:8000" in services["web"]["ports"]


def test_web_and_workers_wait_for_the_database_and_the_migration(
    services: dict[str, Any],
) -> None:
    for name in ["web", "worker", "worker-tunix"]:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_database_url_points_at_the_postgres_service(services: dict[str, Any]) -> None:
    postgres_env = environment(services["postgres"])
    for name in APP_SERVICES:
        url = urlsplit(environment(services[name])["DATABASE_URL"])
        assert url.scheme in {"postgres", "postgresql"}
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert url.username == postgres_env["POSTGRES_USER"]
        assert url.password == postgres_env["POSTGRES_PASSWORD"]
        assert url.path == "/" + postgres_env["POSTGRES_DB"] == "/tunix_rt"


def test_secrets_have_no_defaults(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        raw = services[name]["environment"]
        assert raw["SECRET_KEY"] == "${SECRET_KEY:?set SECRET_KEY}"
        for variable in COMPOSE_VARS:
            with pytest.raises(KeyError, match=variable):
                environment(
                    services[name], {k: v for k, v in COMPOSE_VARS.items() if k != variable}
                )


def settings_variables() -> set[str]:
    """Every environment variable the project reads: settings, gunicorn config, commands and
    the entrypoint."""
    sources = [
        REPO / "tunix_rt" / "settings.py",
        REPO / "tunix_rt" / "gunicorn_conf.py",
        *(REPO / "runs" / "management" / "commands").glob("*.py"),
    ]
    names: set[str] = set()
    for path in sources:
        names |= set(
            re.findall(
                r"(?:env_\w+|os\.environ\.get|os\.getenv)\(\s*\"([A-Z][A-Z0-9_]*)\"",
                path.read_text(),
            )
        )
    names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", ENTRYPOINT.read_text()))
    return names


def test_the_app_services_set_only_variables_the_project_reads(services: dict[str, Any]) -> None:
    known = settings_variables()
    assert {"DATABASE_URL", "SECRET_KEY", "ALLOWED_HOSTS", "TUNIX_VAR_DIR"} <= known
    for name in APP_SERVICES:
        unknown = set(services[name]["environment"]) - known
        assert not unknown, f"{name}: not read anywhere: {sorted(unknown)}"


@pytest.mark.processes
def test_the_settings_load_from_each_services_environment(services: dict[str, Any]) -> None:
    """Django's settings accept each app service's environment (booleans, lists, URL)."""
    script = (
        "import json, django\n"
        "from django.conf import settings\n"
        "django.setup()\n"
        "print(json.dumps({\n"
        "  'engine': settings.DATABASES['default']['ENGINE'],\n"
        "  'host': settings.DATABASES['default']['HOST'],\n"
        "  'allowed_hosts': settings.ALLOWED_HOSTS,\n"
        "  'q_name': settings.Q_CLUSTER['name'],\n"
        "  'artifacts': str(settings.TUNIX_ARTIFACTS_ROOT),\n"
        "  'datasets': str(settings.TUNIX_DATASETS_ROOT),\n"
        "  'grace': settings.TUNIX_SHUTDOWN_GRACE_SECONDS,\n"
        "  'debug': settings.DEBUG,\n"
        "}))\n"
    )
    loaded = {}
    for name in ["web", "worker"]:
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={
                "PATH": os.environ["PATH"],
                "DJANGO_SETTINGS_MODULE": "tunix_rt.settings",
                **environment(services[name]),
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        loaded[name] = json.loads(result.stdout)
    for values in loaded.values():
        assert values["engine"].endswith("postgresql")
        assert values["host"] == "postgres"
        assert values["debug"] is False
        assert values["allowed_hosts"]
    # The web process serves the artifacts the worker writes: the same paths and queue.
    for key in ("artifacts", "datasets", "q_name"):
        assert loaded["web"][key] == loaded["worker"][key]


def test_web_and_workers_share_the_data_volume_at_the_var_dir(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    mounts = {}
    for name in ["web", "worker", "worker-tunix"]:
        var_dir = environment(services[name])["TUNIX_VAR_DIR"]
        volumes = [v for v in services[name]["volumes"] if v.split(":")[1] == var_dir]
        assert len(volumes) == 1, f"{name}: no volume at TUNIX_VAR_DIR {var_dir}"
        mounts[name] = volumes[0].split(":")[0]
        assert mounts[name] in compose["volumes"]
    assert len(set(mounts.values())) == 1
    # The image's TUNIX_VAR_DIR (where the directory exists, owned by the app user) is the same.
    assert (
        f"TUNIX_VAR_DIR={environment(services['web'])['TUNIX_VAR_DIR']}" in DOCKERFILE.read_text()
    )


def test_workers_get_time_to_drain_before_sigkill(services: dict[str, Any]) -> None:
    for name in ["worker", "worker-tunix"]:
        env = environment(services[name])
        grace = int(env["TUNIX_SHUTDOWN_GRACE_SECONDS"])
        kill_grace = int(env.get("TUNIX_KILL_GRACE_SECONDS", "5"))
        stop = duration_seconds(services[name]["stop_grace_period"])
        assert stop > grace + kill_grace, f"{name}: stop_grace_period {stop} s <= {grace} s"
        # No HTTP server here: the worker's own heartbeat tells (manage.py worker_alive).
        assert services[name]["healthcheck"]["test"] == [
            "CMD",
            "python",
            "manage.py",
            "worker_alive",
        ]


def test_the_tunix_worker_is_built_from_its_target_behind_a_profile(
    services: dict[str, Any], stages: dict[str, Stage]
) -> None:
    tunix = services["worker-tunix"]
    assert tunix["profiles"] == ["tunix"]
    assert tunix["build"]["target"] == "worker-tunix"
    assert tunix["build"]["target"] in stages
    assert tunix["image"] != services["worker"]["image"]
    for name in ["postgres", "migrate", "web", "worker"]:
        assert "profiles" not in services[name]


def test_every_file_the_compose_file_references_exists(services: dict[str, Any]) -> None:
    built = 0
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (REPO / context).is_dir(), f"{name}: build context {context}"
        assert (REPO / context / dockerfile).is_file(), f"{name}: {dockerfile}"
        built += 1
        for env_file in service.get("env_file", []):
            assert (REPO / env_file).is_file(), f"{name}: env_file {env_file}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: bind mount {source}"
    assert built == len(APP_SERVICES)
