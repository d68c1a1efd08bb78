"""factory_boy factories for the models tests need."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import User
from django.utils import timezone

from runs.models import Dataset, RunMode, RunStatus, TunixRun


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct-horse-battery")


class DatasetFactory(factory.django.DjangoModelFactory):
    """A registry row only; use services.dataset_import when the file must exist."""

    class Meta:
        model = Dataset

    key = factory.Sequence(lambda n: f"dataset{n}-v1")
    format = "prompt_completion"
    record_count = 10
    size_bytes = 1000
    sha256 = "0" * 64
    file_path = factory.LazyAttribute(lambda o: f"{o.key}.jsonl")


class TunixRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TunixRun

    dataset = factory.SubFactory(DatasetFactory)
    model_id = "google/gemma-3-270m"
    mode = RunMode.DRY_RUN
    status = RunStatus.PENDING
    config: Any = factory.LazyFunction(dict)

    class Params:
        running = factory.Trait(
            status=RunStatus.RUNNING,
            attempt=1,
            started_at=factory.LazyFunction(timezone.now),
            heartbeat_at=factory.LazyFunction(timezone.now),
        )
        completed = factory.Trait(
            status=RunStatus.COMPLETED,
            attempt=1,
            exit_code=0,
            started_at=factory.LazyFunction(timezone.now),
            completed_at=factory.LazyFunction(timezone.now),
        )
        failed = factory.Trait(
            status=RunStatus.FAILED,
            attempt=1,
            exit_code=1,
            error_reason="nonzero_exit",
            started_at=factory.LazyFunction(timezone.now),
            completed_at=factory.LazyFunction(timezone.now),
        )
