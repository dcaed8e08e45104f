"""The conversation a model request carries, rebuilt from the event log.

Rebuilding it means decoding every message of the session, on every request. A bounded LRU
cache keeps the rebuilt prefix of recently active sessions, so a request reads only the events
appended since: memory stays constant however many sessions are stored (idle sessions fall out
of the cache), and a cold or evicted session is rebuilt from the log exactly as before.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from hangar.store.events import EventStore
from hangar.wire import events as ev

HISTORY_TYPES = (ev.USER_MESSAGE, ev.AGENT_MESSAGE, ev.SYSTEM_MESSAGE)


@dataclass(frozen=True)
class _Prefix:
    scanned_to: int  # every history event up to this sequence number is consumed and included
    messages: tuple[dict[str, Any], ...]  # never mutated: extended by copying


class ConversationCache:
    def __init__(self, events: EventStore, max_sessions: int = 512) -> None:
        self.events = events
        self.max_sessions = max_sessions
        self._prefixes: OrderedDict[str, _Prefix] = OrderedDict()

    def forget(self, session_id: str) -> None:
        self._prefixes.pop(session_id, None)

    async def messages(self, session_id: str) -> list[dict[str, Any]]:
        """Messages-API turns (``role`` user/assistant) for the session's next model request."""
        prefix = self._prefixes.get(session_id) or _Prefix(0, ())
        new = await self.events.history(session_id, HISTORY_TYPES, after_seq=prefix.scanned_to)
        messages = list(prefix.messages)
        scanned = prefix.scanned_to
        for e in new:
            if e.processed_at is None:
                break  # queued input: the prefix stops here until the loop consumes it
            scanned = e.seq
            role = "assistant" if e.type == ev.AGENT_MESSAGE else "user"
            blocks = [b for b in (to_model_block(x) for x in e.data.get("content", [])) if b is not None]
            if not blocks:
                continue
            if messages and messages[-1]["role"] == role:
                messages[-1] = {"role": role, "content": [*messages[-1]["content"], *blocks]}
            else:
                messages.append({"role": role, "content": blocks})
        self._prefixes[session_id] = _Prefix(scanned, tuple(messages))
        self._prefixes.move_to_end(session_id)
        while len(self._prefixes) > self.max_sessions:
            self._prefixes.popitem(last=False)
        return messages


def to_model_block(block: dict[str, Any]) -> dict[str, Any] | None:
    """A stored content block → the Messages API's form (files are referenced by name only)."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind in ("image", "document"):
        source = block.get("source", {})
        if source.get("type") == "file":
            return {"type": "text", "text": f"[attached file {source.get('file_id')}]"}
        return {k: v for k, v in block.items() if v is not None}
    return None
