"""The URL sweep the CSP, CSRF and security-header tests share (tests/support/routes.py) reaches
every URL pattern, or the pattern is exempted with a reason: a new page cannot slip past them."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from tests.support import routes

pytestmark = pytest.mark.django_db


@pytest.fixture
def site(demo_dataset: Any) -> routes.Site:
    return routes.build_site(dataset=demo_dataset)


def test_every_url_pattern_is_swept_or_exempted_with_a_reason(site: routes.Site) -> None:
    reached, problems = routes.sweep(site)
    assert problems == {}
    keys = [route.key for route in routes.routes()]
    assert len(keys) == len(set(keys))
    assert set(reached) | set(routes.NOT_SWEPT) == set(keys)
    assert set(reached).isdisjoint(routes.NOT_SWEPT)
    for table in (routes.NOT_SWEPT, routes.CSRF_EXEMPT, routes.NO_SECURITY_HEADERS):
        assert set(table) <= set(keys), "an exemption names a pattern that no longer exists"
        assert all(reason.strip() for reason in table.values())


def test_the_pages_of_the_web_namespace_are_all_swept(site: routes.Site) -> None:
    reached, _ = routes.sweep(site)
    web = [route.key for route in routes.routes() if route.key.startswith("web:")]
    assert web
    assert all(reached.get(key) for key in web)


def page(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    return HttpResponse("<p>new</p>")


# The project's URLconf with two patterns added the way a new page would be.
urlpatterns = [
    path("reports/<uuid:run_id>/summary", page, name="new-run-page"),
    path("widgets/<slug:widget>", page, name="new-widget-page"),
    path("", include("tunix_rt.urls")),
]


def test_a_new_page_is_swept_without_being_listed_and_an_unknown_one_is_reported(
    site: routes.Site, settings: Any
) -> None:
    settings.ROOT_URLCONF = __name__
    reached, problems = routes.sweep(site)
    assert reached["new-run-page"] == [f"/reports/{site.values['run_id']}/summary"]
    assert "new-widget-page" not in reached
    assert "<widget>" in problems["new-widget-page"]
    assert "web:run-detail" in reached  # the project's own patterns are still there
