import pytest

from runs.models import TunixRun
from tests.factories import TunixRunFactory


@pytest.mark.django_db
def test_factory_builds_a_pending_run() -> None:
    run = TunixRunFactory()
    assert TunixRun.objects.get(pk=run.pk).status == "pending"
