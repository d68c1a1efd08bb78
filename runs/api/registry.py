"""The model registry's API (parse, call runs/services/registry.py, render), routed under
tunix/registry/models by runs/api/urls.py.

Reads need a login only: the registry is readable by every authenticated user (a version links
to its run, which keeps its own visibility). Promoting needs runs.add_modelversion; aliases,
deletions and descriptions need runs.change_registeredmodel (runs/authorization.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, viewsets
from rest_framework import status as http_status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from runs import authorization, selectors, services
from runs.api.serializers import StrictSerializer
from runs.models import ExportWeights, ModelVersion, RegisteredModel
from runs.services.registry import MAX_DESCRIPTION_CHARS

if TYPE_CHECKING:
    from rest_framework.permissions import _SupportsHasPermission

PROBLEM = OpenApiResponse(OpenApiTypes.OBJECT, description="RFC 9457 problem details")
NO_CONTENT = OpenApiResponse(None, description="Deleted")


# Bodies


class PromoteSerializer(StrictSerializer):
    run_id = serializers.UUIDField(help_text="The completed training to promote")
    export_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="One of the run's completed exports; default: the export of its newest "
        "exported checkpoint (merged weights before an adapter)",
    )
    description = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=MAX_DESCRIPTION_CHARS
    )


class AliasSetSerializer(StrictSerializer):
    version = serializers.IntegerField(
        min_value=1,
        max_value=selectors.MAX_VERSION_NUMBER,
        help_text="The version number the alias names from now on",
    )


class ModelUpdateSerializer(StrictSerializer):
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=MAX_DESCRIPTION_CHARS
    )


# Answers (for the schema; the views build plain dicts)


class VersionLineageSerializer(serializers.Serializer[Any]):
    run_id = serializers.UUIDField()
    run_url = serializers.CharField(help_text="the run; seen as its own visibility allows")
    dataset_key = serializers.CharField()
    dataset_sha256 = serializers.CharField()
    algorithm = serializers.CharField()
    base_model_id = serializers.CharField(help_text="the model the run trained from")
    config = serializers.DictField(help_text="the run's hyperparameters")
    metrics = serializers.DictField(help_text="the run's final metrics and eval scores")


class ModelVersionSerializer(serializers.Serializer[Any]):
    model = serializers.CharField()
    number = serializers.IntegerField()
    uri = serializers.CharField(help_text='"models:/<name>/<number>"')
    use_as_base = serializers.CharField(
        help_text="the model_id a new run gives to train from this version"
    )
    sha256 = serializers.CharField(help_text="the export's content address")
    step = serializers.IntegerField()
    weights = serializers.ChoiceField(choices=ExportWeights.choices)
    description = serializers.CharField(allow_blank=True)
    lineage = VersionLineageSerializer()
    promoted_by = serializers.CharField(allow_null=True)
    promoted_at = serializers.DateTimeField()
    aliases = serializers.ListField(child=serializers.CharField())
    export_id = serializers.UUIDField()
    archive_url = serializers.CharField(help_text="the export's files as one streamed tar")
    url = serializers.CharField()


class RegisteredModelSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    version_count = serializers.IntegerField()
    latest_version = serializers.IntegerField(
        allow_null=True, help_text='the highest version number (what "latest" names)'
    )
    aliases = serializers.DictField(
        child=serializers.IntegerField(), help_text="alias name -> version number"
    )
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    url = serializers.CharField()
    versions_url = serializers.CharField()


class ModelAliasSerializer(serializers.Serializer[Any]):
    model = serializers.CharField()
    alias = serializers.CharField()
    version = serializers.IntegerField()
    uri = serializers.CharField(help_text='"models:/<name>@<alias>"')
    version_uri = serializers.CharField(help_text='"models:/<name>/<number>"')
    updated_by = serializers.CharField(allow_null=True)
    updated_at = serializers.DateTimeField()
    url = serializers.CharField()
    moves_url = serializers.CharField()


class AliasMoveSerializer(serializers.Serializer[Any]):
    alias = serializers.CharField()
    from_version = serializers.IntegerField(allow_null=True, help_text="null: the alias was set")
    to_version = serializers.IntegerField(allow_null=True, help_text="null: it was removed")
    moved_by = serializers.CharField(allow_null=True)
    moved_at = serializers.DateTimeField()


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def _url(request: Request, name: str, **kwargs: Any) -> str:
    return request.build_absolute_uri(reverse(f"api:registry-model-{name}", kwargs=kwargs))


def model_item(request: Request, model: RegisteredModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "description": model.description,
        "version_count": getattr(model, "version_count", 0),
        "latest_version": getattr(model, "latest_version", None),
        "aliases": {alias.name: alias.version.number for alias in model.aliases.all()},
        "created_by": _username(model.created_by),
        "created_at": model.created_at,
        "updated_at": model.updated_at,
        "url": _url(request, "detail", model_name=model.name),
        "versions_url": _url(request, "versions", model_name=model.name),
    }


def version_item(request: Request, version: ModelVersion) -> dict[str, Any]:
    name = version.model.name
    run_kwargs = {"run_id": version.run_id}
    export_kwargs = {**run_kwargs, "export_id": version.export_id}
    return {
        "model": name,
        "number": version.number,
        "uri": version.uri,
        "use_as_base": version.uri,
        "sha256": version.sha256,
        "step": version.step,
        "weights": version.weights,
        "description": version.description,
        "lineage": {
            "run_id": str(version.run_id),
            "run_url": request.build_absolute_uri(reverse("api:run-detail", kwargs=run_kwargs)),
            "dataset_key": version.dataset_key,
            "dataset_sha256": version.dataset_sha256,
            "algorithm": version.algorithm,
            "base_model_id": version.base_model_id,
            "config": version.config,
            "metrics": version.metrics,
        },
        "promoted_by": _username(version.promoted_by),
        "promoted_at": version.promoted_at,
        "aliases": [alias.name for alias in version.aliases.all()],
        "export_id": str(version.export_id),
        "archive_url": request.build_absolute_uri(
            reverse("api:run-export-archive", kwargs=export_kwargs)
        ),
        "url": _url(request, "version", model_name=name, number=version.number),
    }


def alias_item(request: Request, found: selectors.ResolvedAlias) -> dict[str, Any]:
    version, row = found.version, found.alias
    name = version.model.name
    return {
        "model": name,
        "alias": found.name,
        "version": version.number,
        "uri": f"models:/{name}@{found.name}",
        "version_uri": version.uri,
        # "latest" is no row: it changed when its version was promoted.
        "updated_by": _username(row.updated_by if row else version.promoted_by),
        "updated_at": row.updated_at if row else version.promoted_at,
        "url": _url(request, "alias", model_name=name, alias=found.name),
        "moves_url": _url(request, "alias-moves", model_name=name, alias=found.name),
    }


def move_item(move: Any) -> dict[str, Any]:
    return {
        "alias": move.alias,
        "from_version": move.from_number,
        "to_version": move.to_number,
        "moved_by": _username(move.moved_by),
        "moved_at": move.moved_at,
    }


def _model_or_404(model_name: str) -> RegisteredModel:
    model = selectors.registry_model_get(name=model_name)
    if model is None:
        raise NotFound(f"no registered model {model_name!r}")
    return model


def _version_or_404(model_name: str, number: int) -> ModelVersion:
    version = selectors.registry_version_get(model_name=model_name, number=number)
    if version is None:
        _model_or_404(model_name)
        raise NotFound(f"model {model_name!r} has no version {number}")
    return version


def _body(serializer_class: type[StrictSerializer], request: Request) -> dict[str, Any]:
    body = serializer_class(data=request.data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


class RegistryPermission(permissions.BasePermission):
    """Reads need the login alone; promoting asks can_promote, every other write
    can_manage_registry (runs/authorization.py), before the body is read."""

    message = ""

    def has_permission(self, request: HttpRequest, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        if getattr(view, "action", None) == "versions":  # POST: a promotion
            allowed, perm = authorization.can_promote(request.user), authorization.PROMOTE_MODELS
        else:
            allowed = authorization.can_manage_registry(request.user)
            perm = authorization.MANAGE_REGISTRY
        # An instance per request (get_permissions): the refusal names what is missing.
        self.message = f"this needs the {perm} permission"
        return allowed


class RegistryViewSet(viewsets.ViewSet):
    # Registered models at tunix/registry/models/<name>, their versions, aliases and the move
    # log. (No docstring: drf-spectacular would make it the description of every operation.)

    lookup_field = "name"
    lookup_url_kwarg = "model_name"

    def get_permissions(self) -> Sequence[_SupportsHasPermission]:
        return [permissions.IsAuthenticated(), RegistryPermission()]

    @extend_schema(
        operation_id="registry_model_list",
        responses={200: RegisteredModelSerializer(many=True)},
        description="Every registered model by name, with its version count, latest version "
        "and aliases.",
    )
    def list(self, request: Request) -> Response:
        models = selectors.registry_model_list()
        return Response([model_item(request, model) for model in models])

    @extend_schema(
        operation_id="registry_model_detail",
        responses={200: RegisteredModelSerializer, 404: PROBLEM},
    )
    def retrieve(self, request: Request, model_name: str) -> Response:
        return Response(model_item(request, _model_or_404(model_name)))

    @extend_schema(
        operation_id="registry_model_update",
        request=ModelUpdateSerializer,
        responses={200: RegisteredModelSerializer, 400: PROBLEM, 403: PROBLEM, 404: PROBLEM},
        description="Set the model's description.",
    )
    def partial_update(self, request: Request, model_name: str) -> Response:
        body = _body(ModelUpdateSerializer, request)
        if "description" in body:
            services.registry_model_update(
                user=request.user, model_name=model_name, description=body["description"]
            )
        return Response(model_item(request, _model_or_404(model_name)))

    @extend_schema(
        operation_id="registry_model_delete",
        request=None,
        responses={204: NO_CONTENT, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
        description="Delete a model without versions (409 while it has any).",
    )
    def destroy(self, request: Request, model_name: str) -> Response:
        services.registry_model_delete(user=request.user, model_name=model_name)
        return Response(status=http_status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        operation_id="registry_version_list",
        request=None,
        responses={200: ModelVersionSerializer(many=True), 404: PROBLEM},
        description="The model's versions, highest number first.",
    )
    @extend_schema(
        methods=["POST"],
        operation_id="registry_version_promote",
        request=PromoteSerializer,
        responses={
            200: ModelVersionSerializer,
            201: ModelVersionSerializer,
            400: PROBLEM,
            403: PROBLEM,
            404: PROBLEM,
            409: PROBLEM,
        },
        description="Promote a completed training's export to a new version (201, Location), "
        "creating the model on its first promotion; the same content promoted again answers "
        "200 with the version it already is. A run this user may not see is a 404.",
    )
    @action(detail=True, methods=["get", "post"])
    def versions(self, request: Request, model_name: str) -> Response:
        if request.method == "GET":
            model = _model_or_404(model_name)
            versions = selectors.registry_version_list(model=model)
            return Response([version_item(request, v) for v in versions])
        body = _body(PromoteSerializer, request)
        version, created = services.registry_promote(
            user=request.user,
            model_name=model_name,
            run_id=body["run_id"],
            export_id=body.get("export_id"),
            description=body["description"],
        )
        found = selectors.registry_version_get(model_name=model_name, number=version.number)
        item = version_item(request, found or version)
        code = http_status.HTTP_201_CREATED if created else http_status.HTTP_200_OK
        return Response(item, status=code, headers={"Location": item["url"]})

    @extend_schema(
        methods=["GET"],
        operation_id="registry_version_detail",
        request=None,
        responses={200: ModelVersionSerializer, 404: PROBLEM},
    )
    @extend_schema(
        methods=["DELETE"],
        operation_id="registry_version_delete",
        request=None,
        responses={204: NO_CONTENT, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
        description="Delete the version (its export stays with its run). Refused (409, with "
        "the reason) while an alias names it or a run trained from it.",
    )
    @action(
        detail=True,
        methods=["get", "delete"],
        url_path="versions/<int:number>",
        url_name="version",
    )
    def version(self, request: Request, model_name: str, number: int) -> Response:
        if request.method == "DELETE":
            services.registry_version_delete(
                user=request.user, model_name=model_name, number=number
            )
            return Response(status=http_status.HTTP_204_NO_CONTENT)
        return Response(version_item(request, _version_or_404(model_name, number)))

    @extend_schema(
        operation_id="registry_alias_list",
        responses={200: ModelAliasSerializer(many=True), 404: PROBLEM},
        description='The model\'s aliases by name ("latest" is not listed: it is never stored, '
        "and always names the highest version).",
    )
    @action(detail=True)
    def aliases(self, request: Request, model_name: str) -> Response:
        model = _model_or_404(model_name)
        rows = selectors.registry_alias_list(model=model)
        return Response(
            [
                alias_item(request, selectors.ResolvedAlias(row.name, row.version, row))
                for row in rows
            ]
        )

    @extend_schema(
        methods=["GET"],
        operation_id="registry_alias_detail",
        request=None,
        responses={200: ModelAliasSerializer, 404: PROBLEM},
        description='The version the alias names; "latest" names the highest version.',
    )
    @extend_schema(
        methods=["PUT"],
        operation_id="registry_alias_set",
        request=AliasSetSerializer,
        responses={
            200: ModelAliasSerializer,
            201: ModelAliasSerializer,
            400: PROBLEM,
            403: PROBLEM,
            404: PROBLEM,
        },
        description="Point the alias at a version: 201 when it is created, 200 when it moved "
        "(or already named that version). Every change is recorded in the move log.",
    )
    @extend_schema(
        methods=["DELETE"],
        operation_id="registry_alias_delete",
        request=None,
        responses={204: NO_CONTENT, 400: PROBLEM, 403: PROBLEM, 404: PROBLEM},
        description="Remove the alias (recorded in the move log).",
    )
    @action(
        detail=True,
        methods=["get", "put", "delete"],
        url_path="aliases/<str:alias>",
        url_name="alias",
    )
    def alias(self, request: Request, model_name: str, alias: str) -> Response:
        if request.method == "PUT":
            body = _body(AliasSetSerializer, request)
            row, created = services.registry_alias_set(
                user=request.user, model_name=model_name, alias=alias, number=body["version"]
            )
            found = selectors.ResolvedAlias(row.name, row.version, row)
            code = http_status.HTTP_201_CREATED if created else http_status.HTTP_200_OK
            return Response(alias_item(request, found), status=code)
        if request.method == "DELETE":
            services.registry_alias_delete(user=request.user, model_name=model_name, alias=alias)
            return Response(status=http_status.HTTP_204_NO_CONTENT)
        resolved = selectors.registry_alias_get(model_name=model_name, alias=alias)
        if resolved is None:
            _model_or_404(model_name)
            raise NotFound(f"model {model_name!r} has no alias {alias!r}")
        return Response(alias_item(request, resolved))

    @extend_schema(
        operation_id="registry_alias_moves",
        responses={200: AliasMoveSerializer(many=True), 404: PROBLEM},
        description="Every change of the alias, newest first (also of an alias since removed).",
    )
    @action(detail=True, url_path="aliases/<str:alias>/moves", url_name="alias-moves")
    def alias_moves(self, request: Request, model_name: str, alias: str) -> Response:
        model = _model_or_404(model_name)
        moves = selectors.registry_alias_moves(model=model, alias=alias)
        return Response([move_item(move) for move in moves])

    @extend_schema(
        operation_id="registry_model_moves",
        responses={200: AliasMoveSerializer(many=True), 404: PROBLEM},
        description="Every alias change of the model, newest first.",
    )
    @action(detail=True)
    def moves(self, request: Request, model_name: str) -> Response:
        model = _model_or_404(model_name)
        return Response([move_item(move) for move in selectors.registry_alias_moves(model=model)])
