"""Small pieces of the MCP wiring that need no server: planning MCP tool uses, the conversation
rendering of MCP events, and the executor pool passing MCP URLs and closing connections."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from hangar.config import Settings
from hangar.runtime import calls as c
from hangar.runtime.context import event_blocks
from hangar.runtime.mcp import McpTool, mcp_tool_definitions
from hangar.runtime.tools.executor import ExecutorPool, WorkspaceExecutor
from hangar.store.events import StoredEvent
from hangar.wire import events as ev

AGENT: dict[str, Any] = {
    "tools": [
        {
            "type": "mcp_toolset",
            "mcp_server_name": "gh",
            "configs": [{"name": "add", "permission_policy": {"type": "always_allow"}}],
        },
        {"type": "custom", "name": "mine", "input_schema": {"type": "object"}},
    ],
    "mcp_servers": [{"type": "url", "name": "gh", "url": "http://127.0.0.1:1/mcp"}],
}
TOOLS = {"gh": [McpTool("add", "Add.", {"type": "object"}), McpTool("echo", None, {"properties": {}})]}


def ids() -> Any:
    counter = itertools.count()
    return lambda prefix: f"sevt_{next(counter)}"


def test_plan_mcp_uses_under_the_toolset_policy() -> None:
    mcp = mcp_tool_definitions(AGENT["tools"], AGENT["mcp_servers"], TOOLS, reserved=["mine"])
    assert [d["name"] for d in mcp.definitions] == ["mcp__gh__add", "mcp__gh__echo"]
    blocks = [
        {"type": "tool_use", "id": "toolu_1", "name": "mcp__gh__add", "input": {"a": 1}},
        {"type": "tool_use", "id": "toolu_2", "name": "mcp__gh__echo", "input": {}},
        {"type": "tool_use", "id": "toolu_3", "name": "mcp__gh__gone", "input": {}},
    ]
    planned = c.plan_tool_uses(AGENT, blocks, "th", ids(), mcp=mcp)
    assert [(u.type, u.data["name"], u.data.get("evaluated_permission")) for u in planned.uses] == [
        (ev.AGENT_MCP_TOOL_USE, "add", "allow"),
        (ev.AGENT_MCP_TOOL_USE, "echo", "ask"),  # mcp_toolset default: always_ask
        (ev.AGENT_TOOL_USE, "mcp__gh__gone", "deny"),  # not offered: refused as an unknown tool
    ]
    assert planned.uses[0].data["mcp_server_name"] == "gh"
    assert [(x.kind, x.name, x.server, x.state) for x in planned.calls] == [
        ("mcp", "add", "gh", "pending"),
        ("mcp", "echo", "gh", "held"),
    ]
    # Stored calls keep their server; results of MCP calls are agent.mcp_tool_result.
    call = c.Call.from_json(planned.calls[0].to_json())
    assert call == planned.calls[0]
    result = c.result_for(call, "done", "th")
    assert result.type == ev.AGENT_MCP_TOOL_RESULT and result.data["mcp_tool_use_id"] == call.id


def test_history_renders_mcp_events_under_model_facing_names() -> None:
    use = StoredEvent(
        1,
        "sevt_u",
        ev.AGENT_MCP_TOOL_USE,
        "th",
        0,
        0,
        {"name": "add", "mcp_server_name": "gh", "input": {"a": 1}},
    )
    result_data = {"mcp_tool_use_id": "sevt_u", "content": [{"type": "text", "text": "2"}], "is_error": False}
    result = StoredEvent(2, "sevt_r", ev.AGENT_MCP_TOOL_RESULT, "th", 0, 0, result_data)
    assert event_blocks(use) == (
        "assistant",
        [{"type": "tool_use", "id": "sevt_u", "name": "mcp__gh__add", "input": {"a": 1}}],
    )
    assert event_blocks(result) == (
        "user",
        [{"type": "tool_result", "tool_use_id": "sevt_u", "content": [{"type": "text", "text": "2"}]}],
    )
    # The same name the request offered when a custom tool takes the plain form.
    reserved = frozenset({"mcp__gh__add"})
    offered = mcp_tool_definitions(AGENT["tools"], AGENT["mcp_servers"], TOOLS, reserved=reserved)
    name = event_blocks(use, reserved)[1][0]["name"]
    assert name != "mcp__gh__add" and offered.resolve(name) is not None


def test_executor_pool_passes_mcp_urls_and_reports_closes(tmp_path: Path) -> None:
    made: list[dict[str, Any]] = []
    closed: list[str] = []

    def factory(session_id: str, workdir: Path, settings: Settings, **kw: Any) -> WorkspaceExecutor:
        made.append(kw)
        return WorkspaceExecutor(session_id, workdir, settings, **kw)

    async def on_close(session_id: str) -> None:
        closed.append(session_id)

    async def run() -> None:
        pool = ExecutorPool(Settings(data_dir=tmp_path), factory, max_live=1, on_close=on_close)
        pool.get("s1", mcp_servers=["http://127.0.0.1:1/mcp"])
        pool.get("s2")
        await asyncio.sleep(0.05)  # the eviction of s1 closes in the background
        await pool.close("s2")
        await pool.aclose()

    asyncio.run(run())
    assert made[0]["mcp_servers"] == ["http://127.0.0.1:1/mcp"] and "mcp_servers" not in made[1]
    assert closed == ["s1", "s2"]


@pytest.mark.parametrize("kind", ["builtin", "mcp"])
def test_result_for_picks_the_event_type(kind: str) -> None:
    call = c.Call("sevt_1", kind, "t", {}, "running", server="gh" if kind == "mcp" else None)  # type: ignore[arg-type]
    event = c.result_for(call, "x", "th", is_error=True)
    key = "mcp_tool_use_id" if kind == "mcp" else "tool_use_id"
    assert event.data[key] == "sevt_1" and event.data["is_error"] is True
