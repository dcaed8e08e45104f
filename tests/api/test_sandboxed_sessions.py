"""Cloud sessions run their tools in a bubblewrap sandbox; without bubblewrap, Hangar refuses
them unless started with --unsafe-no-sandbox."""

from __future__ import annotations

import json
import shutil
from typing import Any

import anthropic
import pytest

from tests.conftest import API_KEY
from tests.sessions_helpers import make_agent_env, user_message, wait_idle

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
TOOLSET = {"type": "agent_toolset_20260401"}


def bash(command: str) -> dict[str, Any]:
    return user_message("[[tool:bash " + json.dumps({"command": command}) + "]]")


def last_result(events: list[Any]) -> Any:
    return [e for e in events if e.type == "agent.tool_result"][-1]


@needs_bwrap
def test_tools_run_unprivileged_in_the_sandbox(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, tools=[TOOLSET])
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(
        s.id, events=[bash("echo uid=$(id -u); grep CapEff /proc/self/status; pwd")]
    )
    result = last_result(wait_idle(client, s.id))
    text = result.content[0].text
    assert result.is_error is False, text
    assert "uid=0" not in text and "uid=" in text
    assert "CapEff:\t0000000000000000" in text
    assert "/workspace" in text
    client.beta.sessions.events.send(s.id, events=[bash("touch /usr/owned-by-agent")])
    result = last_result(wait_idle(client, s.id, turns=2))
    assert result.is_error is True


@needs_bwrap
def test_limited_networking_goes_through_the_egress_proxy(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(
        name="limited",
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["allowed.example"]}},
    )
    agent = client.beta.agents.create(name="net-agent", model="scripted", tools=[TOOLSET])
    s = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    # The proxy refuses a host outside allowed_hosts before resolving it: nothing leaves this machine.
    command = "curl -sS -o /dev/null -w %{http_code} http://blocked.example/ ; echo; echo $HTTP_PROXY"
    client.beta.sessions.events.send(s.id, events=[bash(command)])
    text = last_result(wait_idle(client, s.id)).content[0].text
    assert "403" in text and "127.0.0.1:3128" in text


def test_without_bubblewrap_cloud_sessions_are_refused(make_server: Any) -> None:
    srv = make_server(env={"PATH": "/nonexistent"})  # no bwrap on the PATH
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client, tools=[TOOLSET])
        with pytest.raises(anthropic.BadRequestError, match=r"bubblewrap.*--unsafe-no-sandbox"):
            client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        hosted = client.beta.environments.create(name="sh", config={"type": "self_hosted"})
        assert client.beta.sessions.create(agent=agent_id, environment_id=hosted.id).status == "idle"


def test_unsafe_no_sandbox_runs_tools_unconfined(make_server: Any) -> None:
    srv = make_server(env={"PATH": "/nonexistent", "HANGAR_UNSAFE_NO_SANDBOX": "true"})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client, tools=[TOOLSET])
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        client.beta.sessions.events.send(s.id, events=[bash("echo euid=$EUID")])
        text = last_result(wait_idle(client, s.id)).content[0].text
        assert "euid=" in text
    assert "WITHOUT A SANDBOX" in srv.log()
