"""Exports of a run's checkpoint (parse, call runs/services/exports.py, render); RunViewSet
routes them under tunix/runs/<run_id>/exports."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.urls import reverse
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request

from runs import archives, selectors, services
from runs.api.serializers import StrictSerializer
from runs.models import ExportStatus, ExportWeights, RunExport


class ExportRequestSerializer(StrictSerializer):
    step = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="The checkpoint's step; default: the run's newest complete checkpoint",
    )
    weights = serializers.ChoiceField(
        choices=ExportWeights.choices,
        default=ExportWeights.MERGED,
        help_text="merged: full weights, a LoRA run's adapters merged in (model.safetensors); "
        "adapter: a LoRA run's adapters alone, in PEFT's format (adapter_model.safetensors)",
    )


class ExportSerializer(serializers.Serializer[Any]):
    export_id = serializers.UUIDField()
    run_id = serializers.UUIDField()
    step = serializers.IntegerField()
    weights = serializers.ChoiceField(choices=ExportWeights.choices)
    status = serializers.ChoiceField(choices=ExportStatus.choices)
    directory = serializers.CharField(help_text="in the run's artifacts")
    sha256 = serializers.CharField(help_text="the export's content address; empty until done")
    size_bytes = serializers.IntegerField(allow_null=True)
    files = serializers.ListField(child=serializers.DictField())
    error_reason = serializers.CharField()
    error_message = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    url = serializers.CharField()
    archive_url = serializers.CharField(
        allow_null=True, help_text="the export as one tar, streamed; null until completed"
    )


def export_item(request: Request, export: RunExport) -> dict[str, Any]:
    kwargs = {"run_id": export.run_id, "export_id": export.id}
    done = export.status == ExportStatus.COMPLETED
    return {
        "export_id": str(export.id),
        "run_id": str(export.run_id),
        "step": export.step,
        "weights": export.weights,
        "status": export.status,
        "directory": export.directory,
        "sha256": export.sha256,
        "size_bytes": export.size_bytes,
        "files": export.files,
        "error_reason": export.error_reason,
        "error_message": export.error_message,
        "created_at": export.created_at,
        "started_at": export.started_at,
        "completed_at": export.completed_at,
        "url": request.build_absolute_uri(reverse("api:run-export", kwargs=kwargs)),
        "archive_url": (
            request.build_absolute_uri(reverse("api:run-export-archive", kwargs=kwargs))
            if done
            else None
        ),
    }


def export_or_404(request: Request, run_id: str, export_id: str) -> RunExport:
    export = selectors.export_get(run_id=run_id, export_id=export_id, owner=_owner(request))
    if export is None:
        raise NotFound(f"run {run_id} has no export {export_id}")
    return export


def _owner(request: Request) -> int | None:
    from runs import authorization

    return authorization.visible_owner(request.user)


def archive_response(export: RunExport) -> StreamingHttpResponse:
    """The export's files as one tar, streamed: any size, never whole in memory."""
    if export.status != ExportStatus.COMPLETED:
        raise NotFound(f"export {export.id} is {export.status}: no archive yet")
    files = services.export_files(export)
    name = f"{str(export.run_id)[:8]}-step{export.step}-{export.weights}"
    members = [(f"{name}/{path}", full) for path, full in files]
    response = StreamingHttpResponse(archives.tar_stream(members), content_type="application/x-tar")
    response["Content-Length"] = str(archives.tar_size(members))
    response["Content-Disposition"] = f'attachment; filename="{name}.tar"'
    return response
