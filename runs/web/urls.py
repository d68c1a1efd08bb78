from django.urls import path

from runs.web import compare, views

app_name = "web"

urlpatterns = [
    path("", views.run_list, name="run-list"),
    path("runs/rows", views.run_rows, name="run-rows"),
    path("runs/new", views.run_launch, name="run-launch"),
    path("runs/compare", compare.run_compare, name="run-compare"),
    path("runs/<uuid:run_id>", views.run_detail, name="run-detail"),
    path("runs/<uuid:run_id>/live", views.run_live, name="run-live"),
    path("runs/<uuid:run_id>/cancel", views.run_cancel, name="run-cancel"),
    path("runs/<uuid:run_id>/again", views.run_again, name="run-again"),
    path("datasets", views.dataset_list, name="dataset-list"),
    path("datasets/<str:key>", views.dataset_detail, name="dataset-detail"),
]
