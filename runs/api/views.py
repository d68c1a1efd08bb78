"""Thin API views: parse, call a service or selector, render."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import FileResponse, HttpRequest
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import permissions, status
from rest_framework import serializers as drf_serializers
from rest_framework.exceptions import (
    APIException,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from runs import artifacts, model_catalog, selectors, services
from runs.api.serializers import (
    DatasetSerializer,
    DatasetUploadSerializer,
    RunAcceptedSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunListItemSerializer,
    RunListQuerySerializer,
    RunPaginationSerializer,
    RunStatusSerializer,
    accepted_item,
    list_item,
)
from runs.models import TunixRun

UPLOAD_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the other form fields


class PayloadTooLarge(APIException):
    status_code = 413
    default_detail = "request body too large"
    default_code = "payload_too_large"


PROBLEM = OpenApiResponse(OpenApiTypes.OBJECT, description="RFC 9457 problem details")


class HasModelPermission(permissions.BasePermission):
    """Writes need a model permission (e.g. runs.add_tunixrun); reads need a login."""

    perms_by_method: dict[str, str] = {}

    def has_permission(self, request: HttpRequest, view: Any) -> bool:
        perm = self.perms_by_method.get(request.method or "")
        return perm is None or bool(request.user and request.user.has_perm(perm))


class CanCreateRuns(HasModelPermission):
    perms_by_method = {"POST": "runs.add_tunixrun"}


class CanUploadDatasets(HasModelPermission):
    perms_by_method = {"POST": "runs.add_dataset"}


def _run_or_404(request: Request, run_id: str) -> TunixRun:
    """The run, if this user may see it; someone else's run is as absent as a missing one."""
    run = selectors.run_get(run_id=run_id, owner=selectors.visible_owner(request.user))
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run


def _run_url(request: Request, run_id: object) -> str:
    return request.build_absolute_uri(reverse("api:run-detail", kwargs={"run_id": run_id}))


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    location=OpenApiParameter.HEADER,
    required=False,
    description="Retry-safe key: the same key and body return the first run (or 422 if the "
    "body differs). Same as client_request_id in the body.",
)


class RunSubmitView(APIView):
    permission_classes = [permissions.IsAuthenticated, CanCreateRuns]

    @extend_schema(
        operation_id="run_submit",
        request=RunCreateSerializer,
        parameters=[
            OpenApiParameter(
                "mode",
                str,
                enum=["sync", "async"],
                description="sync (default): execute before answering; async: enqueue for a "
                "worker and answer 202 at once",
            ),
            IDEMPOTENCY_HEADER,
        ],
        responses={
            201: RunDetailSerializer,
            202: RunAcceptedSerializer,
            400: PROBLEM,
            401: PROBLEM,
            403: PROBLEM,
            422: PROBLEM,
        },
    )
    def post(self, request: Request) -> Response:
        mode = request.query_params.get("mode", "sync")
        if mode not in {"sync", "async"}:
            raise ValidationError({"mode": [f"unsupported mode {mode!r}; use sync or async"]})
        serializer = RunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        kwargs = serializer.service_kwargs()
        header_key = request.headers.get("Idempotency-Key")
        if header_key is not None:
            if not 1 <= len(header_key) <= 128:
                raise ValidationError({"Idempotency-Key": ["must be 1 to 128 characters"]})
            if kwargs["client_request_id"] not in (None, header_key):
                raise ValidationError(
                    {"client_request_id": ["differs from the Idempotency-Key header"]}
                )
            kwargs["client_request_id"] = header_key
        if mode == "async":
            submission = services.run_submit(user=request.user, enqueue=True, **kwargs)
            status_url = request.build_absolute_uri(
                reverse("api:run-status", kwargs={"run_id": submission.run.id})
            )
            body = accepted_item(submission.run, status_url)
            code: int = status.HTTP_202_ACCEPTED
        else:
            submission = services.run_sync(user=request.user, **kwargs)
            body = RunDetailSerializer(submission.run).data
            code = status.HTTP_201_CREATED
        headers = {"Location": _run_url(request, submission.run.id)}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status=code, headers=headers)


@functools.lru_cache(maxsize=1024)
def _list_query(items: tuple[tuple[str, str], ...]) -> Mapping[str, Any]:
    """Validated list parameters. Pollers repeat the same few queries, and a serializer costs a
    deep copy of its fields per request, so valid answers are remembered (errors raise, and are
    not)."""
    query = RunListQuerySerializer(data=dict(items))
    query.is_valid(raise_exception=True)
    return MappingProxyType(dict(query.validated_data))


class RunListView(APIView):
    @extend_schema(
        operation_id="run_list",
        parameters=[RunListQuerySerializer],
        responses={
            200: inline_serializer(
                "RunList",
                fields={
                    "data": RunListItemSerializer(many=True),
                    "pagination": RunPaginationSerializer(),
                },
            ),
            400: PROBLEM,
            401: PROBLEM,
        },
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.dict()
        if api_settings.URL_FORMAT_OVERRIDE:
            # DRF's ?format=json (the browsable API links to it) picks a renderer, not a filter.
            raw.pop(api_settings.URL_FORMAT_OVERRIDE, None)
        params = _list_query(tuple(sorted(raw.items())))
        filters = selectors.RunFilters(
            status=params.get("status"),
            dataset_key=params.get("dataset_key"),
            mode=params.get("mode"),
            created_by_id=selectors.visible_owner(request.user),
        )
        try:
            page = selectors.run_list_rows(
                filters=filters,
                limit=params["limit"],
                cursor=params.get("cursor"),
                offset=params["offset"] if not params.get("cursor") else 0,
            )
        except selectors.InvalidCursor as exc:
            raise ValidationError({"cursor": [str(exc)]}) from None
        next_url = None
        if page.next_cursor:
            kept = {k: v for k, v in request.query_params.items() if k not in {"cursor", "offset"}}
            next_url = request.build_absolute_uri(
                f"{request.path}?{urlencode({**kept, 'cursor': page.next_cursor})}"
            )
        return Response(
            {
                "data": [list_item(run) for run in page.items],
                "pagination": {
                    "limit": params["limit"],
                    "next_cursor": page.next_cursor,
                    "next": next_url,
                },
            }
        )


class RunDetailView(APIView):
    @extend_schema(operation_id="run_detail", responses={200: RunDetailSerializer, 404: PROBLEM})
    def get(self, request: Request, run_id: str) -> Response:
        run = _run_or_404(request, run_id)
        return Response(RunDetailSerializer(run).data)


class ArtifactTooLarge(APIException):
    status_code = 413
    default_detail = "artifact too large to download through the API"
    default_code = "artifact_too_large"


def _artifact_item(request: Request, run_id: object, item: artifacts.Artifact) -> dict[str, Any]:
    small = item.size_bytes <= settings.TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES
    path = reverse("api:run-artifact", kwargs={"run_id": run_id, "name": item.path})
    return {
        "path": item.path,
        "size_bytes": item.size_bytes,
        "modified_at": item.modified_at.isoformat().replace("+00:00", "Z"),
        "download_url": request.build_absolute_uri(path) if small else None,
    }


class RunArtifactListView(APIView):
    @extend_schema(
        operation_id="run_artifacts",
        responses={
            200: inline_serializer(
                "RunArtifacts",
                fields={
                    "data": inline_serializer(
                        "RunArtifact",
                        fields={
                            "path": drf_serializers.CharField(),
                            "size_bytes": drf_serializers.IntegerField(),
                            "modified_at": drf_serializers.DateTimeField(),
                            "download_url": drf_serializers.CharField(
                                allow_null=True,
                                help_text="null when the file is larger than the API serves",
                            ),
                        },
                        many=True,
                    ),
                    "truncated": drf_serializers.BooleanField(),
                },
            ),
            404: PROBLEM,
        },
    )
    def get(self, request: Request, run_id: str) -> Response:
        run = _run_or_404(request, run_id)
        found, truncated = artifacts.list_artifacts(run)
        items = [_artifact_item(request, run.id, item) for item in found]
        return Response({"data": items, "truncated": truncated})


class RunArtifactView(APIView):
    @extend_schema(
        operation_id="run_artifact_download",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: PROBLEM,
            413: PROBLEM,
        },
    )
    def get(self, request: Request, run_id: str, name: str) -> FileResponse:
        run = _run_or_404(request, run_id)
        try:
            path = artifacts.artifact_path(run, name)
        except FileNotFoundError:
            raise NotFound(f"run {run.id} has no artifact {name!r}") from None
        size = path.stat().st_size
        if size > settings.TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES:
            raise ArtifactTooLarge(
                f"{name} is {size} bytes; the API serves artifacts up to "
                f"{settings.TUNIX_ARTIFACT_DOWNLOAD_MAX_BYTES} bytes. Copy larger ones from the "
                "artifacts directory on the worker host."
            )
        return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)


def _etag(payload: object) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    return f'W/"{digest.hexdigest()[:32]}"'


class RunStatusView(APIView):
    @extend_schema(
        operation_id="run_status",
        parameters=[
            OpenApiParameter(
                "If-None-Match",
                str,
                location=OpenApiParameter.HEADER,
                required=False,
                description="ETag of the last answer: 304 while nothing changed",
            )
        ],
        responses={200: RunStatusSerializer, 304: None, 404: PROBLEM},
    )
    def get(self, request: Request, run_id: str) -> Response:
        row = selectors.run_status(run_id=run_id, owner=selectors.visible_owner(request.user))
        if row is None:
            raise NotFound(f"no run {run_id}")
        data = RunStatusSerializer(row).data
        etag = _etag(data)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(data, headers=headers)


class RunCancelView(APIView):
    @extend_schema(
        operation_id="run_cancel",
        request=None,
        responses={200: RunStatusSerializer, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = _run_or_404(request, run_id)
        user = request.user
        if run.created_by_id != user.pk and not user.has_perm("runs.change_tunixrun"):
            raise PermissionDenied("only the run's creator or an operator can cancel it")
        cancelled = services.run_cancel(run_id=run.id)
        row = selectors.run_status(run_id=cancelled.id)
        return Response(RunStatusSerializer(row).data)


class ModelListView(APIView):
    @extend_schema(
        operation_id="model_list",
        responses={
            200: inline_serializer(
                "ModelEntry",
                {
                    "id": drf_serializers.CharField(),
                    "family": drf_serializers.CharField(),
                    "description": drf_serializers.CharField(),
                    "preset": drf_serializers.BooleanField(
                        help_text="true: random weights, needs no checkpoint"
                    ),
                    "default_learning_rate": drf_serializers.FloatField(),
                },
                many=True,
            )
        },
        description="Models local mode trains with the built-in Tunix trainer. A worker host "
        "needs a real model's checkpoint in TUNIX_MODELS_DIR/<id> (or TUNIX_MODEL_DOWNLOAD=1).",
    )
    def get(self, request: Request) -> Response:
        return Response(
            [
                {
                    "id": entry.id,
                    "family": entry.family,
                    "description": entry.description,
                    "preset": entry.is_preset,
                    "default_learning_rate": entry.learning_rate,
                }
                for entry in model_catalog.CATALOG.values()
            ]
        )


class DatasetListView(APIView):
    permission_classes = [permissions.IsAuthenticated, CanUploadDatasets]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(operation_id="dataset_list", responses={200: DatasetSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(DatasetSerializer(selectors.dataset_list(), many=True).data)

    @extend_schema(
        operation_id="dataset_upload",
        request={"multipart/form-data": DatasetUploadSerializer},
        responses={201: DatasetSerializer, 400: PROBLEM, 409: PROBLEM, 413: PROBLEM},
    )
    def post(self, request: Request) -> Response:
        # Refuse an oversized upload from its header, before Django spools the body to disk.
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
        if declared > settings.TUNIX_DATASET_MAX_BYTES + UPLOAD_OVERHEAD_BYTES:
            raise PayloadTooLarge(
                f"upload of {declared} bytes exceeds the limit of "
                f"{settings.TUNIX_DATASET_MAX_BYTES} bytes"
            )
        serializer = DatasetUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        dataset = services.dataset_import(
            key=serializer.validated_data["key"], source=upload.chunks(), user=request.user
        )
        location = request.build_absolute_uri(
            reverse("api:dataset-detail", kwargs={"key": dataset.key})
        )
        return Response(
            DatasetSerializer(dataset).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )


class DatasetDetailView(APIView):
    @extend_schema(operation_id="dataset_detail", responses={200: DatasetSerializer, 404: PROBLEM})
    def get(self, request: Request, key: str) -> Response:
        dataset = selectors.dataset_get(key=key)
        if dataset is None:
            raise NotFound(f"no dataset {key!r}")
        return Response(DatasetSerializer(dataset).data)


@extend_schema(exclude=True)
class UnknownPathView(APIView):
    """Any other path under /api/tunix/: a problem+json 404 instead of Django's HTML page."""

    def _not_found(self, request: Request, path: str) -> Response:
        hint = ""
        if request.path.endswith("/"):
            hint = f"; paths have no trailing slash: {request.path.rstrip('/')}"
        raise NotFound(f"no such endpoint {request.path}{hint}")

    get = post = put = patch = delete = _not_found
