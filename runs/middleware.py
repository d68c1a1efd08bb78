"""Middleware that a browser needs and an API client with a token does not.

An API call that carries ``Authorization: Token …`` has no session, no flash messages and no
HTMX headers, and answers JSON that no browser renders as a page. Authentication from the
session, messages, HTMX and CSP are subclassed here (MIDDLEWARE in settings names these) so such
a call skips them; every other request goes through them as before. Sessions and CSRF stay
Django's own: its deploy checks look for them by name, and they cost such a call little.

The token itself is checked by DRF (runs/api/authentication.py), which answers 401 to a bad
one. Browsers cannot send this header on their own (a page would need the token in script), so
a session-authenticated browser request is never taken for one. Its answers are not pages
either, so they go without the CSP header, which only a page's loads obey. The login lockout
(axes) stays: it is cheap, and its checks want its own class.
"""

from __future__ import annotations

from typing import Any

import csp.middleware
import django_htmx.middleware
import django_prometheus.middleware
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.http import HttpRequest
from django.http.response import HttpResponseBase

API_PREFIX = "/api/"


def is_token_api_call(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX) and request.META.get("HTTP_AUTHORIZATION", "")[
        :6
    ].lower() in {"token ", "token"}


class SkippedByTokenApiCalls:
    """Mixed in before a middleware class: a token API call goes straight to the next
    middleware. (Subclasses rather than wrappers, so Django's and the apps' checks that look
    for their middleware in MIDDLEWARE still find it.)"""

    get_response: Any

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if is_token_api_call(request):
            return self.get_response(request)  # type: ignore[no-any-return]
        return super().__call__(request)  # type: ignore[misc,no-any-return]


class AuthenticationMiddleware(SkippedByTokenApiCalls, auth.AuthenticationMiddleware):
    pass


class MessageMiddleware(SkippedByTokenApiCalls, messages.MessageMiddleware):
    pass


class CSPMiddleware(SkippedByTokenApiCalls, csp.middleware.CSPMiddleware):
    pass


class HtmxMiddleware(SkippedByTokenApiCalls, django_htmx.middleware.HtmxMiddleware):
    pass


class PrometheusAfterMiddleware(django_prometheus.middleware.PrometheusAfterMiddleware):  # type: ignore[misc]
    """django-prometheus' request metrics, each labelled child looked up once: prometheus_client
    checks and looks up the label values under a lock at every labels() call, ten per request.
    Label values here are bounded (methods, view names, status codes, charsets, template and
    exception names), so the table is too."""

    _children: dict[tuple[Any, ...], Any] = {}

    def label_metric(
        self, metric: Any, request: HttpRequest, response: Any = None, **labels: str
    ) -> Any:
        if not labels:
            return metric
        key = (id(metric), *labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child
