"""Context compaction: when a request nears the model's window, older turns are summarised by
the model itself and the conversation continues from the summary plus the latest exchange.

The summary and the point it covers up to (a ``history_key``) are stored in the session row,
next to the ``agent.thread_context_compacted`` event that announces them; the conversation is
rebuilt from there (``ConversationCache``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hangar.config import Settings
from hangar.runtime.models.base import ModelRequest, ModelResponse
from hangar.runtime.models.catalog import context_window
from hangar.runtime.models.router import ModelRouter

SUMMARY_SYSTEM = (
    "You compress conversations. Summarise the conversation so far for the assistant that will "
    "continue it: the user's goals, decisions made, facts learned, files and commands involved, "
    "and open questions. Be complete but concise; write plain text."
)
SUMMARY_PROMPT = "Summarise the conversation above so that it can continue from your summary alone."


@dataclass(frozen=True)
class Summary:
    text: str
    cut_key: int  # events with a history_key above this stay verbatim


def estimate_tokens(content_chars: int, tools: list[dict[str, Any]], system: str | None) -> int:
    """About four characters a token: cheap, and errs on the side of compacting early.
    ``content_chars`` is the conversation's serialised size, which the conversation cache keeps
    up to date, so the check costs nothing per request however long the session is."""
    return (content_chars + len(json.dumps(tools)) + len(system or "")) // 4


class Compactor:
    def __init__(self, settings: Settings, models: ModelRouter) -> None:
        self.settings = settings
        self.models = models

    def window(self, model_id: str) -> int:
        return context_window(model_id, self.settings)

    def needed(self, agent: dict[str, Any], content_chars: int, tools: list[dict[str, Any]]) -> bool:
        budget = self.window(agent["model"]["id"]) * self.settings.compaction_threshold
        return estimate_tokens(content_chars, tools, agent.get("system")) > budget

    async def summarize(
        self, agent: dict[str, Any], messages: list[dict[str, Any]], starts: list[int]
    ) -> Summary | None:
        """Summarise everything before the latest user prompt; None if there is nothing to cut."""
        cut = next(
            (
                i
                for i in range(len(messages) - 1, 0, -1)
                if messages[i]["role"] == "user"
                and starts[i] >= 0
                and not any(b.get("type") == "tool_result" for b in messages[i]["content"])
            ),
            None,
        )
        if cut is None or cut < 2:
            return None
        older = messages[:cut]
        if older[-1]["role"] == "user":
            older = [*older, {"role": "assistant", "content": [{"type": "text", "text": "(continuing)"}]}]
        request = ModelRequest(
            model=agent["model"]["id"],
            system=SUMMARY_SYSTEM,
            messages=[*older, {"role": "user", "content": [{"type": "text", "text": SUMMARY_PROMPT}]}],
            tools=[],
            max_tokens=4096,
        )
        final: ModelResponse | None = None
        async for item in self.models.provider_for(request.model).stream(request):
            if isinstance(item, ModelResponse):
                final = item
        text = "".join(b.get("text", "") for b in (final.content if final else []) if b.get("type") == "text")
        if not text.strip():
            return None
        return Summary(text.strip(), starts[cut] - 1)
