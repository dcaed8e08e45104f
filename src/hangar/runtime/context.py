"""The conversation a model request carries, rebuilt from the event log.

Events map onto Messages-API turns: ``user.message`` / ``system.message`` and tool results are
user content, ``agent.message`` and tool uses are assistant content (the tool-use id the model
sees is the ``agent.*tool_use`` event id, the correlation id of the API). Events are read in
conversation order (``history_key``), so input consumed mid-turn lands where the loop took it in.
MCP calls (``agent.mcp_tool_use`` / ``agent.mcp_tool_result``) appear under the model-facing
name their tool had in the request (:func:`~hangar.runtime.mcp.toolsets.model_tool_name` of
the server and bare tool name, avoiding the ``reserved`` names of the agent's other tools).
A tool call left without a result (interrupted, or superseded by a new message) gets a synthetic
error result, so the conversation always satisfies the Messages API's pairing rule.

After a compaction, the conversation starts with the stored summary and continues with the
events after the compaction marker.

Rebuilding means decoding every message of the session on every request; a bounded LRU cache
keeps the rebuilt prefix of recently active sessions, so a request reads only new events.
Memory stays constant however many sessions are stored, and a cold session is rebuilt from the
log exactly as before.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hangar.runtime.mcp.toolsets import model_tool_name
from hangar.store.events import EventStore, StoredEvent
from hangar.wire import events as ev

if TYPE_CHECKING:
    from hangar.runtime.journal import Tx

HISTORY_TYPES = (
    ev.USER_MESSAGE,
    ev.SYSTEM_MESSAGE,
    ev.AGENT_MESSAGE,
    ev.AGENT_TOOL_USE,
    ev.AGENT_CUSTOM_TOOL_USE,
    ev.AGENT_MCP_TOOL_USE,
    ev.AGENT_TOOL_RESULT,
    ev.AGENT_MCP_TOOL_RESULT,
    ev.USER_CUSTOM_TOOL_RESULT,
    ev.USER_TOOL_RESULT,
)
UNANSWERED = "This tool call was not completed: the turn was interrupted or superseded."


@dataclass(frozen=True)
class Prefix:
    key: int  # history_key of the last event folded in
    compaction_key: int  # the compaction cut this prefix starts after (-1: none)
    messages: tuple[dict[str, Any], ...]  # never mutated: extended by copying
    starts: tuple[int, ...]  # history_key of each message's first event (-1: synthetic)
    open_calls: tuple[str, ...] = ()  # tool-use ids still waiting for a result
    size: int = 0  # characters of the serialised content so far (for the compaction check)
    reserved: frozenset[str] = frozenset()  # names MCP tools avoid (see event_blocks)
    through: int | None = None  # the session's last_seq up to which it is complete, if known


@dataclass(frozen=True)
class Conversation:
    messages: list[dict[str, Any]]
    starts: list[int]
    size: int  # characters of the serialised content, kept up to date as events are folded in


@dataclass
class _Builder:
    messages: list[dict[str, Any]]
    starts: list[int]
    open_calls: list[str] = field(default_factory=list)
    key: int = -1  # history_key of the event being added
    size: int = 0
    # The last message, if this builder made it: extended in place (the prefix's own messages
    # are shared with conversations handed out, so they are copied once before growing).
    _own: dict[str, Any] | None = None

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        last_role = self.messages[-1]["role"] if self.messages else None
        if role == "assistant":
            if self.open_calls and last_role == "user":
                # A new model turn while calls of the previous one went unanswered: close them.
                self._append("user", [_unanswered(c) for c in self.open_calls])
                self.open_calls = []
            self.open_calls += [b["id"] for b in blocks if b.get("type") == "tool_use"]
        else:
            answered = {b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"}
            self.open_calls = [c for c in self.open_calls if c not in answered]
            if self.open_calls and any(b.get("type") != "tool_result" for b in blocks):
                # The conversation moved on (an interrupt, a new message): close the calls.
                blocks = [_unanswered(c) for c in self.open_calls] + blocks
                self.open_calls = []
        self._append(role, blocks)

    def _append(self, role: str, blocks: list[dict[str, Any]]) -> None:
        self.size += sum(len(json.dumps(b, separators=(",", ":"))) for b in blocks)
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == role:
            if last is not self._own:
                last = self.messages[-1] = self._own = {"role": role, "content": list(last["content"])}
            content: list[dict[str, Any]] = last["content"]
            content += blocks
            if role == "user" and any(b.get("type") == "tool_result" for b in blocks):
                # Tool results must lead a user turn.
                content[:] = [b for b in content if b.get("type") == "tool_result"] + [
                    b for b in content if b.get("type") != "tool_result"
                ]
        else:
            self._own = {"role": role, "content": list(blocks)}
            self.messages.append(self._own)
            self.starts.append(self.key)


def _unanswered(call_id: str) -> dict[str, Any]:
    return {
        "type": "tool_result",
        "tool_use_id": call_id,
        "is_error": True,
        "content": [{"type": "text", "text": UNANSWERED}],
    }


def event_blocks(e: StoredEvent, reserved: frozenset[str] = frozenset()) -> tuple[str, list[dict[str, Any]]]:
    """The role and Messages-API content blocks of one conversation event. ``reserved`` are
    the names of the agent's built-in and custom tools (MCP tools' model-facing names avoid
    them)."""
    data = e.data
    if e.type == ev.AGENT_MCP_TOOL_USE:
        name = model_tool_name(str(data["mcp_server_name"]), str(data["name"]), reserved)
        return "assistant", [{"type": "tool_use", "id": e.id, "name": name, "input": data.get("input", {})}]
    if e.type == ev.AGENT_MESSAGE:
        return "assistant", [b for b in (to_model_block(x) for x in data.get("content", [])) if b]
    if e.type in (ev.AGENT_TOOL_USE, ev.AGENT_CUSTOM_TOOL_USE):
        return "assistant", [
            {"type": "tool_use", "id": e.id, "name": data["name"], "input": data.get("input", {})}
        ]
    if e.type in (
        ev.AGENT_TOOL_RESULT,
        ev.AGENT_MCP_TOOL_RESULT,
        ev.USER_CUSTOM_TOOL_RESULT,
        ev.USER_TOOL_RESULT,
    ):
        call = data.get("tool_use_id") or data.get("custom_tool_use_id") or data.get("mcp_tool_use_id")
        content = [b for b in (to_model_block(x) for x in data.get("content") or []) if b]
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": call,
            "content": content or [{"type": "text", "text": "(no output)"}],
        }
        if data.get("is_error"):
            block["is_error"] = True
        return "user", [block]
    if e.type == ev.SYSTEM_MESSAGE:
        texts = [b.get("text", "") for b in data.get("content", [])]
        return "user", [{"type": "text", "text": "[system] " + "\n".join(texts)}]
    return "user", [b for b in (to_model_block(x) for x in data.get("content", [])) if b]


class ConversationCache:
    def __init__(self, events: EventStore, max_sessions: int = 512) -> None:
        self.events = events
        self.max_sessions = max_sessions
        self._prefixes: OrderedDict[str, Prefix] = OrderedDict()

    def forget(self, session_id: str) -> None:
        self._prefixes.pop(session_id, None)

    async def messages(
        self,
        session_id: str,
        compaction: dict[str, Any] | None = None,
        reserved: frozenset[str] = frozenset(),
    ) -> list[dict[str, Any]]:
        """Messages-API turns (``role`` user/assistant) for the session's next model request.

        ``compaction`` is the session's stored ``{"key", "summary"}``, if it was ever compacted;
        ``reserved`` the names of the agent's built-in and custom tools (see :func:`event_blocks`).
        """
        return (await self.conversation(session_id, compaction, reserved)).messages

    async def conversation(
        self,
        session_id: str,
        compaction: dict[str, Any] | None = None,
        reserved: frozenset[str] = frozenset(),
        through: int | None = None,
    ) -> Conversation:
        """``through`` is the session's ``last_seq`` as the caller's own journal transaction
        just left it: when the cached prefix is complete up to it (it folded in every
        transaction since, see ``committed``), nothing is read."""
        ckey = int(compaction["key"]) if compaction else -1
        prefix = self._prefixes.get(session_id)
        if prefix is None or prefix.compaction_key != ckey or prefix.reserved != reserved:
            start: tuple[dict[str, Any], ...] = ()
            if compaction:
                start = (
                    {"role": "user", "content": [{"type": "text", "text": summary_text(compaction)}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Understood."}]},
                )
            size = sum(len(json.dumps(m, separators=(",", ":"))) for m in start)
            prefix = Prefix(ckey, ckey, start, tuple(-1 for _ in start), size=size, reserved=reserved)
        if through is None or prefix.through != through:
            # Everything up to `through` is in the log by now: read what the prefix lacks.
            read = await self.events.history(session_id, HISTORY_TYPES, after_key=prefix.key)
            prefix = _fold(prefix, read, through)
        self._keep(session_id, prefix)
        return Conversation(list(prefix.messages), list(prefix.starts), prefix.size)

    def committed(self, tx: Tx) -> None:
        """A journal listener: fold a committed transaction's conversation events into the
        session's prefix, if it was complete up to where the transaction started."""
        session_id = tx.session.id
        prefix = self._prefixes.get(session_id)
        if prefix is None or prefix.through is None:
            return
        if prefix.through != tx.session.last_seq:  # something else was appended meanwhile
            self._prefixes[session_id] = replace(prefix, through=None)
            return
        added = [(key, e) for key, e in tx.history() if e.type in HISTORY_TYPES]
        self._prefixes[session_id] = _fold(prefix, added, tx.last_seq)

    def _keep(self, session_id: str, prefix: Prefix) -> None:
        self._prefixes[session_id] = prefix
        self._prefixes.move_to_end(session_id)
        while len(self._prefixes) > self.max_sessions:
            self._prefixes.popitem(last=False)


def _fold(prefix: Prefix, items: list[tuple[int, StoredEvent]], through: int | None) -> Prefix:
    """``prefix`` extended by conversation events (``history_key``, event) in order."""
    if not items:
        return replace(prefix, through=through)
    builder = _Builder(list(prefix.messages), list(prefix.starts), list(prefix.open_calls), size=prefix.size)
    for key, e in items:
        builder.key = key
        builder.add(*event_blocks(e, prefix.reserved))
    return Prefix(
        items[-1][0],
        prefix.compaction_key,
        tuple(builder.messages),
        tuple(builder.starts),
        tuple(builder.open_calls),
        builder.size,
        prefix.reserved,
        through,
    )


def summary_text(compaction: dict[str, Any]) -> str:
    return "[Summary of the earlier conversation, which was compacted to fit the context window]\n" + str(
        compaction.get("summary", "")
    )


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
    if kind == "search_result":
        texts = [c.get("text", "") for c in block.get("content", [])]
        return {
            "type": "text",
            "text": f"{block.get('title', '')} ({block.get('source', '')})\n" + "\n".join(texts),
        }
    return None
