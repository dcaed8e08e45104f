"""Agents through the official client: create echo, retrieve, update and versioning, list and
paging, archive. Validation lives in ``test_agents_validation.py``, multiagent in
``test_agents_multiagent.py``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaManagedAgentsAgent

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict

MODEL = "claude-sonnet-4-6"
STALE = "Concurrent modification detected. Please fetch the latest version and retry."


def make(client: anthropic.Anthropic, **kw: Any) -> BetaManagedAgentsAgent:
    kw.setdefault("name", "agent")
    kw.setdefault("model", MODEL)
    agent: BetaManagedAgentsAgent = strict(BetaManagedAgentsAgent, client.beta.agents.create(**kw))
    return agent


def raw_json(server: ServerProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {
        "authorization": f"Bearer {API_KEY}",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "managed-agents-2026-04-01",
    }
    return httpx.request(method, server.base_url + path, headers=headers, **kw)


# --------------------------------------------------------------------------- create


def test_create_echo_minimal(server: ServerProcess) -> None:
    r = raw_json(server, "POST", "/v1/agents", json={"name": "Minimal", "model": MODEL})
    assert r.status_code == 200, r.text
    body = r.json()
    strict(BetaManagedAgentsAgent, body)
    assert body["type"] == "agent"
    assert body["id"].startswith("agent_")
    assert body["name"] == "Minimal"
    assert body["description"] is None and body["system"] is None
    assert body["metadata"] == {} and body["multiagent"] is None
    assert body["skills"] == [] and body["mcp_servers"] == [] and body["tools"] == []
    assert body["version"] == 1
    assert body["model"] == {"id": MODEL, "effort": {"type": "high"}, "speed": "standard"}
    assert body["execution_identity"] == {"type": "service_account"}
    assert body["archived_at"] is None
    assert body["created_at"] == body["updated_at"]


def test_create_bare_toolset_is_resolved(server: ServerProcess) -> None:
    r = raw_json(
        server,
        "POST",
        "/v1/agents",
        json={"name": "t", "model": MODEL, "tools": [{"type": "agent_toolset_20260401"}]},
    )
    assert r.status_code == 200, r.text
    strict(BetaManagedAgentsAgent, r.json())
    assert r.json()["tools"] == [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
            "configs": [],
        }
    ]


def test_create_full_echo(client: anthropic.Anthropic) -> None:
    agent = make(
        client,
        name="Full",
        description="does things",
        system="Be brief.",
        model={"id": MODEL, "effort": "low", "speed": "fast", "inference_geo": "us"},
        tools=[
            {
                "type": "agent_toolset_20260401",
                "default_config": {"permission_policy": {"type": "always_ask"}},
                "configs": [
                    {"name": "bash", "enabled": False},
                    {"name": "read", "type": "read", "permission_policy": {"type": "always_allow"}},
                    {
                        "name": "web_fetch",
                        "allowed_domains": ["docs.example.com"],
                        "max_content_tokens": 5000,
                    },
                ],
            },
            {"type": "mcp_toolset", "mcp_server_name": "gh", "configs": [{"name": "search"}]},
            {
                "type": "custom",
                "name": "get_weather",
                "description": "Weather",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        ],
        mcp_servers=[{"type": "url", "name": "gh", "url": "https://user:pass@mcp.example.com/sse"}],
        skills=[
            {"type": "anthropic", "skill_id": "xlsx"},
            {"type": "custom", "skill_id": "skill_1", "version": "7"},
        ],
        execution_identity={"type": "aws_role", "role_arn": "arn:aws:iam::123456789012:role/runner"},
        metadata={"team": "core"},
    )
    assert agent.description == "does things" and agent.system == "Be brief."
    assert agent.model.id == MODEL and agent.model.speed == "fast" and agent.model.inference_geo == "us"
    assert agent.model.effort is not None and agent.model.effort.type == "low"
    toolset = agent.tools[0].model_dump()
    assert toolset["default_config"] == {"enabled": True, "permission_policy": {"type": "always_ask"}}
    bash, read, fetch = toolset["configs"]
    assert bash == {
        "name": "bash",
        "type": "bash",
        "enabled": False,
        "permission_policy": {"type": "always_ask"},
    }
    assert read["permission_policy"] == {"type": "always_allow"} and read["enabled"] is True
    assert fetch["allowed_domains"] == ["docs.example.com"] and fetch["max_content_tokens"] == 5000
    mcp = agent.tools[1].model_dump()
    assert mcp["default_config"] == {"enabled": True, "permission_policy": {"type": "always_ask"}}
    assert mcp["configs"] == [
        {"name": "search", "enabled": True, "permission_policy": {"type": "always_ask"}}
    ]
    custom = agent.tools[2].model_dump()
    assert custom["name"] == "get_weather" and custom["input_schema"]["required"] == ["city"]
    assert [s.model_dump() for s in agent.skills] == [
        {"type": "anthropic", "skill_id": "xlsx", "version": "latest"},
        {"type": "custom", "skill_id": "skill_1", "version": "7"},
    ]
    assert agent.execution_identity.model_dump() == {
        "type": "aws_role",
        "role_arn": "arn:aws:iam::123456789012:role/runner",
    }
    assert agent.metadata == {"team": "core"}
    # The echo is what is stored.
    again = strict(BetaManagedAgentsAgent, client.beta.agents.retrieve(agent.id))
    assert again.model_dump() == agent.model_dump()


def test_effort_object_form_and_empty_strings(client: anthropic.Anthropic) -> None:
    agent = make(client, model={"id": MODEL, "effort": {"type": "max"}}, description="", system="")
    assert agent.model.effort is not None and agent.model.effort.type == "max"
    assert agent.description is None and agent.system is None


# --------------------------------------------------------------------------- retrieve


def test_retrieve_by_version_and_missing(client: anthropic.Anthropic) -> None:
    agent = make(client, system="one")
    client.beta.agents.update(agent.id, version=1, system="two")
    v1 = strict(BetaManagedAgentsAgent, client.beta.agents.retrieve(agent.id, version=1))
    v2 = strict(BetaManagedAgentsAgent, client.beta.agents.retrieve(agent.id))
    assert (v1.version, v1.system) == (1, "one")
    assert (v2.version, v2.system) == (2, "two")
    with pytest.raises(anthropic.NotFoundError) as e:
        client.beta.agents.retrieve(agent.id, version=3)
    assert e.value.body["error"] == {"type": "not_found_error", "message": "Agent version not found."}


def test_unknown_and_malformed_ids(client: anthropic.Anthropic) -> None:
    unknown = "agent_01aaaaaaaaaaaaaaaaaaaaaaaa"
    for call in (
        lambda: client.beta.agents.retrieve(unknown),
        lambda: client.beta.agents.update(unknown, name="x"),
        lambda: client.beta.agents.archive(unknown),
        lambda: client.beta.agents.versions.list(unknown),
    ):
        with pytest.raises(anthropic.NotFoundError) as nf:
            call()
        assert nf.value.body["error"] == {"type": "not_found_error", "message": "Agent not found."}
    for call in (
        lambda: client.beta.agents.archive("not-an-agent"),
        lambda: client.beta.agents.retrieve("agent_!!"),
    ):
        with pytest.raises(anthropic.BadRequestError) as bad:
            call()
        assert bad.value.body["error"] == {"type": "invalid_request_error", "message": "Invalid agent ID."}


# --------------------------------------------------------------------------- update


def test_update_publishes_versions_and_keeps_old_ones(client: anthropic.Anthropic) -> None:
    agent = make(client, name="a", description="d", system="s", metadata={"a": "1", "b": "2"})
    v2 = strict(
        BetaManagedAgentsAgent,
        client.beta.agents.update(agent.id, version=1, name="b", metadata={"a": None, "c": "3"}),
    )
    assert v2.version == 2 and v2.name == "b"
    assert v2.description == "d" and v2.system == "s"  # omitted fields are kept
    assert v2.metadata == {"b": "2", "c": "3"}  # metadata is a patch
    assert v2.created_at == agent.created_at and v2.updated_at > agent.updated_at
    v3 = strict(BetaManagedAgentsAgent, client.beta.agents.update(agent.id, description=None, system=""))
    assert v3.version == 3 and v3.description is None and v3.system is None
    old = strict(BetaManagedAgentsAgent, client.beta.agents.retrieve(agent.id, version=1))
    assert old.name == "a" and old.metadata == {"a": "1", "b": "2"} and old.updated_at == agent.updated_at


def test_stale_version_is_409_without_retry(client: anthropic.Anthropic) -> None:
    agent = make(client)
    client.beta.agents.update(agent.id, version=1, name="n2")
    with pytest.raises(anthropic.ConflictError) as e:
        client.beta.agents.with_raw_response.update(agent.id, version=1, name="n3")
    assert e.value.status_code == 409
    assert e.value.body["error"] == {"type": "invalid_request_error", "message": STALE}
    assert e.value.response.headers["x-should-retry"] == "false"
    # The failed attempt used up no version number.
    v3 = strict(BetaManagedAgentsAgent, client.beta.agents.update(agent.id, version=2, name="n3"))
    assert v3.version == 3


def test_noop_update_does_not_bump(client: anthropic.Anthropic) -> None:
    agent = make(
        client, name="same", system="s", metadata={"k": "v"}, tools=[{"type": "agent_toolset_20260401"}]
    )
    same = strict(
        BetaManagedAgentsAgent,
        client.beta.agents.update(
            agent.id,
            version=1,
            name="same",
            system="s",
            metadata={"k": "v"},
            tools=[{"type": "agent_toolset_20260401"}],
            model=MODEL,
        ),
    )
    assert same.version == 1 and same.updated_at == agent.updated_at
    assert [v.version for v in client.beta.agents.versions.list(agent.id)] == [1]
    # A metadata delete of a missing key is also a no-op.
    assert client.beta.agents.update(agent.id, metadata={"nope": None}).version == 1


def test_update_model_replaced_whole_but_effort_kept(client: anthropic.Anthropic) -> None:
    agent = make(client, model={"id": MODEL, "effort": "low", "inference_geo": "eu", "speed": "fast"})
    v2 = strict(BetaManagedAgentsAgent, client.beta.agents.update(agent.id, model={"id": "claude-opus-4-8"}))
    assert v2.model.id == "claude-opus-4-8"
    assert v2.model.effort is not None and v2.model.effort.type == "low"  # omitted effort is kept
    assert v2.model.inference_geo is None and v2.model.speed == "standard"  # the rest is replaced
    v3 = strict(
        BetaManagedAgentsAgent, client.beta.agents.update(agent.id, model={"id": MODEL, "effort": "max"})
    )
    assert v3.model.effort is not None and v3.model.effort.type == "max"
    with pytest.raises(anthropic.BadRequestError, match="model: cannot be cleared"):
        client.beta.agents.update(agent.id, extra_body={"model": None})
    with pytest.raises(anthropic.BadRequestError, match="name: must not be empty"):
        client.beta.agents.update(agent.id, name="")
    with pytest.raises(anthropic.BadRequestError, match="name: cannot be cleared"):
        client.beta.agents.update(agent.id, extra_body={"name": None})


def test_update_lists_replaced_and_cleared(client: anthropic.Anthropic) -> None:
    agent = make(
        client,
        tools=[{"type": "agent_toolset_20260401"}, {"type": "mcp_toolset", "mcp_server_name": "s"}],
        mcp_servers=[{"type": "url", "name": "s", "url": "https://s.example.com"}],
        skills=[{"type": "anthropic", "skill_id": "pdf"}],
        execution_identity={"type": "aws_role", "role_arn": "arn:aws:iam::1:role/r"},
    )
    # Dropping the server alone leaves its toolset dangling: the pairing is re-checked.
    with pytest.raises(anthropic.BadRequestError, match='references server "s" which is not defined'):
        client.beta.agents.update(agent.id, mcp_servers=[])
    v2 = strict(
        BetaManagedAgentsAgent,
        client.beta.agents.update(
            agent.id,
            tools=[{"type": "agent_toolset_20260401"}],
            mcp_servers=None,
            skills=[],
            execution_identity=None,
        ),
    )
    assert v2.version == 2 and len(v2.tools) == 1 and v2.mcp_servers == [] and v2.skills == []
    assert v2.execution_identity.type == "service_account"
    v3 = strict(BetaManagedAgentsAgent, client.beta.agents.update(agent.id, tools=None))
    assert v3.version == 3 and v3.tools == []


def test_update_archived_agent_refused(client: anthropic.Anthropic) -> None:
    agent = make(client)
    client.beta.agents.archive(agent.id)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.beta.agents.update(agent.id, version=1, name="x")
    assert e.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "Cannot modify archived agent",
    }


def test_bad_update_changes_nothing(client: anthropic.Anthropic) -> None:
    agent = make(client, name="keep")
    with pytest.raises(anthropic.BadRequestError):
        client.beta.agents.update(agent.id, name="new", tools=[{"type": "nope"}])
    now = strict(BetaManagedAgentsAgent, client.beta.agents.retrieve(agent.id))
    assert now.version == 1 and now.name == "keep"


def test_concurrent_updates_never_share_a_version(server: ServerProcess) -> None:
    with anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0) as c:
        agent = make(c)
        n = 12

        def bump(i: int) -> int:
            return c.beta.agents.update(agent.id, name=f"n{i}").version

        with ThreadPoolExecutor(max_workers=6) as pool:
            versions = list(pool.map(bump, range(n)))
        assert sorted(versions) == list(range(2, n + 2))
        listed = [
            strict(BetaManagedAgentsAgent, v).version
            for v in c.beta.agents.versions.list(agent.id, limit=100)
        ]
        assert listed == list(range(n + 1, 0, -1))

        # Racing updates that all carry the same expected version: exactly one wins.
        def guarded(i: int) -> str:
            try:
                c.beta.agents.update(agent.id, version=n + 1, name=f"g{i}")
            except anthropic.ConflictError:
                return "conflict"
            return "ok"

        with ThreadPoolExecutor(max_workers=6) as pool:
            outcomes = list(pool.map(guarded, range(6)))
        assert outcomes.count("ok") == 1 and outcomes.count("conflict") == 5


# --------------------------------------------------------------------------- versions list


def test_versions_list_newest_first_and_paged(client: anthropic.Anthropic) -> None:
    agent = make(client)
    for i in range(4):
        client.beta.agents.update(agent.id, name=f"v{i + 2}")
    first = client.beta.agents.versions.list(agent.id, limit=2)
    assert [strict(BetaManagedAgentsAgent, a).version for a in first.data] == [5, 4]
    assert first.next_page
    everything = [
        strict(BetaManagedAgentsAgent, a).version for a in client.beta.agents.versions.list(agent.id, limit=2)
    ]
    assert everything == [5, 4, 3, 2, 1]
    last = client.beta.agents.versions.list(agent.id, limit=5)
    assert last.next_page is None


# --------------------------------------------------------------------------- list


def test_list_paging_filters_and_archived(client: anthropic.Anthropic) -> None:
    made = [make(client, name=f"list-{i}") for i in range(7)]
    since = made[0].created_at
    ids = [a.id for a in made]

    pages = []
    page = client.beta.agents.list(limit=3, created_at_gte=since)
    seen: list[str] = []
    while True:
        pages.append(page)
        seen += [strict(BetaManagedAgentsAgent, a).id for a in page.data]
        if not page.next_page:
            break
        page = client.beta.agents.list(limit=3, created_at_gte=since, page=page.next_page)
    assert seen == list(reversed(ids))  # newest first, no duplicates or omissions
    assert [len(p.data) for p in pages] == [3, 3, 1]
    # The SDK's auto-pager gives the same.
    assert [a.id for a in client.beta.agents.list(limit=2, created_at_gte=since)] == list(reversed(ids))

    upto = [a.id for a in client.beta.agents.list(created_at_gte=since, created_at_lte=made[2].created_at)]
    assert upto == list(reversed(ids[:3]))

    archived = strict(BetaManagedAgentsAgent, client.beta.agents.archive(made[3].id))
    assert archived.archived_at is not None
    visible = [a.id for a in client.beta.agents.list(created_at_gte=since)]
    assert made[3].id not in visible and len(visible) == 6
    everything = [a.id for a in client.beta.agents.list(created_at_gte=since, include_archived=True)]
    assert everything == list(reversed(ids))


def test_list_query_errors(server: ServerProcess) -> None:
    for query, fragment in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"page": "garbage!"}, "invalid page cursor"),
        ({"created_at[gte]": "yesterday"}, "created_at[gte]"),
    ):
        r = raw_json(server, "GET", "/v1/agents", params=query)
        assert r.status_code == 400, (query, r.text)
        assert fragment in r.json()["error"]["message"]
    r = raw_json(server, "GET", "/v1/agents", params={"limit": 100})
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------- archive


def test_archive_is_idempotent_and_shared_by_versions(client: anthropic.Anthropic) -> None:
    agent = make(client)
    client.beta.agents.update(agent.id, name="second")
    first = strict(BetaManagedAgentsAgent, client.beta.agents.archive(agent.id))
    second = strict(BetaManagedAgentsAgent, client.beta.agents.archive(agent.id))
    assert first.archived_at is not None and first.archived_at == second.archived_at
    assert first.version == 2 and first.name == "second"
    old = strict(BetaManagedAgentsAgent, client.beta.agents.retrieve(agent.id, version=1))
    assert old.archived_at == first.archived_at
    assert all(v.archived_at == first.archived_at for v in client.beta.agents.versions.list(agent.id))
