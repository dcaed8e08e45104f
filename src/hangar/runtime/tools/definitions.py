"""The Messages-API definitions of the ``agent_toolset_20260401`` tools, and per-tool config.

Given an agent's resolved toolset entry (``{type, default_config, configs}``, as the agents API
stores it), :func:`toolset_definitions` lists ``{name, description, input_schema}`` for the
enabled tools, :func:`tool_policy` gives one tool's permission policy and :func:`tool_config`
its config entry. A tool without a config entry inherits ``default_config``; a toolset without
``default_config`` means enabled with ``always_allow``.

The input schemas follow the SDK's ``BetaManagedAgentsAgentToolset20260401*Input`` types; grep
adds the hosted service's ``glob``, ``output_mode``, ``context`` and ``head_limit``.
"""

from __future__ import annotations

import copy
from typing import Any

AGENT_TOOLSET = "agent_toolset_20260401"
TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
DEFAULT_POLICY: dict[str, Any] = {"type": "always_allow"}

_PATH = {"type": "string", "description": "Path relative to the working directory, or absolute inside it."}

_DEFINITIONS: dict[str, dict[str, Any]] = {
    "bash": {
        "description": (
            "Run a command in a persistent bash shell in the session's working directory. The "
            "working directory and exported variables persist between calls. stdout and stderr are "
            "merged; only the last 100 KiB of output is kept. Commands get no stdin. A non-zero "
            "exit status is reported as an error together with the output. Use restart to get a "
            "fresh shell."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to run."},
                "restart": {
                    "type": "boolean",
                    "description": "Restart the shell instead of running a command.",
                },
                "timeout_ms": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Timeout in milliseconds (default 120000). On timeout the "
                    "command and its shell are killed.",
                },
            },
        },
    },
    "read": {
        "description": (
            "Read a file. Text files are returned as UTF-8 (at most 256 KiB; use view_range for "
            "larger files). png, jpg, jpeg, gif and webp files are returned as images and pdf files "
            "as documents."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {**_PATH, "description": "The file to read."},
                "view_range": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "[start_line, end_line], 1-based and inclusive; an end_line of "
                    "0 or less reads to the end of the file.",
                },
            },
            "required": ["file_path"],
        },
    },
    "write": {
        "description": "Write a file, replacing its content; parent directories are created.",
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {**_PATH, "description": "The file to write."},
                "content": {"type": "string", "description": "The complete new content."},
            },
            "required": ["file_path", "content"],
        },
    },
    "edit": {
        "description": (
            "Replace text in a file by exact string match. old_string must occur exactly once "
            "unless replace_all is true."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {**_PATH, "description": "The file to edit."},
                "old_string": {"type": "string", "description": "The exact text to replace."},
                "new_string": {"type": "string", "description": "The replacement text."},
                "replace_all": {
                    "type": "boolean",
                    "description": "Replace every occurrence instead of exactly one.",
                },
            },
            "required": ["file_path", "old_string", "new_string"],
        },
    },
    "glob": {
        "description": (
            "Find files by glob pattern (e.g. **/*.py). Returns absolute paths, newest first, at most 100."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {
                    "type": "string",
                    "description": "A relative glob pattern; ** matches any depth.",
                },
                "path": {**_PATH, "description": "Directory to search (default: the working directory)."},
            },
            "required": ["pattern"],
        },
    },
    "grep": {
        "description": (
            "Search file contents with a regular expression. By default returns the paths of "
            "matching files, newest first; output_mode 'content' returns matching lines as "
            "path:line:text and 'count' returns path:count."
        ),
        "input_schema": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The regular expression."},
                "path": {
                    **_PATH,
                    "description": "File or directory to search (default: the working directory).",
                },
                "glob": {"type": "string", "description": "Only files matching this glob, e.g. *.{ts,tsx}."},
                "output_mode": {
                    "type": "string",
                    "enum": ["files_with_matches", "content", "count"],
                    "description": "What to return (default files_with_matches).",
                },
                "context": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Lines of context around each match (content mode).",
                },
                "head_limit": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Return at most this many entries (files, lines or counts).",
                },
            },
            "required": ["pattern"],
        },
    },
    "web_fetch": {
        "description": "Fetch a web page or document by URL and return its content as text.",
        "input_schema": {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "The http(s) URL to fetch."}},
            "required": ["url"],
        },
    },
    "web_search": {
        "description": "Search the web. Returns a JSON list of results with title, url and snippet.",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "The search query."}},
            "required": ["query"],
        },
    },
}


def tool_config(toolset: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The effective config of tool ``name``: its ``configs`` entry merged over
    ``default_config``. ``None`` for a name outside the toolset."""
    if name not in TOOL_NAMES:
        return None
    default = toolset.get("default_config") or {}
    entry: dict[str, Any] = next((c for c in toolset.get("configs") or () if c.get("name") == name), {})
    merged = {"name": name, "type": name, **{k: v for k, v in entry.items() if v is not None}}
    if "enabled" not in merged:
        merged["enabled"] = default.get("enabled", True) is not False
    if "permission_policy" not in merged:
        merged["permission_policy"] = default.get("permission_policy") or DEFAULT_POLICY
    return merged


def enabled_tools(toolset: dict[str, Any]) -> list[str]:
    """Names of the enabled tools, in definition order."""
    return [n for n in TOOL_NAMES if (c := tool_config(toolset, n)) is not None and c["enabled"]]


def toolset_definitions(toolset: dict[str, Any]) -> list[dict[str, Any]]:
    """Given an agent's resolved ``agent_toolset_20260401`` entry (with default_config and
    configs), the Messages-API tool definitions ({name, description, input_schema}) of its
    ENABLED tools. Domain lists of web_fetch / web_search are mentioned in their descriptions."""
    out: list[dict[str, Any]] = []
    for name in enabled_tools(toolset):
        definition = {"name": name, **copy.deepcopy(_DEFINITIONS[name])}
        config = tool_config(toolset, name) or {}
        if config.get("allowed_domains"):
            definition["description"] += " Only these domains: " + ", ".join(config["allowed_domains"]) + "."
        if config.get("blocked_domains"):
            definition["description"] += " Never these domains: " + ", ".join(config["blocked_domains"]) + "."
        out.append(definition)
    return out


def tool_policy(toolset: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The permission policy ({"type": "always_allow"|"always_ask"|"auto"}) for tool ``name``,
    or None if the tool is disabled/unknown."""
    config = tool_config(toolset, name)
    if config is None or not config["enabled"]:
        return None
    return dict(config["permission_policy"])


def find_toolset(tools: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The ``agent_toolset_20260401`` entry of an agent's ``tools``, if any."""
    return next((t for t in tools or () if t.get("type") == AGENT_TOOLSET), None)
