"""Thin API views: parse, call a service or selector, render.

ViewSets, routed by runs/api/urls.py; each action keeps the operation id it has in the OpenAPI
schema."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from django.conf import settings
from django.http import FileResponse, HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import permissions, routers, viewsets
from rest_framework import serializers as drf_serializers
from rest_framework import status as http_status
from rest_framework.decorators import action
from rest_framework.exceptions import (
    APIException,
    NotFound,
    ValidationError,
)
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from runs import artifacts, authorization, model_catalog, selectors, services
from runs.api import compare as compare_api
from runs.api import exports as exports_api
from runs.api import renderers
from runs.api import samples as samples_api
from runs.api.parsers import require_content_length
from runs.api.serializers import (
    DatasetSerializer,
    DatasetUploadSerializer,
    RunAcceptedSerializer,
    RunCreateSerializer,
    RunDetailSerializer,
    RunListQuerySerializer,
    RunListSerializer,
    RunStatusSerializer,
    accepted_item,
    list_item,
    plain_run_request,
    status_item,
)
from runs.models import TunixRun

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission

UPLOAD_OVERHEAD_BYTES = 64 * 1024  # multipart boundaries and the other form fields


class PayloadTooLarge(APIException):
    status_code = 413
    default_detail = "request body too large"
    default_code = "payload_too_large"


PROBLEM = OpenApiResponse(OpenApiTypes.OBJECT, description="RFC 9457 problem details")


class PolicyPermission(permissions.BasePermission):
    """Writes ask a rule of the authorization policy (runs/authorization.py), looked up at each
    request so that module stays the one place it is defined; reads need a login."""

    rule_by_method: dict[str, str] = {}

    def has_permission(self, request: HttpRequest, view: Any) -> bool:
        rule = self.rule_by_method.get(request.method or "")
        return rule is None or bool(getattr(authorization, rule)(request.user))


class CanCreateRuns(PolicyPermission):
    rule_by_method = {"POST": "can_launch"}


class CanUploadDatasets(PolicyPermission):
    rule_by_method = {"POST": "can_upload_datasets"}


def _run_or_404(request: Request, run_id: str) -> TunixRun:
    """The run, if this user may see it; someone else's run is as absent as a missing one."""
    run = selectors.run_get(run_id=run_id, owner=authorization.visible_owner(request.user))
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


@functools.lru_cache(maxsize=1024)
def _list_query(items: tuple[tuple[str, str], ...]) -> Mapping[str, Any]:
    """Validated list parameters. Pollers repeat the same few queries, and a serializer costs a
    deep copy of its fields per request, so valid answers are remembered (errors raise, and are
    not)."""
    query = RunListQuerySerializer(data=dict(items))
    query.is_valid(raise_exception=True)
    return MappingProxyType(dict(query.validated_data))


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


def _etag(payload: object) -> str:
    digest = hashlib.sha256(renderers.dumps(payload, option=orjson.OPT_SORT_KEYS))
    return f'W/"{digest.hexdigest()[:32]}"'


class RunViewSet(viewsets.ViewSet):
    # Runs: the list, one run, its status, cancelling it and its artifacts, routed under
    # tunix/runs. Submitting keeps the seed's own path, POST tunix/run (see urls.py).
    # (No docstring: drf-spectacular would make it the description of every operation.)

    # The router builds tunix/runs/<str:run_id>: the name every reverse() of a run link uses.
    lookup_field = "id"
    lookup_url_kwarg = "run_id"

    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        # Launching asks the policy; every other action (cancel included: the service checks
        # who may cancel which run) needs only the login the default classes ask for.
        if self.action == "submit":
            return [permissions.IsAuthenticated(), CanCreateRuns()]
        return super().get_permissions()

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
            411: PROBLEM,
            422: PROBLEM,
        },
    )
    def submit(self, request: Request) -> Response:
        require_content_length(request.META)
        mode = request.query_params.get("mode", "sync")
        if mode not in {"sync", "async"}:
            raise ValidationError({"mode": [f"unsupported mode {mode!r}; use sync or async"]})
        run_request = plain_run_request(request.data)
        if run_request is None:
            serializer = RunCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            run_request = serializer.run_request()
        header_key = request.headers.get("Idempotency-Key")
        if header_key is not None:
            if not 1 <= len(header_key) <= 128:
                raise ValidationError({"Idempotency-Key": ["must be 1 to 128 characters"]})
            if run_request.client_request_id not in (None, header_key):
                raise ValidationError(
                    {"client_request_id": ["differs from the Idempotency-Key header"]}
                )
            run_request = run_request.with_key(header_key)
        if mode == "async":
            submission = services.run_submit(user=request.user, request=run_request, enqueue=True)
        else:
            submission = services.run_sync(user=request.user, request=run_request)
        run = submission.run
        # The run records how it was first submitted: a replay answers with that request's
        # status code and body shape, whatever ?mode the replay asks for.
        if run.submitted_async:
            status_url = request.build_absolute_uri(
                reverse("api:run-status", kwargs={"run_id": run.id})
            )
            body = accepted_item(run, status_url)
            code: int = http_status.HTTP_202_ACCEPTED
        else:
            body = RunDetailSerializer(run).data
            code = http_status.HTTP_201_CREATED
        headers = {"Location": _run_url(request, run.id)}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status=code, headers=headers)

    @extend_schema(
        operation_id="run_list",
        parameters=[RunListQuerySerializer],
        responses={
            200: RunListSerializer,
            400: PROBLEM,
            401: PROBLEM,
        },
    )
    def list(self, request: Request) -> Response:
        raw = request.query_params.dict()
        if api_settings.URL_FORMAT_OVERRIDE:
            # DRF's ?format=json (the browsable API links to it) picks a renderer, not a filter.
            raw.pop(api_settings.URL_FORMAT_OVERRIDE, None)
        params = _list_query(tuple(sorted(raw.items())))
        if params.get("sort"):
            return self._ranking(request, params)
        filters = selectors.RunFilters(
            status=params.get("status"),
            dataset_key=params.get("dataset_key"),
            mode=params.get("mode"),
            algorithm=params.get("algorithm"),
            created_by_id=authorization.visible_owner(request.user),
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
        return Response(
            {
                "data": [list_item(run) for run in page.items],
                "pagination": self._pagination(request, params["limit"], page.next_cursor),
            }
        )

    def _ranking(self, request: Request, params: Mapping[str, Any]) -> Response:
        try:
            ranking = selectors.run_ranking(
                dataset_key=params["dataset_key"],
                metric=params["sort"],
                owner=authorization.visible_owner(request.user),
                limit=params["limit"],
                cursor=params.get("cursor"),
            )
        except selectors.InvalidCursor as exc:
            raise ValidationError({"cursor": [str(exc)]}) from None
        return Response(
            {
                "data": [
                    {**list_item(selectors.RunRow.from_run(r.run)), "metrics": r.run.metrics}
                    for r in ranking.items
                ],
                "pagination": self._pagination(request, params["limit"], ranking.next_cursor),
            }
        )

    def _pagination(self, request: Request, limit: int, cursor: str | None) -> dict[str, Any]:
        next_url = None
        if cursor:
            kept = {k: v for k, v in request.query_params.items() if k not in {"cursor", "offset"}}
            next_url = request.build_absolute_uri(
                f"{request.path}?{urlencode({**kept, 'cursor': cursor})}"
            )
        return {"limit": limit, "next_cursor": cursor, "next": next_url}

    @extend_schema(operation_id="run_detail", responses={200: RunDetailSerializer, 404: PROBLEM})
    def retrieve(self, request: Request, run_id: str) -> Response:
        run = _run_or_404(request, run_id)
        return Response(RunDetailSerializer(run).data)

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
    # Below extend_schema: @action sets the function's view arguments, where extend_schema then
    # adds the schema (the other order loses it).
    @action(detail=True)
    def status(self, request: Request, run_id: str) -> Response:
        row = selectors.run_status(run_id=run_id, owner=authorization.visible_owner(request.user))
        if row is None:
            raise NotFound(f"no run {run_id}")
        data = status_item(row)
        etag = _etag(data)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
            return Response(status=http_status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(data, headers=headers)

    @extend_schema(
        operation_id="run_cancel",
        request=None,
        responses={200: RunStatusSerializer, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, run_id: str) -> Response:
        cancelled = services.run_cancel(run_id=run_id, user=request.user)
        row = selectors.run_status(run_id=cancelled.id)
        assert row is not None  # just cancelled: runs are never deleted
        return Response(status_item(row))

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
    @action(detail=True)
    def artifacts(self, request: Request, run_id: str) -> Response:
        run = _run_or_404(request, run_id)
        found, truncated = artifacts.list_artifacts(run)
        items = [_artifact_item(request, run.id, item) for item in found]
        return Response({"data": items, "truncated": truncated})

    @extend_schema(
        operation_id="run_artifact_download",
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            404: PROBLEM,
            413: PROBLEM,
        },
    )
    # path:, not str: an artifact's name has directories in it (checkpoints/20/...).
    @action(detail=True, url_path="artifacts/<path:name>", url_name="artifact")
    def artifact(self, request: Request, run_id: str, name: str) -> FileResponse:
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

    # Exports: a checkpoint as a Hugging Face model directory, written by a worker.

    @extend_schema(
        methods=["GET"],
        operation_id="run_exports",
        request=None,
        responses={200: exports_api.ExportSerializer(many=True), 404: PROBLEM},
        description="The run's exports, newest first.",
    )
    @extend_schema(
        methods=["POST"],
        operation_id="run_export_create",
        request=exports_api.ExportRequestSerializer,
        responses={
            200: exports_api.ExportSerializer,
            202: exports_api.ExportSerializer,
            400: PROBLEM,
            403: PROBLEM,
            404: PROBLEM,
            409: PROBLEM,
        },
        description="Export a checkpoint (the newest by default) on a worker: 202 with the "
        "export to poll, or 200 with the live export of that checkpoint and format asked for "
        "before.",
    )
    @action(detail=True, methods=["get", "post"])
    def exports(self, request: Request, run_id: str) -> Response:
        if request.method == "GET":
            run = _run_or_404(request, run_id)
            items = [exports_api.export_item(request, e) for e in selectors.export_list(run=run)]
            return Response(items)
        body = exports_api.ExportRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        export, created = services.export_request(
            user=request.user,
            run_id=run_id,
            step=body.validated_data.get("step"),
            weights=body.validated_data["weights"],
        )
        item = exports_api.export_item(request, export)
        code = http_status.HTTP_202_ACCEPTED if created else http_status.HTTP_200_OK
        return Response(item, status=code, headers={"Location": item["url"]})

    @extend_schema(
        operation_id="run_export",
        responses={200: exports_api.ExportSerializer, 404: PROBLEM},
    )
    @action(detail=True, url_path="exports/<str:export_id>", url_name="export")
    def export(self, request: Request, run_id: str, export_id: str) -> Response:
        export = exports_api.export_or_404(request, run_id, export_id)
        return Response(exports_api.export_item(request, export))

    @extend_schema(
        operation_id="run_export_archive",
        responses={(200, "application/x-tar"): OpenApiTypes.BINARY, 404: PROBLEM},
        description="The completed export's files as one uncompressed tar, streamed (no size "
        "limit: unlike an artifact download, it never sits in memory).",
    )
    @action(detail=True, url_path="exports/<str:export_id>/archive", url_name="export-archive")
    def export_archive(
        self, request: Request, run_id: str, export_id: str
    ) -> StreamingHttpResponse:
        export = exports_api.export_or_404(request, run_id, export_id)
        return exports_api.archive_response(export)

    # Try it: a prompt completed by the run's checkpoint, on a worker (runs/api/samples.py).

    @extend_schema(
        methods=["GET"],
        operation_id="run_samples",
        request=None,
        parameters=[samples_api.SampleListQuerySerializer],
        responses={200: samples_api.SampleSerializer(many=True), 404: PROBLEM},
        description="The run's samples, newest first.",
    )
    @extend_schema(
        methods=["POST"],
        operation_id="run_sample_create",
        request=samples_api.SampleRequestSerializer,
        responses=samples_api.CREATE_RESPONSES,
        description=samples_api.CREATE_DESCRIPTION,
    )
    @action(detail=True, methods=["get", "post"])
    def samples(self, request: Request, run_id: str) -> Response:
        if request.method == "GET":
            run = _run_or_404(request, run_id)
            limit = samples_api.list_limit(request)
            found = selectors.sample_list(run=run, user=request.user, limit=limit)
            return Response([samples_api.sample_item(request, s) for s in found])
        return samples_api.request_sample(request, run_id=run_id)

    @extend_schema(
        operation_id="run_sample",
        responses={200: samples_api.SampleSerializer, 404: PROBLEM},
        description="One sample, to poll until its status is completed or failed.",
    )
    @action(detail=True, url_path="samples/<str:sample_id>", url_name="sample")
    def sample(self, request: Request, run_id: str, sample_id: str) -> Response:
        found = samples_api.run_sample_or_404(request, run_id, sample_id)
        return Response(samples_api.sample_item(request, found))

    # Comparing runs: list-level actions, so the router puts tunix/runs/compare... before the
    # tunix/runs/<run_id> pattern that would otherwise take "compare" for a run id.

    @extend_schema(
        operation_id="run_compare",
        parameters=[compare_api.IDS_PARAMETER],
        responses={200: compare_api.ComparisonSerializer, 400: PROBLEM, 404: PROBLEM},
        description="Runs side by side: their series, the settings that differ, and their "
        "final metrics with the best of each marked. An id this user may not see is a 404.",
    )
    @action(detail=False, url_path="compare", url_name="compare")
    def compare(self, request: Request) -> Response:
        compare_api.query(request, compare_api.CompareQuerySerializer)
        found = compare_api.comparison(request)
        return Response(
            compare_api.comparison_body(
                found,
                items_url=compare_api.url(request, "api:run-compare-items", found),
                csv_url=compare_api.url(request, "api:run-compare-items-csv", found),
            )
        )

    @extend_schema(
        operation_id="run_compare_items",
        parameters=[compare_api.IDS_PARAMETER, compare_api.CompareItemsQuerySerializer],
        responses={200: compare_api.CompareItemsSerializer, 400: PROBLEM, 404: PROBLEM},
        description="The runs' evaluation items side by side, matched by dataset line, "
        f"{selectors.ITEMS_PER_PAGE} a page. Runs of different datasets are a 400 naming ids.",
    )
    @action(detail=False, url_path="compare/items", url_name="compare-items")
    def compare_items(self, request: Request) -> Response:
        params = compare_api.query(request, compare_api.CompareItemsQuerySerializer)
        found = compare_api.comparison(request)
        items = compare_api.items(found, disagree=params["disagree"])
        page = items.page(params["page"])
        flag = {"disagree": 1} if params["disagree"] else {}

        def link(number: int | None) -> str | None:
            if number is None:
                return None
            return compare_api.url(request, "api:run-compare-items", found, **flag, page=number)

        return Response(
            compare_api.items_body(
                found, items, page, next_url=link(page.next), previous_url=link(page.previous)
            )
        )

    @extend_schema(
        operation_id="run_compare_items_csv",
        parameters=[compare_api.IDS_PARAMETER, compare_api.CompareCsvQuerySerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR,
                description="RFC 4180 CSV, every item on one row: line, prompt, reference, "
                "disagree, then each run's prediction and scores",
            ),
            400: PROBLEM,
            404: PROBLEM,
        },
    )
    @action(
        detail=False,
        url_path="compare/items.csv",
        url_name="compare-items-csv",
        renderer_classes=[compare_api.CSVRenderer],
    )
    def compare_items_csv(self, request: Request) -> Response:
        params = compare_api.query(request, compare_api.CompareCsvQuerySerializer)
        found = compare_api.comparison(request)
        items = compare_api.items(found, disagree=params["disagree"])
        return Response(
            compare_api.csv_rows(found, items),
            headers={"Content-Disposition": 'attachment; filename="compare-items.csv"'},
        )


class ModelCatalogViewSet(viewsets.ViewSet):
    # The models local mode can train (runs/model_catalog.py), at tunix/models. Not
    # "ModelViewSet": DRF's ModelViewSet is something else.

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
    def list(self, request: Request) -> Response:
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


class DatasetViewSet(viewsets.ViewSet):
    # The dataset registry: the list, an upload (multipart) and one dataset by its key.
    # (No docstring: drf-spectacular would make it the description of every operation.)

    # Uploads (the only POST) ask the policy; reads need the login.
    permission_classes = [permissions.IsAuthenticated, CanUploadDatasets]
    parser_classes = [MultiPartParser, FormParser]
    lookup_field = "key"

    @extend_schema(operation_id="dataset_list", responses={200: DatasetSerializer(many=True)})
    def list(self, request: Request) -> Response:
        return Response(DatasetSerializer(selectors.dataset_list(), many=True).data)

    @extend_schema(
        operation_id="dataset_upload",
        request={"multipart/form-data": DatasetUploadSerializer},
        responses={
            201: DatasetSerializer,
            400: PROBLEM,
            409: PROBLEM,
            411: PROBLEM,
            413: PROBLEM,
        },
    )
    def create(self, request: Request) -> Response:
        require_content_length(request.META)
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
            key=serializer.validated_data["key"],
            source=upload.chunks(),
            user=request.user,
            reasoning=serializer.validated_data["reasoning"],
        )
        location = request.build_absolute_uri(
            reverse("api:dataset-detail", kwargs={"key": dataset.key})
        )
        return Response(
            DatasetSerializer(dataset).data,
            status=http_status.HTTP_201_CREATED,
            headers={"Location": location},
        )

    @extend_schema(operation_id="dataset_detail", responses={200: DatasetSerializer, 404: PROBLEM})
    def retrieve(self, request: Request, key: str) -> Response:
        dataset = selectors.dataset_get(key=key)
        if dataset is None:
            raise NotFound(f"no dataset {key!r}")
        return Response(DatasetSerializer(dataset).data)


class ApiRootView(routers.APIRootView):
    """Tunix RT's API: runs, datasets and the model catalog. Runs are submitted with
    POST /api/tunix/run; the OpenAPI schema is at /api/schema/ and its docs at /api/docs/."""


@extend_schema(exclude=True)
class UnknownPathView(APIView):
    """Any other path under /api/tunix/: a problem+json 404 instead of Django's HTML page."""

    def _not_found(self, request: Request, path: str) -> Response:
        hint = ""
        if request.path.endswith("/"):
            hint = f"; paths have no trailing slash: {request.path.rstrip('/')}"
        raise NotFound(f"no such endpoint {request.path}{hint}")

    get = post = put = patch = delete = _not_found


_unknown_path_view = UnknownPathView.as_view()


@csrf_exempt
def unknown_path(request: HttpRequest, path: str) -> HttpResponseBase:
    """The catch-all route's view: UnknownPathView behind a plain function. The browsable API's
    breadcrumbs show every DRF view a shorter address resolves to, and /api/tunix/ (which only
    the catch-all matches) would appear as an "Unknown Path" crumb on every page."""
    return _unknown_path_view(request, path=path)
