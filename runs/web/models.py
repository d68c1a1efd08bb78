"""Pages for using what a training made: its exports, promoting one to the model registry, the
registry's models and versions, and the try-it box (a prompt sampled by a worker).

Every form posts to a view that calls one service and redirects back (so the pages work with
JavaScript off); with htmx, the try-it form swaps in the sample, whose fragment polls until the
worker has answered.
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
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from runs import artifacts, authorization, selectors, services
from runs.execution import get_backend
from runs.models import (
    ALIAS_NAME_PATTERN,
    REGISTRY_NAME_PATTERN,
    ExportStatus,
    ExportWeights,
    ModelVersion,
    RunStatus,
    Sample,
    SampleStatus,
    TunixRun,
)
from runs.progress import ranking_metrics
from runs.web.common import allowed, fragment, get_run, poll_context

SAMPLES_SHOWN = 5
MOVES_SHOWN = 50
# A sample is answered in seconds: poll it faster than a run's status.
SAMPLE_POLL_SECONDS = 1


class ExportForm(forms.Form):
    step = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    weights = forms.ChoiceField(choices=ExportWeights.choices, initial=ExportWeights.MERGED)

    def __init__(self, *args: Any, steps: list[int], lora: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        step_field = self.fields["step"]
        assert isinstance(step_field, forms.TypedChoiceField)
        step_field.choices = [("", "newest"), *((s, str(s)) for s in reversed(steps))]
        if not lora:  # a full fine-tune has every weight: nothing to merge, no adapter
            weights = self.fields["weights"]
            assert isinstance(weights, forms.ChoiceField)
            weights.choices = [(ExportWeights.MERGED, "full weights")]


class PromoteForm(forms.Form):
    model = forms.RegexField(regex=REGISTRY_NAME_PATTERN, max_length=100)
    export = forms.UUIDField()
    description = forms.CharField(required=False, max_length=2000)


class SampleForm(forms.Form):
    prompt = forms.CharField(strip=False, widget=forms.Textarea(attrs={"rows": 3}))
    max_new_tokens = forms.IntegerField(required=False, initial=64)
    temperature = forms.FloatField(required=False, initial=0.0)


class AliasForm(forms.Form):
    alias = forms.RegexField(regex=ALIAS_NAME_PATTERN, max_length=64)
    version = forms.IntegerField(min_value=1)


def _message_errors(request: HttpRequest, form: forms.Form, what: str) -> None:
    for field, errors in form.errors.items():
        name = "" if field == "__all__" else f"{field}: "
        messages.error(request, f"Could not {what}: {name}{' '.join(str(e) for e in errors)}")


def _refused(request: HttpRequest, exc: services.ServiceError, what: str) -> None:
    """A service's refusal as a message on the page the user returns to; 404 and 403 stay
    what they are."""
    if isinstance(exc, services.NotFound):
        raise Http404(exc.message)
    if isinstance(exc, services.Forbidden):
        raise PermissionDenied(exc.message)
    messages.error(request, f"Could not {what}: {exc.message}")


# --------------------------------------------------------------------------- a run's models


def use_context(request: HttpRequest, run: TunixRun) -> dict[str, Any]:
    """What the run page's "Use this model" section shows: exports, the registry versions made
    from the run, the forms, and the user's recent samples of it."""
    if run.status != RunStatus.COMPLETED or not get_backend(run.mode).trains:
        return {"usable": False}
    exports = selectors.export_list(run=run)
    can_launch = authorization.can_launch(request.user)
    lora = bool(int(run.config.get("lora_rank") or 0))
    return {
        "usable": True,
        "exports": exports,
        "exports_active": any(e.status in _ACTIVE_EXPORT for e in exports),
        "versions": selectors.registry_versions_of_run(run=run),
        "export_form": ExportForm(steps=artifacts.checkpoint_steps(run), lora=lora),
        "can_export": can_launch,
        "can_promote": authorization.can_promote(request.user),
        "registered_models": [m.name for m in selectors.registry_model_list()],
        "sample_form": SampleForm(),
        "sample_action": reverse("web:run-sample", kwargs={"run_id": run.id}),
        "can_sample": can_launch,
        "samples": selectors.sample_list(run=run, user=request.user, limit=SAMPLES_SHOWN),
        "sample_limits": _sample_limits(),
    }


_ACTIVE_EXPORT = (ExportStatus.PENDING, ExportStatus.RUNNING)


def _sample_limits() -> dict[str, int]:
    return {
        "prompt_chars": settings.TUNIX_SAMPLE_MAX_PROMPT_CHARS,
        "new_tokens": settings.TUNIX_SAMPLE_MAX_NEW_TOKENS,
    }


@require_GET
@login_required
def run_exports(request: HttpRequest, run_id: UUID) -> HttpResponse:
    """The exports list, polled while one is being written."""
    run = get_run(request, run_id)
    context = {"run": run, **use_context(request, run)}
    exports = context.get("exports", [])
    return fragment(
        request,
        "runs/_exports.html",
        context,
        version="|".join(f"{e.id}:{e.status}" for e in exports),
        active=bool(context.get("exports_active")),
    )


@require_POST
@login_required
@allowed("can_launch")
def run_export(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = get_run(request, run_id)
    lora = bool(int(run.config.get("lora_rank") or 0))
    form = ExportForm(request.POST, steps=artifacts.checkpoint_steps(run), lora=lora)
    if not form.is_valid():
        _message_errors(request, form, "export")
    else:
        try:
            export, created = services.export_request(
                user=request.user,
                run_id=run.id,
                step=form.cleaned_data["step"],
                weights=form.cleaned_data["weights"],
            )
        except services.ServiceError as exc:
            _refused(request, exc, "export")
        else:
            verb = "queued" if created else "already asked for"
            messages.success(request, f"Export of step {export.step} ({export.weights}) {verb}.")
    return redirect(reverse("web:run-detail", kwargs={"run_id": run.id}) + "#use")


@require_POST
@login_required
@allowed("can_promote")
def run_promote(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = get_run(request, run_id)
    form = PromoteForm(request.POST)
    if not form.is_valid():
        _message_errors(request, form, "promote")
        return redirect(reverse("web:run-detail", kwargs={"run_id": run.id}) + "#use")
    try:
        version, created = services.registry_promote(
            user=request.user,
            model_name=form.cleaned_data["model"],
            run_id=run.id,
            export_id=form.cleaned_data["export"],
            description=form.cleaned_data["description"],
        )
    except services.ServiceError as exc:
        _refused(request, exc, "promote")
        return redirect(reverse("web:run-detail", kwargs={"run_id": run.id}) + "#use")
    name = version.model.name
    if created:
        messages.success(request, f"Registered as {name} version {version.number}.")
    else:
        messages.info(request, f"The same weights are already {name} version {version.number}.")
    return redirect("web:registry-version", model_name=name, number=version.number)


# --------------------------------------------------------------------------- try it


def _sample_redirect(request: HttpRequest, sample: Sample | None, fallback: str) -> HttpResponse:
    target = fallback
    if sample is not None:
        target = f"{fallback}?{urlencode({'sample': str(sample.id)})}"
    return redirect(f"{target}#try-it")


def _ask(request: HttpRequest, fallback: str, **source: Any) -> tuple[Sample | None, SampleForm]:
    form = SampleForm(request.POST)
    if not form.is_valid():
        return None, form
    try:
        sample = services.sample_request(
            user=request.user,
            prompt=form.cleaned_data["prompt"],
            max_new_tokens=form.cleaned_data["max_new_tokens"],
            temperature=form.cleaned_data["temperature"],
            **source,
        )
    except (services.NotFound, services.Forbidden) as exc:
        _refused(request, exc, "sample")
        raise  # not reached: _refused raises for these
    except services.ServiceError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return None, form
    return sample, form


def _answer_sample(
    request: HttpRequest, sample: Sample | None, form: SampleForm, fallback: str
) -> HttpResponse:
    """htmx: the sample's fragment (or what is wrong with the form) in the result area;
    otherwise back to the page, which shows the sample (or the errors as messages)."""
    if request.htmx:  # type: ignore[attr-defined]
        if sample is None:
            # 200, not 400: htmx swaps only successful answers, and this one replaces the
            # result area with what is wrong.
            return render(request, "runs/_sample.html", {"errors": form.errors})
        return _sample_fragment(request, sample)
    if sample is None:
        _message_errors(request, form, "sample")
    return _sample_redirect(request, sample, fallback)


@require_POST
@login_required
@allowed("can_launch")
def run_sample(request: HttpRequest, run_id: UUID) -> HttpResponse:
    run = get_run(request, run_id)
    fallback = reverse("web:run-detail", kwargs={"run_id": run.id})
    sample, form = _ask(request, fallback, run_id=run.id)
    return _answer_sample(request, sample, form, fallback)


@require_POST
@login_required
@allowed("can_launch")
def version_sample(request: HttpRequest, model_name: str, number: int) -> HttpResponse:
    version = _get_version(model_name, number)
    fallback = reverse("web:registry-version", kwargs={"model_name": model_name, "number": number})
    sample, form = _ask(request, fallback, version=version)
    return _answer_sample(request, sample, form, fallback)


def _sample_fragment(request: HttpRequest, sample: Sample) -> HttpResponse:
    active = sample.status in (SampleStatus.PENDING, SampleStatus.RUNNING)
    return fragment(
        request,
        "runs/_sample.html",
        {"sample": sample, "sample_poll_seconds": SAMPLE_POLL_SECONDS},
        version=f"{sample.id}|{sample.status}",
        active=active,
    )


@require_GET
@login_required
def sample_detail(request: HttpRequest, sample_id: UUID) -> HttpResponse:
    sample = selectors.sample_get(sample_id=sample_id, user=request.user)
    if sample is None:
        raise Http404("no such sample")
    return _sample_fragment(request, sample)


def shown_sample(
    request: HttpRequest, *, run: TunixRun | None = None, version: ModelVersion | None = None
) -> Sample | None:
    """The sample a no-JavaScript form post came back with (?sample=…), if the user may see it
    and it is of this page's run or version."""
    try:
        sample_id = UUID(request.GET.get("sample", ""))
    except ValueError:
        return None
    sample = selectors.sample_get(sample_id=sample_id, user=request.user)
    if sample is None or (sample.run_id, sample.version_id) != (
        run.id if run else None,
        version.id if version else None,
    ):
        return None
    return sample


# --------------------------------------------------------------------------- the registry


def _get_version(model_name: str, number: int) -> ModelVersion:
    version = selectors.registry_version_get(model_name=model_name, number=number)
    if version is None:
        raise Http404("no such model version")
    return version


@require_GET
@login_required
def registry_list(request: HttpRequest) -> HttpResponse:
    return render(request, "runs/registry_list.html", {"models": selectors.registry_model_list()})


@require_GET
@login_required
def registry_model(request: HttpRequest, model_name: str) -> HttpResponse:
    model = selectors.registry_model_get(name=model_name)
    if model is None:
        raise Http404("no such model")
    versions = selectors.registry_version_list(model=model)
    context = {
        "model": model,
        "versions": versions,
        "aliases": selectors.registry_alias_list(model=model),
        "moves": selectors.registry_alias_moves(model=model, limit=MOVES_SHOWN),
        # A version's row shows the results runs are ranked by, not every metric it has.
        "result_names": list(ranking_metrics()),
        "alias_form": AliasForm(),
        "can_manage": authorization.can_manage_registry(request.user),
    }
    return render(request, "runs/registry_model.html", context)


@require_GET
@login_required
def registry_version(request: HttpRequest, model_name: str, number: int) -> HttpResponse:
    version = _get_version(model_name, number)
    can_launch = authorization.can_launch(request.user)
    context = {
        "version": version,
        "model": version.model,
        "run_visible": authorization.can_view(request.user, version.run),
        "aliases": [alias.name for alias in version.aliases.all()],  # prefetched, by name
        "continued_by": selectors.registry_version_users(version=version),
        "can_launch": can_launch,
        "can_manage": authorization.can_manage_registry(request.user),
        "launch_url": reverse("web:run-launch") + "?" + urlencode({"model_id": version.uri}),
        "sample_form": SampleForm(),
        "sample_action": reverse(
            "web:registry-version-sample", kwargs={"model_name": model_name, "number": number}
        ),
        "can_sample": can_launch,
        "samples": selectors.sample_list(version=version, user=request.user, limit=SAMPLES_SHOWN),
        "shown_sample": shown_sample(request, version=version),
        "sample_limits": _sample_limits(),
        **poll_context(),
    }
    return render(request, "runs/registry_version.html", context)


@require_POST
@login_required
@allowed("can_manage_registry")
def registry_alias_set(request: HttpRequest, model_name: str) -> HttpResponse:
    form = AliasForm(request.POST)
    if not form.is_valid():
        _message_errors(request, form, "set the alias")
    else:
        alias, number = form.cleaned_data["alias"], form.cleaned_data["version"]
        try:
            services.registry_alias_set(
                user=request.user, model_name=model_name, alias=alias, number=number
            )
        except services.ServiceError as exc:
            _refused(request, exc, "set the alias")
        else:
            messages.success(request, f"{alias} now names version {number}.")
    return redirect("web:registry-model", model_name=model_name)


@require_POST
@login_required
@allowed("can_manage_registry")
def registry_alias_delete(request: HttpRequest, model_name: str, alias: str) -> HttpResponse:
    try:
        services.registry_alias_delete(user=request.user, model_name=model_name, alias=alias)
    except services.ServiceError as exc:
        _refused(request, exc, "remove the alias")
    else:
        messages.success(request, f"Alias {alias} removed.")
    return redirect("web:registry-model", model_name=model_name)


@require_POST
@login_required
@allowed("can_manage_registry")
def registry_version_delete(request: HttpRequest, model_name: str, number: int) -> HttpResponse:
    try:
        services.registry_version_delete(user=request.user, model_name=model_name, number=number)
    except services.ServiceError as exc:
        _refused(request, exc, f"delete version {number}")
        return redirect("web:registry-version", model_name=model_name, number=number)
    messages.success(request, f"Version {number} of {model_name} deleted.")
    return redirect("web:registry-model", model_name=model_name)
