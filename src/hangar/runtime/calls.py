"""Tool calls of a turn: what the model asked for, what the policy said, what is still open.

A turn's open calls live in the session row (``data["calls"]``), written in the same
transaction as the events that create or resolve them, so they are a projection of the log
that a restarted server reads back as it was. Each call is a :class:`Call`; its ``state`` is

- ``pending``: allowed, not started;
- ``running``: started (a restart finds it here only if the server died mid-call: it is then
  reported as interrupted, never run twice);
- ``held``: waiting for the client (``always_ask``/``auto`` said ask, or a custom tool).

On a self-hosted environment the built-in tools run in the customer's worker: such calls are
``remote`` and stay held until a ``user.tool_result`` answers them (a confirmation only lets the
worker go ahead).

Kinds: ``builtin`` (``agent.tool_use`` → ``agent.tool_result``), ``custom``
(``agent.custom_tool_use``, answered by the client) and ``mcp`` (``agent.mcp_tool_use`` →
``agent.mcp_tool_result``; ``name`` is the bare MCP tool name and ``server`` the MCP server's
name; Hangar runs it, never a self-hosted worker). :func:`result_for` builds the result event
of the right type for a call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from hangar.runtime.mcp.toolsets import McpToolMap, find_mcp_toolset, policy_for
from hangar.runtime.tools.definitions import find_toolset, tool_policy, toolset_definitions
from hangar.runtime.tools.policy import Verdict, denied_text, evaluate
from hangar.store.events import NewEvent
from hangar.wire import events as ev

CallKind = Literal["builtin", "custom", "mcp"]
CallState = Literal["pending", "running", "held"]


@dataclass(frozen=True)
class Call:
    id: str  # the agent.tool_use / agent.custom_tool_use event id (the model's tool_use id)
    kind: CallKind
    name: str
    input: dict[str, Any]
    state: CallState
    remote: bool = False
    server: str | None = None  # the MCP server's name (kind "mcp")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Call:
        return cls(
            raw["id"],
            raw["kind"],
            raw["name"],
            raw.get("input") or {},
            raw["state"],
            bool(raw.get("remote")),
            raw.get("server"),
        )


def load_calls(data: dict[str, Any]) -> list[Call]:
    return [Call.from_json(c) for c in data.get("calls") or ()]


def dump_calls(calls: list[Call]) -> list[dict[str, Any]]:
    return [c.to_json() for c in calls]


def with_state(calls: list[Call], call_id: str, state: CallState) -> list[Call]:
    return [replace(c, state=state) if c.id == call_id else c for c in calls]


def without(calls: list[Call], call_id: str) -> list[Call]:
    return [c for c in calls if c.id != call_id]


def tool_definitions(agent: dict[str, Any]) -> list[dict[str, Any]]:
    """Everything the model may call: the enabled built-in tools and the custom tools."""
    tools: list[dict[str, Any]] = []
    toolset = find_toolset(agent.get("tools"))
    if toolset is not None:
        tools += toolset_definitions(toolset)
    for tool in agent.get("tools") or ():
        if tool.get("type") == "custom":
            tools.append(
                {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "input_schema": tool.get("input_schema") or {"type": "object"},
                }
            )
    return tools


@dataclass(frozen=True)
class Planned:
    """The events one model response's tool uses produce, and the calls left open."""

    uses: list[NewEvent]  # emitted before span.model_request_end
    results: list[NewEvent]  # denials, emitted after it
    calls: list[Call]


def plan_tool_uses(
    agent: dict[str, Any],
    blocks: list[dict[str, Any]],
    thread_id: str,
    new_id: Any,
    *,
    remote: bool = False,
    mcp: McpToolMap | None = None,
) -> Planned:
    """Turn the ``tool_use`` blocks of a model response into events and open calls.

    ``mcp`` maps the model-facing names of the MCP tools the request offered to their server and
    bare name; such a use becomes ``agent.mcp_tool_use`` under its ``mcp_toolset``'s policy."""
    toolset = find_toolset(agent.get("tools"))
    custom = {t["name"] for t in agent.get("tools") or () if t.get("type") == "custom"}
    uses: list[NewEvent] = []
    results: list[NewEvent] = []
    calls: list[Call] = []
    for block in blocks:
        if block.get("type") != "tool_use":
            continue
        event_id = new_id("event")
        name, tool_input = str(block.get("name", "")), block.get("input") or {}
        if name in custom:
            uses.append(
                NewEvent(
                    ev.AGENT_CUSTOM_TOOL_USE,
                    {"name": name, "input": tool_input},
                    thread_id=thread_id,
                    id=event_id,
                )
            )
            calls.append(Call(event_id, "custom", name, tool_input, "held"))
            continue
        ref = mcp.resolve(name) if mcp is not None else None
        if ref is not None:
            mcp_toolset = find_mcp_toolset(agent.get("tools"), ref.server_name)
            mcp_policy = policy_for(mcp_toolset, ref.tool_name)
            verdict = (
                evaluate(mcp_policy, ref.tool_name, tool_input)
                if isinstance(tool_input, dict)
                else Verdict("deny", None)
            )
            mcp_body: dict[str, Any] = {
                "name": ref.tool_name,
                "mcp_server_name": ref.server_name,
                "input": tool_input,
                "evaluated_permission": verdict.permission,
            }
            if verdict.evaluation is not None:
                mcp_body["evaluation"] = verdict.evaluation
            uses.append(NewEvent(ev.AGENT_MCP_TOOL_USE, mcp_body, thread_id=thread_id, id=event_id))
            if verdict.permission == "deny":
                results.append(
                    mcp_tool_result(event_id, denied_text(ref.tool_name, verdict), thread_id, is_error=True)
                )
            else:
                mcp_state: CallState = "pending" if verdict.permission == "allow" else "held"
                call = Call(event_id, "mcp", ref.tool_name, tool_input, mcp_state, server=ref.server_name)
                calls.append(call)
            continue
        policy = tool_policy(toolset, name) if toolset is not None else None
        verdict = (
            evaluate(policy, name, tool_input) if isinstance(tool_input, dict) else Verdict("deny", None)
        )
        body: dict[str, Any] = {"name": name, "input": tool_input, "evaluated_permission": verdict.permission}
        if verdict.evaluation is not None:
            body["evaluation"] = verdict.evaluation
        uses.append(NewEvent(ev.AGENT_TOOL_USE, body, thread_id=thread_id, id=event_id))
        if verdict.permission == "deny":
            results.append(tool_result(event_id, denied_text(name, verdict), thread_id, is_error=True))
        else:
            state: CallState = "pending" if verdict.permission == "allow" and not remote else "held"
            calls.append(Call(event_id, "builtin", name, tool_input, state, remote))
    return Planned(uses, results, calls)


def tool_result(
    call_id: str,
    text_or_blocks: str | list[dict[str, Any]],
    thread_id: str,
    *,
    is_error: bool = False,
) -> NewEvent:
    return _result(ev.AGENT_TOOL_RESULT, "tool_use_id", call_id, text_or_blocks, thread_id, is_error)


def mcp_tool_result(
    call_id: str,
    text_or_blocks: str | list[dict[str, Any]],
    thread_id: str,
    *,
    is_error: bool = False,
) -> NewEvent:
    return _result(ev.AGENT_MCP_TOOL_RESULT, "mcp_tool_use_id", call_id, text_or_blocks, thread_id, is_error)


def _result(
    event_type: str,
    id_field: str,
    call_id: str,
    text_or_blocks: str | list[dict[str, Any]],
    thread_id: str,
    is_error: bool,
) -> NewEvent:
    content = (
        [{"type": "text", "text": text_or_blocks}] if isinstance(text_or_blocks, str) else text_or_blocks
    )
    return NewEvent(
        event_type, {id_field: call_id, "content": content, "is_error": is_error}, thread_id=thread_id
    )


def result_for(
    call: Call, text_or_blocks: str | list[dict[str, Any]], thread_id: str, *, is_error: bool = False
) -> NewEvent:
    """The result event of ``call``: ``agent.mcp_tool_result`` for an MCP call, else
    ``agent.tool_result``."""
    make = mcp_tool_result if call.kind == "mcp" else tool_result
    return make(call.id, text_or_blocks, thread_id, is_error=is_error)


def rejection_text(name: str, message: str | None) -> str:
    """What the model reads when the user denies a held call (the hosted service's wording)."""
    return f"Permission to use {name} has been rejected. Rejection message: {message or ''}".rstrip()
