"""What a run asks of a worker host (an accelerator kind, a count, maybe a device type) and
what a host has: the one registry of resource classes (docs/architecture.md, "Resources").

A request routes to a resource class by name: its kind ("cpu", "gpu", "tpu"), or kind and
device type ("gpu-a100", "tpu-v5e"). Each class a deployment serves is configured with the most
devices its workers have (TUNIX_RESOURCE_CLASSES, e.g. "cpu:1,gpu:8,tpu-v5e:8"), and every class
but cpu has its own queue, served only by clusters whose host satisfies the class. No Django
here: web hosts, workers and the qcluster start-up check all read the same rules.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("cpu", "gpu", "tpu")
CPU = "cpu"  # the class of a run that asks for nothing: today's queue and workers serve it
DEVICE_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_.]{0,31}$"
_DEVICE_TYPE = re.compile(DEVICE_TYPE_PATTERN)
_FIELDS = frozenset({"kind", "count", "device_type"})
# A device type matches a device whose JAX device_kind contains it, ignoring case, spaces and
# punctuation ("a100" matches "NVIDIA A100-SXM4-80GB"); these are spelled otherwise there
# ("TPU v5 lite" is a v5e).
_KIND_ALIASES = {"v5e": ("v5lite", "v5e"), "v6e": ("v6lite", "v6e")}
DETECT_TIMEOUT_SECONDS = 60
TIMES = "\N{MULTIPLICATION SIGN}"  # as pages and messages write a request: "gpu TIMES 2"


class ResourceError(ValueError):
    """A resources request that cannot be taken; the message says why."""


@dataclass(frozen=True)
class Resources:
    kind: str = CPU
    count: int = 1
    device_type: str = ""

    @property
    def resource_class(self) -> str:
        """The class this request routes to: "gpu", "gpu-a100", "tpu-v5e"."""
        return f"{self.kind}-{self.device_type}" if self.device_type else self.kind

    def describe(self) -> str:
        return f"{self.resource_class} {TIMES} {self.count}"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "count": self.count}
        if self.device_type:
            data["device_type"] = self.device_type
        return data


def parse(value: object) -> Resources:
    """A request's `resources` object, checked: {"kind": "gpu", "count": 2, "device_type":
    "a100"} (count defaults to 1, device_type to none). Raises ResourceError."""
    if not isinstance(value, Mapping):
        raise ResourceError('must be an object such as {"kind": "gpu", "count": 1}')
    unknown = sorted(set(value) - _FIELDS)
    if unknown:
        raise ResourceError(f"unknown field {unknown[0]!r}; fields: kind, count, device_type")
    kind = value.get("kind")
    if type(kind) is not str or kind not in KINDS:
        raise ResourceError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    count = value.get("count", 1)
    if type(count) is not int:
        raise ResourceError(f"count must be an integer, got {count!r}")
    if count < 1:
        raise ResourceError(f"count must be at least 1, got {count}")
    device_type = value.get("device_type") or ""
    if type(device_type) is not str or (device_type and not _DEVICE_TYPE.match(device_type)):
        raise ResourceError(
            f"device_type must be a short lower-case name such as a100 or v5e, got {device_type!r}"
        )
    if kind == CPU and device_type:
        raise ResourceError("device_type applies to gpu and tpu only")
    return Resources(kind=kind, count=count, device_type=device_type)


def from_stored(value: object) -> Resources | None:
    """A run's stored resources (its JSON column): None when it asked for none."""
    return parse(value) if value else None


def parse_classes(spec: str) -> dict[str, int]:
    """TUNIX_RESOURCE_CLASSES ("cpu:1,gpu:8,tpu-v5e:8") as {class: most devices}. Raises
    ResourceError on a class the registry does not know or a bad count."""
    classes: dict[str, int] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, most = item.partition(":")
        kind, _, device_type = name.strip().partition("-")
        try:
            request = parse({"kind": kind, "count": int(most or 1), "device_type": device_type})
        except (ResourceError, ValueError) as exc:
            raise ResourceError(f"{item!r}: {exc}") from None
        classes[request.resource_class] = request.count
    if CPU not in classes:  # runs that ask for nothing go to the cpu class: always served
        classes[CPU] = 1
    return classes


@functools.cache
def configured(spec: str) -> dict[str, int]:
    """settings.TUNIX_RESOURCE_CLASSES read once per process (runs.checks refuses a malformed
    one at start). Callers must not change the mapping."""
    return parse_classes(spec)


def class_request(resource_class: str, count: int) -> Resources:
    """The request a class's workers must be able to serve: its largest."""
    kind, _, device_type = resource_class.partition("-")
    return parse({"kind": kind, "count": count, "device_type": device_type})


def describe_classes(classes: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {TIMES} {most}" for name, most in classes.items())


def servable(
    request: Resources,
    classes: Mapping[str, int],
    *,
    what: str = "worker class",
    setting: str = "TUNIX_RESOURCE_CLASSES",
) -> str | None:
    """None when a configured class serves ``request``, else why not (for a 400)."""
    most = classes.get(request.resource_class)
    if most is None or request.count > most:
        return (
            f"no {what} serves {request.describe()}; configured: "
            f"{describe_classes(classes)} ({setting})"
        )
    return None


def class_queue(base: str, resource_class: str) -> str:
    """The django-q2 cluster name of a class's queue; cpu keeps ``base`` (today's queue)."""
    return base if resource_class == CPU else f"{base}-{resource_class}"


def class_of_queue(queue: str, base: str, classes: Mapping[str, int]) -> str:
    """The class a cluster started for ``queue`` serves: cpu unless it is a class's queue."""
    for name in classes:
        if name != CPU and queue == class_queue(base, name):
            return name
    return CPU


def _normalised(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def satisfies(devices: Sequence[Mapping[str, Any]], request: Resources) -> bool:
    """Whether a host with ``devices`` ([{"platform", "kind", "count"}], as detect_devices
    reports them) has ``request.count`` devices of the kind (and type) asked for."""
    wanted = _KIND_ALIASES.get(request.device_type, (request.device_type,))
    have = 0
    for device in devices:
        if device.get("platform") != request.kind:
            continue
        kind = _normalised(str(device.get("kind", "")))
        if request.device_type and not any(_normalised(w) in kind for w in wanted):
            continue
        count = device.get("count", 0)
        have += count if isinstance(count, int) else 0
    return have >= request.count


def describe_devices(devices: Sequence[Mapping[str, Any]]) -> str:
    if not devices:
        return "no devices reported"
    return ", ".join(
        " ".join(
            str(part) for part in (d.get("platform"), d.get("kind"), TIMES, d.get("count")) if part
        )
        for d in devices
    )


# Run in a child process: importing JAX takes seconds and memory, may grab an accelerator, and
# must never happen in a worker whose trainings run in their own processes.
_DETECT = """
import collections, json
import jax
found = collections.Counter((d.platform, d.device_kind) for d in jax.devices())
print(json.dumps([{"platform": p, "kind": k, "count": n} for (p, k), n in sorted(found.items())]))
"""


def _cpu_entry() -> dict[str, Any]:
    return {"platform": CPU, "kind": "", "count": os.cpu_count() or 1}


def declared_devices(raw: str) -> list[dict[str, Any]]:
    """TUNIX_WORKER_DEVICES: a device list an operator declares for a host whose JAX cannot list
    its devices at start (JSON, as detect_devices reports them). Raises ResourceError."""
    try:
        listed = json.loads(raw)
    except ValueError:
        raise ResourceError("must be a JSON list of {platform, kind, count}") from None
    if not isinstance(listed, list) or not all(
        isinstance(d, dict)
        and d.get("platform") in KINDS
        and type(d.get("count")) is int
        and d["count"] >= 1
        for d in listed
    ):
        raise ResourceError("must be a JSON list of {platform, kind, count}, count at least 1")
    return [
        {"platform": d["platform"], "kind": str(d.get("kind", "")), "count": d["count"]}
        for d in listed
    ]


def detect_devices(*, timeout: float = DETECT_TIMEOUT_SECONDS) -> list[dict[str, Any]]:
    """This host's devices as JAX lists them, grouped by platform and kind, read in a child
    process. Always includes the host's CPU cores (what a cpu run uses); a host without JAX,
    or whose JAX fails or hangs, reports those alone."""
    devices: list[dict[str, Any]] = []
    try:
        done = subprocess.run(  # our own interpreter, a fixed script
            [sys.executable, "-c", _DETECT],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode == 0:
            listed = json.loads(done.stdout.strip().splitlines()[-1])
            devices = [d for d in listed if isinstance(d, dict) and d.get("platform") != CPU]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        devices = []
    return [*devices, _cpu_entry()]
