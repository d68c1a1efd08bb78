"""The seed system's REST paths (no trailing slashes), kept for its clients.

A router maps the viewsets to tunix/runs, tunix/datasets and tunix/models. Its URL names
(run-list, run-detail, run-status, run-cancel, run-artifacts, run-artifact, run-compare,
run-compare-items, run-compare-items-csv, dataset-list, dataset-detail, model-list) are the ones
reverse() and the templates use. Path converters, not
regular expressions: <str:run_id> accepts any segment, and the OpenAPI schema's path parameters
are plain strings.
"""

from django.urls import path, re_path
from rest_framework import routers

from runs.api import views

app_name = "api"

router = routers.SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("tunix/runs", views.RunViewSet, basename="run")
router.register("tunix/datasets", views.DatasetViewSet, basename="dataset")
router.register("tunix/models", views.ModelCatalogViewSet, basename="model")

# The browsable API's front page: each registered collection by its last path segment.
API_ROOT = {
    prefix.rsplit("/", 1)[-1]: f"{basename}-list" for prefix, _, basename in router.registry
}

urlpatterns = [
    path("tunix", views.ApiRootView.as_view(api_root_dict=API_ROOT), name="api-root"),
    # The seed's submit path is singular and outside tunix/runs, so the router does not
    # build it. POST tunix/runs stays a 405: one way to submit, one operation in the schema.
    path(
        "tunix/run",
        views.RunViewSet.as_view({"post": "submit"}, name="Run Submit"),
        name="run-submit",
    ),
    *router.urls,
    # Last: every other path under tunix/ (a typo, a trailing slash) answers a problem+json 404
    # naming the slash; anything no pattern matches is handler404's (also problem+json).
    re_path(r"^tunix/(?P<path>.*)$", views.unknown_path, name="unknown"),
]
