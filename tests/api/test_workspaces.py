"""Workspace isolation: a key sees only its own workspace's objects; anything else is a 404."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest
from anthropic.types.beta import (
    BetaEnvironment,
    BetaFileMetadata,
    BetaManagedAgentsAgent,
    BetaManagedAgentsSession,
)

from hangar.testing import ServerProcess
from tests.api.test_cli import create_key
from tests.helpers import strict


@pytest.fixture
def other_key(server: ServerProcess) -> str:
    """A key in a second workspace, made by the CLI against the running server's database."""
    return create_key(server, "--workspace", "isolation-b", "--name", "workspace b")


@pytest.fixture
def other(server: ServerProcess, other_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.base_url, api_key=other_key, max_retries=0) as c:
        yield c


def agent(client: anthropic.Anthropic, name: str) -> BetaManagedAgentsAgent:
    made: BetaManagedAgentsAgent = strict(
        BetaManagedAgentsAgent, client.beta.agents.create(name=name, model="scripted")
    )
    return made


def assert_404(r: httpx.Response) -> None:
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert body["request_id"] == r.headers["request-id"]


def test_other_workspace_gets_404_for_an_agent(
    server: ServerProcess, client: anthropic.Anthropic, other_key: str
) -> None:
    mine = agent(client, "workspace-a agent")
    as_b = {"authorization": f"Bearer {other_key}", "content-type": "application/json"}
    as_a = {"authorization": f"Bearer {client.api_key}"}

    assert_404(httpx.get(f"{server.base_url}/v1/agents/{mine.id}", headers=as_b))
    assert_404(httpx.get(f"{server.base_url}/v1/agents/{mine.id}/versions", headers=as_b))
    assert_404(
        httpx.post(f"{server.base_url}/v1/agents/{mine.id}", headers=as_b, json={"version": 1, "name": "x"})
    )
    assert_404(httpx.post(f"{server.base_url}/v1/agents/{mine.id}/archive", headers=as_b))
    listed = httpx.get(f"{server.base_url}/v1/agents?limit=100", headers=as_b).json()["data"]
    assert mine.id not in [a["id"] for a in listed]

    # Untouched by B's attempts, and still A's.
    r = httpx.get(f"{server.base_url}/v1/agents/{mine.id}", headers=as_a)
    assert r.status_code == 200
    again = strict(BetaManagedAgentsAgent, r.json())
    assert again.name == "workspace-a agent" and again.version == 1 and again.archived_at is None


def test_isolation_both_ways_through_the_sdk(client: anthropic.Anthropic, other: anthropic.Anthropic) -> None:
    a_agent, b_agent = agent(client, "a"), agent(other, "b")
    with pytest.raises(anthropic.NotFoundError):
        other.beta.agents.retrieve(a_agent.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.agents.retrieve(b_agent.id)
    assert b_agent.id in [a.id for a in other.beta.agents.list(limit=100).data]
    assert b_agent.id not in [a.id for a in client.beta.agents.list(limit=100).data]

    env = strict(BetaEnvironment, client.beta.environments.create(name="a-env"))
    with pytest.raises(anthropic.NotFoundError):
        other.beta.environments.retrieve(env.id)
    assert env.id not in [e.id for e in other.beta.environments.list(limit=100).data]

    # B cannot start a session from A's agent or in A's environment.
    b_env = strict(BetaEnvironment, other.beta.environments.create(name="b-env"))
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.create(agent=a_agent.id, environment_id=b_env.id)
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.create(agent=b_agent.id, environment_id=env.id)
    session = strict(
        BetaManagedAgentsSession, client.beta.sessions.create(agent=a_agent.id, environment_id=env.id)
    )
    with pytest.raises(anthropic.NotFoundError):
        other.beta.sessions.retrieve(session.id)
    assert session.id not in [s.id for s in other.beta.sessions.list(limit=100).data]

    uploaded = strict(
        BetaFileMetadata, client.beta.files.upload(file=("a.txt", b"secret of a", "text/plain"))
    )
    with pytest.raises(anthropic.NotFoundError):
        other.beta.files.retrieve_metadata(uploaded.id)
    with pytest.raises(anthropic.NotFoundError):
        other.beta.files.download(uploaded.id)


def test_named_workspace_is_reused_and_default_is_shared(
    server: ServerProcess, client: anthropic.Anthropic, other: anthropic.Anthropic
) -> None:
    b_agent = agent(other, "shared within b")
    second_b = create_key(server, "--workspace", "isolation-b")
    with anthropic.Anthropic(base_url=server.base_url, api_key=second_b, max_retries=0) as again:
        assert strict(BetaManagedAgentsAgent, again.beta.agents.retrieve(b_agent.id)).id == b_agent.id

    a_agent = agent(client, "shared within default")
    default_key = create_key(server, "--workspace", "Default")
    with anthropic.Anthropic(base_url=server.base_url, api_key=default_key, max_retries=0) as same:
        assert strict(BetaManagedAgentsAgent, same.beta.agents.retrieve(a_agent.id)).id == a_agent.id
