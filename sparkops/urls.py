from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView

from telemetry.api.metrics import MetricsView
from telemetry.prometheus import metrics_view

from . import health

# The operator console: its lists need the page's width (the runs list shows eight columns at
# 1400 px), so the app list lives on the index, not in a sidebar on every page.
admin.site.site_header = admin.site.site_title = "Spark-Ops console"
admin.site.enable_nav_sidebar = False

handler400 = "sparkops.api.exceptions.handler400"
handler403 = "sparkops.api.exceptions.handler403"
handler404 = "sparkops.api.exceptions.handler404"
handler500 = "sparkops.api.exceptions.handler500"

urlpatterns = [
    path("", RedirectView.as_view(url="/docs", permanent=False)),
    re_path(r"^health/?$", health.health, name="health"),
    re_path(r"^health/ready/?$", health.ready, name="health-ready"),
    re_path(r"^metrics/?$", metrics_view, name="prometheus-metrics"),
    path("admin/", admin.site.urls),
    re_path(r"^api/v1/metrics/?$", MetricsView.as_view(), name="metrics-summary"),
    path("api/v1/", include("sparkops.api.urls")),
    re_path(r"^openapi\.json$", SpectacularJSONAPIView.as_view(), name="openapi"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    re_path(
        r"^redoc/?$",
        SpectacularRedocView.as_view(url_name="openapi", template_name="sparkops/redoc.html"),
        name="redoc",
    ),
]
