"""The agent resource on the wire: request validation, update merging, and response shapes.

An agent version is stored as a *snapshot*: the ten configurable fields in response form
(``name, description, system, model, tools, mcp_servers, skills, multiagent,
execution_identity, metadata``). :func:`render_agent` adds identity and timestamps to make a
``BetaManagedAgentsAgent``; :func:`session_agent_snapshot` turns one into a
``BetaManagedAgentsSessionAgent``.

Public helpers for other resources (sessions reuse them for ``agent_with_overrides``):
:func:`normalize_model`, :func:`normalize_tools`, :func:`normalize_mcp_servers`,
:func:`normalize_skills`, :func:`session_agent_snapshot`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hangar.errors import InvalidRequest
from hangar.wire._check import array, enum, integer, kind, obj, parse_error, quote, string, tagged
from hangar.wire.common import check_metadata, merge_metadata, ts
from hangar.wire.multiagent import (
    PendingRef,
    expand_multiagent,
    normalize_multiagent,
    render_multiagent,
    roster_refs,
)
from hangar.wire.tools import normalize_mcp_servers, normalize_tools

__all__ = [
    "DEFAULT_EFFORT",
    "Draft",
    "PendingRef",
    "build_create",
    "build_update",
    "normalize_execution_identity",
    "normalize_mcp_servers",
    "normalize_model",
    "normalize_skills",
    "normalize_tools",
    "render_agent",
    "roster_refs",
    "session_agent_snapshot",
    "thread_agent",
]

NAME_MAX = 256
DESCRIPTION_MAX = 2048
SYSTEM_MAX = 100_000
MAX_SKILLS = 20
MODEL_ID_MAX = 256
ROLE_ARN_MAX = 2048

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
DEFAULT_EFFORT = "high"
"""The effort stored when a request sets none (API §3.4: "resolved to the model's default")."""
SPEEDS = ("standard", "fast")

SNAPSHOT_FIELDS = (
    "name",
    "description",
    "system",
    "model",
    "tools",
    "mcp_servers",
    "skills",
    "multiagent",
    "execution_identity",
    "metadata",
)
UPDATE_FIELDS = (*SNAPSHOT_FIELDS, "version")


# --------------------------------------------------------------------------- single fields


def normalize_model(raw: Any, *, path: str = "model") -> dict[str, Any]:
    """A model string or ``{id, effort, inference_geo, speed}`` → the response object
    ``{id, effort:{type}, [inference_geo], speed}`` (effort defaults to ``high``, speed to
    ``standard``; ``inference_geo`` is present only when set)."""
    if raw is None:
        raise parse_error(path, "field required")
    if isinstance(raw, str):
        return {
            "id": string(raw, path, min_len=1, max_len=MODEL_ID_MAX),
            "effort": {"type": DEFAULT_EFFORT},
            "speed": "standard",
        }
    if not isinstance(raw, dict):
        raise parse_error(path, f"expected a string or an object, got {kind(raw)}")
    d = obj(raw, path, required=("id",), optional=("effort", "inference_geo", "speed"))
    out: dict[str, Any] = {
        "id": string(d["id"], f"{path}.id", min_len=1, max_len=MODEL_ID_MAX),
        "effort": {"type": _effort(d.get("effort"), f"{path}.effort")},
    }
    geo = d.get("inference_geo")
    if geo is not None and string(geo, f"{path}.inference_geo", max_len=64):
        out["inference_geo"] = geo
    speed = d.get("speed")
    out["speed"] = "standard" if speed is None else enum(speed, f"{path}.speed", SPEEDS)
    return out


def _effort(raw: Any, path: str) -> str:
    if raw is None:
        return DEFAULT_EFFORT
    if isinstance(raw, str):
        return enum(raw, path, EFFORT_LEVELS)
    d, level = tagged(raw, path, EFFORT_LEVELS)
    obj(d, path, required=("type",))
    return level


def _effort_given(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("effort") is not None


def normalize_skills(raw: Any, *, path: str = "skills") -> list[dict[str, Any]]:
    """``[{type:"anthropic"|"custom", skill_id, version?}]`` (≤20, null → ``[]``) → the same with
    ``version`` a string (``"latest"`` when omitted). Existence is not checked here."""
    if raw is None:
        return []
    items = array(raw, path, max_items=MAX_SKILLS, what="skills")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        d, skill_type = tagged(item, p, ("anthropic", "custom"))
        obj(d, p, required=("type", "skill_id"), optional=("version",))
        skill_id = string(d["skill_id"], f"{p}.skill_id", min_len=1, max_len=256)
        version = d.get("version")
        version = "latest" if version is None else string(version, f"{p}.version", min_len=1, max_len=64)
        if skill_id in seen:
            raise InvalidRequest(f"Agent has invalid configuration: duplicate skill_id {quote(skill_id)}")
        seen.add(skill_id)
        out.append({"type": skill_type, "skill_id": skill_id, "version": version})
    return out


def normalize_execution_identity(raw: Any, *, path: str = "execution_identity") -> dict[str, Any]:
    """null/omitted → ``{type:"service_account"}``; ``{type:"aws_role", role_arn (≤2048)}``."""
    if raw is None:
        return {"type": "service_account"}
    d, identity = tagged(raw, path, ("service_account", "aws_role"))
    if identity == "service_account":
        obj(d, path, required=("type",))
        return {"type": "service_account"}
    obj(d, path, required=("type", "role_arn"))
    return {
        "type": "aws_role",
        "role_arn": string(d["role_arn"], f"{path}.role_arn", min_len=1, max_len=ROLE_ARN_MAX),
    }


def _name(raw: Any) -> str:
    if raw is None:
        raise parse_error("name", "field required")
    return string(raw, "name", min_len=1, max_len=NAME_MAX)


def _clearable(raw: Any, path: str, max_len: int) -> str | None:
    """``description`` / ``system``: null or ``""`` means unset (stored and echoed as null)."""
    if raw is None:
        return None
    value = string(raw, path, max_len=max_len)
    return value or None


def _unknown_fields(body: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            raise parse_error(key, "unknown field")


# --------------------------------------------------------------------------- create / update


@dataclass
class Draft:
    """A validated agent snapshot plus the references the store must still check."""

    snapshot: dict[str, Any]
    pending: list[PendingRef]
    expected_version: int | None = None


def build_create(body: Mapping[str, Any], *, agent_id: str) -> Draft:
    """Validate a create body (fields checked in wire order; the first fault wins)."""
    _unknown_fields(body, SNAPSHOT_FIELDS)
    name = _name(body.get("name"))
    description = _clearable(body.get("description"), "description", DESCRIPTION_MAX)
    system = _clearable(body.get("system"), "system", SYSTEM_MAX)
    model = normalize_model(body.get("model"))
    mcp_servers = normalize_mcp_servers(body.get("mcp_servers"))
    tools = normalize_tools(body.get("tools"), mcp_servers)
    skills = normalize_skills(body.get("skills"))
    multiagent, pending = normalize_multiagent(body.get("multiagent"), self_id=agent_id)
    identity = normalize_execution_identity(body.get("execution_identity"))
    metadata = body.get("metadata")
    check_metadata(metadata)
    snapshot = {
        "name": name,
        "description": description,
        "system": system,
        "model": model,
        "tools": tools,
        "mcp_servers": mcp_servers,
        "skills": skills,
        "multiagent": multiagent,
        "execution_identity": identity,
        "metadata": dict(metadata or {}),
    }
    return Draft(snapshot, pending)


def build_update(body: Mapping[str, Any], current: Mapping[str, Any], *, agent_id: str) -> Draft:
    """Apply an update body to the current snapshot (API §1.1).

    Omitted fields are kept. ``name`` and ``model`` cannot be cleared; ``model`` is replaced
    whole except that an omitted ``effort`` keeps the stored one. ``description``/``system``:
    null or ``""`` clears. ``tools``, ``mcp_servers``, ``skills``, ``multiagent``: replaced whole,
    null/``[]`` clears (``multiagent_20261001`` merges into a stored ``multiagent_20261001``).
    ``execution_identity``: null restores the default. ``metadata`` is a patch. Sending only one
    of ``tools`` / ``mcp_servers`` re-checks the pairing against the stored other one.
    """
    _unknown_fields(body, UPDATE_FIELDS)
    expected: int | None = None
    if body.get("version") is not None:
        expected = integer(body["version"], "version", minimum=1)
    new = copy.deepcopy(dict(current))
    if "name" in body:
        if body["name"] is None:
            raise parse_error("name", "cannot be cleared")
        new["name"] = _name(body["name"])
    if "description" in body:
        new["description"] = _clearable(body["description"], "description", DESCRIPTION_MAX)
    if "system" in body:
        new["system"] = _clearable(body["system"], "system", SYSTEM_MAX)
    if "model" in body:
        if body["model"] is None:
            raise parse_error("model", "cannot be cleared")
        model = normalize_model(body["model"])
        if not _effort_given(body["model"]):
            model["effort"] = copy.deepcopy(current["model"]["effort"])
        new["model"] = model
    if "tools" in body or "mcp_servers" in body:
        servers_raw = body["mcp_servers"] if "mcp_servers" in body else current["mcp_servers"]
        tools_raw = body["tools"] if "tools" in body else current["tools"]
        new["mcp_servers"] = normalize_mcp_servers(servers_raw)
        new["tools"] = normalize_tools(tools_raw, new["mcp_servers"])
    if "skills" in body:
        new["skills"] = normalize_skills(body["skills"])
    pending: list[PendingRef] = []
    if "multiagent" in body:
        new["multiagent"], pending = normalize_multiagent(
            body["multiagent"], self_id=agent_id, stored=current["multiagent"]
        )
    if "execution_identity" in body:
        new["execution_identity"] = normalize_execution_identity(body["execution_identity"])
    if body.get("metadata") is not None:
        check_metadata(body["metadata"], patch=True)
        new["metadata"] = merge_metadata(current["metadata"], body["metadata"])
    return Draft(new, pending, expected)


# --------------------------------------------------------------------------- responses


def render_agent(
    snapshot: Mapping[str, Any],
    *,
    agent_id: str,
    version: int,
    created_at: int,
    updated_at: int,
    archived_at: int | None,
) -> dict[str, Any]:
    """A stored snapshot → ``BetaManagedAgentsAgent``."""
    return {
        "type": "agent",
        "id": agent_id,
        "name": snapshot["name"],
        "description": snapshot["description"],
        "system": snapshot["system"],
        "model": copy.deepcopy(snapshot["model"]),
        "tools": copy.deepcopy(snapshot["tools"]),
        "mcp_servers": copy.deepcopy(snapshot["mcp_servers"]),
        "skills": copy.deepcopy(snapshot["skills"]),
        "multiagent": render_multiagent(snapshot["multiagent"], agent_id=agent_id, version=version),
        "execution_identity": copy.deepcopy(snapshot["execution_identity"]),
        "metadata": dict(snapshot["metadata"]),
        "version": version,
        "created_at": ts(created_at),
        "updated_at": ts(updated_at),
        "archived_at": ts(archived_at),
    }


_THREAD_AGENT_FIELDS = (
    "type",
    "id",
    "version",
    "name",
    "description",
    "system",
    "model",
    "tools",
    "mcp_servers",
    "skills",
    "execution_identity",
)


def thread_agent(agent: Mapping[str, Any]) -> dict[str, Any]:
    """An Agent (or session agent) dict → ``BetaManagedAgentsSessionThreadAgent`` (no roster)."""
    out = {key: copy.deepcopy(agent.get(key)) for key in _THREAD_AGENT_FIELDS}
    out["type"] = "agent"
    return out


def session_agent_snapshot(
    agent: dict[str, Any], *, roster: Mapping[tuple[str, int], Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """An Agent dict (as from ``AgentStore.get``, possibly with session overrides applied) →
    ``BetaManagedAgentsSessionAgent``, the frozen copy a session keeps.

    The multiagent roster is expanded to full agent definitions. An entry that refers to this
    very agent and version (``self``) is expanded from ``agent`` itself, so overrides reach the
    ``self`` copies. Entries naming other agents are taken from ``roster``, keyed by
    ``(id, version)`` (``AgentStore.roster()`` loads exactly those); a missing one raises
    ``KeyError``. ``AgentStore.session_snapshot()`` does both steps.
    """
    resolve = {key: thread_agent(value) for key, value in (roster or {}).items()}
    resolve[(agent["id"], agent["version"])] = thread_agent(agent)
    out = thread_agent(agent)
    out["multiagent"] = expand_multiagent(agent.get("multiagent"), resolve=resolve)
    return out
