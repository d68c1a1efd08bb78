"""Operators' admin: read-mostly; writes go through the same services as the API."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from runs import authorization, services
from runs.models import (
    AliasMove,
    Dataset,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RunExport,
    Sweep,
    TunixRun,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpointState,
    WorkerHeartbeat,
)
from runs.services.registry import MAX_DESCRIPTION_CHARS


class DatasetAddForm(forms.ModelForm[Dataset]):
    upload = forms.FileField(help_text="JSONL: prompt/completion or chat messages records")

    class Meta:
        model = Dataset
        fields = ["key"]

    def _post_clean(self) -> None:
        # The instance is built by the service; skip ModelForm's model validation of the
        # fields the service fills in (format, sha256, counts).
        pass

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        key, upload = data.get("key"), data.get("upload")
        if key and upload:
            try:
                self.instance = services.dataset_import(
                    key=key, source=upload.chunks(), user=self.request_user
                )
            except services.ServiceError as exc:
                field = "key" if exc.field == "key" else "upload"
                raise ValidationError({field: exc.message}) from None
        return data

    request_user: Any = None


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin[Dataset]):
    list_display = ["key", "format", "record_count", "size_bytes", "created_at", "created_by"]
    list_filter = ["format"]
    search_fields = ["key"]
    readonly_fields = [
        "key",
        "format",
        "record_count",
        "size_bytes",
        "sha256",
        "file_path",
        "created_at",
        "created_by",
    ]

    def get_form(
        self, request: HttpRequest, obj: Dataset | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Dataset]]:
        if obj is None:
            # A class per request: the uploader is recorded without shared mutable state.
            return type(
                "DatasetAddFormForRequest", (DatasetAddForm,), {"request_user": request.user}
            )
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Dataset | None = None) -> list[str]:
        return [] if obj is None else list(self.readonly_fields)

    def get_fields(self, request: HttpRequest, obj: Dataset | None = None) -> tuple[str, ...]:
        return ("key", "upload") if obj is None else tuple(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Dataset, form: Any, change: bool) -> None:
        # dataset_import already wrote the row and the file during form validation.
        pass

    def has_change_permission(self, request: HttpRequest, obj: Dataset | None = None) -> bool:
        return False


@admin.register(TunixRun)
class TunixRunAdmin(admin.ModelAdmin[TunixRun]):
    list_display = [
        "id",
        "status",
        "mode",
        "algorithm",
        "dataset",
        "model_id",
        "queued_at",
        "started_at",
        "completed_at",
        "exit_code",
        "error_reason",
    ]
    list_filter = ["status", "mode", "algorithm", "dataset", "error_reason"]
    search_fields = ["model_id", "dataset__key"]
    search_help_text = "A run id, or part of a model id or dataset key"
    date_hierarchy = "queued_at"
    list_select_related = ["dataset"]
    show_full_result_count = False
    ordering = ["-queued_at", "-id"]
    readonly_fields = [
        "id",
        "dataset",
        "model_id",
        "mode",
        "algorithm",
        "status",
        "config",
        "queued_at",
        "started_at",
        "completed_at",
        "exit_code",
        "stdout",
        "stderr",
        "error_reason",
        "error_message",
        "attempt",
        "worker_id",
        "heartbeat_at",
        "timeout_seconds",
        "client_request_id",
        "request_fingerprint",
        "created_by",
        "base_export",
        "base_version",
        "sweep",
        "trial_number",
    ]

    actions = ["cancel"]

    @admin.action(description="Cancel the selected runs")
    def cancel(self, request: HttpRequest, queryset: QuerySet[TunixRun]) -> None:
        """Through the same service (and authorization policy) as the API and the pages."""
        cancelled, refused = 0, []
        for run_id in queryset.values_list("id", flat=True):
            try:
                services.run_cancel(run_id=run_id, user=request.user)
                cancelled += 1
            except services.ServiceError as exc:
                refused.append(f"{str(run_id)[:8]}: {exc.message}")
        self.message_user(request, f"{cancelled} run(s) cancelled.")
        if refused:
            self.message_user(request, "Not cancelled: " + "; ".join(refused), messages.WARNING)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[TunixRun], search_term: str
    ) -> tuple[QuerySet[TunixRun], bool]:
        try:
            return queryset.filter(id=UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Runs are launched through the API or the pages so they pass the same validation.
        return False

    def has_change_permission(self, request: HttpRequest, obj: TunixRun | None = None) -> bool:
        return False


@admin.register(RunExport)
class RunExportAdmin(admin.ModelAdmin[RunExport]):
    list_display = ["id", "run", "step", "weights", "status", "size_bytes", "created_at"]
    list_filter = ["status", "weights"]
    search_fields = ["=run__id", "sha256"]
    list_select_related = ["run"]
    readonly_fields = [f.name for f in RunExport._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Exports are asked for through the API, which checks the run and its checkpoints.
        return False

    def has_change_permission(self, request: HttpRequest, obj: RunExport | None = None) -> bool:
        return False


class SweepTrialInline(admin.TabularInline[TunixRun, Sweep]):
    """A sweep's trials, read-only: they are runs, changed only through the run's own admin
    actions and services."""

    model = TunixRun
    fk_name = "sweep"
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["trial_number"]
    fields = ["trial_number", "status", "error_reason", "config", "metrics", "started_at"]
    readonly_fields = ["trial_number", "status", "error_reason", "config", "metrics", "started_at"]
    verbose_name = "trial"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin[Sweep]):
    list_display = [
        "id",
        "status",
        "algorithm",
        "dataset",
        "metric",
        "direction",
        "n_trials",
        "concurrency",
        "sampler",
        "pruner",
        "best_run",
        "created_at",
        "completed_at",
    ]
    list_filter = ["status", "sampler", "pruner", "algorithm"]
    search_fields = ["=id", "model_id", "dataset__key"]
    list_select_related = ["dataset", "best_run"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Sweep._meta.fields]
    inlines = [SweepTrialInline]
    actions = ["cancel"]

    @admin.action(description="Cancel the selected sweeps (and their unfinished trials)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Sweep]) -> None:
        """Through the same service (and authorization policy) as the API."""
        cancelled, refused = 0, []
        for sweep_id in queryset.values_list("id", flat=True):
            try:
                services.sweep_cancel(sweep_id=sweep_id, user=request.user)
                cancelled += 1
            except services.ServiceError as exc:
                refused.append(f"{str(sweep_id)[:8]}: {exc.message}")
        self.message_user(request, f"{cancelled} sweep(s) cancelled.")
        if refused:
            self.message_user(request, "Not cancelled: " + "; ".join(refused), messages.WARNING)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Sweeps are started through the API, which checks them as it checks a run.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Sweep | None = None) -> bool:
        return False


# The model registry: read-only but for a model's description; deletions go through the
# registry's services, which refuse a version an alias or a run still uses.

VERSION_FIELDS = ("number", "sha256", "run", "step", "weights", "promoted_by", "promoted_at")


class ModelAliasInline(admin.TabularInline[ModelAlias, RegisteredModel]):
    model = ModelAlias
    extra = 0
    can_delete = False
    fields = ["name", "version", "updated_by", "updated_at"]
    readonly_fields = ["name", "version", "updated_by", "updated_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Aliases move through the API, which records every move.
        return False


class ModelVersionInline(admin.TabularInline[ModelVersion, RegisteredModel]):
    model = ModelVersion
    extra = 0
    can_delete = False
    show_change_link = True
    fields = VERSION_FIELDS
    readonly_fields = VERSION_FIELDS
    ordering = ["-number"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RegisteredModelForm(forms.ModelForm[RegisteredModel]):
    class Meta:
        model = RegisteredModel
        fields = ["description"]

    def clean_description(self) -> str:
        description: str = self.cleaned_data.get("description") or ""
        limit = MAX_DESCRIPTION_CHARS
        if len(description) > limit:
            raise ValidationError(f"at most {limit} characters ({len(description)} given)")
        return description


def _refused(request: HttpRequest, admin_: admin.ModelAdmin[Any], refused: list[str]) -> None:
    if refused:
        admin_.message_user(request, "Not deleted: " + "; ".join(refused), messages.ERROR)


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin[RegisteredModel]):
    form = RegisteredModelForm
    list_display = ["name", "latest_number", "created_by", "created_at", "updated_at"]
    search_fields = ["name"]
    fields = ["name", "description", "latest_number", "created_by", "created_at", "updated_at"]
    readonly_fields = ["name", "latest_number", "created_by", "created_at", "updated_at"]
    inlines = [ModelAliasInline, ModelVersionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A model is created by its first promotion.
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: RegisteredModel | None = None
    ) -> bool:
        allowed = super().has_change_permission(request, obj)
        return allowed and authorization.can_manage_registry(request.user)

    def has_delete_permission(
        self, request: HttpRequest, obj: RegisteredModel | None = None
    ) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and authorization.can_manage_registry(request.user)

    def save_model(
        self, request: HttpRequest, obj: RegisteredModel, form: Any, change: bool
    ) -> None:
        services.registry_model_update(
            user=request.user, model_name=obj.name, description=obj.description
        )

    def delete_model(self, request: HttpRequest, obj: RegisteredModel) -> None:
        services.registry_model_delete(user=request.user, model_name=obj.name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[RegisteredModel]) -> None:
        refused = []
        for model in queryset:
            try:
                services.registry_model_delete(user=request.user, model_name=model.name)
            except services.ServiceError as exc:
                refused.append(exc.message)
        _refused(request, self, refused)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin[ModelVersion]):
    list_display = ["model", "number", "weights", "step", "run", "promoted_by", "promoted_at"]
    list_filter = ["model", "weights", "algorithm"]
    search_fields = ["model__name", "sha256", "=run__id", "dataset_key"]
    search_help_text = "A model name, a sha256, a run id or a dataset key"
    list_select_related = ["model", "run", "promoted_by"]
    readonly_fields = [f.name for f in ModelVersion._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Versions are promoted through the API, which checks the run and its export.
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        allowed = super().has_delete_permission(request, obj)
        return allowed and authorization.can_manage_registry(request.user)

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """The confirmation page refuses what registry_version_delete would, with its
        reasons, instead of the rows that hold the version."""
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        reasons = []
        for version in objs:
            reason = services.registry_version_in_use(version=version)
            if reason:
                reasons.append(f"version {version.number} of {version.model.name}: {reason}")
        return deleted, counts, perms_needed, reasons or protected

    def delete_model(self, request: HttpRequest, obj: ModelVersion) -> None:
        services.registry_version_delete(
            user=request.user, model_name=obj.model.name, number=obj.number
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        refused = []
        for version in queryset.select_related("model"):
            try:
                services.registry_version_delete(
                    user=request.user, model_name=version.model.name, number=version.number
                )
            except services.ServiceError as exc:
                refused.append(exc.message)
        _refused(request, self, refused)


@admin.register(AliasMove)
class AliasMoveAdmin(admin.ModelAdmin[AliasMove]):
    list_display = ["model", "alias", "from_number", "to_number", "moved_by", "moved_at"]
    list_filter = ["model", "alias"]
    search_fields = ["model__name", "alias"]
    list_select_related = ["model", "moved_by"]
    readonly_fields = [f.name for f in AliasMove._meta.fields]

    # The log is written by the alias services only, and kept.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AliasMove | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AliasMove | None = None) -> bool:
        return False


class WebhookAttemptInline(admin.TabularInline[WebhookAttempt, WebhookDelivery]):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ["number", "attempted_at", "status_code", "latency_ms", "error"]
    readonly_fields = ["number", "attempted_at", "status_code", "latency_ms", "error"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin[WebhookDelivery]):
    list_display = [
        "id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event_type"]
    search_fields = ["=run__id", "endpoint"]
    date_hierarchy = "created_at"
    inlines = [WebhookAttemptInline]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(WebhookEndpointState)
class WebhookEndpointStateAdmin(admin.ModelAdmin[WebhookEndpointState]):
    list_display = ["url", "disabled_at", "reason"]
    actions = ["enable"]

    @admin.action(description="Enable the selected endpoints again")
    def enable(self, request: HttpRequest, queryset: QuerySet[WebhookEndpointState]) -> None:
        for state in queryset:
            services.webhook_endpoint_enable(url=state.url)
        self.message_user(request, f"{queryset.count()} endpoint(s) enabled.")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin[WorkerHeartbeat]):
    list_display = ["worker_id", "host", "pid", "resource_class", "started_at", "seen_at"]
    readonly_fields = [
        "worker_id",
        "host",
        "pid",
        "resource_class",
        "devices",
        "started_at",
        "seen_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Workers write their own rows; an empty add form could only fail (pid is required).
        return False
