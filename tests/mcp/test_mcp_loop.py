"""MCP toolsets in the agent loop, end to end: a real ``hangar serve``, the official client, real
MCP servers (tests/mcp_servers.py) and the scripted model calling the model-facing tool names."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.mcp.conftest import ALLOW, ALLOW_ALL, last_turn, of_type, session_for, tool, turn
from tests.mcp_servers import McpTestServer, big_text, free_port
from tests.sessions_helpers import all_events, user_message, wait_idle


def test_policies_results_and_history(client: anthropic.Anthropic, tools_server: McpTestServer) -> None:
    toolset = {
        "default_config": {"permission_policy": ALLOW},
        "configs": [
            {"name": "echo", "permission_policy": {"type": "always_ask"}},
            {"name": "memo", "enabled": False},
        ],
    }
    sid = session_for(client, [{"name": "tools", "url": tools_server.url}], {"tools": toolset})
    echoes, memos = tools_server.calls_of("echo"), tools_server.calls_of("memo")  # shared server

    # always_allow: runs at once; the model reads the result under the model-facing name.
    events = last_turn(turn(client, sid, tool("mcp__tools__add", a=2, b=3), 1))
    assert [e.type for e in events] == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.mcp_tool_use",
        "span.model_request_end",
        "agent.mcp_tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.thread_status_idle",
        "session.status_idle",
    ]
    use, result = events[4], events[6]
    assert (use.name, use.mcp_server_name, use.input) == ("add", "tools", {"a": 2, "b": 3})
    assert use.evaluated_permission == "allow" and use.evaluation.type == "always_allow"
    assert result.mcp_tool_use_id == use.id and result.is_error is False
    assert [b.text for b in result.content] == ["5"]
    assert events[8].content[0].text == "The mcp__tools__add tool returned: 5"
    assert tools_server.calls[-1] == ("add", {"a": 2, "b": 3})

    # always_ask: held until confirmed; allow runs it.
    events = last_turn(turn(client, sid, tool("mcp__tools__echo", text="hi"), 2))
    use = of_type(events, "agent.mcp_tool_use")[0]
    assert use.evaluated_permission == "ask" and use.evaluation.type == "always_ask"
    idle = events[-1]
    assert idle.stop_reason.type == "requires_action" and idle.stop_reason.event_ids == [use.id]
    assert tools_server.calls_of("echo") == echoes
    client.beta.sessions.events.send(
        sid,
        events=[{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}],
    )
    events = wait_idle(client, sid, turns=3)
    result = of_type(events, "agent.mcp_tool_result")[-1]
    assert result.mcp_tool_use_id == use.id and result.content[0].text == "hi" and not result.is_error
    assert tools_server.calls_of("echo") == echoes + 1

    # deny: never runs; the model reads the rejection.
    events = last_turn(turn(client, sid, tool("mcp__tools__echo", text="no"), 4))
    use = of_type(events, "agent.mcp_tool_use")[0]
    client.beta.sessions.events.send(
        sid,
        events=[
            {
                "type": "user.tool_confirmation",
                "tool_use_id": use.id,
                "result": "deny",
                "deny_message": "nope",
            }
        ],
    )
    events = wait_idle(client, sid, turns=5)
    result = of_type(events, "agent.mcp_tool_result")[-1]
    assert result.mcp_tool_use_id == use.id and result.is_error is True
    assert "rejected" in result.content[0].text and "nope" in result.content[0].text
    assert tools_server.calls_of("echo") == echoes + 1

    # A tool error is an is_error result; a disabled tool is not offered (a plain denied tool_use).
    events = last_turn(
        turn(client, sid, tool("mcp__tools__fail", message="boom") + tool("mcp__tools__memo"), 6)
    )
    result = of_type(events, "agent.mcp_tool_result")[0]
    assert result.is_error is True and "boom" in result.content[0].text
    denied = of_type(events, "agent.tool_use")
    assert [(u.name, u.evaluated_permission) for u in denied] == [("mcp__tools__memo", "deny")]
    assert tools_server.calls_of("memo") == memos


def test_big_result_spilled_to_workspace(
    client: anthropic.Anthropic, hangar: ServerProcess, tools_server: McpTestServer
) -> None:
    sid = session_for(
        client,
        [{"name": "tools", "url": tools_server.url}],
        {"tools": ALLOW_ALL},
    )
    events = turn(client, sid, tool("mcp__tools__big", size=50_000), 1)
    result = of_type(events, "agent.mcp_tool_result")[0]
    text = result.content[0].text
    assert result.is_error is False and len(text.encode()) < 50_000
    assert "50000 bytes" in text and "/workspace/.mcp_results/tools-big-" in text
    assert big_text(50_000)[:1000] in text
    shown = text.split("saved in full to ")[1].split(";")[0]
    on_host = hangar.data_dir / "workspaces" / sid / shown.removeprefix("/workspace/")
    assert Path(on_host).read_text() == big_text(50_000)


def test_unreachable_server_reported_once_per_turn(
    client: anthropic.Anthropic, tools_server: McpTestServer
) -> None:
    servers = [
        {"name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp"},
        {"name": "tools", "url": tools_server.url},
    ]
    sid = session_for(client, servers, {"tools": ALLOW_ALL, "down": ALLOW_ALL})
    for n in (1, 2):
        events = last_turn(turn(client, sid, tool("mcp__tools__add", a=1, b=n), n))
        errors = of_type(events, "session.error")
        assert len(errors) == 1, [e.type for e in events]  # two model requests, one report
        error = errors[0].error
        assert error.type == "mcp_connection_failed_error" and error.mcp_server_name == "down"
        assert error.retry_status.type == "exhausted"
        assert of_type(events, "agent.mcp_tool_result")[0].content[0].text == str(1 + n)
        assert events[-1].stop_reason.type == "end_turn"


def test_restart_reconnects_and_interrupt_cancels(client: anthropic.Anthropic) -> None:
    with McpTestServer(name="restart") as srv:
        sid = session_for(client, [{"name": "r", "url": srv.url}], {"r": ALLOW_ALL})
        events = turn(client, sid, tool("mcp__r__add", a=1, b=1), 1)
        assert of_type(events, "agent.mcp_tool_result")[-1].content[0].text == "2"
        srv.restart()
        events = turn(client, sid, tool("mcp__r__add", a=2, b=2), 2)
        result = of_type(events, "agent.mcp_tool_result")[-1]
        assert result.content[0].text == "4" and not result.is_error
        assert not of_type(events, "session.error")

        # An interrupt cancels a call in flight.
        client.beta.sessions.events.send(sid, events=[user_message(tool("mcp__r__slow", seconds=30))])  # type: ignore[list-item]
        deadline = time.monotonic() + 20
        while not srv.calls_of("slow") and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        client.beta.sessions.events.send(sid, events=[{"type": "user.interrupt"}])
        events = wait_idle(client, sid, turns=3)
        assert time.monotonic() - started < 10
        result = of_type(events, "agent.mcp_tool_result")[-1]
        assert result.is_error is True and "interrupted" in result.content[0].text
        assert events[-1].stop_reason.type == "end_turn"

        # The server dies during a call: an is_error result, one session.error, the turn goes on.
        slow_calls = srv.calls_of("slow")
        client.beta.sessions.events.send(sid, events=[user_message(tool("mcp__r__slow", seconds=30))])  # type: ignore[list-item]
        deadline = time.monotonic() + 20
        while srv.calls_of("slow") == slow_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        srv.stop()
        events = last_turn(wait_idle(client, sid, turns=4))
        result = of_type(events, "agent.mcp_tool_result")[-1]
        assert result.is_error is True and "lost the connection" in result.content[0].text
        errors = of_type(events, "session.error")
        assert [(e.error.type, e.error.mcp_server_name) for e in errors] == [
            ("mcp_connection_failed_error", "r")
        ]
        assert events[-1].stop_reason.type == "end_turn"


def test_mcp_events_validate(client: anthropic.Anthropic, tools_server: McpTestServer) -> None:
    """Listing through the SDK's own types (strict) is part of all_events; here: retrieve one."""
    sid = session_for(
        client,
        [{"name": "tools", "url": tools_server.url}],
        {"tools": ALLOW_ALL},
    )
    turn(client, sid, tool("mcp__tools__picture"), 1)
    events = all_events(client, sid)
    result = of_type(events, "agent.mcp_tool_result")[0]
    assert result.content[0].type == "image" and result.is_error is False


def test_call_running_at_a_crash_is_reported_not_rerun(make_server: Any) -> None:
    with McpTestServer(name="crash") as mcp_srv:
        srv: ServerProcess = make_server()
        with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as c:
            sid = session_for(c, [{"name": "x", "url": mcp_srv.url}], {"x": ALLOW_ALL})
            c.beta.sessions.events.send(sid, events=[user_message(tool("mcp__x__slow", seconds=2))])  # type: ignore[list-item]
            deadline = time.monotonic() + 20
            while not mcp_srv.calls_of("slow") and time.monotonic() < deadline:
                time.sleep(0.05)
            srv.kill()
        again: ServerProcess = make_server(data_dir=srv.data_dir, database_url=srv.database_url or "")
        with anthropic.Anthropic(base_url=again.base_url, api_key=API_KEY, max_retries=0) as c:
            events = wait_idle(c, sid)
            result = of_type(events, "agent.mcp_tool_result")[-1]
            assert result.is_error is True and "restarted" in result.content[0].text
            time.sleep(2.5)  # long enough for a second run to have been recorded
        assert mcp_srv.calls_of("slow") == 1
