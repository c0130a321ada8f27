from django.urls import re_path

from .views import StreamTokenView, StreamView

urlpatterns = [
    re_path(r"^sse/?$", StreamView.as_view(), name="sse-stream"),
    re_path(r"^sse/token/?$", StreamTokenView.as_view(), name="sse-token"),
]
