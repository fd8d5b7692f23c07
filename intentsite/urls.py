"""URL routes: the admin, the apps' APIs, the OpenAPI schema with its Swagger UI, and Prometheus' /metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from analytics.ops.apis import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/intent/", include("intent.urls")),
    path("api/analytics/mlflow/", include("analytics.urls")),
    path("api/analytics/", include("analytics.monitors.urls")),
    path("api/analytics/", include("analytics.boards.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("metrics", metrics_view, name="metrics"),
]
