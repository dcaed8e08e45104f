"""MCP toolsets → Messages-API definitions: enabled/disabled configs, default policy always_ask,
model-facing names that are valid, unique and deterministic, and the reverse map."""

from __future__ import annotations

import random
import re
from typing import Any

from hangar.runtime.mcp import McpTool, mcp_tool_definitions, model_tool_name, policy_for
from hangar.runtime.mcp.toolsets import find_mcp_toolset, tool_config
from hangar.wire.tools import normalize_mcp_servers, normalize_tools

VALID = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def tool(name: str, description: str | None = "does things") -> McpTool:
    return McpTool(name=name, description=description, input_schema=dict(SCHEMA))


def agent(
    tools: list[dict[str, Any]], servers: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The resolved form the agents API stores (so these tests read real agent data)."""
    resolved_servers = normalize_mcp_servers(servers)
    return normalize_tools(tools, resolved_servers), resolved_servers


GITHUB = {"type": "url", "name": "github", "url": "https://mcp.example.com/github"}
DOCS = {"type": "url", "name": "docs", "url": "https://mcp.example.com/docs/sse"}


def test_default_policy_is_always_ask() -> None:
    tools, _ = agent([{"type": "mcp_toolset", "mcp_server_name": "github"}], [GITHUB])
    toolset = find_mcp_toolset(tools, "github")
    assert toolset is not None
    assert policy_for(toolset, "search") == {"type": "always_ask"}
    assert policy_for({"type": "mcp_toolset", "mcp_server_name": "github"}, "search") == {
        "type": "always_ask"
    }
    assert policy_for(None, "search") is None
    assert find_mcp_toolset(tools, "other") is None


def test_configs_override_the_default() -> None:
    tools, _ = agent(
        [
            {
                "type": "mcp_toolset",
                "mcp_server_name": "github",
                "default_config": {"permission_policy": {"type": "always_allow"}},
                "configs": [
                    {"name": "delete_repo", "enabled": False},
                    {"name": "create_issue", "permission_policy": {"type": "always_ask"}},
                    {"name": "search", "permission_policy": {"type": "auto"}},
                ],
            }
        ],
        [GITHUB],
    )
    toolset = find_mcp_toolset(tools, "github")
    assert toolset is not None
    assert policy_for(toolset, "delete_repo") is None
    assert policy_for(toolset, "create_issue") == {"type": "always_ask"}
    assert policy_for(toolset, "search") == {"type": "auto"}
    assert policy_for(toolset, "list_repos") == {"type": "always_allow"}, (
        "unconfigured tools inherit default_config"
    )
    assert tool_config(toolset, "delete_repo") == {
        "name": "delete_repo",
        "enabled": False,
        "permission_policy": {"type": "always_allow"},
    }


def test_disabled_by_default_enabled_by_config() -> None:
    tools, servers = agent(
        [
            {
                "type": "mcp_toolset",
                "mcp_server_name": "github",
                "default_config": {"enabled": False},
                "configs": [{"name": "search", "enabled": True}],
            }
        ],
        [GITHUB],
    )
    mapped = mcp_tool_definitions(tools, servers, {"github": [tool("search"), tool("delete_repo")]})
    assert [d["name"] for d in mapped.definitions] == ["mcp__github__search"]
    toolset = find_mcp_toolset(tools, "github")
    assert policy_for(toolset, "delete_repo") is None
    assert policy_for(toolset, "search") == {"type": "always_ask"}


def test_definitions_and_reverse_map() -> None:
    tools, servers = agent(
        [
            {"type": "agent_toolset_20260401"},
            {
                "type": "mcp_toolset",
                "mcp_server_name": "github",
                "configs": [{"name": "delete_repo", "enabled": False}],
            },
            {"type": "mcp_toolset", "mcp_server_name": "docs"},
        ],
        [GITHUB, DOCS],
    )
    listed = {
        "github": [tool("search", "Search code."), tool("delete_repo"), tool("create_issue", None)],
        "docs": [tool("lookup")],
    }
    mapped = mcp_tool_definitions(tools, servers, listed)
    assert mapped.definitions == [
        {"name": "mcp__github__search", "input_schema": SCHEMA, "description": "Search code."},
        {"name": "mcp__github__create_issue", "input_schema": SCHEMA},
        {"name": "mcp__docs__lookup", "input_schema": SCHEMA, "description": "does things"},
    ]
    ref = mapped.resolve("mcp__github__search")
    assert ref is not None and (ref.server_name, ref.tool_name) == ("github", "search")
    assert mapped.resolve("mcp__github__delete_repo") is None, "disabled tools are not offered"
    assert mapped.resolve("bash") is None
    assert mapped.model_name("docs", "lookup") == "mcp__docs__lookup"
    assert mapped.model_name("docs", "nope") is None


def test_unreachable_server_is_left_out() -> None:
    tools, servers = agent(
        [
            {"type": "mcp_toolset", "mcp_server_name": "github"},
            {"type": "mcp_toolset", "mcp_server_name": "docs"},
        ],
        [GITHUB, DOCS],
    )
    mapped = mcp_tool_definitions(tools, servers, {"docs": [tool("lookup")]})
    assert [d["name"] for d in mapped.definitions] == ["mcp__docs__lookup"]


def test_input_schema_gets_an_object_root() -> None:
    tools, servers = agent([{"type": "mcp_toolset", "mcp_server_name": "github"}], [GITHUB])
    listed = {
        "github": [
            McpTool("untyped", None, {"properties": {"x": {"type": "integer"}}}),
            McpTool("array_root", None, {"type": "array"}),
        ]
    }
    schemas = [d["input_schema"] for d in mcp_tool_definitions(tools, servers, listed).definitions]
    assert schemas == [
        {"type": "object", "properties": {"x": {"type": "integer"}}},
        {"type": "object", "properties": {}},
    ]


def test_awkward_names_get_a_deterministic_valid_fallback() -> None:
    long_server = "s" * 120
    cases = [
        ("github", "search.code"),  # a dot
        ("my server", "search"),  # a space in the server name
        ("github", "ünïcode"),
        (long_server, "search"),  # too long for mcp__<server>__<tool>
        ("github", "t" * 128),
        ("a__b", "c"),  # would read as server "a", tool "b__c"
        ("a", "b__c"),
        ("a_", "_b"),
        ("a", "__b"),
    ]
    names = [model_tool_name(s, t) for s, t in cases]
    assert all(VALID.match(n) for n in names), names
    assert len(set(names)) == len(names), "every (server, tool) pair gets its own name"
    assert names == [model_tool_name(s, t) for s, t in cases], "deterministic"
    assert model_tool_name("a", "b__c") == "mcp__a__b__c", "a plain pair keeps the readable form"
    assert model_tool_name("a__b", "c").startswith("mcp_") and not model_tool_name("a__b", "c").startswith(
        "mcp__"
    )
    assert model_tool_name("github", "search.code").endswith("_search_code")


def test_names_never_take_a_reserved_name() -> None:
    tools, servers = agent(
        [
            {"type": "mcp_toolset", "mcp_server_name": "github"},
            {
                "type": "custom",
                "name": "mcp__github__search",
                "description": "mine",
                "input_schema": {"type": "object"},
            },
        ],
        [GITHUB],
    )
    mapped = mcp_tool_definitions(
        tools, servers, {"github": [tool("search")]}, reserved={"mcp__github__search"}
    )
    [definition] = mapped.definitions
    assert definition["name"] != "mcp__github__search"
    assert VALID.match(definition["name"])
    ref = mapped.resolve(definition["name"])
    assert ref is not None and (ref.server_name, ref.tool_name) == ("github", "search")


def test_names_round_trip_for_many_servers_and_tools() -> None:
    rng = random.Random(5)
    alphabet = "abcXYZ019_-. /ü"
    servers = [
        {"type": "url", "name": f"srv{i}{rng.choice(alphabet)}", "url": f"https://h{i}.example.com/mcp"}
        for i in range(8)
    ]
    toolsets = [{"type": "mcp_toolset", "mcp_server_name": s["name"]} for s in servers]
    tools, resolved = agent(toolsets, servers)
    listed = {
        s["name"]: [
            tool("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 140)))) for _ in range(20)
        ]
        for s in servers
    }
    mapped = mcp_tool_definitions(tools, resolved, listed)
    names = [d["name"] for d in mapped.definitions]
    assert len(names) == len(set(names))
    assert all(VALID.match(n) for n in names)
    for server_name, server_tools in listed.items():
        for t in server_tools:
            name = mapped.model_name(server_name, t.name)
            assert name is not None
            ref = mapped.resolve(name)
            assert ref is not None and (ref.server_name, ref.tool_name) == (server_name, t.name)
    shuffled = {k: list(reversed(v)) for k, v in listed.items()}
    again = mcp_tool_definitions(tools, resolved, shuffled)
    assert again.by_model_name == mapped.by_model_name, "names do not depend on list order"
