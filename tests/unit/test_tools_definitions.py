"""toolset_definitions / tool_policy / tool_config over real resolved toolsets."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from hangar.runtime.tools import (
    TOOL_NAMES,
    enabled_tools,
    find_toolset,
    tool_config,
    tool_policy,
    toolset_definitions,
)
from hangar.wire.tools import normalize_tools


def resolved(**toolset: Any) -> dict[str, Any]:
    """A toolset as the agents API stores it (through the real request normaliser)."""
    [tool] = normalize_tools([{"type": "agent_toolset_20260401", **toolset}], [])
    return tool


def names(toolset: dict[str, Any]) -> list[str]:
    return [d["name"] for d in toolset_definitions(toolset)]


def test_all_tools_are_enabled_by_default() -> None:
    toolset = resolved()
    assert names(toolset) == list(TOOL_NAMES)
    for definition in toolset_definitions(toolset):
        assert set(definition) == {"name", "description", "input_schema"}
        schema = definition["input_schema"]
        assert schema["type"] == "object"
        assert set(schema.get("required", [])) <= set(schema["properties"])
        assert definition["description"]
    assert all(tool_policy(toolset, n) == {"type": "always_allow"} for n in TOOL_NAMES)


def test_input_schemas_match_the_sdk_inputs() -> None:
    from anthropic.types.beta import (
        BetaManagedAgentsAgentToolset20260401BashInput,
        BetaManagedAgentsAgentToolset20260401EditInput,
        BetaManagedAgentsAgentToolset20260401GlobInput,
        BetaManagedAgentsAgentToolset20260401GrepInput,
        BetaManagedAgentsAgentToolset20260401ReadInput,
        BetaManagedAgentsAgentToolset20260401WriteInput,
    )

    sdk: dict[str, type[BaseModel]] = {
        "bash": BetaManagedAgentsAgentToolset20260401BashInput,
        "edit": BetaManagedAgentsAgentToolset20260401EditInput,
        "glob": BetaManagedAgentsAgentToolset20260401GlobInput,
        "grep": BetaManagedAgentsAgentToolset20260401GrepInput,
        "read": BetaManagedAgentsAgentToolset20260401ReadInput,
        "write": BetaManagedAgentsAgentToolset20260401WriteInput,
    }
    schemas = {d["name"]: d["input_schema"] for d in toolset_definitions(resolved())}
    for name, model in sdk.items():
        fields = model.model_fields
        assert set(fields) <= set(schemas[name]["properties"]), name
        required = {f for f, info in fields.items() if info.is_required()}
        assert required == set(schemas[name].get("required", [])), name


def test_default_disabled_with_one_enabled() -> None:
    toolset = resolved(
        default_config={"enabled": False}, configs=[{"name": "read"}, {"name": "grep", "enabled": True}]
    )
    # A config without `enabled` inherits the default (disabled); an explicit true enables.
    assert names(toolset) == ["grep"]
    assert tool_policy(toolset, "read") is None
    assert tool_policy(toolset, "grep") == {"type": "always_allow"}


def test_configs_disable_and_set_policies() -> None:
    toolset = resolved(
        default_config={"permission_policy": {"type": "always_ask"}},
        configs=[
            {"name": "bash", "enabled": False},
            {"name": "read", "permission_policy": {"type": "auto"}},
            {"name": "web_fetch", "allowed_domains": ["docs.example.com"]},
            {"name": "web_search", "blocked_domains": ["spam.example"]},
        ],
    )
    assert names(toolset) == ["read", "write", "edit", "glob", "grep", "web_fetch", "web_search"]
    assert tool_policy(toolset, "bash") is None
    assert tool_policy(toolset, "read") == {"type": "auto"}
    assert tool_policy(toolset, "write") == {"type": "always_ask"}
    assert tool_policy(toolset, "mystery") is None
    definitions = {d["name"]: d for d in toolset_definitions(toolset)}
    assert definitions["web_fetch"]["description"].endswith(" Only these domains: docs.example.com.")
    assert definitions["web_search"]["description"].endswith(" Never these domains: spam.example.")
    assert tool_config(toolset, "web_fetch") == {
        "name": "web_fetch",
        "type": "web_fetch",
        "enabled": True,
        "permission_policy": {"type": "always_ask"},
        "allowed_domains": ["docs.example.com"],
    }
    assert tool_config(toolset, "nope") is None


def test_unresolved_toolsets_use_the_documented_defaults() -> None:
    bare = {"type": "agent_toolset_20260401"}
    assert enabled_tools(bare) == list(TOOL_NAMES)
    assert tool_policy(bare, "bash") == {"type": "always_allow"}
    assert enabled_tools({**bare, "default_config": {"enabled": False}}) == []


def test_definitions_are_independent_copies() -> None:
    toolset = resolved()
    first = toolset_definitions(toolset)
    first[0]["input_schema"]["properties"].clear()
    first[0]["description"] += "!"
    assert toolset_definitions(toolset)[0]["input_schema"]["properties"]


@pytest.mark.parametrize(
    ("tools", "found"),
    [
        (None, False),
        ([], False),
        ([{"type": "custom", "name": "x"}], False),
        ([{"type": "custom", "name": "x"}, {"type": "agent_toolset_20260401"}], True),
    ],
)
def test_find_toolset(tools: list[dict[str, Any]] | None, found: bool) -> None:
    assert (find_toolset(tools) is not None) is found
