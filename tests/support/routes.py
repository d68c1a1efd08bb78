"""Every URL pattern of the project's URLconf, filled in with real objects: the pages and
post targets the CSP, CSRF and security-header tests sweep, so a new page, form or admin model
is covered the day it is routed. A pattern that cannot be filled in fails tests/test_routes.py
until build_site() or LITERALS gives its path converters a value, or NOT_SWEPT names it with
the reason."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from django.utils import timezone
from django.utils.regex_helper import normalize

# Patterns no sweep can reach with a plain request (key: name, or route if unnamed), each with
# why. Keep it short: what is listed here is checked by hand-written tests or not at all.
NOT_SWEPT: dict[str, str] = {}

# Patterns that accept a post without the CSRF token by design, each with why
# (tests/test_csrf.py). Every other swept pattern must refuse one.
CSRF_EXEMPT: dict[str, str] = {}

# Patterns answered without the security headers, each with why (tests/test_security_headers.py).
NO_SECURITY_HEADERS: dict[str, str] = {
    "healthz": "a probe's JSON, answered by ProbeMiddleware before the others (any Host)",
    "readyz": "a probe's JSON, answered by ProbeMiddleware before the others (any Host)",
}

# Values for path converters that name no object: the catch-all patterns.
LITERALS: dict[str, str] = {
    "path": "no-such-path",  # api:unknown, the problem+json 404 for typos under /api/tunix/
    "url": "no-such-page/",  # the admin's catch-all 404
}

# Browsers ask for HTML first; DRF's browsable API answers them with a page.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@dataclass(frozen=True)
class Route:
    key: str  # the namespaced name ("web:run-detail"), or the route of an unnamed pattern
    route: str  # the whole route, every level joined
    levels: tuple[Any, ...]  # each level's RoutePattern / RegexPattern, outermost first
    callback: Callable[..., Any]


def routes() -> list[Route]:
    """Every URL pattern of the root URLconf, in resolution order. Keys are unique: a name
    given to two patterns is told apart by the route."""
    found = list(_walk(get_resolver().url_patterns, (), None))
    counts = Counter(route.key for route in found)
    return [
        replace(route, key=f"{route.key} {route.route}") if counts[route.key] > 1 else route
        for route in found
    ]


def _walk(
    patterns: list[URLPattern | URLResolver], levels: tuple[Any, ...], namespace: str | None
) -> Iterator[Route]:
    for entry in patterns:
        here = (*levels, entry.pattern)
        if isinstance(entry, URLResolver):
            inner = namespace
            if entry.namespace:
                inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
            yield from _walk(entry.url_patterns, here, inner)
            continue
        route = "".join(str(level) for level in here)
        name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
        yield Route(key=name or route, route=route, levels=here, callback=entry.callback)


@dataclass
class Site:
    """One of every object a page can show, so that every pattern has something to name."""

    visitor: User  # a superuser: sees every page, the admin included
    objects: dict[type[Model], Model] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # kwarg -> value, for project routes


def build_site(*, dataset: Any) -> Site:
    """Rows for every kind of page: a running run with progress and an artifact, a submitted
    (queued) run, webhook rows, and a row of each model the admin registers."""
    from axes.models import (  # type: ignore[import-untyped]
        AccessAttempt,
        AccessFailureLog,
        AccessLog,
    )
    from django_q.models import Schedule, Task
    from rest_framework.authtoken.models import Token

    from runs import artifacts
    from runs.models import (
        AliasMove,
        ModelAlias,
        ModelVersion,
        RegisteredModel,
        RunExport,
        Sample,
        Sweep,
        WorkerHeartbeat,
    )
    from tests.factories import (
        TunixRunFactory,
        UserFactory,
        WebhookAttemptFactory,
        WebhookEndpointStateFactory,
        submitted_run,
    )

    visitor = UserFactory(username="sweeper", is_staff=True, is_superuser=True)
    run = TunixRunFactory(
        dataset=dataset,
        model_id="tunix-rt/tiny-llama3",
        mode="local",
        running=True,
        progress={"step": 2, "total_steps": 4, "loss": 2.5},
        loss_curve=[[1, 3.0], [2, 2.5]],
        created_by=visitor,
    )
    directory = artifacts.run_directory(run)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    export = RunExport.objects.create(
        run=run, step=2, status="completed", sha256="0" * 64, size_bytes=2, created_by=visitor
    )
    (directory / export.directory).mkdir(parents=True)
    (directory / export.directory / "config.json").write_text("{}")
    # A registered version of that export, and a try-it sample of the run (the samples' URLs).
    registered = RegisteredModel.objects.create(name="sweep-model", created_by=visitor)
    version = ModelVersion.objects.create(
        model=registered, number=1, sha256=export.sha256, export=export, run=run, step=2,
        weights="merged", algorithm=run.algorithm, base_model_id=run.model_id,
        dataset_key=dataset.key, dataset_sha256="0" * 64, promoted_by=visitor,
    )  # fmt: skip
    # An alias naming it, and the move that set it (the registry's alias URLs, its admin log).
    ModelAlias.objects.create(model=registered, name="production", version=version)
    AliasMove.objects.create(model=registered, alias="production", to_number=version.number)
    sample = Sample.objects.create(
        run=run, step=2, prompt="hello", max_new_tokens=8, temperature=0.0, created_by=visitor
    )
    submitted_run(user=visitor)  # pending, with its queue task (the admin's queued-task pages)
    # A sweep with one finished trial (the sweep API's detail and cancel, its admin pages).
    sweep = Sweep.objects.create(
        created_by=visitor,
        dataset=dataset,
        model_id="tunix-rt/tiny-llama3",
        space={"learning_rate": {"low": 0.001, "high": 0.01, "log": True}},
        metric="eval_loss",
        direction="minimize",
        n_trials=2,
        concurrency=1,
    )
    TunixRunFactory(
        dataset=dataset, sweep=sweep, trial_number=0, completed=True, created_by=visitor
    )
    attempt = WebhookAttemptFactory(delivery__run=run, status_code=503)
    WebhookEndpointStateFactory()
    WorkerHeartbeat.objects.create(worker_id="host-1:123", host="host-1", pid=123)
    Group.objects.create(name="operators")
    Token.objects.create(user=visitor)
    seen = {"user_agent": "test", "ip_address": "127.0.0.1", "http_accept": "*/*"}
    AccessLog.objects.create(username=visitor.username, path_info="/accounts/login/", **seen)
    AccessAttempt.objects.create(
        username="intruder", path_info="/accounts/login/", failures_since_start=1, **seen
    )
    AccessFailureLog.objects.create(username="intruder", path_info="/accounts/login/", **seen)
    Schedule.objects.create(name="nightly", func="math.floor", args="1.5")
    now = timezone.now()
    for success in (True, False):
        Task.objects.create(
            id=uuid.uuid4().hex, name=f"task-{success}", func="math.floor", started=now,
            stopped=now, success=success, result=1 if success else "Traceback: boom",
        )  # fmt: skip
    site = Site(visitor=visitor)
    site.values = {
        "run_id": str(run.id),
        "key": dataset.key,
        "name": "config.json",
        "export_id": str(export.id),
        "model_name": registered.name,
        "number": str(version.number),
        "alias": "production",
        "sample_id": str(sample.id),
        "sweep_id": str(sweep.id),
        # The admin's view-on-site redirect names an object by its content type.
        "content_type_id": str(ContentType.objects.get_for_model(run).pk),
        "object_id": str(run.pk),  # where the view edits no model of its own (else: its row)
    }
    for row in (run, dataset, attempt.delivery, export, registered, version):
        site.objects[type(row)] = row
    return site


def _model_of(callback: Callable[..., Any]) -> type[Model] | None:
    """The model an admin view edits (None for other views): object ids come from its rows.
    ModelAdmin.get_urls marks its views with model_admin; extra views such as UserAdmin's
    password page are the ModelAdmin's bound methods, wrapped by the site."""
    view: Any = callback
    while view is not None:
        owner = getattr(view, "model_admin", None) or getattr(view, "__self__", None)
        model = getattr(owner, "model", None)
        if isinstance(model, type) and issubclass(model, Model):
            return model
        view = getattr(view, "__wrapped__", None)
    return None


def _alternatives(regex: str, kwarg: str) -> list[str]:
    """The literal choices of a group like (?P<app_label>auth|runs), else nothing."""
    found = re.search(rf"\(\?P<{kwarg}>([\w-]+(?:\|[\w-]+)*)\)", regex)
    return found.group(1).split("|") if found else []


def _values(route: Route, kwarg: str, regex: str, site: Site) -> list[str]:
    if choices := _alternatives(regex, kwarg):
        return choices
    if kwarg in {"object_id", "id", "pk"} and (model := _model_of(route.callback)):
        row = site.objects.get(model) or model._default_manager.order_by("pk").first()
        if row is None:
            raise LookupError(
                f"no {model._meta.label} row to fill {route.key}: create one in build_site()"
            )
        return [str(row.pk)]
    if kwarg in site.values:
        return [site.values[kwarg]]
    if kwarg in LITERALS:
        return [LITERALS[kwarg]]
    raise LookupError(
        f"no value for <{kwarg}> in {route.key} ({route.route}): give it one in "
        "tests/support/routes.py (build_site's values, or LITERALS), or list the pattern in "
        "NOT_SWEPT with the reason"
    )


def urls_for(route: Route, site: Site) -> list[str]:
    """URLs that resolve to this very pattern, its kwargs filled from the site's objects
    (one per choice where a group offers several, such as the admin's app labels)."""
    urls = [""]
    for level in route.levels:
        regex = level.regex.pattern
        template, kwargs = normalize(regex)[0]
        converters = getattr(level, "converters", {})
        options: list[dict[str, str]] = [{}]
        for kwarg in kwargs:
            values = _values(route, kwarg, regex, site)
            if kwarg in converters:
                convert = converters[kwarg]
                values = [convert.to_url(convert.to_python(v)) for v in values]
            options = [{**o, kwarg: v} for o in options for v in values]
        urls = [url + template % option for url in urls for option in options]
    urls = ["/" + url for url in urls]
    for url in urls:
        try:
            match = resolve(url)
        except Resolver404:
            raise LookupError(f"{url}, filled in for {route.key}, resolves to nothing") from None
        if match.func is not route.callback:
            raise LookupError(f"{url}, filled in for {route.key}, resolves to {match.route}")
    return urls


def sweep(site: Site) -> tuple[dict[str, list[str]], dict[str, str]]:
    """URLs for every pattern not in NOT_SWEPT, and why a pattern could not be filled in."""
    reached: dict[str, list[str]] = {}
    problems: dict[str, str] = {}
    for route in routes():
        if route.key in NOT_SWEPT:
            continue
        try:
            reached[route.key] = urls_for(route, site)
        except LookupError as exc:
            problems[route.key] = str(exc)
    return reached, problems


def sweep_urls(site: Site) -> list[str]:
    """Every swept URL; fails with every unfillable pattern named."""
    reached, problems = sweep(site)
    assert not problems, "\n".join(problems.values())
    return [url for urls in reached.values() for url in urls]


@dataclass(frozen=True)
class Answer:
    url: str
    status: int
    headers: Mapping[str, str]  # case-insensitive, as the response's
    body: str

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    @property
    def is_page(self) -> bool:
        """An HTML document (or an htmx fragment of one) a browser renders: not a download,
        not JSON, not an error page of the server's."""
        return (
            self.status == 200
            and self.headers.get("Content-Type", "").startswith("text/html")
            and self.body.lstrip().startswith("<")
        )

    @property
    def redirect(self) -> str | None:
        location = self.headers.get("Location", "")
        return location if self.status in {301, 302, 303, 307, 308} and location else None


def get(client: Client, url: str) -> Answer:
    """GET as a browser would (HTML preferred), without following a redirect."""
    response: Any = client.get(url, headers={"Accept": BROWSER_ACCEPT})  # maybe streamed
    # Read a streamed file to its end: the test client then closes the response as a server
    # would, without closing the test's database connection.
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return Answer(
        url=url,
        status=response.status_code,
        headers=response.headers,
        body=body.decode(errors="replace"),
    )


def browse(client: Client, urls: list[str]) -> list[Answer]:
    """Every page reached from these URLs: each fetched once, redirects within the site
    followed (to a login page, say) and fetched once too."""
    queue, done, found = list(urls), set(), []
    while queue:
        url = queue.pop(0)
        path = url.split("?", 1)[0]
        if path in done:
            continue
        done.add(path)
        answer = get(client, url)
        if answer.redirect and answer.redirect.startswith("/"):
            queue.append(answer.redirect)
        elif answer.is_page:
            found.append(answer)
    return found


@dataclass(frozen=True)
class Pages:
    member: list[Answer]  # as the site's superuser: every page of the app and the admin
    anonymous: list[Answer]  # logged out: the login pages everything else redirects to

    def __iter__(self) -> Iterator[Answer]:
        yield from self.member
        yield from self.anonymous


def pages(site: Site) -> Pages:
    member = Client()
    member.force_login(site.visitor)
    urls = sweep_urls(site)
    return Pages(member=browse(member, urls), anonymous=browse(Client(), urls))
