"""The sweep pages: the list of sweeps, and a sweep's page with its trials, its best trial, its
progress and its charts (the metric against each searched parameter, parallel coordinates, the
trials' curves overlaid), all server-rendered SVG that reads without JavaScript.

While the sweep runs, its page polls a fragment (runs/web/common.fragment: 304 while nothing
changed, 286 once nothing can change any more). The API makes sweeps of any space; the list's
form makes sweeps of a few numeric ranges.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from runs import (
    authorization,
    model_catalog,
    progress,
    resources,
    selectors,
    services,
    training_config,
)
from runs.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from runs.models import (
    MODE_CHOICES,
    PRUNER_CHOICES,
    SAMPLER_CHOICES,
    Dataset,
    RunMode,
    Sweep,
    SweepDirection,
    SweepStatus,
)
from runs.templatetags.tunix import (
    metric_label,
    metric_value,
    parallel_chart,
    param_charts,
    param_text,
    trial_curves,
)
from runs.web.common import fragment, poll_context

LIST_LIMIT = 100  # newest first; the API pages through the rest


def _detail(request: HttpRequest, sweep_id: UUID) -> selectors.SweepDetail:
    """The sweep, if this user may see it; someone else's sweep is as absent as a missing
    one."""
    detail = selectors.sweep_detail(
        sweep_id=sweep_id, owner=authorization.visible_owner(request.user)
    )
    if detail is None:
        raise Http404("no such sweep")
    return detail


def _best_value(sweep: Sweep) -> str:
    """The best trial's metric, once the sweep has ended (a running sweep's best is on its
    page: the list reads no trials)."""
    value = (sweep.best_run.metrics or {}).get(sweep.metric) if sweep.best_run else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    return metric_value(float(value), sweep.metric)


# The hyperparameters the list's form can search: every algorithm has them. The API searches any
# hyperparameter, with choices and steps too.
SEARCHABLE = ("learning_rate", "lora_rank", "lora_alpha", "num_epochs")
LOG_BY_DEFAULT = {"learning_rate"}  # a learning rate's good values span decades


def _bound(param: training_config.Param, label: str) -> forms.Field:
    options: dict[str, Any] = {
        "required": False,
        "label": label,
        "min_value": param.minimum,
        "max_value": param.maximum,
    }
    if param.kind is int:
        return forms.IntegerField(**options)
    return forms.FloatField(widget=forms.NumberInput(attrs={"step": "any"}), **options)


class SweepForm(forms.Form):
    """A sweep of a few numeric hyperparameters over ranges, the rest at their defaults.
    Parses and validates; sweep_create checks everything a single run would be checked for."""

    algorithm = forms.ChoiceField(
        choices=[(name, a.label) for name, a in ALGORITHMS.items()], initial=DEFAULT_ALGORITHM
    )
    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.order_by("key"), to_field_name="key", empty_label=None
    )
    model_id = forms.CharField(max_length=256, initial=model_catalog.TINY_MODEL_ID)
    mode = forms.ChoiceField(choices=MODE_CHOICES, initial=RunMode.DRY_RUN)
    metric = forms.ChoiceField(
        choices=[(name, metric_label(name)) for name in progress.all_result_keys()],
        initial="eval_loss",
    )
    direction = forms.ChoiceField(
        choices=[("", "the metric's own"), *SweepDirection.choices], required=False
    )
    n_trials = forms.IntegerField(
        label="Trials", min_value=1, max_value=settings.TUNIX_SWEEP_MAX_TRIALS, initial=8
    )
    concurrency = forms.IntegerField(
        label="At a time", min_value=1, max_value=settings.TUNIX_SWEEP_MAX_CONCURRENCY, initial=2
    )
    sampler = forms.ChoiceField(choices=SAMPLER_CHOICES)
    pruner = forms.ChoiceField(choices=PRUNER_CHOICES, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = {p.name: p for p in training_config.params_for(DEFAULT_ALGORITHM)}
        for name in SEARCHABLE:
            self.fields[f"{name}_low"] = _bound(params[name], f"{name} from")
            self.fields[f"{name}_high"] = _bound(params[name], "to")
            self.fields[f"{name}_log"] = forms.BooleanField(
                required=False, label="log scale", initial=name in LOG_BY_DEFAULT
            )

    def rows(self) -> list[dict[str, Any]]:
        """A row a searchable hyperparameter: its name and its from, to and log-scale fields."""
        return [
            {"name": n, "low": self[f"{n}_low"], "high": self[f"{n}_high"], "log": self[f"{n}_log"]}
            for n in SEARCHABLE
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        space: dict[str, Any] = {}
        for name in SEARCHABLE:
            low, high = data.get(f"{name}_low"), data.get(f"{name}_high")
            if low is None and high is None:
                continue  # not searched: the algorithm's default
            if low is None or high is None:
                self.add_error(f"{name}_low", "give both ends of the range, or neither")
                continue
            space[name] = {
                "low": low,
                "high": high,
                **({"log": True} if data.get(f"{name}_log") else {}),
            }
        if not space and not self.errors:
            raise forms.ValidationError("Give at least one hyperparameter a range to search.")
        data["space"] = space
        return data

    def sweep_request(self) -> services.SweepRequest:
        data = self.cleaned_data
        return services.SweepRequest(
            base=services.RunRequest(
                dataset_key=data["dataset"].key,
                model_id=data["model_id"],
                mode=data["mode"],
                algorithm=data["algorithm"],
            ),
            space=data["space"],
            metric=data["metric"],
            n_trials=data["n_trials"],
            concurrency=data["concurrency"],
            direction=data["direction"] or None,
            sampler=data["sampler"],
            pruner=data["pruner"] or "",
        )


def _error_field(form: SweepForm, field: str | None) -> str | None:
    """The form field a service error names (space.<name>, base.<field>), if it has one."""
    name = (field or "").removeprefix("base.")
    if name.startswith("space."):
        name = f"{name.removeprefix('space.')}_low"
    if name == "dataset_key":
        name = "dataset"
    return name if name in form.fields else None


def _create(request: HttpRequest, form: SweepForm) -> Sweep | None:
    try:
        return services.sweep_create(user=request.user, request=form.sweep_request())
    except services.ServiceError as exc:
        form.add_error(_error_field(form, exc.field), exc.message)
        return None


@require_http_methods(["GET", "POST"])
@login_required
def sweep_list(request: HttpRequest) -> HttpResponseBase:
    can_launch = authorization.can_launch(request.user)
    form = SweepForm(request.POST or None) if can_launch else None
    if request.method == "POST":
        if form is None:
            raise PermissionDenied("starting sweeps needs the runs.add_tunixrun permission")
        if form.is_valid() and (sweep := _create(request, form)) is not None:
            messages.success(request, f"Sweep {str(sweep.id)[:8]} started.")
            return redirect("web:sweep-detail", sweep_id=sweep.id)
    sweeps = selectors.sweep_list(owner=authorization.visible_owner(request.user))
    rows = [
        {
            "sweep": sweep,
            "metric": metric_label(sweep.metric),
            "ended": sweep.trials_ended,  # type: ignore[attr-defined]  # annotated
            "best": _best_value(sweep),
        }
        for sweep in sweeps[:LIST_LIMIT]
    ]
    context = {"rows": rows, "limit": LIST_LIMIT, "form": form}
    status = 400 if form is not None and form.errors else 200
    return render(request, "runs/sweep_list.html", context, status=status)


def _version(detail: selectors.SweepDetail) -> str:
    """What the fragment shows that can change: the sweep's state, and each trial's state,
    progress and curves' lengths."""
    sweep = detail.sweep
    parts = [str(sweep.id), sweep.status, str(sweep.completed_at), str(sweep.best_run_id)]
    for trial in detail.trials:
        run = trial.run
        parts += [
            str(run.id),
            run.status,
            run.error_reason,
            str(run.attempt),
            str(run.started_at),
            str(run.completed_at),
            str((run.progress or {}).get("step")),
            str(len(run.loss_curve or [])),
            str({k: len(v) for k, v in (run.series or {}).items()}),
            str(trial.value),
        ]
    return "|".join(parts)


def _active(detail: selectors.SweepDetail) -> bool:
    """Something shown can still change: the sweep runs, or a trial of a sweep that stopped
    (its next trial could not be submitted) still trains."""
    return detail.sweep.status == SweepStatus.RUNNING or not all(t.ended for t in detail.trials)


def launch_best_url(detail: selectors.SweepDetail) -> str | None:
    """The launch page filled in with the best trial's settings, every hyperparameter
    included: the form validates them as anything typed."""
    if detail.best is None:
        return None
    run, sweep = detail.best.run, detail.sweep
    query: list[tuple[str, Any]] = [
        ("algorithm", run.algorithm),
        ("dataset", run.dataset.key),
        ("model_id", run.model_id),
        ("mode", run.mode),
    ]
    if sweep.timeout_seconds is not None:
        query.append(("timeout_seconds", sweep.timeout_seconds))
    if asked := resources.from_stored(run.resources):
        query += [("resource_kind", asked.kind), ("resource_count", asked.count)]
        if asked.device_type:
            query.append(("resource_device_type", asked.device_type))
    query += [(name, value) for name, value in (run.config or {}).items() if value is not None]
    return f"{reverse('web:run-launch')}?{urlencode(query)}"


def _trial_rows(detail: selectors.SweepDetail) -> list[dict[str, Any]]:
    names = list(detail.sweep.space)
    best = detail.best.number if detail.best is not None else None
    return [
        {
            "number": trial.number,
            "run": trial.run,
            "short": str(trial.run.id)[:8],
            "status": trial.status,
            "params": [(name, param_text(trial.params.get(name))) for name in names],
            "value": "—" if trial.value is None else metric_value(trial.value, detail.sweep.metric),
            "duration": trial.duration_seconds,
            "best": trial.number == best,
            "reason": trial.run.error_reason,
        }
        for trial in detail.trials
    ]


def _live_context(request: HttpRequest, detail: selectors.SweepDetail) -> dict[str, Any]:
    sweep = detail.sweep
    return {
        "sweep": sweep,
        "detail": detail,
        "progress": detail.progress,
        "percent": round(detail.progress.fraction * 100),
        "metric": metric_label(sweep.metric),
        "names": list(sweep.space),
        "trial_rows": _trial_rows(detail),
        "best": detail.best,
        "best_value": None
        if detail.best is None or detail.best.value is None
        else metric_value(detail.best.value, sweep.metric),
        "can_cancel": sweep.status == SweepStatus.RUNNING
        and authorization.can_cancel(request.user, sweep),
        "launch_best_url": launch_best_url(detail)
        if authorization.can_launch(request.user)
        else None,
        "param_charts": param_charts(
            sweep.space, detail.trials, metric=sweep.metric, best=detail.best
        ),
        "parallel": parallel_chart(
            sweep.space, detail.trials, metric=sweep.metric, best=detail.best
        ),
        "curves": trial_curves(detail.trials, best=detail.best),
        "active": _active(detail),
    }


@require_GET
@login_required
def sweep_detail(request: HttpRequest, sweep_id: UUID) -> HttpResponse:
    detail = _detail(request, sweep_id)
    context = {**_live_context(request, detail), **poll_context()}
    return render(request, "runs/sweep_detail.html", context)


@require_GET
@login_required
def sweep_live(request: HttpRequest, sweep_id: UUID) -> HttpResponse:
    detail = _detail(request, sweep_id)
    return fragment(
        request,
        "runs/_sweep_live.html",
        {},
        version=_version(detail),
        active=_active(detail),
        render_context=lambda: _live_context(request, detail),
    )


@require_POST
@login_required
def sweep_cancel(request: HttpRequest, sweep_id: UUID) -> HttpResponse:
    try:
        services.sweep_cancel(sweep_id=sweep_id, user=request.user)
        messages.success(request, "Sweep cancelled: its pending trials too, its running ones stop.")
    except services.NotFound:
        raise Http404("no such sweep") from None
    except services.Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except services.ServiceError as exc:
        messages.error(request, f"Could not cancel: {exc.message}")
    return redirect("web:sweep-detail", sweep_id=sweep_id)
