"""Who may view, launch and cancel runs, upload datasets and write the model registry: one
policy that services, selectors, the API, the pages and the admin all ask.

``None`` as the user is the system itself (a management command, the reaper, a worker): it may
do anything. An anonymous user may do nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User

UserLike = AbstractBaseUser | AnonymousUser | None

VIEW_ALL_RUNS = "runs.view_tunixrun"
LAUNCH_RUNS = "runs.add_tunixrun"
CANCEL_ANY_RUN = "runs.change_tunixrun"
UPLOAD_DATASETS = "runs.add_dataset"
# The model registry: promoting a run's export to a version, and moving aliases, deleting
# versions and editing a model's description (the last can repoint what "production" serves).
PROMOTE_MODELS = "runs.add_modelversion"
MANAGE_REGISTRY = "runs.change_registeredmodel"


def real_user(user: UserLike) -> User | None:
    """The user to record as a row's owner (None for the system or an anonymous user)."""
    return user if isinstance(user, User) else None


def _has(user: UserLike, perm: str) -> bool:
    if user is None:
        return True
    return bool(user.is_authenticated and user.has_perm(perm))  # type: ignore[attr-defined]


def visible_owner(user: UserLike) -> int | None:
    """None if ``user`` may see every run (runs.view_tunixrun, a superuser, the system), else
    their own id: they see the runs they launched and no others."""
    if _has(user, VIEW_ALL_RUNS):
        return None
    return int(user.pk) if user is not None and user.pk is not None else -1


def can_view(user: UserLike, run: Any) -> bool:
    owner = visible_owner(user)
    return owner is None or run.created_by_id == owner


def can_launch(user: UserLike) -> bool:
    return _has(user, LAUNCH_RUNS)


def can_cancel(user: UserLike, run: Any) -> bool:
    """The run's creator, or an operator (runs.change_tunixrun)."""
    if _has(user, CANCEL_ANY_RUN):
        return True
    return bool(user is not None and user.is_authenticated and run.created_by_id == user.pk)


def can_upload_datasets(user: UserLike) -> bool:
    return _has(user, UPLOAD_DATASETS)


def can_promote(user: UserLike) -> bool:
    """Promote a run (that this user may see) to a registered model's version."""
    return _has(user, PROMOTE_MODELS)


def can_manage_registry(user: UserLike) -> bool:
    """Set, move and remove aliases, delete versions and models, edit descriptions."""
    return _has(user, MANAGE_REGISTRY)
