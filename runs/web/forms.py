"""Forms of the HTMX pages. They parse and validate; services do the work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from runs import model_catalog, resources, selectors, training_config
from runs.algorithms import ALGORITHMS, DEFAULT_ALGORITHM
from runs.datasets import REASONING_INCLUDE, REASONING_OMIT
from runs.execution import get_backend
from runs.models import (
    DATASET_KEY_PATTERN,
    MODE_CHOICES,
    Dataset,
    RunMode,
    RunStatus,
)
from runs.progress import ranking_metrics
from runs.services import RunRequest


class RunFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "any status"), *RunStatus.choices], required=False)
    mode = forms.ChoiceField(choices=[("", "any mode"), *MODE_CHOICES], required=False)
    algorithm = forms.ChoiceField(
        choices=[("", "any algorithm"), *((n, a.label) for n, a in ALGORITHMS.items())],
        required=False,
    )
    dataset_key = forms.CharField(
        required=False, max_length=128, validators=[RegexValidator(DATASET_KEY_PATTERN)]
    )
    sort = forms.ChoiceField(
        choices=[
            ("", "newest first"),
            *((m, f"best {label}") for m, label in ranking_metrics().items()),
        ],
        required=False,
    )
    cursor = forms.CharField(required=False, max_length=256, widget=forms.HiddenInput)


def _param_field(param: training_config.Param) -> forms.Field:
    if param.kind is str:
        return forms.ChoiceField(
            choices=[(choice, choice) for choice in param.choices],
            required=False,
            help_text=param.help,
            initial=param.default,
        )
    options: dict[str, Any] = {
        "required": False,
        "help_text": param.help,
        "initial": param.default,
        "min_value": param.minimum,
        "max_value": param.maximum,
    }
    if param.kind is int:
        return forms.IntegerField(**options)
    return forms.FloatField(widget=forms.NumberInput(attrs={"step": "any"}), **options)


MODEL_OPTIONS_ID = "model-options"


def catalog_options() -> list[tuple[str, str]]:
    return [(entry.id, entry.description) for entry in model_catalog.CATALOG.values()]


def registered_options() -> list[tuple[str, str]]:
    """Registered aliases and versions a run can continue from, labelled as such."""
    return [
        (choice.model_id, f"registered: {choice.label}")
        for choice in selectors.base_model_choices()
    ]


class ModelIdInput(forms.TextInput):
    """A free-text model id with suggestions: the catalog, then the registered models. A
    datalist, so any id can still be typed, and the page works without JavaScript. The
    registry is read only when the field is rendered, never when a launch is posted."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__({"list": MODEL_OPTIONS_ID, "autocomplete": "off", **(attrs or {})})
        self.options: Callable[[], list[tuple[str, str]]] = catalog_options

    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        field = super().render(name, value, attrs, renderer)
        options = format_html_join("", '<option value="{}">{}</option>', self.options())
        return format_html(
            '{}<datalist id="{}" data-testid="model-options">{}</datalist>',
            field,
            MODEL_OPTIONS_ID,
            options,
        )


def chosen_algorithm(value: object) -> str:
    """The algorithm a launch page is for: the one asked for, or the default for anything
    else (an old link, a typo), so the page always renders a form that can be submitted."""
    return value if isinstance(value, str) and value in ALGORITHMS else DEFAULT_ALGORITHM


class RunLaunchForm(forms.Form):
    """The launch form of one algorithm: its hyperparameters only, and the datasets of the
    formats it trains on. Choosing another algorithm renders another form (a link, so the page
    works without JavaScript)."""

    dataset = forms.ModelChoiceField(
        queryset=Dataset.objects.none(), to_field_name="key", empty_label=None
    )
    algorithm = forms.ChoiceField(
        choices=[(name, a.label) for name, a in ALGORITHMS.items()],
        widget=forms.HiddenInput,
        required=False,  # the view's choice when left out
    )
    model_id = forms.CharField(
        max_length=256,
        initial=model_catalog.TINY_MODEL_ID,
        validators=[
            RegexValidator(
                selectors.RUN_MODEL_ID_PATTERN,
                "like 'org/name' or 'name', or models:/<name>/<version>, "
                "models:/<name>@<alias> or exports:/<export id>",
            )
        ],
        help_text=f"{model_catalog.TINY_MODEL_ID} trains on CPU in seconds; real models "
        "(e.g. google/gemma-3-270m) need their checkpoint on the worker hosts; "
        "models:/<name>@<alias> continues training from a registered version",
        widget=ModelIdInput(),
    )
    mode = forms.ChoiceField(
        choices=MODE_CHOICES,
        initial=RunMode.DRY_RUN,
        help_text="dry-run validates and writes the config; local trains on the worker; ray "
        "trains on the Ray cluster",
    )
    execution = forms.ChoiceField(
        choices=[("async", "Queue for a worker"), ("sync", "Run now and wait")],
        initial="async",
        widget=forms.RadioSelect,
    )
    timeout_seconds = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.TUNIX_RUN_TIMEOUT_MAX_SECONDS,
        help_text=f"default {settings.TUNIX_RUN_TIMEOUT_SECONDS} s",
    )

    resource_kind = forms.ChoiceField(
        choices=[("", "nothing in particular (cpu)"), *((k, k) for k in resources.KINDS)],
        required=False,
        label="Accelerator",
        help_text="a local run waits for a worker host with these devices",
    )
    resource_count = forms.IntegerField(required=False, min_value=1, label="Devices")
    resource_device_type = forms.CharField(
        required=False, max_length=32, label="Device type", help_text="e.g. a100 or v5e"
    )

    def __init__(self, *args: Any, algorithm: str = DEFAULT_ALGORITHM, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chosen = ALGORITHMS[algorithm]
        self.fields["algorithm"].initial = algorithm
        dataset_field = self.fields["dataset"]
        assert isinstance(dataset_field, forms.ModelChoiceField)
        dataset_field.queryset = Dataset.objects.filter(format__in=self.chosen.formats).order_by(
            "key"
        )
        dataset_field.help_text = f"{self.chosen.label} trains on {self.chosen.trains_on}"
        self.params = training_config.params_for(algorithm)
        for param in self.params:
            self.fields[param.name] = _param_field(param)
        model_widget = self.fields["model_id"].widget
        assert isinstance(model_widget, ModelIdInput)
        model_widget.options = lambda: catalog_options() + registered_options()
        # Only the modes this deployment can run (ray needs a cluster configured).
        mode_field = self.fields["mode"]
        assert isinstance(mode_field, forms.ChoiceField)
        mode_field.choices = [
            (mode, label) for mode, label in MODE_CHOICES if get_backend(mode).unavailable() is None
        ]

    def param_fields(self) -> list[forms.BoundField]:
        return [self[p.name] for p in self.params]

    def clean_model_id(self) -> str:
        # The service refuses an id outside the catalog too, but it is only asked once every
        # other field is valid: checking the catalog the way it does shows this error with the
        # rest. A custom TUNIX_TRAINER_COMMAND interprets model ids itself, so any id passes.
        # A base reference is resolved by the service, which names model_id when it refuses.
        model_id: str = self.cleaned_data["model_id"]
        if selectors.is_base_reference(model_id):
            return model_id
        if not settings.TUNIX_TRAINER_COMMAND and model_catalog.lookup(model_id) is None:
            raise ValidationError(model_catalog.unknown_model_message(model_id))
        return model_id

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        values = {
            p.name: p.default if data.get(p.name) in (None, "") else data[p.name]
            for p in self.params
        }
        _, errors = training_config.normalise(values, self.chosen.name)
        for name, reason in errors.items():
            self.add_error(name, reason)
        data["config"] = values
        data["resources"] = None
        if data.get("resource_kind"):
            asked = {
                "kind": data["resource_kind"],
                "count": data.get("resource_count") or 1,
                "device_type": (data.get("resource_device_type") or "").strip(),
            }
            try:
                data["resources"] = resources.parse(asked)
            except resources.ResourceError as exc:
                self.add_error("resource_kind", str(exc))
        return data

    def run_request(self) -> RunRequest:
        data = self.cleaned_data
        return RunRequest(
            dataset_key=data["dataset"].key,
            model_id=data["model_id"],
            mode=data["mode"],
            algorithm=self.chosen.name,
            config=data["config"],
            timeout_seconds=data["timeout_seconds"],
            resources=data["resources"],
        )


class DatasetUploadForm(forms.Form):
    key = forms.CharField(
        max_length=128,
        help_text="lower-case name-version, e.g. my-data-v1",
        validators=[
            RegexValidator(DATASET_KEY_PATTERN, "lower-case name-version, e.g. my-data-v1")
        ],
    )
    file = forms.FileField(
        help_text="JSONL, one record per line: prompt/completion, chat messages, or reasoning "
        "traces (prompt, steps, final_answer)"
    )
    reasoning = forms.ChoiceField(
        choices=[
            (REASONING_INCLUDE, "train on the steps, then the answer"),
            (REASONING_OMIT, "train on the final answer alone"),
        ],
        initial=REASONING_INCLUDE,
        required=False,
        help_text="For reasoning traces only: what the completion is",
    )
