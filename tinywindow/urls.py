from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from tinywindow.health import health_view, metrics_view
from trading.api.views import ApiRoot

handler404 = "tinywindow.api.not_found"

urlpatterns = [
    path("health", health_view, name="health"),
    path("health/", health_view),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", ApiRoot.as_view(), name="api-root"),
    path("api/", include("safety.api.urls")),
    path("api/", include("trading.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]
