"""LLM provider adapters, one module each, behind ``base.Provider`` and this registry."""

from .anthropic import AnthropicProvider
from .base import Provider, ProviderError
from .echo import EchoProvider
from .openai_compatible import OpenAICompatibleProvider

_REGISTRY: dict[str, Provider] = {}


def register(provider: Provider) -> Provider:
    _REGISTRY[provider.name] = provider
    return provider


def get(name: str) -> Provider:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ProviderError(f"Unknown provider {name!r}.", permanent=True) from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def choices() -> list[tuple[str, str]]:
    return [(name, _REGISTRY[name].label) for name in names()]


register(EchoProvider())
register(OpenAICompatibleProvider())
register(AnthropicProvider())
