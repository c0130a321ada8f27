"""``{% console_dashboard %}``: the dashboard on the admin index (sparkops/templates/admin/index.html)."""

from django import template

from ..dashboard import dashboard

register = template.Library()


@register.inclusion_tag("admin/console/dashboard.html", takes_context=True)
def console_dashboard(context) -> dict:
    request = context["request"]
    return {"request": request, **dashboard(request)}
