from django.urls import path

from runs.web import compare, models, sweeps, views

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
    path("runs/<uuid:run_id>/exports", models.run_exports, name="run-exports"),
    path("runs/<uuid:run_id>/export", models.run_export, name="run-export"),
    path("runs/<uuid:run_id>/promote", models.run_promote, name="run-promote"),
    path("runs/<uuid:run_id>/samples", models.run_sample, name="run-sample"),
    path("samples/<uuid:sample_id>", models.sample_detail, name="sample-detail"),
    path("registry", models.registry_list, name="registry-list"),
    path("registry/<str:model_name>", models.registry_model, name="registry-model"),
    path("registry/<str:model_name>/aliases", models.registry_alias_set, name="registry-alias-set"),
    path(
        "registry/<str:model_name>/aliases/<str:alias>/delete",
        models.registry_alias_delete,
        name="registry-alias-delete",
    ),
    path(
        "registry/<str:model_name>/<int:number>", models.registry_version, name="registry-version"
    ),
    path(
        "registry/<str:model_name>/<int:number>/delete",
        models.registry_version_delete,
        name="registry-version-delete",
    ),
    path(
        "registry/<str:model_name>/<int:number>/samples",
        models.version_sample,
        name="registry-version-sample",
    ),
    path("sweeps", sweeps.sweep_list, name="sweep-list"),
    path("sweeps/<uuid:sweep_id>", sweeps.sweep_detail, name="sweep-detail"),
    path("sweeps/<uuid:sweep_id>/live", sweeps.sweep_live, name="sweep-live"),
    path("sweeps/<uuid:sweep_id>/cancel", sweeps.sweep_cancel, name="sweep-cancel"),
    path("datasets", views.dataset_list, name="dataset-list"),
    path("datasets/<str:key>", views.dataset_detail, name="dataset-detail"),
]
