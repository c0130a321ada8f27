from rest_framework.routers import DefaultRouter


class Router(DefaultRouter):
    """Routes that answer with and without a trailing slash, so clients need not care."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trailing_slash = "/?"


router = Router()
