from rest_framework.routers import DefaultRouter


class Router(DefaultRouter):
    """Routes that answer with and without a trailing slash, so clients need not care.

    A prefix may be registered twice: a higher app adds actions to a lower app's objects with a
    viewset of its own (``/workflows/{id}/run`` is runs' verb on workflows). The API root lists
    each prefix once, through the viewset that lists it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trailing_slash = "/?"

    def get_api_root_view(self, api_urls=None):
        list_name = self.routes[0].name
        api_root_dict = {
            prefix: list_name.format(basename=basename)
            for prefix, viewset, basename in self.registry
            if hasattr(viewset, "list")
        }
        return self.APIRootView.as_view(api_root_dict=api_root_dict)


router = Router()
