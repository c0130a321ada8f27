"""The project's URLs plus one view that fails, for the tests of what a server error logs."""

from django.urls import path

from sparkops.urls import urlpatterns as project_urlpatterns


def failing_view(request):
    raise RuntimeError("the test's own failure")


urlpatterns = [*project_urlpatterns, path("failing", failing_view)]
