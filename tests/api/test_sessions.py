"""Sessions through the official client: create variants, validation, list/paging, update,
archive and delete."""

from __future__ import annotations

import time

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaManagedAgentsSession
from anthropic.types.beta.sessions import BetaManagedAgentsSessionThread

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.sessions_helpers import all_events, make_agent_env, user_message, wait_idle


def test_create_echo_is_complete_and_idle(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, system="Be brief.")
    s = strict(
        BetaManagedAgentsSession,
        client.beta.sessions.create(agent=agent_id, environment_id=env_id, title="t1", metadata={"k": "v"}),
    )
    assert s.status == "idle"
    assert s.title == "t1" and s.metadata == {"k": "v"}
    assert s.agent.id == agent_id and s.agent.version == 1 and s.agent.system == "Be brief."
    assert s.usage.input_tokens == 0 and s.usage.output_tokens == 0
    assert s.usage.list_cost is not None and s.usage.list_cost.amount == "0"
    assert s.stats.active_seconds == 0
    assert s.resources == [] and s.vault_ids == [] and s.outcome_evaluations == []
    threads = [strict(BetaManagedAgentsSessionThread, t) for t in client.beta.sessions.threads.list(s.id)]
    assert len(threads) == 1 and threads[0].parent_thread_id is None and threads[0].status == "idle"


def test_pinned_version_and_overrides(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, system="v1")
    client.beta.agents.update(agent_id, version=1, system="v2")
    pinned = client.beta.sessions.create(
        agent={"type": "agent", "id": agent_id, "version": 1}, environment_id=env_id
    )
    assert strict(BetaManagedAgentsSession, pinned).agent.system == "v1"
    latest = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    assert latest.agent.version == 2 and latest.agent.system == "v2"
    over = client.beta.sessions.create(
        agent={"type": "agent_with_overrides", "id": agent_id, "system": "override"}, environment_id=env_id
    )
    over = strict(BetaManagedAgentsSession, over)
    assert over.agent.system == "override" and over.agent.version == 2
    # The session snapshot is frozen: later agent updates do not reach it.
    client.beta.agents.update(agent_id, version=2, system="v3")
    assert client.beta.sessions.retrieve(latest.id).agent.system == "v2"
    with pytest.raises(anthropic.NotFoundError, match=r"agent\.version: 999 not found"):
        client.beta.sessions.create(
            agent={"type": "agent", "id": agent_id, "version": 999}, environment_id=env_id
        )


def test_create_refusals(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent="agent_nope", environment_id=env_id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent=agent_id, environment_id="env_nope")
    with pytest.raises(anthropic.BadRequestError, match=r"initial_events: at most 50"):
        client.beta.sessions.create(
            agent=agent_id, environment_id=env_id, initial_events=[user_message("x")] * 51
        )
    with pytest.raises(
        anthropic.BadRequestError, match=r"initial_events\[0\]\.content\[0\]\.text: field required"
    ):
        client.beta.sessions.create(
            agent=agent_id,
            environment_id=env_id,
            initial_events=[{"type": "user.message", "content": [{"type": "text"}]}],
        )
    with pytest.raises(anthropic.BadRequestError, match="metadata"):
        client.beta.sessions.create(
            agent=agent_id, environment_id=env_id, metadata={f"k{i}": "v" for i in range(17)}
        )
    with pytest.raises(anthropic.BadRequestError, match="metadata"):
        client.beta.sessions.create(agent=agent_id, environment_id=env_id, metadata={"k": "v" * 513})
    with pytest.raises(anthropic.BadRequestError, match=r"agent\.system"):
        client.beta.sessions.create(
            agent={"type": "agent_with_overrides", "id": agent_id, "system": "x" * 100_001},
            environment_id=env_id,
        )
    env2 = client.beta.environments.create(name="archived-env")
    client.beta.environments.archive(env2.id)
    with pytest.raises(anthropic.BadRequestError, match=f"Environment {env2.id} is archived"):
        client.beta.sessions.create(agent=agent_id, environment_id=env2.id)
    client.beta.agents.archive(agent_id)
    with pytest.raises(anthropic.BadRequestError, match=f"agent {agent_id} is archived and cannot be used"):
        client.beta.sessions.create(agent=agent_id, environment_id=env_id)


def test_initial_events_run_in_order(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client, model="scripted-echo")
    s = client.beta.sessions.create(
        agent=agent_id, environment_id=env_id, initial_events=[user_message("one"), user_message("two")]
    )
    events = wait_idle(client, s.id)
    users = [e for e in events if e.type == "user.message"]
    assert [u.content[0].text for u in users] == ["one", "two"]
    assert all(u.processed_at is not None for u in users)
    replies = [e for e in events if e.type == "agent.message"]
    assert replies, "the initial events started a turn"


def test_list_filters_and_bidirectional_paging(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    other_agent, _ = make_agent_env(client)
    ids = [client.beta.sessions.create(agent=agent_id, environment_id=env_id).id for _ in range(5)]
    client.beta.sessions.create(agent=other_agent, environment_id=env_id)
    page1 = client.beta.sessions.list(agent_id=agent_id, limit=2)
    raw = page1.model_dump(mode="json")
    assert [s["id"] for s in raw["data"]] == ids[::-1][:2]
    for s in page1.data:
        strict(BetaManagedAgentsSession, s)
    assert raw["prev_page"] is None and raw["next_page"]
    seen = [s.id for s in client.beta.sessions.list(agent_id=agent_id, limit=2)]
    assert seen == ids[::-1]  # auto-paging: no duplicates, no omissions
    asc = [s.id for s in client.beta.sessions.list(agent_id=agent_id, order="asc", limit=2)]
    assert asc == ids
    page2 = client.beta.sessions.list(agent_id=agent_id, limit=2, page=raw["next_page"]).model_dump(
        mode="json"
    )
    assert [s["id"] for s in page2["data"]] == ids[::-1][2:4]
    back = client.beta.sessions.list(agent_id=agent_id, limit=2, page=page2["prev_page"]).model_dump(
        mode="json"
    )
    assert [s["id"] for s in back["data"]] == ids[::-1][:2]
    with pytest.raises(anthropic.BadRequestError, match="page token order does not match request"):
        client.beta.sessions.list(agent_id=agent_id, order="asc", page=raw["next_page"])
    with pytest.raises(anthropic.BadRequestError, match="invalid page cursor"):
        client.beta.sessions.list(page="garbage!")
    assert [s.id for s in client.beta.sessions.list(agent_id=agent_id, agent_version=1)] == ids[::-1]
    assert list(client.beta.sessions.list(agent_id=agent_id, agent_version=2)) == []
    with pytest.raises(anthropic.BadRequestError, match="agent_version"):
        client.beta.sessions.list(agent_version=1)
    first = client.beta.sessions.retrieve(ids[2])
    newer = [s.id for s in client.beta.sessions.list(agent_id=agent_id, created_at_gt=first.created_at)]
    assert newer == ids[::-1][:2]
    assert [s.id for s in client.beta.sessions.list(agent_id=agent_id, statuses=["running"])] == []
    client.beta.sessions.archive(ids[0])
    assert ids[0] not in [s.id for s in client.beta.sessions.list(agent_id=agent_id)]
    assert ids[0] in [s.id for s in client.beta.sessions.list(agent_id=agent_id, include_archived=True)]
    assert [
        s.id
        for s in client.beta.sessions.list(agent_id=agent_id, statuses=["terminated"], include_archived=True)
    ] == [ids[0]]


def test_update_emits_session_updated(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id, metadata={"a": "1", "b": "2"})
    u = strict(
        BetaManagedAgentsSession,
        client.beta.sessions.update(s.id, title="new", metadata={"a": None, "c": "3"}),
    )
    assert u.title == "new" and u.metadata == {"b": "2", "c": "3"}
    updates = [e for e in all_events(client, s.id) if e.type == "session.updated"]
    assert len(updates) == 1 and updates[0].title == "new" and updates[0].metadata == {"b": "2", "c": "3"}
    with pytest.raises(anthropic.BadRequestError, match="vault_ids"):
        client.beta.sessions.update(s.id, vault_ids=["vlt_x"])
    with pytest.raises(anthropic.BadRequestError, match="can only be set when the session is created"):
        client.beta.sessions.update(
            s.id, budget={"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}
        )
    u2 = client.beta.sessions.update(s.id, agent={"tools": [{"type": "agent_toolset_20260401"}]})
    assert strict(BetaManagedAgentsSession, u2).agent.tools[0].type == "agent_toolset_20260401"


def test_archive_and_delete(client: anthropic.Anthropic, server: ServerProcess) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    a1 = strict(BetaManagedAgentsSession, client.beta.sessions.archive(s.id))
    assert a1.status == "terminated" and a1.archived_at is not None
    a2 = client.beta.sessions.archive(s.id)
    assert a2.archived_at == a1.archived_at
    types = [e.type for e in all_events(client, s.id)]
    assert types[-1] == "session.status_terminated"
    r = httpx.post(
        f"{server.base_url}/v1/sessions/{s.id}/events",
        headers={"x-api-key": API_KEY},
        json={"events": [user_message("late")]},
    )
    assert r.status_code == 409 and r.headers["x-should-retry"] == "false"
    d = client.beta.sessions.delete(s.id)
    assert d.id == s.id and d.type == "session_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.retrieve(s.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.delete(s.id)


def test_running_session_refuses_archive_and_delete(client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    client.beta.sessions.events.send(s.id, events=[user_message("[[sleep:1500]] slow")])
    deadline = time.monotonic() + 5
    while client.beta.sessions.retrieve(s.id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(anthropic.BadRequestError, match="Cannot delete session while it is running"):
        client.beta.sessions.delete(s.id)
    with pytest.raises(anthropic.BadRequestError, match='cannot be archived while its status is "running"'):
        client.beta.sessions.archive(s.id)
    wait_idle(client, s.id)
    assert client.beta.sessions.delete(s.id).type == "session_deleted"


def test_multiagent_roster_snapshot(client: anthropic.Anthropic) -> None:
    _agent_id, env_id = make_agent_env(client)
    helper = client.beta.agents.create(name="helper", model="scripted", system="I help.")
    lead = client.beta.agents.create(
        name="lead",
        model="scripted",
        multiagent={"type": "coordinator", "agents": [helper.id, {"type": "self"}]},
    )
    s = strict(BetaManagedAgentsSession, client.beta.sessions.create(agent=lead.id, environment_id=env_id))
    assert s.agent.multiagent is not None
    dumped = s.agent.model_dump(mode="json")
    assert helper.id in str(dumped["multiagent"])
