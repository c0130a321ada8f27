"""The JSON parser every endpoint uses: DRF's, with a cap on nesting depth."""

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


def nesting_depth(value, *, stop_after: int) -> int:
    """How deeply lists and objects nest in ``value``, counted without recursion so a deep value
    cannot exhaust the stack here; stops counting once ``stop_after`` is passed."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > stop_after:
            break
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


class JSONParser(parsers.JSONParser):
    """Refuses bodies nested deeper than SPARKOPS_MAX_JSON_DEPTH with a 400.

    Python's decoder raises RecursionError near 1,000 levels, and values a few hundred levels
    deep break later, when they are stored, rendered or walked by the engine. No body we accept
    needs more than a few dozen levels."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.SPARKOPS_MAX_JSON_DEPTH
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(self._too_deep(limit)) from None
        if nesting_depth(data, stop_after=limit) > limit:
            raise ParseError(self._too_deep(limit))
        return data

    @staticmethod
    def _too_deep(limit: int) -> str:
        return f"JSON parse error - nested more than {limit} levels deep."
