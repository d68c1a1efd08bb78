"""Security headers on every kind of response: a strict Content-Security-Policy the pages satisfy
(no inline script or style), no framing, no MIME sniffing, same-origin referrers. The pages come
from the URLconf (tests/support/routes.py): every page of the app, the API's browsable pages,
the API docs, the login pages and every admin page, so a new one is checked when it is routed."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests.factories import TunixRunFactory
from tests.support import routes

pytestmark = pytest.mark.django_db


def directives(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


@pytest.fixture
def browser(operator: Any) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def site(demo_dataset: Any) -> routes.Site:
    return routes.build_site(dataset=demo_dataset)


def policy_breaches(page: routes.Answer) -> list[str]:
    """What on this page the strict policy would refuse, or that would need it loosened."""
    breaches = []
    policy = directives(page.headers)
    for directive, value in {
        "script-src": "'self'",
        "style-src": "'self'",
        "frame-ancestors": "'none'",
        "object-src": "'none'",
    }.items():
        if policy.get(directive) != value:
            breaches.append(f"{directive} is {policy.get(directive)!r}")
    # Every <script> loads a file; none carries code (a JSON data block is not code).
    for attributes, body in re.findall(r"<script([^>]*)>(.*?)</script>", page.body, re.S):
        if "src=" not in attributes and "application/json" not in attributes:
            breaches.append(f"inline <script{attributes}>")
        elif body.strip() and "application/json" not in attributes:
            breaches.append(f"<script{attributes}> with code in it")
    if re.search(r"<style[\s>]", page.body):
        breaches.append("a <style> element")
    # Attributes of a tag (escaped text cannot open one): handlers run no more than inline
    # scripts do, and style attributes are refused like <style>.
    for attribute in re.findall(r"<[a-zA-Z][^>]*?\s(on[a-z]+|style)\s*=", page.body):
        breaches.append(f"a {attribute}= attribute")
    return breaches


def test_every_page_carries_a_strict_policy_and_has_no_inline_script(site: routes.Site) -> None:
    found = routes.pages(site)
    paths = {page.path for page in found}
    # The sweep reaches what it should: the app's pages, the API docs, the admin, the logins.
    assert {"/", "/runs/new", "/datasets", "/api/docs/", "/admin/", "/accounts/login/"} <= paths
    breaches = {page.url: problems for page in found if (problems := policy_breaches(page))}
    assert breaches == {}


def test_the_run_page_and_its_polled_fragment_satisfy_the_policy(
    browser: Client, demo_dataset: Any
) -> None:
    run = TunixRunFactory(
        dataset=demo_dataset, loss_curve=[[1, 3.0], [2, 2.5]], progress={"step": 2}
    )
    for path in (f"/runs/{run.id}", f"/runs/{run.id}/live"):
        page = browser.get(path).content.decode()
        assert "<script>" not in page
        assert " style=" not in page  # the loss chart is styled from app.css, not inline


def test_every_answer_has_the_other_security_headers(site: routes.Site) -> None:
    client = Client()
    client.force_login(site.visitor)
    reached, problems = routes.sweep(site)
    assert not problems, "\n".join(problems.values())  # tests/test_routes.py says more
    urls = [
        url
        for key, urls in reached.items()
        if key not in routes.NO_SECURITY_HEADERS
        for url in urls
    ]
    # Answers no pattern gives: Django's 404 page and the API's problem+json 404.
    for url in [*urls, "/no-such-page", "/api/elsewhere"]:
        headers = routes.get(client, url).headers
        assert headers.get("X-Frame-Options") == "DENY", url
        assert headers.get("X-Content-Type-Options") == "nosniff", url
        assert headers.get("Referrer-Policy") == "same-origin", url
        assert headers.get("Cross-Origin-Opener-Policy") == "same-origin", url
