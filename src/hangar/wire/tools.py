"""Agent ``tools`` and ``mcp_servers``: request validation and the fully resolved response form.

Response forms (SDK ``BetaManagedAgentsAgentToolset20260401``, ``…MCPToolset``, ``…CustomTool``):

- ``agent_toolset_20260401`` always carries ``default_config`` and ``configs``; every config
  carries both ``name`` and ``type`` and an explicit ``enabled`` and ``permission_policy``
  (inherited from ``default_config`` when the request leaves them out). The default policy is
  ``always_allow``.
- ``mcp_toolset`` is resolved the same way, with default policy ``always_ask``; its configs have
  no ``type``.
- ``custom`` tools are echoed.

Normalizing is idempotent: a response form is a valid request that normalizes to itself, which
lets an update re-check stored tools against new ``mcp_servers`` (and vice versa).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hangar.wire._check import (
    array,
    boolean,
    dotted,
    enum,
    integer,
    invalid,
    obj,
    parse_error,
    quote,
    string,
    tagged,
)

AGENT_TOOLSET = "agent_toolset_20260401"
MCP_TOOLSET = "mcp_toolset"
CUSTOM_TOOL = "custom"
TOOL_TYPES = (AGENT_TOOLSET, MCP_TOOLSET, CUSTOM_TOOL)
BUILTIN_TOOLS = ("bash", "edit", "glob", "grep", "read", "web_fetch", "web_search", "write")
POLICY_TYPES = ("always_allow", "always_ask", "auto")

MAX_TOOLS = 256
MAX_MCP_SERVERS = 20
MAX_DOMAINS = 64
MAX_TOOL_REFERENCES = 128
MCP_SERVER_NAME_MAX = 255
TOOL_NAME_MAX = 128

_CUSTOM_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")

_WEB_FETCH_EXTRAS = ("allowed_domains", "blocked_domains", "max_content_tokens", "url_sources")
_WEB_SEARCH_EXTRAS = ("allowed_domains", "blocked_domains", "user_location")
_SERVER_TOOLS = ("web_fetch", "web_search")


# --------------------------------------------------------------------------- mcp_servers


def normalize_mcp_servers(raw: Any, *, path: str = "mcp_servers") -> list[dict[str, Any]]:
    """Validate ``mcp_servers`` (null → ``[]``): ≤20 ``{type:"url", name, url}``, unique names."""
    if raw is None:
        return []
    items = array(raw, path, max_items=MAX_MCP_SERVERS, what="MCP servers")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        d, _ = tagged(item, p, ("url",))
        obj(d, p, required=("type", "name", "url"))
        name = string(d["name"], f"{p}.name", min_len=1, max_len=MCP_SERVER_NAME_MAX)
        url = _http_url(d["url"], f"{p}.url")
        if name in seen:
            raise invalid(dotted(p), f"duplicate entry for server name {quote(name)}")
        seen.add(name)
        out.append({"type": "url", "name": name, "url": url})
    return out


def _http_url(raw: Any, path: str) -> str:
    url = string(raw, path, min_len=1, max_len=2048)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        raise parse_error(path, f"{quote(url)} is not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise parse_error(path, f"{quote(url)} is not a valid http(s) URL")
    return url


# --------------------------------------------------------------------------- tools


def normalize_tools(
    raw: Any, mcp_servers: list[dict[str, Any]], *, path: str = "tools"
) -> list[dict[str, Any]]:
    """Validate ``tools`` (null → ``[]``) against already-normalized ``mcp_servers``.

    Checks, in order: each tool's shape; at most one agent toolset; unique custom tool names;
    ``mcp_toolset`` ↔ ``mcp_servers`` pairing (1:1); the total tool count (≤256, counting the
    agent toolset as its eight tools, an ``mcp_toolset`` as its configured tools or 1, a custom
    tool as 1); web_fetch ``url_sources`` names.
    """
    items = [] if raw is None else array(raw, path)
    out: list[dict[str, Any]] = []
    agent_toolsets = 0
    custom_names: set[str] = set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        _, tool_type = tagged(item, p, TOOL_TYPES)
        if tool_type == AGENT_TOOLSET:
            tool = _agent_toolset(item, p)
            agent_toolsets += 1
            if agent_toolsets > 1:
                raise invalid(
                    f"{dotted(p)}.{AGENT_TOOLSET}",
                    f"duplicate entry; at most one {AGENT_TOOLSET} is allowed",
                )
        elif tool_type == MCP_TOOLSET:
            tool = _mcp_toolset(item, p)
        else:
            tool = _custom_tool(item, p)
            if tool["name"] in custom_names:
                raise invalid(f"{dotted(p)}.custom", f"duplicate entry for tool {quote(tool['name'])}")
            custom_names.add(tool["name"])
        out.append(tool)

    _check_mcp_pairing(out, mcp_servers, path)
    count = sum(_tool_count(t) for t in out)
    if count > MAX_TOOLS:
        raise invalid(path, f"at most {MAX_TOOLS} tools are allowed across all toolsets, got {count}")
    for i, tool in enumerate(out):
        if tool["type"] == AGENT_TOOLSET:
            _check_url_source_names(tool, custom_names, f"{path}[{i}]")
    return out


def _tool_count(tool: dict[str, Any]) -> int:
    if tool["type"] == AGENT_TOOLSET:
        return len(BUILTIN_TOOLS)
    if tool["type"] == MCP_TOOLSET:
        return max(1, len(tool["configs"]))
    return 1


def _check_mcp_pairing(tools: list[dict[str, Any]], servers: list[dict[str, Any]], path: str) -> None:
    declared = [s["name"] for s in servers]
    referenced: set[str] = set()
    for i, tool in enumerate(tools):
        if tool["type"] != MCP_TOOLSET:
            continue
        name = tool["mcp_server_name"]
        where = f"{dotted(path)}.{i}.{MCP_TOOLSET}"
        if name not in declared:
            raise invalid(where, f"references server {quote(name)} which is not defined in mcp_servers")
        if name in referenced:
            raise invalid(
                where,
                f"duplicate entry for server {quote(name)}; each MCP server may have at most one mcp_toolset",
            )
        referenced.add(name)
    unreferenced = [n for n in declared if n not in referenced]
    if unreferenced:
        servers_path = path.rsplit("tools", 1)[0] + "mcp_servers" if path.endswith("tools") else "mcp_servers"
        raise invalid(
            servers_path,
            f"mcp_servers [{' '.join(unreferenced)}] declared but no mcp_toolset in tools references them",
        )


def _policy(raw: Any, path: str, default: str) -> dict[str, Any]:
    if raw is None:
        return {"type": default}
    d, policy = tagged(raw, path, POLICY_TYPES, hint=False)
    obj(d, path, required=("type",))
    return {"type": policy}


def _default_config(raw: Any, path: str, default_policy: str) -> dict[str, Any]:
    if raw is None:
        return {"enabled": True, "permission_policy": {"type": default_policy}}
    d = obj(raw, path, optional=("enabled", "permission_policy"))
    enabled = d.get("enabled")
    return {
        "enabled": True if enabled is None else boolean(enabled, f"{path}.enabled"),
        "permission_policy": _policy(d.get("permission_policy"), f"{path}.permission_policy", default_policy),
    }


def _config_common(d: dict[str, Any], path: str, default: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    enabled = d.get("enabled")
    policy = d.get("permission_policy")
    return (
        default["enabled"] if enabled is None else boolean(enabled, f"{path}.enabled"),
        dict(default["permission_policy"])
        if policy is None
        else _policy(policy, f"{path}.permission_policy", default["permission_policy"]["type"]),
    )


def _agent_toolset(d: dict[str, Any], path: str) -> dict[str, Any]:
    obj(d, path, required=("type",), optional=("default_config", "configs"))
    default = _default_config(d.get("default_config"), f"{path}.default_config", "always_allow")
    raw_configs = d.get("configs")
    configs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for j, raw_config in enumerate([] if raw_configs is None else array(raw_configs, f"{path}.configs")):
        p = f"{path}.configs[{j}]"
        config = _agent_tool_config(raw_config, p, default)
        if config["name"] in seen:
            raise invalid(
                f"{dotted(path)}.{AGENT_TOOLSET}.configs.{j}",
                f'duplicate entry for tool "AGENT_TOOL_NAME_{config["name"].upper()}"',
            )
        seen.add(config["name"])
        configs.append(config)
    return {"type": AGENT_TOOLSET, "default_config": default, "configs": configs}


def _agent_tool_config(raw: Any, path: str, default: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        obj(raw, path)
    if raw.get("name") is None:
        raise parse_error(f"{path}.name", "field required")
    name = enum(raw["name"], f"{path}.name", BUILTIN_TOOLS)
    extras: tuple[str, ...] = ()
    if name == "web_fetch":
        extras = _WEB_FETCH_EXTRAS
    elif name == "web_search":
        extras = _WEB_SEARCH_EXTRAS
    obj(raw, path, required=("name",), optional=("type", "enabled", "permission_policy", *extras))
    if raw.get("type") is not None and raw["type"] != name:
        raise parse_error(f"{path}.type", f"{quote(raw['type'])} does not match name {quote(name)}")
    enabled, policy = _config_common(raw, path, default)
    config: dict[str, Any] = {"name": name, "type": name, "enabled": enabled, "permission_policy": policy}
    if extras:
        _domain_lists(raw, path, config, allow_path=name == "web_search")
    if name == "web_fetch":
        if raw.get("max_content_tokens") is not None:
            config["max_content_tokens"] = integer(
                raw["max_content_tokens"], f"{path}.max_content_tokens", minimum=1
            )
        if raw.get("url_sources") is not None:
            config["url_sources"] = _url_sources(raw["url_sources"], f"{path}.url_sources")
    if name == "web_search" and raw.get("user_location") is not None:
        config["user_location"] = _user_location(raw["user_location"], f"{path}.user_location")
    return config


def _domain_lists(raw: dict[str, Any], path: str, config: dict[str, Any], *, allow_path: bool) -> None:
    present = [k for k in ("allowed_domains", "blocked_domains") if raw.get(k) is not None]
    if len(present) == 2:
        raise parse_error(path, "allowed_domains and blocked_domains cannot be combined")
    for key in present:
        p = f"{path}.{key}"
        items = array(raw[key], p, max_items=MAX_DOMAINS)
        if not items:
            raise parse_error(p, "must not be empty; omit the field instead")
        config[key] = [_domain(item, f"{p}[{k}]", allow_path=allow_path) for k, item in enumerate(items)]


def _domain(raw: Any, path: str, *, allow_path: bool) -> str:
    value = string(raw, path, min_len=1, max_len=2048)
    if "://" in value:
        raise parse_error(path, f"{quote(value)} contains a URL scheme; use a bare hostname")
    host, slash, _ = value.partition("/")
    if slash and not allow_path:
        raise parse_error(path, f"{quote(value)} contains a path; use a bare hostname")
    if ":" in host:
        raise parse_error(path, f"{quote(value)} contains a port; use a bare hostname")
    if not _HOSTNAME.match(host) or len(host) > 253:
        raise parse_error(path, f"{quote(value)} is not a valid hostname")
    return value


def _url_sources(raw: Any, path: str) -> dict[str, Any]:
    d = obj(raw, path, optional=("user_input", "client_tool_results", "server_tool_results"))
    out: dict[str, Any] = {
        "user_input": _url_source(d.get("user_input"), f"{path}.user_input", filters=False),
        "client_tool_results": _url_source(
            d.get("client_tool_results"), f"{path}.client_tool_results", filters=True
        ),
        "server_tool_results": _url_source(
            d.get("server_tool_results"), f"{path}.server_tool_results", filters=True
        ),
    }
    if all(v is not None and v["type"] == "none" for v in out.values()):
        raise parse_error(
            path, 'setting user_input, client_tool_results and server_tool_results all to "none" is rejected'
        )
    return out


def _url_source(raw: Any, path: str, *, filters: bool) -> dict[str, Any] | None:
    if raw is None:
        return None
    types = ("all", "none", "only", "except") if filters else ("all", "none")
    if isinstance(raw, str):
        return {"type": enum(raw, path, ("all", "none"))}
    d, source = tagged(raw, path, types)
    if source in ("all", "none"):
        obj(d, path, required=("type",))
        return {"type": source}
    obj(d, path, required=("type", "tools"))
    p = f"{path}.tools"
    refs = array(d["tools"], p, max_items=MAX_TOOL_REFERENCES, what="tools")
    if not refs:
        raise parse_error(p, f'must not be empty; use "{"none" if source == "only" else "all"}" instead')
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for k, ref in enumerate(refs):
        rp = f"{p}[{k}]"
        rd, _ = tagged(ref, rp, ("tool_reference",))
        obj(rd, rp, required=("type", "name"))
        name = string(rd["name"], f"{rp}.name", min_len=1, max_len=TOOL_NAME_MAX)
        if name in names:
            raise parse_error(rp, f"duplicate tool reference {quote(name)}")
        names.add(name)
        tools.append({"type": "tool_reference", "name": name})
    return {"type": source, "tools": tools}


def _check_url_source_names(toolset: dict[str, Any], custom_names: set[str], path: str) -> None:
    for j, config in enumerate(toolset["configs"]):
        sources = config.get("url_sources")
        if not sources:
            continue
        base = f"{path}.configs[{j}].url_sources"
        for key, allowed, what in (
            ("server_tool_results", set(_SERVER_TOOLS), '"web_search" or "web_fetch"'),
            ("client_tool_results", custom_names, "a custom tool in tools"),
        ):
            source = sources.get(key)
            if not source or "tools" not in source:
                continue
            for k, ref in enumerate(source["tools"]):
                if ref["name"] not in allowed:
                    raise parse_error(f"{base}.{key}.tools[{k}].name", f"{quote(ref['name'])} must be {what}")


def _user_location(raw: Any, path: str) -> dict[str, Any]:
    d, _ = tagged(raw, path, ("approximate",))
    obj(d, path, required=("type",), optional=("city", "region", "country", "timezone"))
    out: dict[str, Any] = {"type": "approximate"}
    for key in ("city", "region"):
        out[key] = None if d.get(key) is None else string(d[key], f"{path}.{key}", min_len=1, max_len=255)
    country = d.get("country")
    if country is not None and not _COUNTRY.match(string(country, f"{path}.country")):
        raise parse_error(f"{path}.country", f"{quote(country)} is not an uppercase ISO 3166-1 alpha-2 code")
    out["country"] = country
    timezone = d.get("timezone")
    if timezone is not None:
        _iana_zone(string(timezone, f"{path}.timezone", min_len=1, max_len=255), f"{path}.timezone")
    out["timezone"] = timezone
    return out


def _iana_zone(name: str, path: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise parse_error(path, f"{quote(name)} is not an IANA timezone") from exc


def _mcp_toolset(d: dict[str, Any], path: str) -> dict[str, Any]:
    obj(d, path, required=("type", "mcp_server_name"), optional=("default_config", "configs"))
    server = string(d["mcp_server_name"], f"{path}.mcp_server_name", min_len=1, max_len=MCP_SERVER_NAME_MAX)
    default = _default_config(d.get("default_config"), f"{path}.default_config", "always_ask")
    raw_configs = d.get("configs")
    configs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for j, raw_config in enumerate([] if raw_configs is None else array(raw_configs, f"{path}.configs")):
        p = f"{path}.configs[{j}]"
        c = obj(raw_config, p, required=("name",), optional=("enabled", "permission_policy"))
        name = string(c["name"], f"{p}.name", min_len=1, max_len=TOOL_NAME_MAX)
        if name in seen:
            raise invalid(
                f"{dotted(path)}.{MCP_TOOLSET}.configs.{j}", f"duplicate entry for tool {quote(name)}"
            )
        seen.add(name)
        enabled, policy = _config_common(c, p, default)
        configs.append({"name": name, "enabled": enabled, "permission_policy": policy})
    return {"type": MCP_TOOLSET, "mcp_server_name": server, "default_config": default, "configs": configs}


def _custom_tool(d: dict[str, Any], path: str) -> dict[str, Any]:
    obj(d, path, required=("type", "name", "description", "input_schema"))
    name = string(d["name"], f"{path}.name", min_len=1, max_len=TOOL_NAME_MAX)
    if not _CUSTOM_NAME.match(name):
        raise parse_error(
            f"{path}.name", f"{quote(name)} may contain only letters, digits, underscores and hyphens"
        )
    description = string(d["description"], f"{path}.description")
    return {
        "type": CUSTOM_TOOL,
        "name": name,
        "description": description,
        "input_schema": _input_schema(d["input_schema"], f"{path}.input_schema"),
    }


def _input_schema(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        obj(raw, path)
    if raw.get("type") is None:
        raise parse_error(f"{path}.type", "field required")
    enum(raw["type"], f"{path}.type", ("object",))
    if raw.get("properties") is not None and not isinstance(raw["properties"], dict):
        obj(raw["properties"], f"{path}.properties")
    required = raw.get("required")
    if required is not None:
        for k, item in enumerate(array(required, f"{path}.required")):
            string(item, f"{path}.required[{k}]")
    return dict(raw)
