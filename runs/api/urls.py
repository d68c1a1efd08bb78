"""The seed system's REST paths (no trailing slashes), kept for its clients.

A router maps the viewsets to tunix/runs, tunix/datasets and tunix/models. Its URL names
(run-list, run-detail, run-status, run-cancel, run-artifacts, run-artifact, run-compare,
run-compare-items, run-compare-items-csv, dataset-list, dataset-detail, model-list) are the ones
reverse() and the templates use. Path converters, not
regular expressions: <str:run_id> accepts any segment, and the OpenAPI schema's path parameters
are plain strings (but a registered model's version number, <int:number>).

The model registry is routed at tunix/registry/models: registry-model-list, -detail, -versions,
-version, -aliases, -alias, -alias-moves and -moves.
A version's try-it samples (runs/api/samples.py) are explicit paths below it, before the
router's: registry-model-version-samples and registry-model-version-sample.
"""

from django.urls import path, re_path
from rest_framework import routers

from runs.api import registry, samples, sweeps, views

app_name = "api"

router = routers.SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("tunix/runs", views.RunViewSet, basename="run")
router.register("tunix/datasets", views.DatasetViewSet, basename="dataset")
router.register("tunix/models", views.ModelCatalogViewSet, basename="model")
# The model registry (runs/api/registry.py): tunix/registry/models/<model_name>, its versions
# (versions/<number>), aliases (aliases/<alias>) and their move log.
router.register("tunix/registry/models", registry.RegistryViewSet, basename="registry-model")
# Hyperparameter sweeps (runs/api/sweeps.py): tunix/sweeps/<sweep_id> and its cancel.
router.register("tunix/sweeps", sweeps.SweepViewSet, basename="sweep")

# The browsable API's front page: each registered collection by its first path segment under
# tunix/ (runs, datasets, models, and registry for tunix/registry/models).
API_ROOT = {prefix.split("/")[1]: f"{basename}-list" for prefix, _, basename in router.registry}

urlpatterns = [
    path("tunix", views.ApiRootView.as_view(api_root_dict=API_ROOT), name="api-root"),
    # The seed's submit path is singular and outside tunix/runs, so the router does not
    # build it. POST tunix/runs stays a 405: one way to submit, one operation in the schema.
    path(
        "tunix/run",
        views.RunViewSet.as_view({"post": "submit"}, name="Run Submit"),
        name="run-submit",
    ),
    path(
        "tunix/registry/models/<str:model_name>/versions/<int:number>/samples",
        samples.VersionSampleViewSet.as_view(
            {"get": "list", "post": "create"}, name="Version Samples"
        ),
        name="registry-model-version-samples",
    ),
    path(
        "tunix/registry/models/<str:model_name>/versions/<int:number>/samples/<str:sample_id>",
        samples.VersionSampleViewSet.as_view({"get": "retrieve"}, name="Version Sample"),
        name="registry-model-version-sample",
    ),
    *router.urls,
    # Last: every other path under tunix/ (a typo, a trailing slash) answers a problem+json 404
    # naming the slash; anything no pattern matches is handler404's (also problem+json).
    re_path(r"^tunix/(?P<path>.*)$", views.unknown_path, name="unknown"),
]
