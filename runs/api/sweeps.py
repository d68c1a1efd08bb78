"""Hyperparameter sweeps' API (parse, call runs/services/sweeps.py, render), routed under
tunix/sweeps by runs/api/urls.py: the list, a new sweep, one sweep with its trials, cancel.

A sweep is seen as its runs are (runs/authorization.py); creating one needs the right to launch
runs, and cancelling it is its creator's or an operator's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_serializer,
)
from rest_framework import permissions, serializers, viewsets
from rest_framework import status as http_status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from runs import authorization, progress, selectors, services, tuning
from runs.api.serializers import RunCreateSerializer, StrictSerializer
from runs.api.views import CanCreateRuns
from runs.models import RunStatus, Sweep, SweepStatus

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission

PROBLEM = OpenApiResponse(OpenApiTypes.OBJECT, description="RFC 9457 problem details")
MAX_LIST_LIMIT = 100


# Bodies


class SweepCreateSerializer(StrictSerializer):
    base = serializers.JSONField(
        help_text="The run every trial starts from, as POST /api/tunix/run takes it (dataset_key, "
        "model_id, mode or dry_run, algorithm, timeout_seconds, and the hyperparameters that "
        "stay fixed); no client_request_id: each trial gets its own"
    )
    space = serializers.JSONField(
        help_text='The searched hyperparameters of the base\'s algorithm: {"<name>": {"low", '
        '"high", "log"?, "step"?}} for a range (float or integer, as the hyperparameter is) or '
        '{"<name>": {"choices": [...]}}; values outside a hyperparameter\'s range are refused'
    )
    metric = serializers.CharField(
        max_length=64,
        help_text="The final metric to optimise: one a run reports ("
        + ", ".join(progress.RESULT_KEYS)
        + ", and the algorithms' results)",
    )
    direction = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=16,
        help_text="minimize or maximize; default: lower is better for a loss or a time, higher "
        "for a score or a reward",
    )
    n_trials = serializers.IntegerField(
        help_text="Trials that end in all (completed, failed and pruned alike); at most "
        "TUNIX_SWEEP_MAX_TRIALS"
    )
    concurrency = serializers.IntegerField(
        default=1,
        help_text="Trials pending or running at once; at most TUNIX_SWEEP_MAX_CONCURRENCY",
    )
    sampler = serializers.CharField(
        default=tuning.DEFAULT_SAMPLER,
        max_length=32,
        help_text="How Optuna chooses each trial's values: " + ", ".join(tuning.SAMPLERS),
    )
    pruner = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=32,
        help_text="Stop unpromising trials early (cancelled, reason pruned): "
        + ", ".join(tuning.PRUNERS)
        + "; none by default. Watches the metric's per-step values (eval_loss at each "
        "evaluation)",
    )
    seed = serializers.IntegerField(
        required=False, allow_null=True, help_text="The sampler's seed; default: random"
    )

    def validate_base(self, value: Any) -> services.RunRequest:
        if not isinstance(value, dict):
            raise ValidationError("must be an object: the run request every trial starts from")
        if "client_request_id" in value:
            raise ValidationError({"client_request_id": ["trials get keys of their own"]})
        run = RunCreateSerializer(data=value)
        if not run.is_valid():
            raise ValidationError(run.errors)
        return run.run_request()

    def sweep_request(self) -> services.SweepRequest:
        data = self.validated_data
        return services.SweepRequest(
            base=data["base"],
            space=data["space"],
            metric=data["metric"],
            direction=data.get("direction"),
            n_trials=data["n_trials"],
            concurrency=data["concurrency"],
            sampler=data["sampler"],
            pruner=data.get("pruner") or "",
            seed=data.get("seed"),
        )


class SweepListQuerySerializer(StrictSerializer):
    limit = serializers.IntegerField(default=50, min_value=1, max_value=MAX_LIST_LIMIT)
    status = serializers.ChoiceField(choices=SweepStatus.choices, required=False)


# Answers (for the schema; the views build plain dicts)


class TrialSerializer(serializers.Serializer[Any]):
    number = serializers.IntegerField(help_text="0, 1, … in the order the trials were asked")
    run_id = serializers.UUIDField()
    run_url = serializers.CharField()
    status = serializers.CharField(
        help_text="the run's status, or pruned for a run the pruner stopped (its run is "
        "cancelled with reason pruned)"
    )
    run_status = serializers.ChoiceField(choices=RunStatus.choices)
    error_reason = serializers.CharField(allow_blank=True)
    params = serializers.DictField(help_text="the searched hyperparameters' values")
    value = serializers.FloatField(allow_null=True, help_text="the sweep's metric")
    attempt = serializers.IntegerField(help_text="more than 1: resumed after a lost worker")
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)


class SweepProgressSerializer(serializers.Serializer[Any]):
    n_trials = serializers.IntegerField()
    made = serializers.IntegerField()
    pending = serializers.IntegerField()
    running = serializers.IntegerField()
    completed = serializers.IntegerField()
    pruned = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="failed, or cancelled other than by pruning")
    ended = serializers.IntegerField()


class SweepBaseSerializer(serializers.Serializer[Any]):
    dataset_key = serializers.CharField()
    model_id = serializers.CharField()
    mode = serializers.CharField()
    algorithm = serializers.CharField()
    config = serializers.DictField(help_text="the fixed hyperparameters")
    timeout_seconds = serializers.IntegerField(allow_null=True)
    resources = serializers.DictField(
        allow_null=True, help_text="what every trial asks of its worker host; null: nothing"
    )


class SweepSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    url = serializers.CharField()
    status = serializers.ChoiceField(choices=SweepStatus.choices)
    base = SweepBaseSerializer()
    space = serializers.DictField()
    metric = serializers.CharField()
    direction = serializers.CharField()
    n_trials = serializers.IntegerField()
    concurrency = serializers.IntegerField()
    sampler = serializers.CharField()
    pruner = serializers.CharField(allow_blank=True)
    seed = serializers.IntegerField()
    best_run_id = serializers.UUIDField(allow_null=True)
    best_value = serializers.FloatField(allow_null=True)
    trials_made = serializers.IntegerField()
    trials_ended = serializers.IntegerField()
    error_message = serializers.CharField(allow_blank=True)
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


class SweepDetailSerializer(SweepSerializer):
    progress = SweepProgressSerializer()
    best_trial = TrialSerializer(allow_null=True)
    trials = TrialSerializer(many=True)


def _sweep_url(request: Request, sweep_id: object) -> str:
    return request.build_absolute_uri(reverse("api:sweep-detail", kwargs={"sweep_id": sweep_id}))


def sweep_item(request: Request, sweep: Sweep, *, made: int, ended: int) -> dict[str, Any]:
    best = sweep.best_run
    return {
        "id": str(sweep.id),
        "url": _sweep_url(request, sweep.id),
        "status": sweep.status,
        "base": {
            "dataset_key": sweep.dataset.key,
            "model_id": sweep.model_id,
            "mode": sweep.mode,
            "algorithm": sweep.algorithm,
            "config": sweep.config,
            "timeout_seconds": sweep.timeout_seconds,
            "resources": sweep.resources or None,
        },
        "space": sweep.space,
        "metric": sweep.metric,
        "direction": sweep.direction,
        "n_trials": sweep.n_trials,
        "concurrency": sweep.concurrency,
        "sampler": sweep.sampler,
        "pruner": sweep.pruner,
        "seed": sweep.seed,
        "best_run_id": str(best.id) if best else None,
        "best_value": selectors.sweeps.metric_value(best, sweep.metric) if best else None,
        "trials_made": made,
        "trials_ended": ended,
        "error_message": sweep.error_message,
        "created_by": sweep.created_by.get_username() if sweep.created_by else None,
        "created_at": sweep.created_at,
        "completed_at": sweep.completed_at,
    }


def trial_item(request: Request, trial: selectors.Trial) -> dict[str, Any]:
    run = trial.run
    return {
        "number": trial.number,
        "run_id": str(run.id),
        "run_url": request.build_absolute_uri(reverse("api:run-detail", kwargs={"run_id": run.id})),
        "status": trial.status,
        "run_status": run.status,
        "error_reason": run.error_reason,
        "params": trial.params,
        "value": trial.value,
        "attempt": run.attempt,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "duration_seconds": trial.duration_seconds,
    }


def detail_item(request: Request, detail: selectors.SweepDetail) -> dict[str, Any]:
    done = detail.progress
    item = sweep_item(request, detail.sweep, made=done.made, ended=done.ended)
    best = detail.best
    if detail.sweep.best_run_id is None and best is not None:
        # While the sweep runs, the best so far (the stored one is set when it ends).
        item.update(best_run_id=str(best.run.id), best_value=best.value)
    item["progress"] = {
        "n_trials": done.n_trials,
        "made": done.made,
        "pending": done.pending,
        "running": done.running,
        "completed": done.completed,
        "pruned": done.pruned,
        "failed": done.failed,
        "ended": done.ended,
    }
    item["best_trial"] = trial_item(request, best) if best else None
    item["trials"] = [trial_item(request, trial) for trial in detail.trials]
    return item


# One object with the sweeps under "data" (a list action would otherwise be documented as an
# array).
@extend_schema_serializer(many=False)
class SweepListSerializer(serializers.Serializer[Any]):
    data = SweepSerializer(many=True)  # type: ignore[assignment]


class SweepViewSet(viewsets.ViewSet):
    # Sweeps at tunix/sweeps/<sweep_id>: list, create, detail with trials, cancel.
    # (No docstring: drf-spectacular would make it the description of every operation.)

    lookup_field = "id"
    lookup_url_kwarg = "sweep_id"

    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        if self.action == "create":
            return [permissions.IsAuthenticated(), CanCreateRuns()]
        return super().get_permissions()

    @extend_schema(
        operation_id="sweep_list",
        parameters=[SweepListQuerySerializer],
        responses={
            200: SweepListSerializer,
            400: PROBLEM,
            401: PROBLEM,
        },
        description="Sweeps this user may see, newest first.",
    )
    def list(self, request: Request) -> Response:
        query = SweepListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        sweeps = selectors.sweep_list(
            owner=authorization.visible_owner(request.user),
            status=query.validated_data.get("status"),
        )[: query.validated_data["limit"]]
        return Response(
            {
                "data": [
                    sweep_item(
                        request,
                        sweep,
                        made=getattr(sweep, "trials_made", 0),
                        ended=getattr(sweep, "trials_ended", 0),
                    )
                    for sweep in sweeps
                ]
            }
        )

    @extend_schema(
        operation_id="sweep_create",
        request=SweepCreateSerializer,
        responses={201: SweepDetailSerializer, 400: PROBLEM, 401: PROBLEM, 403: PROBLEM},
        description="Start a sweep: its first trials (as many as concurrency allows) are "
        "queued at once, each an ordinary run; the next is asked for as one ends. Bad input is "
        f"a 400 naming the field, and nothing is written. At most "
        f"{settings.TUNIX_SWEEP_MAX_TRIALS} trials and {settings.TUNIX_SWEEP_MAX_CONCURRENCY} at "
        "once (TUNIX_SWEEP_MAX_TRIALS, TUNIX_SWEEP_MAX_CONCURRENCY).",
    )
    def create(self, request: Request) -> Response:
        body = SweepCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sweep = services.sweep_create(user=request.user, request=body.sweep_request())
        detail = selectors.sweep_detail(sweep_id=sweep.id)
        assert detail is not None  # just made
        return Response(
            detail_item(request, detail),
            status=http_status.HTTP_201_CREATED,
            headers={"Location": _sweep_url(request, sweep.id)},
        )

    @extend_schema(
        operation_id="sweep_detail",
        parameters=[OpenApiParameter("sweep_id", str, location=OpenApiParameter.PATH)],
        responses={200: SweepDetailSerializer, 404: PROBLEM},
        description="The sweep with its progress, its best trial (the best so far while it "
        "runs) and every trial: number, run, status, parameters, metric value, duration.",
    )
    def retrieve(self, request: Request, sweep_id: str) -> Response:
        detail = selectors.sweep_detail(
            sweep_id=sweep_id, owner=authorization.visible_owner(request.user)
        )
        if detail is None:
            raise NotFound(f"no sweep {sweep_id}")
        return Response(detail_item(request, detail))

    @extend_schema(
        operation_id="sweep_cancel",
        parameters=[OpenApiParameter("sweep_id", str, location=OpenApiParameter.PATH)],
        request=None,
        responses={200: SweepDetailSerializer, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
        description="Cancel the sweep: pending trials are cancelled, running ones stopped, and "
        "no trial is asked for any more. A sweep that has ended answers 409.",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, sweep_id: str) -> Response:
        sweep = services.sweep_cancel(sweep_id=sweep_id, user=request.user)
        detail = selectors.sweep_detail(sweep_id=sweep.id)
        assert detail is not None
        return Response(detail_item(request, detail))
