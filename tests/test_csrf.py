"""CSRF is enforced on every URL a browser can post to (and on any htmx request, which carries
the token in the X-CSRFToken header base.html sets): without the token nothing happens. The URLs
come from the URLconf (tests/support/routes.py), so a new form or endpoint is covered when it is
routed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import Resolver404, resolve

from runs.models import Dataset, ProcessMetrics, RunStatus, TunixRun
from tests.factories import TunixRunFactory
from tests.support import routes

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(operator: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    return client


@pytest.fixture
def site(demo_dataset: Any) -> routes.Site:
    return routes.build_site(dataset=demo_dataset)


@pytest.fixture
def csrf_refusals(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths whose request the CSRF check refused. Django's middleware and DRF's session
    authentication both refuse through CsrfViewMiddleware._reject, whatever the view then
    renders (the API docs answer a bare "403 Forbidden"), so a 403 for another reason (a
    missing permission) is not mistaken for one."""
    from django.middleware.csrf import CsrfViewMiddleware
    from rest_framework.authentication import CSRFCheck

    refused: list[str] = []
    for check in (CsrfViewMiddleware, CSRFCheck):  # DRF's subclass has its own _reject
        original = check._reject  # type: ignore[attr-defined]  # private; not in the stubs

        def spy(self: Any, request: Any, reason: str, original: Any = original) -> Any:
            refused.append(request.path)
            return original(self, request, reason)

        monkeypatch.setattr(check, "_reject", spy)
    return refused


def token_from(client: Client, path: str) -> str:
    """The CSRF token as a page hands it to the browser (form field and htmx header)."""
    page = client.get(path).content.decode()
    field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    header = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page)
    assert field
    assert header
    return field.group(1)


def posted_by_drf_script(page: routes.Answer, form: str) -> bool:
    """DRF's browsable API sends its raw-data forms from script (ajax-form.js), with the token
    its drf_csrf block hands out in the X-CSRFToken header, not as a form field."""
    return 'data-override="content-type"' in form and 'id="drf_csrf"' in page.body


def post_targets(site: routes.Site) -> list[str]:
    reached, problems = routes.sweep(site)
    assert not problems, "\n".join(problems.values())  # tests/test_routes.py says more
    return [url for key, urls in reached.items() if key not in routes.CSRF_EXEMPT for url in urls]


def row_counts() -> dict[str, int]:
    # Any served request may flush this process's metrics row: bookkeeping, not a write.
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model is not ProcessMetrics
    }


def test_every_post_target_refuses_a_post_without_the_token(
    site: routes.Site, csrf_refusals: list[str]
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(site.visitor)
    statuses = dict(TunixRun.objects.values_list("id", "status"))
    before = row_counts()
    for url in post_targets(site):
        path = url.split("?", 1)[0]
        for headers in ({}, {"HX-Request": "true"}):  # htmx posts are posts like any other
            csrf_refusals.clear()
            response = client.post(url, {}, headers=headers)
            assert response.status_code == 403, (url, headers, response.status_code)
            assert csrf_refusals == [path], (url, headers, "refused, but not by the CSRF check")
    assert row_counts() == before
    assert dict(TunixRun.objects.values_list("id", "status")) == statuses
    assert SESSION_KEY in client.session  # not even the logouts went through


def test_no_post_target_refuses_a_post_with_the_token(
    site: routes.Site, csrf_refusals: list[str]
) -> None:
    """The refusals above are the missing token's: with it, every post passes the check (and
    the view answers as it will: 200, a redirect, 400, 403 for a missing permission, 405)."""
    # A view that fails still answers (a 500): the assertion below names it.
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.force_login(site.visitor)
    token = token_from(client, "/runs/new")
    for url in post_targets(site):
        response = client.post(url, {}, headers={"X-CSRFToken": token})
        assert csrf_refusals == [], url
        assert response.status_code < 500, (url, response.status_code)  # an empty form is a 4xx
        if SESSION_KEY not in client.session:  # a logout went through: log in again
            client.force_login(site.visitor)
            token = token_from(client, "/runs/new")


def test_every_form_on_every_page_carries_the_token(site: routes.Site) -> None:
    """Each post form has the token field and posts to a URL the tests above cover; a page
    with htmx posts hands out the header."""
    post_target_views = {
        route.callback
        for route in routes.routes()
        if route.key not in routes.NOT_SWEPT and route.key not in routes.CSRF_EXEMPT
    }
    for page in routes.pages(site):
        forms = re.findall(r"<form\b([^>]*)>(.*?)</form>", page.body, re.S | re.I)
        for attributes, body in forms:
            if not re.search(r"""method\s*=\s*["']?post""", attributes, re.I):
                continue
            assert 'name="csrfmiddlewaretoken"' in body or posted_by_drf_script(page, body), (
                page.url,
                attributes,
            )
            action = re.search(r"""action\s*=\s*["']([^"']*)["']""", attributes)
            target = (action.group(1) if action else "") or page.url
            target = target.split("?", 1)[0]
            try:
                view = resolve(target).func
            except Resolver404:
                pytest.fail(f"a form on {page.url} posts to {target}, which nothing routes")
            assert view in post_target_views, (page.url, target)
        if re.search(r"\shx-(post|put|patch|delete)=", page.body):
            assert "X-CSRFToken" in page.body, page.url


def test_the_same_posts_with_the_token_go_through(
    browser: Client, demo_dataset: Any, operator: Any
) -> None:
    run = TunixRunFactory(
        dataset=demo_dataset, status=RunStatus.PENDING, attempt=0, created_by=operator
    )
    token = token_from(browser, "/runs/new")
    launched = browser.post(
        "/runs/new",
        {"dataset": "tunix-demo-v1", "model_id": "tunix-rt/tiny-llama3", "mode": "dry-run",
         "execution": "async", "csrfmiddlewaretoken": token},
    )  # fmt: skip
    assert launched.status_code == 302
    cancelled = browser.post(f"/runs/{run.id}/cancel", headers={"X-CSRFToken": token})
    assert cancelled.status_code in {200, 302}
    assert TunixRun.objects.get(id=run.id).status == RunStatus.CANCELLED


def test_an_upload_without_the_token_stores_nothing(browser: Client, demo_dataset: Any) -> None:
    upload = browser.post("/datasets", {"key": "x-v1", "file": b"{}"})
    assert upload.status_code == 403
    assert Dataset.objects.count() == 1


def test_the_login_form_needs_the_token_too(operator: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    refused = client.post("/accounts/login/", {"username": operator.username, "password": "x"})
    assert refused.status_code == 403
