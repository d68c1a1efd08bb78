"""Server-rendered pages. Live parts are fragments that htmx polls while a run shown is active.

Polling stops when nothing shown can change any more: the fragment answers HTTP 286, which htmx
swaps and then stops polling. Unchanged fragments answer 304 to the browser's revalidation.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runs import artifacts, authorization, selectors, services, training_config
from runs.algorithms import ALGORITHMS
from runs.datasets import REASONING_INCLUDE
from runs.models import ACTIVE_STATUSES, TunixRun
from runs.progress import ranking_metrics
from runs.web.common import allowed, fragment, get_run, poll_context
from runs.web.forms import DatasetUploadForm, RunFilterForm, RunLaunchForm, chosen_algorithm
from runs.web.models import shown_sample, use_context

PAGE_SIZE = 25
# Launch page fields a link may fill in, besides the chosen algorithm's hyperparameters.
PREFILLED = (
    "dataset",
    "model_id",
    "mode",
    "timeout_seconds",
    "resource_kind",
    "resource_count",
    "resource_device_type",
)


def _run_version(run: TunixRun) -> str:
    return "|".join(
        str(v)
        for v in (
            run.id,
            run.status,
            run.attempt,
            run.started_at,
            run.progress.get("step"),  # a training's step advances while it runs
            run.completed_at,
            run.exit_code,
            run.error_reason,
        )
    )


def _filters(request: HttpRequest) -> tuple[RunFilterForm, selectors.RunFilters, str | None]:
    form = RunFilterForm(request.GET)
    owner = authorization.visible_owner(request.user)
    if not form.is_valid():
        return form, selectors.RunFilters(created_by_id=owner), None
    data = form.cleaned_data
    filters = selectors.RunFilters(
        status=data["status"] or None,
        mode=data["mode"] or None,
        algorithm=data["algorithm"] or None,
        dataset_key=data["dataset_key"] or None,
        created_by_id=owner,
    )
    return form, filters, data["cursor"] or None


def _ranking(
    form: RunFilterForm, filters: selectors.RunFilters, cursor: str | None
) -> selectors.RunPage | None:
    """The dataset's completed runs best first when the form asks for a ranking; None (and an
    error on the form) when it asks without naming a dataset."""
    metric = form.cleaned_data.get("sort") if form.is_valid() else None
    if not metric:
        return None
    if not filters.dataset_key:
        form.add_error("sort", "Choose a dataset: a ranking compares runs of one dataset.")
        return None
    try:
        ranking = selectors.run_ranking(
            dataset_key=filters.dataset_key,
            metric=metric,
            owner=filters.created_by_id,
            limit=PAGE_SIZE,
            cursor=cursor,
        )
    except selectors.InvalidCursor:
        ranking = selectors.run_ranking(
            dataset_key=filters.dataset_key, metric=metric, owner=filters.created_by_id
        )
    for item in ranking.items:
        item.run.rank_value = item.value  # type: ignore[attr-defined]  # shown in its row
    return selectors.RunPage(items=[i.run for i in ranking.items], next_cursor=ranking.next_cursor)


def _page(request: HttpRequest) -> tuple[RunFilterForm, selectors.RunPage]:
    form, filters, cursor = _filters(request)
    ranked = _ranking(form, filters, cursor)
    if ranked is not None:
        return form, ranked
    try:
        page = selectors.run_list(filters=filters, limit=PAGE_SIZE, cursor=cursor)
    except selectors.InvalidCursor:
        page = selectors.run_list(filters=filters, limit=PAGE_SIZE)
    return form, page


def _query_without_cursor(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("cursor", None)
    return query.urlencode()


@require_GET
@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    form, page = _page(request)
    base_query = _query_without_cursor(request)
    ranking = form.cleaned_data.get("sort") if form.is_valid() and not form.errors else None
    context = {
        "filter_form": form,
        "page": page,
        "runs": page.items,
        "ranking": ranking,
        "ranking_label": ranking_metrics().get(ranking or "", ""),
        "active": any(run.status in ACTIVE_STATUSES for run in page.items),
        "rows_url": f"{reverse('web:run-rows')}?{request.GET.urlencode()}",
        "base_query": base_query,
        "first_page": not request.GET.get("cursor"),
        **poll_context(),
    }
    status = 400 if "sort" in form.errors else 200
    return render(request, "runs/run_list.html", context, status=status)


@require_GET
@login_required
def run_rows(request: HttpRequest) -> HttpResponse:
    _, page = _page(request)
    active = any(run.status in ACTIVE_STATUSES for run in page.items)
    version = ";".join(_run_version(run) for run in page.items)
    return fragment(
        request, "runs/_run_rows.html", {"runs": page.items}, version=version, active=active
    )


@require_GET
@login_required
def run_detail(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = get_run(request, run_id)
    context = {
        "run": run,
        "can_cancel": _can_cancel(request, run),
        "wait_reason": selectors.run_wait_reason(run=run),
        "shown_sample": shown_sample(request, run=run),
        **_artifact_context(run),
        **use_context(request, run),
        **poll_context(),
    }
    return render(request, "runs/run_detail.html", context)


def _artifact_context(run: TunixRun) -> dict[str, Any]:
    found, truncated = artifacts.list_artifacts(run)
    return {
        "artifacts": found,
        "artifacts_truncated": truncated,
        "download_max_bytes": settings.TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES,
    }


@require_GET
@login_required
def run_live(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = get_run(request, run_id)
    # Why a pending run waits (no live worker, or none that can read its task): part of the
    # fragment's version, so a poll sees the reason appear and go.
    wait_reason = selectors.run_wait_reason(run=run)
    context = {"run": run, "can_cancel": _can_cancel(request, run), "wait_reason": wait_reason}
    return fragment(
        request,
        "runs/_run_live.html",
        context,
        # The detail also shows the output, which grows while a training runs (hashed with the
        # rest by fragment; at most 2 x TUNIX_OUTPUT_MAX_BYTES).
        version="\0".join((_run_version(run), run.stdout, run.stderr, wait_reason or "")),
        active=not run.is_terminal,
        # The last render (the run has ended) brings its exports and try-it box.
        render_context=lambda: {**_artifact_context(run), **use_context(request, run)},
    )


def _can_cancel(request: HttpRequest, run: TunixRun) -> bool:
    return authorization.can_cancel(request.user, run)


@require_POST
@login_required
def run_cancel(request: HttpRequest, run_id: UUID) -> HttpResponse:
    try:
        services.run_cancel(run_id=run_id, user=request.user)
        messages.success(request, "Run cancelled.")
    except services.NotFound:
        raise Http404("no such run") from None
    except services.Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except services.ServiceError as exc:
        messages.error(request, f"Could not cancel: {exc.message}")
    return redirect("web:run-detail", run_id=run_id)


@require_POST
@login_required
@allowed("can_launch")
def run_again(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = get_run(request, run_id)
    try:
        submission = services.run_submit(
            user=request.user, request=services.RunRequest.like(run), enqueue=True
        )
    except services.ServiceError as exc:
        messages.error(request, f"Could not run again: {exc.message}")
        return redirect("web:run-detail", run_id=run.id)
    messages.success(request, "A new run with the same settings is queued.")
    return redirect("web:run-detail", run_id=submission.run.id)


def _submit(form: RunLaunchForm, request: HttpRequest) -> TunixRun | None:
    run_request = form.run_request()
    try:
        if form.cleaned_data["execution"] == "sync":
            return services.run_sync(user=request.user, request=run_request).run
        return services.run_submit(user=request.user, request=run_request, enqueue=True).run
    except services.ServiceError as exc:
        field = exc.field if exc.field in form.fields else None
        if exc.field == "dataset_key":
            field = "dataset"
        elif exc.field == "resources":
            field = "resource_kind"
        form.add_error(field, exc.message)
        return None


@require_http_methods(["GET", "POST"])
@login_required
@allowed("can_launch")
def run_launch(request: HttpRequest) -> HttpResponse:
    source = request.POST if request.method == "POST" else request.GET
    algorithm = chosen_algorithm(source.get("algorithm"))
    # Links prefill the form: a dataset's page (?dataset=), a registered version's page
    # (?model_id=models:/<name>/<n>), a sweep's best trial (every setting and hyperparameter).
    # The form validates them like anything typed.
    names = (*PREFILLED, *(param.name for param in training_config.params_for(algorithm)))
    prefill = {k: source[k] for k in names if request.method == "GET" and source.get(k)}
    form = RunLaunchForm(request.POST or None, algorithm=algorithm, initial=prefill)
    if request.method == "POST" and form.is_valid():
        run = _submit(form, request)
        if run is not None:
            link = reverse("web:run-detail", kwargs={"run_id": run.id})
            verb = "finished" if run.is_terminal else "queued"
            messages.success(request, f"Run {str(run.id)[:8]} {verb}.", extra_tags=link)
            return redirect("web:run-list")
    has_datasets = selectors.dataset_list().exists()
    return render(
        request,
        "runs/run_launch.html",
        {
            "form": form,
            "has_datasets": has_datasets,
            "algorithms": ALGORITHMS.values(),
            "algorithm": form.chosen,
        },
    )


@require_http_methods(["GET", "POST"])
@login_required
def dataset_list(request: HttpRequest) -> HttpResponseBase:
    can_upload = authorization.can_upload_datasets(request.user)
    form = DatasetUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if not can_upload:
            raise PermissionDenied("uploading datasets needs the add_dataset permission")
        if form.is_valid():
            try:
                dataset = services.dataset_import(
                    key=form.cleaned_data["key"],
                    source=form.cleaned_data["file"].chunks(),
                    user=request.user,
                    reasoning=form.cleaned_data["reasoning"] or REASONING_INCLUDE,
                )
            except services.ServiceError as exc:
                form.add_error(exc.field if exc.field in form.fields else "file", exc.message)
            else:
                messages.success(
                    request, f"Imported {dataset.key}: {dataset.record_count} records."
                )
                return redirect("web:dataset-list")
    context = {"datasets": selectors.dataset_list(), "form": form, "can_upload": can_upload}
    return render(request, "runs/dataset_list.html", context, status=400 if form.errors else 200)


BEST_RUNS = 10
COMPARE_TOP = 5
DEFAULT_RANKING = "rouge_l"  # rewards partly right answers, unlike exact match


@require_GET
@login_required
def dataset_detail(request: HttpRequest, key: str) -> HttpResponse:
    """A dataset and its best runs by one evaluation metric: the leaderboard, with links to
    the whole ranking and to comparing the leaders."""
    dataset = selectors.dataset_get(key=key)
    if dataset is None:
        raise Http404("no such dataset")
    metric = request.GET.get("metric", "")
    if metric not in ranking_metrics():
        # The first result of the algorithm that trains on this format (a GRPO dataset's runs
        # have a mean reward, not a ROUGE-L), else the generation eval's.
        metric = next(
            (
                algorithm.results[0]
                for algorithm in ALGORITHMS.values()
                if dataset.format in algorithm.formats and algorithm.results
            ),
            DEFAULT_RANKING,
        )
    ranking = selectors.run_ranking(
        dataset_key=dataset.key,
        metric=metric,
        owner=authorization.visible_owner(request.user),
        limit=BEST_RUNS,
    )
    leaders = [item.run.id for item in ranking.items[:COMPARE_TOP]]
    context = {
        "dataset": dataset,
        "metric": metric,
        "metric_label": ranking_metrics()[metric],
        "metrics": ranking_metrics(),
        "best": ranking.items,
        "more": ranking.next_cursor is not None,
        "compare_query": "&".join(f"ids={run_id}" for run_id in leaders),
        "can_compare": len(leaders) > 1,
    }
    return render(request, "runs/dataset_detail.html", context)
