"""Which provider serves a model id: ``settings.model_routes`` globs, first match wins."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping

from hangar.config import Settings
from hangar.runtime.models.anthropic import AnthropicProvider
from hangar.runtime.models.base import ModelProvider
from hangar.runtime.models.openai_compat import OpenAICompatProvider
from hangar.runtime.models.scripted import ScriptedProvider


def _anthropic(settings: Settings) -> ModelProvider:
    key = settings.anthropic_api_key
    return AnthropicProvider(
        base_url=settings.anthropic_base_url,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_s=settings.anthropic_timeout_s,
    )


def _openai(settings: Settings) -> ModelProvider:
    key = settings.openai_api_key
    return OpenAICompatProvider(
        base_url=settings.openai_base_url,
        api_key=key.get_secret_value() if key is not None else None,
        timeout_s=settings.openai_timeout_s,
        model_map=settings.openai_model_map,
    )


def _scripted(settings: Settings) -> ModelProvider:
    return ScriptedProvider(latency_ms=settings.scripted_latency_ms, script=settings.scripted_script)


FACTORIES: Mapping[str, Callable[[Settings], ModelProvider]] = {
    "anthropic": _anthropic,
    "openai": _openai,
    "scripted": _scripted,
}
PROVIDER_NAMES: tuple[str, ...] = tuple(FACTORIES)


class ModelRouter:
    """Maps model ids to providers, building one provider per name on first use.

    ``providers`` pre-seeds instances by name (tests plug in their own provider this way); the
    router owns them from then on. The application's lifespan owns the router and awaits
    :meth:`aclose` on shutdown, which closes every provider.
    """

    def __init__(self, settings: Settings, providers: Mapping[str, ModelProvider] | None = None) -> None:
        known = set(FACTORIES) | set(providers or {})
        for pattern, name in settings.model_routes.items():
            if name not in known:
                raise ValueError(
                    f"model_routes[{pattern!r}]: unknown provider {name!r}; expected one of "
                    + ", ".join(sorted(known))
                )
        if settings.default_provider not in known:
            raise ValueError(
                f"default_provider: unknown provider {settings.default_provider!r}; expected one of "
                + ", ".join(sorted(known))
            )
        self._settings = settings
        self._routes = list(settings.model_routes.items())
        self._providers: dict[str, ModelProvider] = dict(providers or {})
        self._closed = False

    def provider_name_for(self, model_id: str) -> str:
        for pattern, name in self._routes:
            if fnmatch.fnmatchcase(model_id, pattern):
                return name
        return self._settings.default_provider

    def provider_for(self, model_id: str) -> ModelProvider:
        if self._closed:
            raise RuntimeError("the model router is closed")
        name = self.provider_name_for(model_id)
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = FACTORIES[name](self._settings)
        return provider

    async def aclose(self) -> None:
        self._closed = True
        providers, self._providers = list(self._providers.values()), {}
        failures: list[BaseException] = []
        for provider in providers:
            try:
                await provider.aclose()
            except Exception as exc:  # close the others before reporting
                failures.append(exc)
        if failures:
            raise failures[0]
