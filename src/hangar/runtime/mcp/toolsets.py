"""What the model sees of an agent's MCP toolsets, and the way back to a server and tool.

An agent pairs each ``mcp_servers`` entry with one ``mcp_toolset`` in ``tools`` (resolved by
the agents API: ``{type, mcp_server_name, default_config: {enabled, permission_policy},
configs: [{name, enabled, permission_policy}]}``). A server tool without a ``configs`` entry
inherits ``default_config``; a toolset without ``default_config`` means enabled with
``always_ask`` (the MCP default; the built-in toolset's is ``always_allow``).

:func:`mcp_tool_definitions` turns the toolsets plus each server's tool list into the
Messages-API tool definitions of the ENABLED tools and an :class:`McpToolMap` from the
model-facing names back to ``(server name, bare tool name)``. Events carry the bare name and
the server name (BEHAVIOUR §7); only the model sees the prefixed one.

**Names.** The Messages API wants ``^[a-zA-Z0-9_-]{1,128}$`` and names unique across all
tools. The model-facing name is ``mcp__<server>__<tool>`` when that fits in 128 characters,
both parts use only ``[A-Za-z0-9_-]``, the server part has no ``__`` and does not end in
``_`` (so the first ``__`` after the prefix always ends the server name: two pairs never share a
name), and the name is not one of ``reserved`` (the built-in and custom tools). Otherwise it is
``mcp_<12 hex digits>_<tool>``: the hex digits are the start of SHA-256 of the server and tool
names, and ``<tool>`` the tool name with other characters replaced by ``_``, cut to fit. Both
forms depend on the pair alone, never on the order of the lists, so a name means the same tool
in every turn; the two forms cannot collide (``mcp__`` vs ``mcp_<hex>``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hangar.runtime.mcp.results import McpTool

MCP_TOOLSET = "mcp_toolset"
DEFAULT_POLICY: dict[str, Any] = {"type": "always_ask"}
NAME_MAX = 128
_VALID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_HASH_HEX = 12


@dataclass(frozen=True)
class McpToolRef:
    """One MCP tool as the model knows it and as the server knows it."""

    model_name: str
    server_name: str
    tool_name: str


@dataclass(frozen=True)
class McpToolMap:
    """Definitions for the model, and the reverse map of their names."""

    definitions: list[dict[str, Any]] = field(default_factory=list)
    by_model_name: dict[str, McpToolRef] = field(default_factory=dict)

    def resolve(self, model_name: str) -> McpToolRef | None:
        """The server and bare tool name behind a model-facing name (None if not an MCP tool)."""
        return self.by_model_name.get(model_name)

    def model_name(self, server_name: str, tool_name: str) -> str | None:
        return next(
            (
                r.model_name
                for r in self.by_model_name.values()
                if r.server_name == server_name and r.tool_name == tool_name
            ),
            None,
        )


def find_mcp_toolset(tools: Iterable[Mapping[str, Any]] | None, server_name: str) -> dict[str, Any] | None:
    """The ``mcp_toolset`` entry of an agent's ``tools`` for ``server_name``, if any."""
    return next(
        (
            dict(t)
            for t in tools or ()
            if t.get("type") == MCP_TOOLSET and t.get("mcp_server_name") == server_name
        ),
        None,
    )


def tool_config(toolset: Mapping[str, Any], tool_name: str) -> dict[str, Any]:
    """The effective config of ``tool_name``: its ``configs`` entry over ``default_config``."""
    default = toolset.get("default_config") or {}
    entry: Mapping[str, Any] = next(
        (c for c in toolset.get("configs") or () if c.get("name") == tool_name), {}
    )
    enabled = entry.get("enabled")
    if enabled is None:
        enabled = default.get("enabled", True) is not False
    policy = entry.get("permission_policy") or default.get("permission_policy") or DEFAULT_POLICY
    return {"name": tool_name, "enabled": bool(enabled), "permission_policy": dict(policy)}


def policy_for(toolset: Mapping[str, Any] | None, tool_name: str) -> dict[str, Any] | None:
    """The permission policy of ``tool_name`` in ``toolset`` (``{"type": "always_allow" |
    "always_ask" | "auto"}``), or None when the tool is disabled or there is no toolset."""
    if toolset is None:
        return None
    config = tool_config(toolset, tool_name)
    return config["permission_policy"] if config["enabled"] else None


def model_tool_name(server_name: str, tool_name: str, reserved: Iterable[str] = ()) -> str:
    """The model-facing name of a server's tool (see the module docstring)."""
    plain = f"mcp__{server_name}__{tool_name}"
    if (
        len(plain) <= NAME_MAX
        and _PART.match(server_name)
        and _PART.match(tool_name)
        and "__" not in server_name
        and not server_name.endswith("_")
        and plain not in set(reserved)
    ):
        return plain
    digest = hashlib.sha256(f"{server_name}\0{tool_name}".encode()).hexdigest()[:_HASH_HEX]
    head = f"mcp_{digest}"
    tail = _UNSAFE.sub("_", tool_name)[: NAME_MAX - len(head) - 1]
    return f"{head}_{tail}" if tail else head


def mcp_tool_definitions(
    agent_tools: Iterable[Mapping[str, Any]] | None,
    mcp_servers: Iterable[Mapping[str, Any]] | None,
    server_tools: Mapping[str, list[McpTool]],
    *,
    reserved: Iterable[str] = (),
) -> McpToolMap:
    """The Messages-API definitions (``{name, description, input_schema}``) of every enabled
    tool of every MCP server in ``server_tools`` (server name → its listed tools; a server that
    could not be reached is simply left out), in server order and then the server's order.

    ``reserved`` are the names of the agent's other tools (built-in and custom); MCP names
    never take them.
    """
    tools = list(agent_tools or ())
    taken = set(reserved)
    definitions: list[dict[str, Any]] = []
    refs: dict[str, McpToolRef] = {}
    for server in mcp_servers or ():
        server_name = str(server["name"])
        toolset = find_mcp_toolset(tools, server_name)
        if toolset is None or server_name not in server_tools:
            continue
        for tool in server_tools[server_name]:
            if policy_for(toolset, tool.name) is None:
                continue
            name = model_tool_name(server_name, tool.name, taken)
            if name in refs or not _VALID.match(name):
                continue  # the same tool listed twice by the server
            taken.add(name)
            refs[name] = McpToolRef(name, server_name, tool.name)
            definition: dict[str, Any] = {"name": name, "input_schema": _input_schema(tool.input_schema)}
            if tool.description:
                definition["description"] = tool.description
            definitions.append(definition)
    return McpToolMap(definitions, refs)


def _input_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The tool's JSON schema, with the ``type: object`` root the Messages API requires."""
    if schema.get("type") == "object":
        return dict(schema)
    if "type" not in schema:
        return {"type": "object", **schema}
    return {"type": "object", "properties": {}}
