"""Model providers behind one small protocol, the router that picks one per model id, and the
model catalogue.

- :mod:`.base`: the contract (:class:`ModelRequest` → :class:`TextDelta`\\* then one
  :class:`ModelResponse`, or :class:`ModelError`).
- :mod:`.anthropic`: the upstream Messages API (official SDK, no silent retries).
- :mod:`.scripted`: deterministic offline replies driven by ``[[directives]]`` or a script.
- :mod:`.router`: ``settings.model_routes`` globs → provider instances.
- :mod:`.catalog`: ``/v1/models`` entries and context windows.
"""

from hangar.runtime.models.anthropic import AnthropicProvider
from hangar.runtime.models.base import (
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingStart,
    Usage,
)
from hangar.runtime.models.catalog import ModelCatalog, context_window
from hangar.runtime.models.router import ModelRouter
from hangar.runtime.models.scripted import ScriptedProvider

__all__ = [
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
