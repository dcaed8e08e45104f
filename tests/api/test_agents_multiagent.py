"""Agent ``multiagent``: coordinator rosters, ``multiagent_20261001`` defaults and update merging,
reference checks, and the session snapshot built from them."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import BetaErrorResponse
from anthropic.types.beta import BetaManagedAgentsAgent, BetaManagedAgentsSessionAgent

from hangar.testing import ServerProcess
from hangar.wire.agents import session_agent_snapshot
from tests.conftest import API_KEY
from tests.helpers import strict

MODEL = "claude-sonnet-4-6"
ADVISOR = "claude-opus-4-8"


def make(client: anthropic.Anthropic, **kw: Any) -> BetaManagedAgentsAgent:
    kw.setdefault("name", "m")
    kw.setdefault("model", MODEL)
    agent: BetaManagedAgentsAgent = strict(BetaManagedAgentsAgent, client.beta.agents.create(**kw))
    return agent


def multiagent(agent: BetaManagedAgentsAgent) -> Any:
    assert agent.multiagent is not None
    return agent.multiagent.model_dump(mode="json")


def rejected(client: anthropic.Anthropic, agent_id: str | None = None, **kw: Any) -> str:
    path = f"/v1/agents/{agent_id}" if agent_id else "/v1/agents"
    body = kw if agent_id else {"name": "m", "model": MODEL, **kw}
    with pytest.raises(anthropic.BadRequestError) as e:
        client.post(path, body=body, cast_to=object)
    err = strict(BetaErrorResponse, e.value.body)
    assert err.error.type == "invalid_request_error"
    return str(err.error.message)


def ref(agent: BetaManagedAgentsAgent, version: int | None = None) -> dict[str, Any]:
    return {"type": "agent", "id": agent.id, "version": version or agent.version}


# --------------------------------------------------------------------------- coordinator


def test_coordinator_resolves_roster(client: anthropic.Anthropic) -> None:
    a = make(client, name="a")
    b = make(client, name="b")
    client.beta.agents.update(b.id, name="b2")  # b is now at version 2
    coord = make(
        client,
        multiagent={
            "type": "coordinator",
            "agents": [
                a.id,
                {"type": "agent", "id": b.id, "version": 1},
                {"type": "self"},
                {"type": "advisor", "model": ADVISOR},
            ],
        },
    )
    assert multiagent(coord) == {
        "type": "coordinator",
        "agents": [
            ref(a),
            {"type": "agent", "id": b.id, "version": 1},
            {"type": "agent", "id": coord.id, "version": 1},
            {"type": "advisor", "model": ADVISOR},
        ],
    }
    # "self" follows the version that holds it; pinned references do not move.
    v2 = strict(BetaManagedAgentsAgent, client.beta.agents.update(coord.id, name="renamed"))
    assert multiagent(v2)["agents"][2] == {"type": "agent", "id": coord.id, "version": 2}
    assert multiagent(v2)["agents"][0] == ref(a)
    # A bare id resolves to the latest version at save time.
    v3 = strict(
        BetaManagedAgentsAgent,
        client.beta.agents.update(coord.id, multiagent={"type": "coordinator", "agents": [b.id]}),
    )
    assert multiagent(v3) == {"type": "coordinator", "agents": [{"type": "agent", "id": b.id, "version": 2}]}
    # Sending the same roster again is a no-op.
    assert (
        client.beta.agents.update(coord.id, multiagent={"type": "coordinator", "agents": [b.id]}).version == 3
    )
    cleared = strict(BetaManagedAgentsAgent, client.beta.agents.update(coord.id, multiagent=None))
    assert cleared.version == 4 and cleared.multiagent is None


def test_coordinator_refusals(client: anthropic.Anthropic) -> None:
    a = make(client, name="a")
    gone = make(client, name="gone")
    client.beta.agents.archive(gone.id)
    nested = make(client, multiagent={"type": "coordinator", "agents": [a.id]})

    def coordinator(*agents: Any) -> dict[str, Any]:
        return {"type": "coordinator", "agents": list(agents)}

    assert rejected(client, multiagent=coordinator()) == (
        "Failed to parse request: multiagent.agents: must have 1-20 entries, got 0"
    )
    assert "at most 20 agents" in rejected(client, multiagent=coordinator(*[a.id] * 21))
    missing = "agent_01zzzzzzzzzzzzzzzzzzzzzzzz"
    assert (
        rejected(client, multiagent=coordinator(missing))
        == f'multiagent.agents.0: agent "{missing}" not found'
    )
    assert (
        rejected(client, multiagent=coordinator(gone.id))
        == f'multiagent.agents.0: agent "{gone.id}" is archived'
    )
    assert rejected(client, multiagent=coordinator({"type": "agent", "id": a.id, "version": 9})) == (
        f'multiagent.agents.0: agent "{a.id}" version 9 not found'
    )
    assert "depth limit 1" in rejected(client, multiagent=coordinator(nested.id))
    assert rejected(client, multiagent=coordinator(a.id, {"type": "agent", "id": a.id})) == (
        f'multiagent.agents.1: duplicate entry for agent "{a.id}"'
    )
    assert rejected(client, multiagent=coordinator({"type": "self"}, {"type": "self"})) == (
        "multiagent.agents.1: at most one self entry is allowed"
    )
    advisor = {"type": "advisor", "model": ADVISOR}
    assert rejected(client, multiagent=coordinator(advisor, advisor)) == (
        "multiagent.agents.1: at most one advisor entry is allowed"
    )
    assert rejected(client, multiagent={"type": "swarm"}).startswith(
        'Failed to parse request: multiagent.type: "swarm" is not a valid value'
    )
    # An update that names the agent itself by id as well as "self" is a duplicate too.
    solo = make(client)
    assert rejected(client, solo.id, multiagent=coordinator({"type": "self"}, solo.id)) == (
        f'multiagent.agents.1: duplicate entry for agent "{solo.id}"'
    )
    # Nothing was stored by the refusals.
    assert client.beta.agents.retrieve(solo.id).version == 1


# --------------------------------------------------------------------------- multiagent_20261001


def test_multiagent_20261001_defaults(client: anthropic.Anthropic) -> None:
    agent = make(client, multiagent={"type": "multiagent_20261001"})
    default_member = {"type": "enabled", "inline_agents": {"type": "enabled"}, "predefined_agents": []}
    assert multiagent(agent) == {
        "type": "multiagent_20261001",
        "advisor": {"type": "disabled"},
        "subagents": default_member,
        "workflows": default_member,
    }
    nulls = make(
        client,
        multiagent={"type": "multiagent_20261001", "advisor": None, "subagents": None, "workflows": None},
    )
    assert multiagent(nulls) == multiagent(agent)


def test_multiagent_20261001_rules(client: anthropic.Anthropic) -> None:
    a = make(client, name="a")

    def m(**members: Any) -> dict[str, Any]:
        return {"type": "multiagent_20261001", **members}

    msg = rejected(client, multiagent=m(subagents={"type": "enabled", "inline_agents": {"type": "disabled"}}))
    assert (
        msg == "multiagent.subagents: predefined_agents must name at least one agent"
        " when inline_agents is disabled"
    )
    assert rejected(client, multiagent=m(advisor={"type": "enabled"})) == (
        "Failed to parse request: multiagent.advisor.model: field required"
    )
    assert "at most 20 agents" in rejected(
        client, multiagent=m(workflows={"type": "enabled", "predefined_agents": [a.id] * 21})
    )
    assert "duplicate entry" in rejected(
        client, multiagent=m(workflows={"type": "enabled", "predefined_agents": [a.id, a.id]})
    )
    assert rejected(
        client,
        multiagent=m(
            workflows={"type": "enabled", "predefined_agents": [{"type": "advisor", "model": ADVISOR}]}
        ),
    ).startswith(
        "Failed to parse request: multiagent.workflows.predefined_agents[0].type:"
        ' "advisor" is not a valid value'
    )
    # The two lists are independent: the same agent may appear in both.
    both = make(
        client,
        multiagent=m(
            subagents={
                "type": "enabled",
                "inline_agents": {"type": "disabled"},
                "predefined_agents": [a.id, {"type": "self"}],
            },
            workflows={"type": "enabled", "predefined_agents": [a.id]},
        ),
    )
    assert multiagent(both)["subagents"]["predefined_agents"] == [
        ref(a),
        {"type": "agent", "id": both.id, "version": 1},
    ]
    assert multiagent(both)["workflows"]["predefined_agents"] == [ref(a)]


def test_multiagent_20261001_update_merge(client: anthropic.Anthropic) -> None:
    a = make(client, name="a")
    b = make(client, name="b")
    agent = make(
        client,
        multiagent={
            "type": "multiagent_20261001",
            "advisor": {"type": "enabled", "model": ADVISOR},
            "subagents": {"type": "enabled", "predefined_agents": [a.id]},
        },
    )

    def update(value: dict[str, Any]) -> Any:
        updated = client.beta.agents.update(agent.id, multiagent={"type": "multiagent_20261001", **value})
        return multiagent(strict(BetaManagedAgentsAgent, updated))

    # Omitted keys are kept; a member with another type replaces the stored one.
    got = update({"workflows": {"type": "disabled"}})
    assert got["advisor"] == {"type": "enabled", "model": ADVISOR}
    assert got["subagents"]["predefined_agents"] == [ref(a)]
    assert got["workflows"] == {"type": "disabled"}
    # Same type: merged level by level; the stored list stays unless a list is sent.
    got = update({"subagents": {"type": "enabled", "inline_agents": {"type": "disabled"}}})
    assert got["subagents"] == {
        "type": "enabled",
        "inline_agents": {"type": "disabled"},
        "predefined_agents": [ref(a)],
    }
    got = update({"subagents": {"type": "enabled", "predefined_agents": [b.id]}})
    assert got["subagents"]["predefined_agents"] == [ref(b)]
    assert got["subagents"]["inline_agents"] == {"type": "disabled"}
    # Validation applies to the merged result.
    msg = rejected(
        client,
        agent.id,
        multiagent={"type": "multiagent_20261001", "subagents": {"type": "enabled", "predefined_agents": []}},
    )
    assert msg.startswith("multiagent.subagents: predefined_agents must name at least one agent")
    # null resets a member to its default; the workflows member (disabled earlier) switches back on.
    got = update({"subagents": None, "workflows": {"type": "enabled"}, "advisor": {"type": "disabled"}})
    default_member = {"type": "enabled", "inline_agents": {"type": "enabled"}, "predefined_agents": []}
    assert got == {
        "type": "multiagent_20261001",
        "advisor": {"type": "disabled"},
        "subagents": default_member,
        "workflows": default_member,
    }
    # Switching topology replaces the whole value.
    coord = client.beta.agents.update(agent.id, multiagent={"type": "coordinator", "agents": [a.id]})
    assert multiagent(strict(BetaManagedAgentsAgent, coord)) == {"type": "coordinator", "agents": [ref(a)]}
    back = client.beta.agents.update(
        agent.id, multiagent={"type": "multiagent_20261001", "workflows": {"type": "disabled"}}
    )
    assert multiagent(strict(BetaManagedAgentsAgent, back))["subagents"] == default_member


# --------------------------------------------------------------------------- session snapshot


def _get(server: ServerProcess, agent_id: str, version: int | None = None) -> dict[str, Any]:
    r = httpx.get(
        f"{server.base_url}/v1/agents/{agent_id}",
        params={"version": version} if version else None,
        headers={"authorization": f"Bearer {API_KEY}"},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    strict(BetaManagedAgentsAgent, body)
    return body


def test_session_agent_snapshot(client: anthropic.Anthropic, server: ServerProcess) -> None:
    worker = make(client, name="worker", system="work", tools=[{"type": "agent_toolset_20260401"}])
    coord = make(
        client,
        name="lead",
        multiagent={
            "type": "coordinator",
            "agents": [worker.id, {"type": "self"}, {"type": "advisor", "model": ADVISOR}],
        },
    )
    agent = _get(server, coord.id)
    roster = {(worker.id, 1): _get(server, worker.id, 1)}
    snap = session_agent_snapshot(agent, roster=roster)
    strict(BetaManagedAgentsSessionAgent, snap)
    assert snap["id"] == coord.id and snap["version"] == 1 and snap["name"] == "lead"
    entries = snap["multiagent"]["agents"]
    assert entries[0]["name"] == "worker" and entries[0]["system"] == "work" and entries[0]["tools"]
    assert entries[1]["id"] == coord.id and entries[1]["name"] == "lead" and "multiagent" not in entries[1]
    assert entries[2] == {"type": "advisor", "model": ADVISOR}
    # Overrides applied to the agent reach its "self" copy.
    overridden = {**agent, "system": "override"}
    assert (
        session_agent_snapshot(overridden, roster=roster)["multiagent"]["agents"][1]["system"] == "override"
    )
    with pytest.raises(KeyError):
        session_agent_snapshot(agent)

    plain = session_agent_snapshot(_get(server, worker.id))
    strict(BetaManagedAgentsSessionAgent, plain)
    assert plain["multiagent"] is None and "metadata" not in plain

    modern = make(
        client,
        multiagent={
            "type": "multiagent_20261001",
            "workflows": {"type": "enabled", "predefined_agents": [worker.id]},
        },
    )
    snap = session_agent_snapshot(_get(server, modern.id), roster=roster)
    strict(BetaManagedAgentsSessionAgent, snap)
    assert snap["multiagent"]["workflows"]["predefined_agents"][0]["name"] == "worker"
