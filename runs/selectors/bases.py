"""A run's base model when it continues training from earlier weights rather than from a catalog
model: ``exports:/<export id>`` (a completed export of an earlier run, full or merged weights),
``models:/<name>/<number>`` (a registered version) or ``models:/<name>@<alias>`` (the version an
alias names now; ``latest`` is the highest number).

A reference is resolved once, at submit, and the run keeps what it resolved to (its base export
and version, and the canonical ``models:/<name>/<number>`` or ``exports:/<id>``): an alias that
moves later does not change what the run trained from.

Registry entries are readable by every authenticated user, so a ``models:/`` reference needs no
view of the run behind it; an ``exports:/`` reference names a run's artifact directly, so the run
must be one the user may view, and one they may not is exactly as unknown as a missing one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from runs import artifacts, authorization, model_catalog
from runs.models import (
    ALIAS_NAME_PATTERN,
    LATEST_ALIAS,
    MODEL_ID_PATTERN,
    REGISTRY_NAME_PATTERN,
    ExportStatus,
    ExportWeights,
    ModelAlias,
    ModelVersion,
    RunExport,
    TunixRun,
)
from runs.selectors.registry import MAX_VERSION_NUMBER

MODELS_PREFIX = "models:/"
EXPORTS_PREFIX = "exports:/"
# What the submit path tests first: a catalog id never starts with either, so it pays nothing.
REFERENCE_PREFIXES = (MODELS_PREFIX, EXPORTS_PREFIX)
# A chain of runs each continuing from the one before is followed back this far at most, to
# find the catalog model it began with; real chains are a few links long.
MAX_CHAIN = 64


def _inner(pattern: str) -> str:
    return pattern.removeprefix("^").removesuffix("$")


_UUID = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_NAME, _NUMBER, _ALIAS = (
    _inner(REGISTRY_NAME_PATTERN),
    "[1-9][0-9]{0,9}",
    _inner(ALIAS_NAME_PATTERN),
)
# Without named groups: it is also the API schema's pattern, which JSON Schema reads as ECMA 262.
BASE_REFERENCE_PATTERN = rf"^(?:models:/{_NAME}(?:/{_NUMBER}|@{_ALIAS})|exports:/{_UUID})$"
# What a run's model_id may be: a catalog-like id or a base reference.
RUN_MODEL_ID_PATTERN = rf"(?:{MODEL_ID_PATTERN})|(?:{BASE_REFERENCE_PATTERN})"
_REFERENCE = re.compile(
    rf"models:/(?P<name>{_NAME})(?:/(?P<number>{_NUMBER})|@(?P<alias>{_ALIAS}))"
    rf"|exports:/(?P<export>{_UUID})"
)


class BaseModelError(ValueError):
    """A reference that names nothing this user may train from; the message says why."""


@dataclass(frozen=True)
class BaseModel:
    """What a run continues from."""

    export: RunExport
    version: ModelVersion | None  # None for an exports:/ reference
    model_id: str  # canonical: models:/<name>/<number> or exports:/<id>
    root_model_id: str  # the catalog model the chain of runs began with
    family: str | None  # model_catalog's family ("tiny" for the preset); None outside it
    directory: Path  # the export's files, absolute, below the shared artifacts root

    @property
    def learning_rate(self) -> float:
        return model_catalog.family_learning_rate(self.family)


def is_base_reference(model_id: str) -> bool:
    return model_id.startswith(REFERENCE_PREFIXES)


def export_directory(export: RunExport) -> Path:
    return artifacts.run_directory(export.run) / export.directory


def _root(export: RunExport) -> str:
    """The catalog model id the export's run, or the run it continued from, and so on back,
    started with."""
    run: TunixRun = export.run
    for _ in range(MAX_CHAIN):
        if not is_base_reference(run.model_id) or run.base_export_id is None:
            return run.model_id
        earlier = RunExport.objects.select_related("run").filter(id=run.base_export_id).first()
        if earlier is None:  # PROTECT keeps it; only a row edited by hand lacks it
            break
        run = earlier.run
    return run.model_id


def _usable(export: RunExport, model_id: str) -> None:
    if export.status != ExportStatus.COMPLETED:
        raise BaseModelError(
            f"{model_id}: the export is {export.status}; only a completed export can be trained "
            "from"
        )
    if export.weights == ExportWeights.ADAPTER:
        raise BaseModelError(
            f"{model_id}: the export holds LoRA adapters only; export the run with "
            "weights=merged to continue training from it"
        )


def _base(export: RunExport, version: ModelVersion | None, model_id: str) -> BaseModel:
    root = _root(export)
    entry = model_catalog.lookup(root)
    return BaseModel(
        export=export,
        version=version,
        model_id=model_id,
        root_model_id=root,
        family=entry.family if entry is not None else None,
        directory=export_directory(export),
    )


def _version(name: str, number: str | None, alias: str | None) -> ModelVersion | None:
    versions = ModelVersion.objects.select_related("model", "export__run")
    if number is not None:
        if int(number) > MAX_VERSION_NUMBER:
            return None
        return versions.filter(model__name=name, number=int(number)).first()
    assert alias is not None
    if alias == LATEST_ALIAS:
        return versions.filter(model__name=name).order_by("-number").first()
    named = (
        ModelAlias.objects.select_related("version__model", "version__export__run")
        .filter(model__name=name, name=alias)
        .first()
    )
    return named.version if named is not None else None


def base_model_resolve(*, model_id: str, user: authorization.UserLike) -> BaseModel:
    """The export (and version) ``model_id`` names now, for ``user``; raises BaseModelError."""
    match = _REFERENCE.fullmatch(model_id)
    if match is None:
        raise BaseModelError(
            f"{model_id!r} is not a base model reference: use models:/<name>/<version>, "
            "models:/<name>@<alias> or exports:/<export id>"
        )
    if match["export"] is not None:
        export_id = UUID(match["export"])
        exports = RunExport.objects.select_related("run").filter(id=export_id)
        owner = authorization.visible_owner(user)
        if owner is not None:
            exports = exports.filter(run__created_by_id=owner)
        export = exports.first()
        if export is None:
            raise BaseModelError(f"{model_id}: no such export")
        canonical = f"{EXPORTS_PREFIX}{export.id}"
        _usable(export, canonical)
        return _base(export, None, canonical)
    name, number, alias = match["name"], match["number"], match["alias"]
    version = _version(name, number, alias)
    if version is None:
        what = f"version {number}" if number is not None else f"alias {alias!r}"
        raise BaseModelError(f"{model_id}: no registered model {name!r} with {what}")
    canonical = f"{MODELS_PREFIX}{version.model.name}/{version.number}"
    _usable(version.export, canonical)
    return _base(version.export, version, canonical)


def run_base_model(*, run: TunixRun) -> BaseModel | None:
    """What ``run`` was pinned to at submit (None for a run from a catalog model)."""
    if run.base_export_id is None:
        return None
    export = RunExport.objects.select_related("run").get(id=run.base_export_id)
    version = (
        ModelVersion.objects.select_related("model").get(id=run.base_version_id)
        if run.base_version_id is not None
        else None
    )
    return _base(export, version, run.model_id)


@dataclass(frozen=True)
class BaseChoice:
    model_id: str  # what a run names it by
    label: str


def base_model_choices(*, limit: int = 200) -> list[BaseChoice]:
    """Registered aliases and versions a run can continue from, for the launch page's
    suggestions: each model's aliases, then its versions newest first."""
    aliases = ModelAlias.objects.select_related("model", "version").order_by("model__name", "name")
    versions = (
        ModelVersion.objects.select_related("model")
        .filter(export__status=ExportStatus.COMPLETED)
        .exclude(export__weights=ExportWeights.ADAPTER)
        .order_by("model__name", "-number")
    )
    choices = [
        BaseChoice(
            f"{MODELS_PREFIX}{a.model.name}@{a.name}",
            f"{a.model.name} {a.name} (version {a.version.number})",
        )
        for a in aliases[:limit]
    ]
    choices += [
        BaseChoice(v.uri, f"{v.model.name} version {v.number} ({v.base_model_id})")
        for v in versions[:limit]
    ]
    return choices
