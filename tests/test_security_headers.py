"""Security headers on every kind of response: a strict Content-Security-Policy the pages satisfy
(no inline script or style), no framing, no MIME sniffing, same-origin referrers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests.factories import TunixRunFactory

pytestmark = pytest.mark.django_db


def directives(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";") if part.strip())


@pytest.fixture
def browser(operator: Any) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.mark.parametrize(
    "path", ["/", "/runs/new", "/datasets", "/accounts/login/", "/admin/", "/api/docs/"]
)
def test_pages_carry_a_strict_policy_and_have_no_inline_script(
    browser: Client, demo_dataset: Any, path: str
) -> None:
    response = browser.get(path, follow=True)
    assert response.status_code == 200
    policy = directives(response)
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"
    page = response.content.decode()
    # Every <script> loads a file; none carries code (a JSON data block is not code).
    for attributes, body in re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S):
        assert "src=" in attributes or "application/json" in attributes, attributes
        assert not body.strip() or "application/json" in attributes
    assert not re.search(r"<style[\s>]", page)
    assert not re.search(r"\son[a-z]+=\"", page)  # no inline event handlers


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


def test_pages_and_api_answers_have_the_other_security_headers(
    browser: Client, demo_dataset: Any
) -> None:
    # (/healthz and /readyz are answered before any middleware, for probes: JSON, no page.)
    for path in ("/", "/api/tunix/runs", "/metrics", "/no-such-page", "/api/tunix/nope"):
        response = browser.get(path)
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
