"""The model router: glob routes in order, the default provider, one cached instance per name."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hangar.config import Settings
from hangar.runtime import models as models_pkg
from hangar.runtime.models import (
    AnthropicProvider,
    ModelError,
    ModelRequest,
    ModelResponse,
    ModelRouter,
    ScriptedProvider,
    TextDelta,
    Usage,
)


def settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


async def test_default_routes() -> None:
    router = ModelRouter(settings(model_routes={"claude-*": "anthropic", "scripted*": "scripted"}))
    try:
        assert isinstance(router.provider_for("claude-sonnet-4-6"), AnthropicProvider)
        assert isinstance(router.provider_for("scripted"), ScriptedProvider)
        assert isinstance(router.provider_for("scripted-echo"), ScriptedProvider)
        assert router.provider_name_for("gpt-9") == "anthropic"  # default_provider
    finally:
        await router.aclose()


async def test_first_match_wins_and_default_provider() -> None:
    router = ModelRouter(
        settings(
            model_routes={"claude-haiku-*": "scripted", "claude-*": "anthropic"},
            default_provider="scripted",
        )
    )
    try:
        assert router.provider_name_for("claude-haiku-4-5") == "scripted"
        assert router.provider_name_for("claude-opus-4-6") == "anthropic"
        assert router.provider_name_for("mystery") == "scripted"
        assert router.provider_name_for("CLAUDE-opus") == "scripted"  # globs are case-sensitive
    finally:
        await router.aclose()


async def test_one_instance_per_provider_name() -> None:
    router = ModelRouter(settings(model_routes={"a*": "scripted", "b*": "scripted"}))
    try:
        assert router.provider_for("a1") is router.provider_for("b2") is router.provider_for("a3")
    finally:
        await router.aclose()


async def test_scripted_provider_built_from_settings() -> None:
    router = ModelRouter(settings(scripted_latency_ms=0))
    try:
        provider = router.provider_for("scripted")
        items = [
            i
            async for i in provider.stream(
                ModelRequest("scripted", None, [{"role": "user", "content": "yo"}])
            )
        ]
        assert isinstance(items[-1], ModelResponse)
    finally:
        await router.aclose()


async def test_anthropic_without_key_fails_clearly_on_use() -> None:
    router = ModelRouter(settings(anthropic_api_key=None))
    try:
        provider = router.provider_for("claude-opus-4-6")
        with pytest.raises(ModelError) as info:
            async for _ in provider.stream(ModelRequest("claude-opus-4-6", None, [])):
                pass
        assert info.value.kind == "authentication"
        assert "HANGAR_ANTHROPIC_API_KEY" in info.value.message
        assert info.value.retryable is False
    finally:
        await router.aclose()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"model_routes": {"x*": "gemini"}}, "model_routes['x*']: unknown provider 'gemini'"),
        ({"default_provider": "nope"}, "default_provider: unknown provider 'nope'"),
    ],
)
def test_unknown_provider_names_are_rejected(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        ModelRouter(settings(**kw))
    assert str(info.value) == f"{message}; expected one of anthropic, openai, scripted"


class Recording:
    name = "custom"

    def __init__(self) -> None:
        self.closed = False

    async def stream(self, request: ModelRequest) -> AsyncIterator[TextDelta | ModelResponse]:
        yield ModelResponse([{"type": "text", "text": request.model}], "end_turn", Usage())

    async def aclose(self) -> None:
        self.closed = True


async def test_injected_provider_is_routed_and_closed() -> None:
    custom = Recording()
    router = ModelRouter(settings(model_routes={"my-*": "custom"}), providers={"custom": custom})
    assert router.provider_for("my-model") is custom
    await router.aclose()
    assert custom.closed
    with pytest.raises(RuntimeError, match="closed"):
        router.provider_for("my-model")


async def test_scripted_settings_reach_the_provider(tmp_path: Path) -> None:
    script = tmp_path / "turns.json"
    script.write_text('[{"text": "from the script"}]')
    router = ModelRouter(settings(scripted_script=script, scripted_latency_ms=50))
    try:
        provider = router.provider_for("scripted-echo")
        started = time.monotonic()
        items = [
            i
            async for i in provider.stream(
                ModelRequest("scripted-echo", None, [{"role": "user", "content": "x"}])
            )
        ]
        assert time.monotonic() - started >= 0.045
        assert isinstance(items[-1], ModelResponse)
        assert items[-1].content == [{"type": "text", "text": "from the script"}]
    finally:
        await router.aclose()


def test_public_surface_is_pinned() -> None:
    assert sorted(models_pkg.__all__) == [
        "AnthropicProvider",
        "ModelCatalog",
        "ModelError",
        "ModelProvider",
        "ModelRequest",
        "ModelResponse",
        "ModelRouter",
        "ScriptedProvider",
        "TextDelta",
        "ThinkingStart",
        "Usage",
        "context_window",
    ]
