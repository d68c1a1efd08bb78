"""The seed system's REST paths (no trailing slashes), kept for its clients."""

from django.urls import path, re_path

from runs.api import views

app_name = "api"

urlpatterns = [
    path("tunix/run", views.RunSubmitView.as_view(), name="run-submit"),
    path("tunix/runs", views.RunListView.as_view(), name="run-list"),
    path("tunix/runs/<str:run_id>", views.RunDetailView.as_view(), name="run-detail"),
    path("tunix/runs/<str:run_id>/status", views.RunStatusView.as_view(), name="run-status"),
    path("tunix/runs/<str:run_id>/cancel", views.RunCancelView.as_view(), name="run-cancel"),
    path(
        "tunix/runs/<str:run_id>/artifacts",
        views.RunArtifactListView.as_view(),
        name="run-artifacts",
    ),
    path(
        "tunix/runs/<str:run_id>/artifacts/<path:name>",
        views.RunArtifactView.as_view(),
        name="run-artifact",
    ),
    path("tunix/models", views.ModelListView.as_view(), name="model-list"),
    path("tunix/datasets", views.DatasetListView.as_view(), name="dataset-list"),
    path("tunix/datasets/<str:key>", views.DatasetDetailView.as_view(), name="dataset-detail"),
    # Last: every other path under tunix/ (a typo, a trailing slash) answers a problem+json 404
    # naming the slash; anything no pattern matches is handler404's (also problem+json).
    re_path(r"^tunix/(?P<path>.*)$", views.UnknownPathView.as_view(), name="unknown"),
]
