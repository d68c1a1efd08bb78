"""Try-it samples through the API (parse, call runs/services/samples.py, render): a run's under
tunix/runs/<run_id>/samples (RunViewSet's actions), a registered version's under
tunix/registry/models/<model_name>/versions/<number>/samples (VersionSampleViewSet, routed by
runs/api/urls.py). Asking answers 202 with the sample to poll; a worker fills it in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework import status as http_status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from runs import selectors, services
from runs.api.serializers import StrictSerializer
from runs.models import FailureReason, ModelVersion, Sample, SampleStatus

PROBLEM = OpenApiResponse(OpenApiTypes.OBJECT, description="RFC 9457 problem details")
DEFAULT_LIMIT, MAX_LIMIT = 20, 100


class SampleRequestSerializer(StrictSerializer):
    # Blank and oversized prompts are the service's to refuse, with the limit in the message.
    prompt = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text="The text to complete; at most TUNIX_SAMPLE_MAX_PROMPT_CHARS (4000) characters",
    )
    max_new_tokens = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Tokens to generate, 1 to TUNIX_SAMPLE_MAX_NEW_TOKENS (512); default 64",
    )
    temperature = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="0 (the default) decodes greedily; up to 2 samples at that temperature",
    )
    step = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        help_text="A run's checkpoint step; default: its newest complete checkpoint "
        "(a registered version is sampled at its own step)",
    )
    seed = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Sampling seed (temperature > 0); default: a random one, recorded",
    )


class SampleListQuerySerializer(StrictSerializer):
    limit = serializers.IntegerField(
        required=False, default=DEFAULT_LIMIT, min_value=1, max_value=MAX_LIMIT
    )


class SampleSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=SampleStatus.choices)
    prompt = serializers.CharField()
    completion = serializers.CharField(help_text="empty until completed")
    max_new_tokens = serializers.IntegerField()
    temperature = serializers.FloatField()
    seed = serializers.IntegerField()
    step = serializers.IntegerField(allow_null=True, help_text="the checkpoint step sampled")
    load_seconds = serializers.FloatField(
        allow_null=True, help_text="loading the weights and compiling the sampler"
    )
    generate_seconds = serializers.FloatField(allow_null=True, help_text="generating")
    seconds = serializers.FloatField(allow_null=True, help_text="asked to answered")
    error_reason = serializers.ChoiceField(choices=FailureReason.choices)
    error_message = serializers.CharField()
    url = serializers.CharField(help_text="this sample, to poll")
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


def sample_url(request: Request, sample: Sample) -> str:
    if sample.run_id is not None:
        kwargs: dict[str, Any] = {"run_id": sample.run_id, "sample_id": sample.id}
        return request.build_absolute_uri(reverse("api:run-sample", kwargs=kwargs))
    version = sample.version
    assert version is not None  # the row's constraint: one of the two
    kwargs = {"model_name": version.model.name, "number": version.number, "sample_id": sample.id}
    return request.build_absolute_uri(reverse("api:registry-model-version-sample", kwargs=kwargs))


def sample_item(request: Request, sample: Sample) -> dict[str, Any]:
    return {
        "id": str(sample.id),
        "status": sample.status,
        "prompt": sample.prompt,
        "completion": sample.completion,
        "max_new_tokens": sample.max_new_tokens,
        "temperature": sample.temperature,
        "seed": sample.seed,
        "step": sample.step,
        "load_seconds": sample.load_seconds,
        "generate_seconds": sample.generate_seconds,
        "seconds": sample.seconds,
        "error_reason": sample.error_reason,
        "error_message": sample.error_message,
        "url": sample_url(request, sample),
        "created_at": sample.created_at,
        "completed_at": sample.completed_at,
    }


def list_limit(request: Request) -> int:
    query = SampleListQuerySerializer(data=dict(request.query_params.items()))
    query.is_valid(raise_exception=True)
    return int(query.validated_data["limit"])


def request_sample(request: Request, **source: Any) -> Response:
    """Parse the body, ask the service, answer 202 with the sample and where to poll it."""
    body = SampleRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    data: Mapping[str, Any] = body.validated_data
    sample = services.sample_request(
        user=request.user,
        prompt=data["prompt"],
        max_new_tokens=data.get("max_new_tokens"),
        temperature=data.get("temperature"),
        step=data.get("step"),
        seed=data.get("seed"),
        **source,
    )
    item = sample_item(request, sample)
    return Response(item, status=http_status.HTTP_202_ACCEPTED, headers={"Location": item["url"]})


def run_sample_or_404(request: Request, run_id: str, sample_id: str) -> Sample:
    sample = selectors.sample_get(sample_id=sample_id, user=request.user)
    if sample is None or str(sample.run_id) != _canonical(run_id):
        raise NotFound(f"run {run_id} has no sample {sample_id}")
    return sample


def _canonical(value: str) -> str:
    try:
        return str(UUID(str(value)))
    except ValueError:
        return ""


def version_or_404(model_name: str, number: int) -> ModelVersion:
    version = selectors.registry_version_get(model_name=model_name, number=number)
    if version is None:
        raise NotFound(f"no version {number} of model {model_name!r}")
    return version


CREATE_RESPONSES = {
    202: SampleSerializer,
    400: PROBLEM,
    403: PROBLEM,
    404: PROBLEM,
    409: PROBLEM,
}
CREATE_DESCRIPTION = (
    "Complete a prompt on a worker with the training stack: 202 with the sample, Location to "
    "poll. Refused: a blank or too long prompt, max_new_tokens or temperature out of range "
    "(400 naming the field); no completed checkpoint, or four samples of yours still waiting "
    "or running (409)."
)


class VersionSampleViewSet(viewsets.ViewSet):
    # A registered version's samples, routed by runs/api/urls.py under
    # tunix/registry/models/<model_name>/versions/<number>/samples.
    # (No docstring: drf-spectacular would make it the description of every operation.)

    @extend_schema(
        operation_id="version_samples",
        responses={200: SampleSerializer(many=True), 404: PROBLEM},
        parameters=[SampleListQuerySerializer],
        description="Your samples of the version (a user who sees every run: everyone's), "
        "newest first.",
    )
    def list(self, request: Request, model_name: str, number: int) -> Response:
        version = version_or_404(model_name, number)
        samples = selectors.sample_list(
            version=version, user=request.user, limit=list_limit(request)
        )
        return Response([sample_item(request, s) for s in samples])

    @extend_schema(
        operation_id="version_sample_create",
        request=SampleRequestSerializer,
        responses=CREATE_RESPONSES,
        description=CREATE_DESCRIPTION,
    )
    def create(self, request: Request, model_name: str, number: int) -> Response:
        version = version_or_404(model_name, number)
        return request_sample(request, version=version)

    @extend_schema(
        operation_id="version_sample",
        responses={200: SampleSerializer, 404: PROBLEM},
        description="One sample, to poll until its status is completed or failed.",
    )
    def retrieve(self, request: Request, model_name: str, number: int, sample_id: str) -> Response:
        version = version_or_404(model_name, number)
        sample = selectors.sample_get(sample_id=sample_id, user=request.user)
        if sample is None or sample.version_id != version.id:
            raise NotFound(f"version {number} of {model_name!r} has no sample {sample_id}")
        return Response(sample_item(request, sample))
