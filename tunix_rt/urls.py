"""URL map: API under /api/, the operators' admin, OpenAPI schema and docs, health."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from runs import health, monitoring
from runs.api.token import TokenLoginView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before the API's own routes, whose catch-all would answer it: off unless TUNIX_BENCH_FLOOR.
    path("api/bench/floor", monitoring.bench_floor, name="bench-floor"),
    path("api/", include("runs.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script for the CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/auth/token", TokenLoginView.as_view(), name="api-token"),
    path("api-auth/", include("rest_framework.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", monitoring.metrics_view, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
    path("", include("runs.web.urls")),
]

handler400 = "runs.api.problems.api_aware_bad_request"
handler404 = "runs.api.problems.api_aware_not_found"
handler500 = "runs.api.problems.api_aware_server_error"
