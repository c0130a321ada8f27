"""``{% console_dashboard %}``: the dashboard on the admin index (sparkops/templates/admin/index.html)."""

from django import template

from ..dashboard import dashboard

register = template.Library()


@register.inclusion_tag("admin/console/dashboard.html", takes_context=True)
def console_dashboard(context) -> dict:
    request = context["request"]
    if not request.user.has_perm("runs.view_run"):  # the dashboard is about runs: staff who may not read them see none
        return {"hidden": True}
    return {"request": request, **dashboard(request)}
