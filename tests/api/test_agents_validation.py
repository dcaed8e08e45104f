"""Agent request validation: the exact hosted messages (BEHAVIOUR §1) and every enforced limit."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import BetaErrorResponse
from anthropic.types.beta import BetaManagedAgentsAgent

from tests.helpers import strict

MODEL = "claude-sonnet-4-6"
P = "Failed to parse request: "


def ok(client: anthropic.Anthropic, **kw: Any) -> BetaManagedAgentsAgent:
    kw.setdefault("name", "v")
    kw.setdefault("model", MODEL)
    agent: BetaManagedAgentsAgent = strict(BetaManagedAgentsAgent, client.beta.agents.create(**kw))
    return agent


def rejected(client: anthropic.Anthropic, **kw: Any) -> str:
    """Create with ``kw`` (``None`` values are sent as JSON null) and return the 400 message."""
    body = {"name": "v", "model": MODEL, **kw}
    with pytest.raises(anthropic.BadRequestError) as e:
        client.post("/v1/agents", body=body, cast_to=object)
    err = strict(BetaErrorResponse, e.value.body)
    assert err.error.type == "invalid_request_error"
    return str(err.error.message)


def toolset(*configs: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"type": "agent_toolset_20260401", "configs": list(configs), **kw}


def custom(name: str = "t") -> dict[str, Any]:
    return {"type": "custom", "name": name, "description": "d", "input_schema": {"type": "object"}}


# --------------------------------------------------------------------------- BEHAVIOUR §1 messages


def test_unknown_toolset_tool_name(client: anthropic.Anthropic) -> None:
    assert rejected(client, tools=[toolset({"name": "find"})]) == (
        P + 'tools[0].configs[0].name: "find" is not a valid value; '
        "expected one of bash, edit, glob, grep, read, web_fetch, web_search, write"
    )


def test_unknown_policy_type(client: anthropic.Anthropic) -> None:
    msg = rejected(client, tools=[toolset(default_config={"permission_policy": {"type": "never_allow"}})])
    assert msg == P + 'tools[0].default_config.permission_policy.type: "never_allow" is not a valid value'
    msg = rejected(client, tools=[toolset({"name": "bash", "permission_policy": {"type": "never_allow"}})])
    assert msg == P + 'tools[0].configs[0].permission_policy.type: "never_allow" is not a valid value'


def test_duplicate_tool_config(client: anthropic.Anthropic) -> None:
    msg = rejected(client, tools=[toolset({"name": "bash"}, {"name": "bash", "enabled": False})])
    assert msg == 'tools.0.agent_toolset_20260401.configs.1: duplicate entry for tool "AGENT_TOOL_NAME_BASH"'


def test_two_agent_toolsets(client: anthropic.Anthropic) -> None:
    msg = rejected(client, tools=[toolset(), toolset()])
    assert (
        msg
        == "tools.1.agent_toolset_20260401: duplicate entry; at most one agent_toolset_20260401 is allowed"
    )


def test_mcp_pairing(client: anthropic.Anthropic) -> None:
    server = {"type": "url", "name": "X", "url": "https://mcp.example.com"}
    msg = rejected(client, tools=[{"type": "mcp_toolset", "mcp_server_name": "X"}])
    assert msg.endswith('references server "X" which is not defined in mcp_servers')
    msg = rejected(client, mcp_servers=[server])
    assert msg.endswith("mcp_servers [X] declared but no mcp_toolset in tools references them")
    msg = rejected(
        client,
        mcp_servers=[server],
        tools=[
            {"type": "mcp_toolset", "mcp_server_name": "X"},
            {"type": "mcp_toolset", "mcp_server_name": "X"},
        ],
    )
    assert msg.endswith('duplicate entry for server "X"; each MCP server may have at most one mcp_toolset')


def test_duplicate_skill(client: anthropic.Anthropic) -> None:
    msg = rejected(client, skills=[{"type": "anthropic", "skill_id": "xlsx"}] * 2)
    assert msg == 'Agent has invalid configuration: duplicate skill_id "xlsx"'


# --------------------------------------------------------------------------- top-level fields


def test_required_and_unknown_fields(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="name: field required"):
        client.post("/v1/agents", body={"model": MODEL}, cast_to=object)
    with pytest.raises(anthropic.BadRequestError, match="model: field required"):
        client.post("/v1/agents", body={"name": "n"}, cast_to=object)
    assert rejected(client, colour="blue") == P + "colour: unknown field"
    assert rejected(client, tools=[toolset(extra=1)]) == P + "tools[0].extra: unknown field"
    assert rejected(client, model=5) == P + "model: expected a string or an object, got number"


def test_name_description_system_limits(client: anthropic.Anthropic) -> None:
    assert ok(client, name="n" * 256).name == "n" * 256
    assert rejected(client, name="") == P + "name: must not be empty"
    assert rejected(client, name="n" * 257) == P + "name: must be at most 256 characters, got 257"
    assert ok(client, description="d" * 2048).description == "d" * 2048
    assert (
        rejected(client, description="d" * 2049)
        == P + "description: must be at most 2048 characters, got 2049"
    )
    assert ok(client, system="s" * 100_000).system == "s" * 100_000
    msg = rejected(client, system="s" * 100_001)
    assert msg == P + "system: must be at most 100000 characters, got 100001"


def test_model_validation(client: anthropic.Anthropic) -> None:
    assert rejected(client, model="") == P + "model: must not be empty"
    assert rejected(client, model={"id": MODEL, "speed": "warp"}) == (
        P + 'model.speed: "warp" is not a valid value; expected one of fast, standard'
    )
    assert rejected(client, model={"id": MODEL, "effort": "huge"}).startswith(
        P + 'model.effort: "huge" is not'
    )
    assert rejected(client, model={"id": MODEL, "effort": {"type": "huge"}}).startswith(
        P + "model.effort.type:"
    )
    assert rejected(client, model={"effort": "low"}) == P + "model.id: field required"


def test_metadata_rules(client: anthropic.Anthropic) -> None:
    assert ok(client, metadata={f"k{i}": "v" for i in range(16)}).metadata["k15"] == "v"
    assert "at most 16" in rejected(client, metadata={f"k{i}": "v" for i in range(17)})
    assert ok(client, metadata={"k" * 64: "v" * 512}).metadata == {"k" * 64: "v" * 512}
    assert "keys must be 1-64" in rejected(client, metadata={"k" * 65: "v"})
    assert "at most 512" in rejected(client, metadata={"k": "v" * 513})
    assert "values must be strings" in rejected(client, metadata={"k": 1})
    agent = ok(client, metadata={f"k{i}": "v" for i in range(16)})
    with pytest.raises(anthropic.BadRequestError, match="at most 16"):
        client.beta.agents.update(agent.id, metadata={"k16": "v"})
    # A patch that deletes one and adds one stays within the limit.
    assert len(client.beta.agents.update(agent.id, metadata={"k0": None, "k16": "v"}).metadata) == 16


def test_execution_identity(client: anthropic.Anthropic) -> None:
    arn = "arn:aws:iam::1:role/" + "r" * (2048 - len("arn:aws:iam::1:role/"))
    assert ok(
        client, execution_identity={"type": "aws_role", "role_arn": arn}
    ).execution_identity.model_dump() == {
        "type": "aws_role",
        "role_arn": arn,
    }
    msg = rejected(client, execution_identity={"type": "aws_role", "role_arn": arn + "r"})
    assert msg == P + "execution_identity.role_arn: must be at most 2048 characters, got 2049"
    assert (
        rejected(client, execution_identity={"type": "aws_role"})
        == P + "execution_identity.role_arn: field required"
    )
    assert ok(client, execution_identity=None).execution_identity.type == "service_account"
    assert rejected(client, execution_identity={"type": "user"}).startswith(
        P + 'execution_identity.type: "user"'
    )


# --------------------------------------------------------------------------- tools


def test_tool_count_limit(client: anthropic.Anthropic) -> None:
    assert len(ok(client, tools=[custom(f"t{i}") for i in range(256)]).tools) == 256
    msg = rejected(client, tools=[custom(f"t{i}") for i in range(257)])
    assert msg == "tools: at most 256 tools are allowed across all toolsets, got 257"
    # The agent toolset counts as its eight built-in tools.
    assert len(ok(client, tools=[toolset(), *[custom(f"t{i}") for i in range(248)]]).tools) == 249
    msg = rejected(client, tools=[toolset(), *[custom(f"t{i}") for i in range(249)]])
    assert msg == "tools: at most 256 tools are allowed across all toolsets, got 257"


def test_custom_tool_rules(client: anthropic.Anthropic) -> None:
    assert ok(client, tools=[custom("a" * 128)]).tools[0].model_dump()["name"] == "a" * 128
    assert (
        rejected(client, tools=[custom("a" * 129)])
        == P + "tools[0].name: must be at most 128 characters, got 129"
    )
    assert rejected(client, tools=[custom("")]) == P + "tools[0].name: must not be empty"
    msg = rejected(client, tools=[custom("has space")])
    assert msg == P + 'tools[0].name: "has space" may contain only letters, digits, underscores and hyphens'
    assert (
        rejected(client, tools=[custom("A_b-9"), custom("A_b-9")])
        == 'tools.1.custom: duplicate entry for tool "A_b-9"'
    )
    bad_schema = {**custom(), "input_schema": {"type": "array"}}
    assert rejected(client, tools=[bad_schema]).startswith(
        P + 'tools[0].input_schema.type: "array" is not a valid value'
    )
    no_desc = {k: v for k, v in custom().items() if k != "description"}
    assert rejected(client, tools=[no_desc]) == P + "tools[0].description: field required"
    assert rejected(client, tools=[{"type": "computer"}]).startswith(
        P + 'tools[0].type: "computer" is not a valid value'
    )


def test_config_type_must_match_name(client: anthropic.Anthropic) -> None:
    msg = rejected(client, tools=[toolset({"name": "bash", "type": "read"})])
    assert msg == P + 'tools[0].configs[0].type: "read" does not match name "bash"'
    assert rejected(client, tools=[toolset({"name": "bash", "allowed_domains": ["a.com"]})]) == (
        P + "tools[0].configs[0].allowed_domains: unknown field"
    )


def test_auto_policy_accepted(client: anthropic.Anthropic) -> None:
    agent = ok(client, tools=[toolset({"name": "bash", "permission_policy": {"type": "auto"}})])
    assert agent.tools[0].model_dump()["configs"][0]["permission_policy"] == {"type": "auto"}


def test_web_fetch_extras(client: anthropic.Anthropic) -> None:
    def fetch(**extra: Any) -> list[dict[str, Any]]:
        return [toolset({"name": "web_fetch", **extra})]

    both = rejected(client, tools=fetch(allowed_domains=["a.com"], blocked_domains=["b.com"]))
    assert both == P + "tools[0].configs[0]: allowed_domains and blocked_domains cannot be combined"
    assert rejected(client, tools=fetch(allowed_domains=[])) == (
        P + "tools[0].configs[0].allowed_domains: must not be empty; omit the field instead"
    )
    assert ok(client, tools=fetch(blocked_domains=[f"d{i}.com" for i in range(64)])).tools
    assert rejected(client, tools=fetch(blocked_domains=[f"d{i}.com" for i in range(65)])) == (
        P + "tools[0].configs[0].blocked_domains: at most 64 entries are allowed, got 65"
    )
    assert "contains a URL scheme" in rejected(client, tools=fetch(allowed_domains=["https://a.com"]))
    assert "contains a port" in rejected(client, tools=fetch(allowed_domains=["a.com:443"]))
    assert "contains a path" in rejected(client, tools=fetch(allowed_domains=["a.com/docs"]))
    assert rejected(client, tools=fetch(max_content_tokens=0)) == (
        P + "tools[0].configs[0].max_content_tokens: must be at least 1, got 0"
    )


def test_web_fetch_url_sources(client: anthropic.Anthropic) -> None:
    agent = ok(
        client,
        tools=[
            toolset(
                {
                    "name": "web_fetch",
                    "url_sources": {
                        "user_input": "none",
                        "server_tool_results": {
                            "type": "only",
                            "tools": [{"type": "tool_reference", "name": "web_search"}],
                        },
                        "client_tool_results": {
                            "type": "except",
                            "tools": [{"type": "tool_reference", "name": "lookup"}],
                        },
                    },
                }
            ),
            custom("lookup"),
        ],
    )
    config = agent.tools[0].model_dump()["configs"][0]
    assert config["url_sources"] == {
        "user_input": {"type": "none"},
        "server_tool_results": {"type": "only", "tools": [{"type": "tool_reference", "name": "web_search"}]},
        "client_tool_results": {"type": "except", "tools": [{"type": "tool_reference", "name": "lookup"}]},
    }
    partial = ok(
        client, tools=[toolset({"name": "web_fetch", "url_sources": {"user_input": {"type": "all"}}})]
    )
    assert partial.tools[0].model_dump()["configs"][0]["url_sources"] == {
        "user_input": {"type": "all"},
        "server_tool_results": None,
        "client_tool_results": None,
    }

    def sources(**value: Any) -> list[dict[str, Any]]:
        return [toolset({"name": "web_fetch", "url_sources": value})]

    none = rejected(
        client, tools=sources(user_input="none", server_tool_results="none", client_tool_results="none")
    )
    assert none.startswith(P + "tools[0].configs[0].url_sources: setting")
    assert "must not be empty" in rejected(
        client, tools=sources(server_tool_results={"type": "only", "tools": []})
    )
    too_many = [{"type": "tool_reference", "name": f"t{i}"} for i in range(129)]
    assert "at most 128" in rejected(
        client, tools=sources(client_tool_results={"type": "only", "tools": too_many})
    )
    msg = rejected(
        client,
        tools=sources(
            server_tool_results={"type": "only", "tools": [{"type": "tool_reference", "name": "bash"}]}
        ),
    )
    assert (
        msg == P + "tools[0].configs[0].url_sources.server_tool_results.tools[0].name:"
        ' "bash" must be "web_search" or "web_fetch"'
    )
    msg = rejected(
        client,
        tools=sources(
            client_tool_results={"type": "except", "tools": [{"type": "tool_reference", "name": "nope"}]}
        ),
    )
    assert msg.endswith('client_tool_results.tools[0].name: "nope" must be a custom tool in tools')
    assert rejected(client, tools=sources(user_input={"type": "only", "tools": []})).startswith(
        P + 'tools[0].configs[0].url_sources.user_input.type: "only" is not a valid value'
    )


def test_web_search_extras(client: anthropic.Anthropic) -> None:
    agent = ok(
        client,
        tools=[
            toolset(
                {
                    "name": "web_search",
                    "allowed_domains": ["docs.example.com/api"],
                    "user_location": {
                        "type": "approximate",
                        "country": "US",
                        "timezone": "America/Los_Angeles",
                    },
                }
            )
        ],
    )
    config = agent.tools[0].model_dump()["configs"][0]
    assert config["allowed_domains"] == ["docs.example.com/api"]  # a path suffix is fine here
    assert config["user_location"] == {
        "type": "approximate",
        "city": None,
        "region": None,
        "country": "US",
        "timezone": "America/Los_Angeles",
    }

    def loc(**value: Any) -> list[dict[str, Any]]:
        return [toolset({"name": "web_search", "user_location": {"type": "approximate", **value}})]

    assert "ISO 3166-1" in rejected(client, tools=loc(country="us"))
    assert "not an IANA timezone" in rejected(client, tools=loc(timezone="Mars/Olympus"))
    assert rejected(client, tools=[toolset({"name": "web_search", "max_content_tokens": 5})]) == (
        P + "tools[0].configs[0].max_content_tokens: unknown field"
    )


# --------------------------------------------------------------------------- mcp_servers, skills


def test_mcp_server_rules(client: anthropic.Anthropic) -> None:
    def servers(n: int, name: str = "s") -> dict[str, Any]:
        return {
            "mcp_servers": [
                {"type": "url", "name": f"{name}{i}", "url": f"https://m{i}.example.com"} for i in range(n)
            ],
            "tools": [{"type": "mcp_toolset", "mcp_server_name": f"{name}{i}"} for i in range(n)],
        }

    assert len(ok(client, **servers(20)).mcp_servers) == 20
    assert rejected(client, **servers(21)) == P + "mcp_servers: at most 20 MCP servers are allowed, got 21"
    long = "n" * 254
    assert ok(client, **servers(1, long)).mcp_servers[0].name == long + "0"
    assert (
        rejected(client, **servers(1, long + "n"))
        == P + "mcp_servers[0].name: must be at most 255 characters, got 256"
    )
    dup = [{"type": "url", "name": "a", "url": "https://a.example.com"}] * 2
    msg = rejected(client, mcp_servers=dup, tools=[{"type": "mcp_toolset", "mcp_server_name": "a"}])
    assert msg == 'mcp_servers.1: duplicate entry for server name "a"'
    assert "is not a valid http(s) URL" in rejected(
        client,
        mcp_servers=[{"type": "url", "name": "a", "url": "ftp://x"}],
        tools=[{"type": "mcp_toolset", "mcp_server_name": "a"}],
    )


def test_mcp_toolset_config_rules(client: anthropic.Anthropic) -> None:
    base = {"mcp_servers": [{"type": "url", "name": "a", "url": "https://a.example.com"}]}
    msg = rejected(
        client,
        tools=[{"type": "mcp_toolset", "mcp_server_name": "a", "configs": [{"name": "x" * 129}]}],
        **base,
    )
    assert msg == P + "tools[0].configs[0].name: must be at most 128 characters, got 129"
    msg = rejected(
        client,
        tools=[{"type": "mcp_toolset", "mcp_server_name": "a", "configs": [{"name": "x"}, {"name": "x"}]}],
        **base,
    )
    assert msg == 'tools.0.mcp_toolset.configs.1: duplicate entry for tool "x"'
    agent = ok(
        client,
        tools=[
            {
                "type": "mcp_toolset",
                "mcp_server_name": "a",
                "default_config": {"enabled": False, "permission_policy": {"type": "always_allow"}},
                "configs": [{"name": "x", "enabled": True}],
            }
        ],
        **base,
    )
    assert agent.tools[0].model_dump() == {
        "type": "mcp_toolset",
        "mcp_server_name": "a",
        "default_config": {"enabled": False, "permission_policy": {"type": "always_allow"}},
        "configs": [{"name": "x", "enabled": True, "permission_policy": {"type": "always_allow"}}],
    }


def test_skills_rules(client: anthropic.Anthropic) -> None:
    twenty = [{"type": "custom", "skill_id": f"skill_{i}"} for i in range(20)]
    assert len(ok(client, skills=twenty).skills) == 20
    assert rejected(client, skills=[*twenty, {"type": "custom", "skill_id": "skill_x"}]) == (
        P + "skills: at most 20 skills are allowed, got 21"
    )
    assert rejected(client, skills=[{"type": "builtin", "skill_id": "x"}]).startswith(
        P + 'skills[0].type: "builtin"'
    )
    assert rejected(client, skills=[{"type": "custom"}]) == P + "skills[0].skill_id: field required"
    assert (
        ok(client, skills=[{"type": "anthropic", "skill_id": "pdf", "version": None}]).skills[0].version
        == "latest"
    )


def test_round_trip_is_stable(client: anthropic.Anthropic) -> None:
    """Sending back a response's configuration changes nothing (normalizing is idempotent)."""
    agent = ok(
        client,
        tools=[
            toolset(
                {"name": "web_fetch", "url_sources": {"user_input": "none"}, "blocked_domains": ["x.com"]},
                {"name": "web_search", "user_location": {"type": "approximate", "city": "Paris"}},
                default_config={"enabled": False},
            ),
            {"type": "mcp_toolset", "mcp_server_name": "a", "configs": [{"name": "q"}]},
            custom("c"),
        ],
        mcp_servers=[{"type": "url", "name": "a", "url": "https://a.example.com"}],
        skills=[{"type": "anthropic", "skill_id": "pdf"}],
        model={"id": MODEL, "inference_geo": "us"},
    )
    dumped = agent.model_dump(mode="json", exclude_unset=True)
    same = client.beta.agents.update(
        agent.id,
        version=1,
        tools=dumped["tools"],
        mcp_servers=dumped["mcp_servers"],
        skills=dumped["skills"],
        model=dumped["model"],
        execution_identity=dumped["execution_identity"],
    )
    assert strict(BetaManagedAgentsAgent, same).version == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "m" * 257}, "model: must be at most 256 characters, got 257"),
        (
            {"model": {"id": "m", "inference_geo": "g" * 65}},
            "model.inference_geo: must be at most 64 characters",
        ),
        ({"skills": [{"type": "custom", "skill_id": "s" * 257}]}, "skills[0].skill_id: must be at most 256"),
        (
            {"skills": [{"type": "custom", "skill_id": "s", "version": "v" * 65}]},
            "skills[0].version: must be at most 64",
        ),
        (
            {
                "mcp_servers": [{"type": "url", "name": "a", "url": "https://a.example.com/" + "p" * 2048}],
                "tools": [{"type": "mcp_toolset", "mcp_server_name": "a"}],
            },
            "mcp_servers[0].url: must be at most 2048 characters",
        ),
        (
            {
                "tools": [
                    toolset(
                        {"name": "web_search", "user_location": {"type": "approximate", "city": "c" * 256}}
                    )
                ]
            },
            "user_location.city: must be at most 255 characters",
        ),
        (
            {"tools": [toolset({"name": "web_fetch", "allowed_domains": ["a" * 64 + ".com"]})]},
            "is not a valid hostname",
        ),
        (
            {"multiagent": {"type": "coordinator", "agents": [{"type": "agent", "id": "a" * 129}]}},
            "multiagent.agents[0].id: must be at most 128 characters",
        ),
        (
            {"multiagent": {"type": "coordinator", "agents": [{"type": "advisor", "model": "m" * 257}]}},
            "multiagent.agents[0].model: must be at most 256 characters",
        ),
    ],
)
def test_minor_length_limits(client: anthropic.Anthropic, fields: dict[str, Any], message: str) -> None:
    assert message in rejected(client, **fields)
