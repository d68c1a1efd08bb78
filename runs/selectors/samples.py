"""Reads of try-it samples, and the registered version a sample URL names.

Who sees a sample: a run's samples are seen by whoever sees the run (runs/authorization.py);
a registered version's samples (the registry itself is readable by every authenticated user)
by the user who asked for them, or by a user who may see every run.
"""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet

from runs import authorization
from runs.models import ModelVersion, Sample, TunixRun
from runs.selectors.ids import as_uuid

# A version number is a PositiveIntegerField: a larger one from a URL names nothing (and
# PostgreSQL would refuse the comparison).


def _sees_everyone(user: authorization.UserLike) -> bool:
    return authorization.visible_owner(user) is None


def sample_visible(*, sample: Sample, user: authorization.UserLike) -> bool:
    if sample.run_id is not None:
        assert sample.run is not None
        return authorization.can_view(user, sample.run)
    if _sees_everyone(user):
        return True
    return bool(user is not None and user.is_authenticated and sample.created_by_id == user.pk)


def sample_get(*, sample_id: UUID | str, user: authorization.UserLike) -> Sample | None:
    """The sample, if it exists and ``user`` may see it."""
    key = as_uuid(sample_id)
    if key is None:
        return None
    sample = Sample.objects.select_related("run", "version__model").filter(id=key).first()
    if sample is None or not sample_visible(sample=sample, user=user):
        return None
    return sample


def sample_list(
    *,
    run: TunixRun | None = None,
    version: ModelVersion | None = None,
    user: authorization.UserLike,
    limit: int = 10,
) -> list[Sample]:
    """The newest ``limit`` samples of a run or a version that ``user`` may see, newest first."""
    if (run is None) == (version is None):
        raise TypeError("sample_list takes either run or version")
    samples: QuerySet[Sample]
    if run is not None:
        if not authorization.can_view(user, run):
            return []
        samples = Sample.objects.filter(run=run)
    else:
        samples = Sample.objects.filter(version=version)
        if not _sees_everyone(user):
            if user is None or not user.is_authenticated:
                return []
            samples = samples.filter(created_by_id=user.pk)
    return list(
        samples.select_related("run", "version__model").order_by("-created_at", "-id")[
            : max(0, limit)
        ]
    )
