"""The model registry: a run's export promoted to a named model's numbered version, aliases
moved between versions with every move recorded, and deletions refused while something uses
what would go.

A version is content-addressed by its export's sha256: promoting the same content to a model
again returns the version it already is. Numbers come from the model row's counter, taken under
that row's lock in the promoting transaction, so concurrent promotions get distinct numbers and
none of them fails; numbers are never reused, even after a version is deleted (an alias move
recorded as "3 -> 5" keeps meaning what it said). Every write of one model (promotion, alias,
deletion) holds the same row lock, so an alias cannot be pointed at a version while it is being
deleted.
"""

from __future__ import annotations

import logging
import re
from uuid import UUID

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, ProtectedError
from django.utils import timezone

from runs import authorization, selectors
from runs.execution import get_backend
from runs.models import (
    LATEST_ALIAS,
    AliasMove,
    ExportStatus,
    ExportWeights,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RunExport,
    RunStatus,
    TunixRun,
)
from runs.services.errors import Conflict, Forbidden, NotFound, ServiceError

log = logging.getLogger("tunix_rt.runs")

MAX_DESCRIPTION_CHARS = 10_000
# Without an export named, the newest checkpoint's export is promoted in this order of forms:
# the full weights (a LoRA run's adapters merged in) before an adapter alone.
WEIGHTS_PREFERENCE = (ExportWeights.MERGED, ExportWeights.ADAPTER)
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
RUN_IDS_NAMED = 5  # a refusal names this many of the runs that trained from a version

MODEL_NAME_RULE = (
    "lower-case letters, digits, '.', '_' and '-', starting with a letter or a digit, at most "
    "100 characters"
)
ALIAS_NAME_RULE = (
    "a lower-case letter, then lower-case letters, digits, '_' and '-', at most 64 characters"
)


def _require_promote(user: authorization.UserLike) -> None:
    if not authorization.can_promote(user):
        raise Forbidden(f"promoting needs the {authorization.PROMOTE_MODELS} permission")


def _require_manage(user: authorization.UserLike) -> None:
    if not authorization.can_manage_registry(user):
        raise Forbidden(
            f"changing the registry needs the {authorization.MANAGE_REGISTRY} permission"
        )


def _check_model_name(name: str) -> None:
    if not selectors.valid_model_name(name):
        raise ServiceError(f"{name!r} is not a model name: {MODEL_NAME_RULE}", field="model")


def _check_alias_name(alias: str) -> None:
    if alias == LATEST_ALIAS:
        raise ServiceError(
            f'"{LATEST_ALIAS}" is reserved: it always names the highest version, and cannot be '
            "set, moved or removed",
            field="alias",
        )
    if not selectors.valid_alias_name(alias):
        raise ServiceError(f"{alias!r} is not an alias name: {ALIAS_NAME_RULE}", field="alias")


def _check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ServiceError(
            f"description is {len(description)} characters; at most {MAX_DESCRIPTION_CHARS}",
            field="description",
        )


def _locked_model(name: str) -> RegisteredModel:
    """The model row, locked until the transaction ends: one registry writer per model."""
    if not selectors.valid_model_name(name):
        raise NotFound(f"no registered model {name!r}")
    model = RegisteredModel.objects.select_for_update().filter(name=name).first()
    if model is None:
        raise NotFound(f"no registered model {name!r}")
    return model


def _version_of(model: RegisteredModel, number: int) -> ModelVersion:
    version = None
    if selectors.valid_version_number(number):
        version = ModelVersion.objects.filter(model=model, number=number).first()
    if version is None:
        raise NotFound(f"model {model.name!r} has no version {number}")
    version.model = model
    return version


# Promotion


def registry_promote(
    *,
    user: authorization.UserLike,
    model_name: str,
    run_id: UUID | str,
    export_id: UUID | str | None = None,
    description: str = "",
) -> tuple[ModelVersion, bool]:
    """Promote ``run_id``'s export (``export_id``, or the completed export of its newest
    exported checkpoint) to a version of the model named ``model_name``, creating the model on
    its first promotion. Returns (version, created): the same content promoted to the model
    before is that version, not a new one.

    A run this user may not see is as unknown as a missing one (NotFound)."""
    _require_promote(user)
    _check_model_name(model_name)
    _check_description(description)
    run = selectors.run_get(run_id=run_id, owner=authorization.visible_owner(user))
    if run is None:
        raise NotFound(f"no run {run_id}")
    if run.status != RunStatus.COMPLETED or not get_backend(run.mode).trains:
        what = f"a {run.mode} run" if not get_backend(run.mode).trains else f"a {run.status} run"
        raise Conflict(f"only a completed training can be promoted; run {run.id} is {what}")
    export = _export_to_promote(run, export_id)
    owner = authorization.real_user(user)
    with transaction.atomic():
        model, _ = RegisteredModel.objects.get_or_create(
            name=model_name, defaults={"created_by": owner}
        )
        # The lock orders this model's writers: whoever holds it sees every version committed
        # before it, so the same content is found here rather than inserted twice.
        model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        existing = ModelVersion.objects.filter(model=model, sha256=export.sha256).first()
        if existing is not None:
            existing.model = model
            return existing, False
        try:
            with transaction.atomic():
                version = _new_version(model, run, export, owner, description)
        except IntegrityError:
            # The content unique constraint is the last word (a writer that did not take the
            # lock): the savepoint undid the number, and the version that won is the answer.
            existing = ModelVersion.objects.filter(model=model, sha256=export.sha256).first()
            if existing is None:
                raise
            existing.model = model
            return existing, False
    log.info(
        "version_promoted model=%s number=%s sha256=%s run_id=%s export_id=%s",
        model.name,
        version.number,
        version.sha256,
        run.id,
        export.id,
    )
    return version, True


def _new_version(
    model: RegisteredModel,
    run: TunixRun,
    export: RunExport,
    owner: User | None,
    description: str,
) -> ModelVersion:
    now = timezone.now()
    RegisteredModel.objects.filter(pk=model.pk).update(
        latest_number=F("latest_number") + 1, updated_at=now
    )
    number = RegisteredModel.objects.values_list("latest_number", flat=True).get(pk=model.pk)
    return ModelVersion.objects.create(
        model=model,
        number=number,
        sha256=export.sha256,
        export=export,
        run=run,
        step=export.step,
        weights=export.weights,
        # Lineage as the run has it now: the version keeps it whatever later happens to the run.
        algorithm=run.algorithm,
        base_model_id=run.model_id,
        dataset_key=run.dataset.key,
        dataset_sha256=run.dataset.sha256,
        config=run.config,
        metrics=run.metrics,
        description=description,
        promoted_by=owner,
        promoted_at=now,
    )


def _export_to_promote(run: TunixRun, export_id: UUID | str | None) -> RunExport:
    export = _named_export(run, export_id) if export_id is not None else _newest_export(run)
    if not SHA256_PATTERN.fullmatch(export.sha256):
        raise Conflict(f"export {export.id} has no valid content address (sha256)")
    return export


def _newest_export(run: TunixRun) -> RunExport:
    exports = list(RunExport.objects.filter(run=run).exclude(status=ExportStatus.FAILED))
    completed = [e for e in exports if e.status == ExportStatus.COMPLETED]
    if not completed:
        if exports:
            pending = max(exports, key=lambda e: e.step)
            raise Conflict(
                f"run {run.id}'s export {pending.id} (step {pending.step}, {pending.weights}) "
                f"is still {pending.status}: promote the run once it completes"
            )
        raise Conflict(
            f"run {run.id} has no completed export to promote: export a checkpoint first "
            f"(POST /api/tunix/runs/{run.id}/exports), then promote it once it completes"
        )
    best = max(completed, key=_preference)
    # A newer checkpoint's export (or full weights of the same one) still being written is
    # what the caller means: waiting for it beats promoting the older one silently.
    better = [e for e in exports if _preference(e) > _preference(best)]
    if better:
        pending = max(better, key=_preference)
        raise Conflict(
            f"run {run.id}'s export {pending.id} (step {pending.step}, {pending.weights}) is "
            f"still {pending.status}: promote once it completes, or name an export_id (step "
            f"{best.step}, {best.weights} is export {best.id})"
        )
    return best


def _preference(export: RunExport) -> tuple[int, int]:
    rank = (
        WEIGHTS_PREFERENCE.index(ExportWeights(export.weights))
        if export.weights in ExportWeights.values
        else len(WEIGHTS_PREFERENCE)
    )
    return export.step, -rank


def _named_export(run: TunixRun, export_id: UUID | str) -> RunExport:
    try:
        key = export_id if isinstance(export_id, UUID) else UUID(str(export_id))
    except ValueError:
        raise ServiceError(f"{export_id!r} is not an export id", field="export_id") from None
    export = RunExport.objects.filter(id=key, run=run).first()
    if export is None:
        raise ServiceError(f"run {run.id} has no export {key}", field="export_id")
    if export.status != ExportStatus.COMPLETED:
        then = (
            f"ask for the export again (POST /api/tunix/runs/{run.id}/exports)"
            if export.status == ExportStatus.FAILED
            else "promote it once it completes"
        )
        raise Conflict(f"export {export.id} is {export.status}, not completed: {then}")
    return export


# Aliases


def registry_alias_set(
    *, user: authorization.UserLike, model_name: str, alias: str, number: int
) -> tuple[ModelAlias, bool]:
    """Point ``alias`` of the model at version ``number``: created (True) or moved (False).
    Every change is recorded as an AliasMove in the same transaction; an alias that already
    names that version is left as it is, and nothing is recorded."""
    _require_manage(user)
    _check_alias_name(alias)
    if not selectors.valid_version_number(number):
        raise ServiceError("version must be a version number (1 or more)", field="version")
    owner = authorization.real_user(user)
    with transaction.atomic():
        model = _locked_model(model_name)
        version = _version_of(model, number)
        row = ModelAlias.objects.filter(model=model, name=alias).select_related("version").first()
        if row is not None and row.version_id == version.id:
            row.model, row.version = model, version
            return row, False
        now = timezone.now()
        if row is None:
            row = ModelAlias.objects.create(
                model=model, name=alias, version=version, updated_by=owner, updated_at=now
            )
            previous = None
        else:
            previous = row.version.number
            row.version, row.updated_by, row.updated_at = version, owner, now
            row.save(update_fields=["version", "updated_by", "updated_at"])
        AliasMove.objects.create(
            model=model,
            alias=alias,
            from_number=previous,
            to_number=version.number,
            moved_by=owner,
            moved_at=now,
        )
        RegisteredModel.objects.filter(pk=model.pk).update(updated_at=now)
    log.info(
        "alias_moved model=%s alias=%s from=%s to=%s", model.name, alias, previous, version.number
    )
    return row, previous is None


def registry_alias_delete(*, user: authorization.UserLike, model_name: str, alias: str) -> None:
    """Remove ``alias`` from the model, recorded as a move to nothing."""
    _require_manage(user)
    if alias == LATEST_ALIAS:
        _check_alias_name(alias)
    with transaction.atomic():
        model = _locked_model(model_name)
        row = None
        if selectors.valid_alias_name(alias):
            row = (
                ModelAlias.objects.filter(model=model, name=alias).select_related("version").first()
            )
        if row is None:
            raise NotFound(f"model {model.name!r} has no alias {alias!r}")
        previous = row.version.number
        row.delete()
        now = timezone.now()
        AliasMove.objects.create(
            model=model,
            alias=alias,
            from_number=previous,
            to_number=None,
            moved_by=authorization.real_user(user),
            moved_at=now,
        )
        RegisteredModel.objects.filter(pk=model.pk).update(updated_at=now)
    log.info("alias_removed model=%s alias=%s from=%s", model.name, alias, previous)


# Deletion and descriptions


def registry_version_delete(*, user: authorization.UserLike, model_name: str, number: int) -> None:
    """Delete version ``number`` (its samples go with it; the export stays with its run).
    Refused while an alias names it or a run trained from it, with what uses it."""
    _require_manage(user)
    try:
        with transaction.atomic():
            model = _locked_model(model_name)
            version = _version_of(model, number)
            reason = registry_version_in_use(version=version)
            if reason:
                raise Conflict(f"version {number} of {model.name!r} is in use: {reason}")
            version.delete()
            RegisteredModel.objects.filter(pk=model.pk).update(updated_at=timezone.now())
    except (ProtectedError, IntegrityError):
        # A run naming the version was submitted between the check and the delete.
        raise Conflict(
            f"version {number} of {model_name!r} is in use: a run trained from it was just "
            "submitted"
        ) from None
    log.info("version_deleted model=%s number=%s", model_name, number)


def registry_version_in_use(*, version: ModelVersion) -> str:
    """Why the version cannot be deleted, as registry_version_delete refuses it ("" when
    nothing uses it): the admin asks before it offers the deletion."""
    reasons = []
    aliases = list(version.aliases.order_by("name").values_list("name", flat=True))
    if len(aliases) == 1:
        reasons.append(f"alias {aliases[0]} names it (move or remove it first)")
    elif aliases:
        reasons.append(f"aliases {', '.join(aliases)} name it (move or remove them first)")
    run_ids, count = selectors.registry_version_users(version=version, limit=RUN_IDS_NAMED)
    if count:
        more = f", and {count - len(run_ids)} more" if count > len(run_ids) else ""
        runs = "run" if count == 1 else "runs"
        reasons.append(f"{count} {runs} trained from it ({', '.join(run_ids)}{more})")
    return "; ".join(reasons)


def registry_model_update(
    *, user: authorization.UserLike, model_name: str, description: str
) -> RegisteredModel:
    """Set the model's description."""
    _require_manage(user)
    _check_description(description)
    with transaction.atomic():
        model = _locked_model(model_name)
        model.description, model.updated_at = description, timezone.now()
        model.save(update_fields=["description", "updated_at"])
    return model


def registry_model_delete(*, user: authorization.UserLike, model_name: str) -> None:
    """Delete a model that has no versions left (its alias log goes with it)."""
    _require_manage(user)
    with transaction.atomic():
        model = _locked_model(model_name)
        count = ModelVersion.objects.filter(model=model).count()
        if count:
            versions = "version" if count == 1 else "versions"
            raise Conflict(f"model {model.name!r} has {count} {versions}: delete them first")
        model.delete()
    log.info("model_deleted model=%s", model_name)
