"""Reads of the model registry: registered models, their versions, aliases and the log of alias
moves.

Registry entries are readable by every authenticated user: a version's lineage (dataset, config,
metrics, who promoted it) is public within the service, so a team can find and reuse what was
promoted. The run a version came from stays visible only as runs/authorization.py says: a
version links to it, and following the link is the run's own visibility check.

Names from a request are checked against the registry's patterns before any query, so a name
that could never exist (a NUL byte, a slash) is simply absent, as a missing one is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import Count, Max, Prefetch, QuerySet

from runs.models import (
    ALIAS_NAME_PATTERN,
    LATEST_ALIAS,
    REGISTRY_NAME_PATTERN,
    AliasMove,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    TunixRun,
)

# A version number is a PositiveIntegerField: beyond this the database refuses the comparison
# (PostgreSQL's integer), so a larger number from a URL is a version that does not exist.
MAX_VERSION_NUMBER = 2_147_483_647


def valid_model_name(name: object) -> bool:
    return isinstance(name, str) and re.fullmatch(REGISTRY_NAME_PATTERN, name) is not None


def valid_alias_name(alias: object) -> bool:
    """A name an alias row may have ("latest" is reserved: it is never stored)."""
    return (
        isinstance(alias, str)
        and alias != LATEST_ALIAS
        and re.fullmatch(ALIAS_NAME_PATTERN, alias) is not None
    )


def valid_version_number(number: object) -> bool:
    return (
        isinstance(number, int)
        and not isinstance(number, bool)
        and (1 <= number <= MAX_VERSION_NUMBER)
    )


def _models() -> QuerySet[RegisteredModel]:
    return (
        RegisteredModel.objects.select_related("created_by")
        .annotate(version_count=Count("versions"), latest_version=Max("versions__number"))
        .prefetch_related(
            Prefetch(
                "aliases", queryset=ModelAlias.objects.select_related("version").order_by("name")
            )
        )
    )


def registry_model_list() -> QuerySet[RegisteredModel]:
    """Every registered model by name, annotated with ``version_count`` and ``latest_version``
    (the highest existing version number, None without versions), its aliases prefetched."""
    return _models().order_by("name")


def registry_model_get(*, name: str) -> RegisteredModel | None:
    """The model, annotated as in the list; None when there is none by that name."""
    if not valid_model_name(name):
        return None
    return _models().filter(name=name).first()


def _versions() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("model", "promoted_by", "export").prefetch_related(
        Prefetch("aliases", queryset=ModelAlias.objects.order_by("name"))
    )


def registry_version_list(*, model: RegisteredModel) -> list[ModelVersion]:
    """The model's versions, newest (highest number) first, with their aliases."""
    return list(_versions().filter(model=model).order_by("-number"))


def registry_version_get(*, model_name: str, number: int) -> ModelVersion | None:
    """Version ``number`` of the model named ``model_name``, with its aliases."""
    if not valid_model_name(model_name) or not valid_version_number(number):
        return None
    return _versions().filter(model__name=model_name, number=number).first()


def registry_latest_version(*, model: RegisteredModel) -> ModelVersion | None:
    """What the reserved alias "latest" names: the highest version number."""
    return _versions().filter(model=model).order_by("-number").first()


def registry_alias_list(*, model: RegisteredModel) -> list[ModelAlias]:
    """The model's stored aliases by name ("latest" is not one: it is never stored)."""
    return list(
        ModelAlias.objects.filter(model=model)
        .select_related("model", "version__model", "version__promoted_by", "updated_by")
        .order_by("name")
    )


@dataclass(frozen=True)
class ResolvedAlias:
    """An alias and the version it names. ``alias`` is None for "latest", which no row holds."""

    name: str
    version: ModelVersion
    alias: ModelAlias | None


def registry_alias_get(*, model_name: str, alias: str) -> ResolvedAlias | None:
    """The alias of the model named ``model_name`` and its version; "latest" resolves to the
    highest version number. None for an unknown model, alias, or a model without versions."""
    if not valid_model_name(model_name) or not isinstance(alias, str):
        return None
    if alias == LATEST_ALIAS:
        model = RegisteredModel.objects.filter(name=model_name).first()
        latest = registry_latest_version(model=model) if model is not None else None
        return ResolvedAlias(name=alias, version=latest, alias=None) if latest else None
    if not valid_alias_name(alias):
        return None
    row = (
        ModelAlias.objects.filter(model__name=model_name, name=alias)
        .select_related("model", "version__model", "version__promoted_by", "updated_by")
        .first()
    )
    return ResolvedAlias(name=alias, version=row.version, alias=row) if row else None


def registry_alias_moves(
    *, model: RegisteredModel, alias: str | None = None, limit: int | None = None
) -> list[AliasMove]:
    """The log of alias moves of the model (or of one alias), newest first: from_number None
    is the alias being created, to_number None its removal."""
    if alias is not None and alias != LATEST_ALIAS and not valid_alias_name(alias):
        return []  # no alias could ever have had that name
    moves = AliasMove.objects.filter(model=model).select_related("model", "moved_by")
    if alias is not None:
        moves = moves.filter(alias=alias)
    moves = moves.order_by("-moved_at", "-id")
    return list(moves[:limit] if limit is not None else moves)


def registry_versions_of_run(*, run: TunixRun) -> list[ModelVersion]:
    """The versions promoted from the run, by model name and number."""
    return list(_versions().filter(run=run).order_by("model__name", "number"))


def registry_version_users(*, version: ModelVersion, limit: int = 5) -> tuple[list[str], int]:
    """Up to ``limit`` ids of the runs that trained from the version, and how many there are:
    what keeps it from being deleted, besides its aliases."""
    runs = TunixRun.objects.filter(base_version=version).order_by("-queued_at", "-id")
    ids = [str(run_id) for run_id in runs.values_list("id", flat=True)[:limit]]
    count = len(ids) if len(ids) < limit else runs.count()
    return ids, count
