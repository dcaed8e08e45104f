"""The agent loop with tools: built-in tool rounds, permission policies, confirmations that
survive a restart, custom tools (served by the SDK's SessionToolRunner), interrupts, limits."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
import pytest
from anthropic import beta_async_tool

from tests.conftest import API_KEY
from tests.sessions_helpers import all_events, make_agent_env, user_message, wait_idle

TOOLSET = {"type": "agent_toolset_20260401"}
ASK_BASH = {
    "type": "agent_toolset_20260401",
    "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}],
}


def tool(name: str, **tool_input: Any) -> str:
    return f"[[tool:{name} {json.dumps(tool_input)}]]"


def types_after(events: list[Any], start: int = 0) -> list[str]:
    return [e.type for e in events[start:]]


def test_builtin_tool_round(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, tools=[TOOLSET])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="echo hi from bash"))])
    events = wait_idle(client, s.id)
    assert types_after(events) == [
        "user.message",
        "session.status_running",
        "session.thread_status_running",
        "span.model_request_start",
        "agent.tool_use",
        "span.model_request_end",
        "agent.tool_result",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.thread_status_idle",
        "session.status_idle",
    ]
    use, result = events[4], events[6]
    assert use.name == "bash" and use.input == {"command": "echo hi from bash"}
    assert use.evaluated_permission == "allow" and use.evaluation.type == "always_allow"
    assert result.tool_use_id == use.id and result.is_error is False
    assert result.content[0].text.strip() == "hi from bash"
    assert "hi from bash" in events[8].content[0].text
    # The workspace persists between turns: a file written now is read next turn.
    client.beta.sessions.events.send(
        s.id, events=[user_message(tool("write", file_path="notes.txt", content="42"))]
    )
    wait_idle(client, s.id, turns=2)
    client.beta.sessions.events.send(s.id, events=[user_message(tool("read", file_path="notes.txt"))])
    events = wait_idle(client, s.id, turns=3)
    read_result = [e for e in events if e.type == "agent.tool_result"][-1]
    assert "42" in read_result.content[0].text


def test_always_ask_allow_and_deny(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, tools=[ASK_BASH])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="echo allowed"))])
    events = wait_idle(client, s.id)
    use = next(e for e in events if e.type == "agent.tool_use")
    assert use.evaluated_permission == "ask" and use.evaluation.type == "always_ask"
    assert events[-1].stop_reason.type == "requires_action" and events[-1].stop_reason.event_ids == [use.id]
    assert (
        events[-2].type == "session.thread_status_idle" and events[-2].stop_reason.type == "requires_action"
    )
    assert not any(e.type == "agent.tool_result" for e in events)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.send(
            s.id, events=[{"type": "user.tool_confirmation", "tool_use_id": "sevt_nope", "result": "allow"}]
        )
    client.beta.sessions.events.send(
        s.id, events=[{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}]
    )
    events = wait_idle(client, s.id, turns=2)
    result = next(e for e in events if e.type == "agent.tool_result")
    assert result.tool_use_id == use.id and "allowed" in result.content[0].text
    assert events[-1].stop_reason.type == "end_turn"
    # Deny: the call never runs and the model reads the rejection.
    client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="touch never-created"))])
    events = wait_idle(client, s.id, turns=3)
    use = [e for e in events if e.type == "agent.tool_use"][-1]
    client.beta.sessions.events.send(
        s.id,
        events=[
            {"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "deny", "deny_message": "no"}
        ],
    )
    events = wait_idle(client, s.id, turns=4)
    denial = [e for e in events if e.type == "agent.tool_result"][-1]
    assert denial.is_error is True and denial.tool_use_id == use.id
    assert denial.content[0].text == "Permission to use bash has been rejected. Rejection message: no"
    assert events[-1].stop_reason.type == "end_turn"
    check = client.beta.sessions.events.send(
        s.id, events=[user_message(tool("glob", pattern="never-created"))]
    )
    assert check.data
    events = wait_idle(client, s.id, turns=5)
    assert "never-created" not in [e for e in events if e.type == "agent.tool_result"][-1].content[0].text


def test_pending_confirmation_survives_restart(make_server: Any) -> None:
    srv = make_server()
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client, tools=[ASK_BASH])
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        client.beta.sessions.events.send(
            s.id, events=[user_message(tool("bash", command="echo after restart"))]
        )
        events = wait_idle(client, s.id)
        use = next(e for e in events if e.type == "agent.tool_use")
    srv.kill()
    again = make_server(data_dir=srv.data_dir, database_url=srv.database_url)
    with anthropic.Anthropic(base_url=again.base_url, api_key=API_KEY, max_retries=0) as client:
        idle = client.beta.sessions.events.list(s.id, order="desc", limit=1).data[0]
        assert idle.type == "session.status_idle" and idle.stop_reason.event_ids == [use.id]
        client.beta.sessions.events.send(
            s.id, events=[{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}]
        )
        events = wait_idle(client, s.id, turns=2)
        assert "after restart" in [e for e in events if e.type == "agent.tool_result"][-1].content[0].text


def test_auto_policy_denies_high_risk(client: anthropic.Anthropic) -> None:
    auto = {"type": "agent_toolset_20260401", "default_config": {"permission_policy": {"type": "auto"}}}
    agent_id, env_id = make_agent_env(client, tools=[auto])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="rm -rf /"))])
    events = wait_idle(client, s.id)
    use = next(e for e in events if e.type == "agent.tool_use")
    assert use.evaluated_permission == "deny"
    assert use.evaluation.type == "auto" and use.evaluation.evaluated_permission.type == "deny"
    assert use.evaluation.evaluated_permission.reason_code == "high_risk"
    result = next(e for e in events if e.type == "agent.tool_result")
    assert result.is_error is True and result.tool_use_id == use.id
    assert events[-1].stop_reason.type == "end_turn"
    client.beta.sessions.events.send(s.id, events=[user_message(tool("read", file_path="nothing.txt"))])
    events = wait_idle(client, s.id, turns=2)
    read = [e for e in events if e.type == "agent.tool_use"][-1]
    assert read.evaluated_permission == "allow" and read.evaluation.evaluated_permission.type == "allow"


def test_disabled_tool_is_denied_without_evaluation(client: anthropic.Anthropic) -> None:
    toolset = {"type": "agent_toolset_20260401", "configs": [{"name": "bash", "enabled": False}]}
    agent_id, env_id = make_agent_env(client, tools=[toolset])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="echo x"))])
    events = wait_idle(client, s.id)
    use = next(e for e in events if e.type == "agent.tool_use")
    assert use.evaluated_permission == "deny" and use.evaluation is None
    assert next(e for e in events if e.type == "agent.tool_result").is_error is True


def test_custom_tool_served_by_the_sdk_runner(server: Any) -> None:
    calls: list[dict[str, Any]] = []

    @beta_async_tool
    async def lookup(city: str) -> str:
        """Look up the weather of a city."""
        calls.append({"city": city})
        return f"sunny in {city}"

    async def run() -> list[Any]:
        async with anthropic.AsyncAnthropic(
            base_url=server.base_url, api_key=API_KEY, max_retries=0
        ) as client:
            custom = {
                "type": "custom",
                "name": "lookup",
                "description": "Weather lookup",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
            env = await client.beta.environments.create(name="custom-env")
            agent = await client.beta.agents.create(name="custom-agent", model="scripted", tools=[custom])
            s = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
            runner = client.beta.sessions.events.tool_runner(s.id, tools=[lookup], max_idle=1.0)
            await client.beta.sessions.events.send(s.id, events=[user_message(tool("lookup", city="Lisbon"))])
            dispatched = []
            async with asyncio.timeout(30):
                async for call in runner:
                    dispatched.append(call)
            history = [e async for e in client.beta.sessions.events.list(s.id)]
            return [dispatched, history]

    dispatched, history = asyncio.run(run())
    assert calls == [{"city": "Lisbon"}]
    assert len(dispatched) == 1 and dispatched[0].name == "lookup"
    kinds = [e.type for e in history]
    use = next(e for e in history if e.type == "agent.custom_tool_use")
    idle = [e for e in history if e.type == "session.status_idle"]
    assert idle[0].stop_reason.type == "requires_action" and idle[0].stop_reason.event_ids == [use.id]
    assert kinds.index("user.custom_tool_result") > kinds.index("agent.custom_tool_use")
    answer = [e for e in history if e.type == "agent.message"][-1]
    assert "sunny in Lisbon" in answer.content[0].text
    assert idle[-1].stop_reason.type == "end_turn"


def test_interrupt_kills_a_running_tool(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, tools=[TOOLSET])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="sleep 30"))])
    deadline = time.monotonic() + 10
    while not any(e.type == "agent.tool_use" for e in all_events(client, s.id)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)
    t0 = time.monotonic()
    client.beta.sessions.events.send(s.id, events=[{"type": "user.interrupt"}])
    events = wait_idle(client, s.id)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed
    result = next(e for e in events if e.type == "agent.tool_result")
    assert result.is_error is True and "interrupted" in result.content[0].text
    assert events[-1].stop_reason.type == "end_turn"
    # The conversation stays consistent: the next message gets a normal answer.
    client.beta.sessions.events.send(s.id, events=[user_message("still there?")])
    events = wait_idle(client, s.id, turns=2)
    assert events[-1].stop_reason.type == "end_turn"
    assert "still there?" in [e for e in events if e.type == "agent.message"][-1].content[0].text


def test_interrupt_cancels_a_slow_model_request(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message("[[sleep:20000]] slow")])
    deadline = time.monotonic() + 10
    while not any(e.type == "span.model_request_start" for e in all_events(client, s.id)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.beta.sessions.events.send(s.id, events=[{"type": "user.interrupt"}])
    events = wait_idle(client, s.id, timeout=5)
    end = next(e for e in events if e.type == "span.model_request_end")
    assert end.is_error is True
    assert not any(e.type == "agent.message" for e in events)
    assert events[-1].stop_reason.type == "end_turn"


def test_tool_round_limit(make_server: Any) -> None:
    srv = make_server(env={"HANGAR_MAX_MODEL_REQUESTS_PER_TURN": "1"})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client, tools=[TOOLSET])
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        client.beta.sessions.events.send(s.id, events=[user_message(tool("bash", command="echo once"))])
        events = wait_idle(client, s.id)
        error = next(e for e in events if e.type == "session.error")
        assert error.error.type == "tool_use_limit_reached_error"
        assert error.error.retry_status.type == "exhausted"
        assert events[-1].stop_reason.type == "retries_exhausted"


def test_compaction_with_a_small_window(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, model="scripted-small")
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    for i in range(8):
        client.beta.sessions.events.send(s.id, events=[user_message(f"message {i} " + "lorem ipsum " * 150)])
        events = wait_idle(client, s.id, turns=i + 1)
        assert events[-1].stop_reason.type == "end_turn", [e.type for e in events[-6:]]
    events = all_events(client, s.id)
    compactions = [e for e in events if e.type == "agent.thread_context_compacted"]
    assert compactions, "a 4k-token window must have been compacted"
    assert all(e.type != "session.error" for e in events)
    assert "message 7" in [e for e in events if e.type == "agent.message"][-1].content[0].text
