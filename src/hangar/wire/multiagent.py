"""Agent ``multiagent``: the legacy ``coordinator`` roster and ``multiagent_20261001``.

Stored form = response form, except that a ``{"type":"self"}`` entry is kept as such and
resolved when a version is rendered (to ``{"type":"agent", id, version}`` of *that* version), so
"self" always means the version that holds it.

References to other agents cannot be checked here (that needs the database): the normalizer
returns them as :class:`PendingRef`, each pointing at a ``{"type":"agent","id","version"}`` dict
inside the result; the store checks each (exists in the workspace, not archived, has no
``multiagent`` itself: depth 1) and fills in ``version`` when the request left it out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hangar.wire._check import array, dotted, integer, invalid, obj, parse_error, quote, string, tagged

COORDINATOR = "coordinator"
MULTIAGENT_20261001 = "multiagent_20261001"
MAX_ROSTER = 20
MODEL_ID_MAX = 256


@dataclass
class PendingRef:
    """A reference to another agent that the store must check and pin to a version."""

    path: str  # dotted, for error messages
    ref: dict[str, Any]  # {"type":"agent","id","version": int | None}, mutated in place


def _model_id(raw: Any, path: str) -> str:
    return string(raw, path, min_len=1, max_len=MODEL_ID_MAX)


def _agent_ref(raw: Any, path: str, *, advisor: bool) -> dict[str, Any]:
    """One roster entry: ``"agent_id"``, ``{type:"agent", id, version}``, ``{type:"self"}``
    or (coordinator only) ``{type:"advisor", model}``."""
    if isinstance(raw, str):
        return {"type": "agent", "id": string(raw, path, min_len=1, max_len=128), "version": None}
    types = ("agent", "self", "advisor") if advisor else ("agent", "self")
    d, entry = tagged(raw, path, types)
    if entry == "self":
        obj(d, path, required=("type",))
        return {"type": "self"}
    if entry == "advisor":
        obj(d, path, required=("type", "model"))
        return {"type": "advisor", "model": _model_id(d["model"], f"{path}.model")}
    obj(d, path, required=("type", "id"), optional=("version",))
    version = d.get("version")
    return {
        "type": "agent",
        "id": string(d["id"], f"{path}.id", min_len=1, max_len=128),
        "version": None if version is None else integer(version, f"{path}.version", minimum=1),
    }


def _roster(
    raw: Any, path: str, *, self_id: str, advisor: bool, min_items: int, pending: list[PendingRef]
) -> list[dict[str, Any]]:
    items = array(raw, path, max_items=MAX_ROSTER, what="agents")
    if len(items) < min_items:
        raise parse_error(path, f"must have {min_items}-{MAX_ROSTER} entries, got {len(items)}")
    out: list[dict[str, Any]] = []
    ids: set[str] = set()
    selves = advisors = 0
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        entry = _agent_ref(item, p, advisor=advisor)
        if entry["type"] == "advisor":
            advisors += 1
            if advisors > 1:
                raise invalid(dotted(p), "at most one advisor entry is allowed")
        else:
            if entry["type"] == "self":
                selves += 1
                if selves > 1:
                    raise invalid(dotted(p), "at most one self entry is allowed")
            ident = self_id if entry["type"] == "self" else entry["id"]
            if ident in ids:
                raise invalid(dotted(p), f"duplicate entry for agent {quote(ident)}")
            ids.add(ident)
            if entry["type"] == "agent":
                pending.append(PendingRef(dotted(p), entry))
        out.append(entry)
    return out


def _default_member() -> dict[str, Any]:
    return {"type": "enabled", "inline_agents": {"type": "enabled"}, "predefined_agents": []}


def _advisor(raw: Any, path: str, base: dict[str, Any] | None, present: bool) -> dict[str, Any]:
    if not present:
        return copy.deepcopy(base) if base is not None else {"type": "disabled"}
    if raw is None:
        return {"type": "disabled"}
    d, state = tagged(raw, path, ("enabled", "disabled"))
    if state == "disabled":
        obj(d, path, required=("type",))
        return {"type": "disabled"}
    obj(d, path, required=("type", "model"))
    return {"type": "enabled", "model": _model_id(d["model"], f"{path}.model")}


def _member(
    raw: Any,
    path: str,
    base: dict[str, Any] | None,
    present: bool,
    *,
    self_id: str,
    pending: list[PendingRef],
) -> dict[str, Any]:
    """``subagents`` / ``workflows``: ``{type:"disabled"}`` or ``{type:"enabled", inline_agents,
    predefined_agents}``, merged level by level into ``base`` when both are enabled."""
    if not present:
        return copy.deepcopy(base) if base is not None else _default_member()
    if raw is None:
        return _default_member()
    d, state = tagged(raw, path, ("enabled", "disabled"))
    if state == "disabled":
        obj(d, path, required=("type",))
        return {"type": "disabled"}
    obj(d, path, required=("type",), optional=("inline_agents", "predefined_agents"))
    same = base is not None and base["type"] == "enabled"
    if "inline_agents" not in d:
        inline = copy.deepcopy(base["inline_agents"]) if same and base else {"type": "enabled"}
    elif d["inline_agents"] is None:
        inline = {"type": "enabled"}
    else:
        ip = f"{path}.inline_agents"
        ind, inline_state = tagged(d["inline_agents"], ip, ("enabled", "disabled"))
        obj(ind, ip, required=("type",))
        inline = {"type": inline_state}
    if "predefined_agents" not in d:
        predefined = copy.deepcopy(base["predefined_agents"]) if same and base else []
    elif d["predefined_agents"] is None:
        predefined = []
    else:
        predefined = _roster(
            d["predefined_agents"],
            f"{path}.predefined_agents",
            self_id=self_id,
            advisor=False,
            min_items=0,
            pending=pending,
        )
    if inline["type"] == "disabled" and not predefined:
        raise invalid(
            dotted(path), "predefined_agents must name at least one agent when inline_agents is disabled"
        )
    return {"type": "enabled", "inline_agents": inline, "predefined_agents": predefined}


def normalize_multiagent(
    raw: Any, *, self_id: str, stored: dict[str, Any] | None = None, path: str = "multiagent"
) -> tuple[dict[str, Any] | None, list[PendingRef]]:
    """Validate a request ``multiagent`` (null → None) into its stored form.

    ``stored`` is the agent's current value on update: a ``multiagent_20261001`` request is
    merged into a stored ``multiagent_20261001`` (omitted key kept, null → default, a member of a
    different ``type`` replaces the stored one, a sent ``predefined_agents`` replaces the list).
    """
    pending: list[PendingRef] = []
    if raw is None:
        return None, pending
    d, topology = tagged(raw, path, (COORDINATOR, MULTIAGENT_20261001))
    if topology == COORDINATOR:
        obj(d, path, required=("type", "agents"))
        agents = _roster(
            d["agents"], f"{path}.agents", self_id=self_id, advisor=True, min_items=1, pending=pending
        )
        return {"type": COORDINATOR, "agents": agents}, pending
    obj(d, path, required=("type",), optional=("advisor", "subagents", "workflows"))
    base = stored if stored is not None and stored.get("type") == MULTIAGENT_20261001 else None
    result = {
        "type": MULTIAGENT_20261001,
        "advisor": _advisor(
            d.get("advisor"), f"{path}.advisor", base["advisor"] if base else None, "advisor" in d
        ),
        "subagents": _member(
            d.get("subagents"),
            f"{path}.subagents",
            base["subagents"] if base else None,
            "subagents" in d,
            self_id=self_id,
            pending=pending,
        ),
        "workflows": _member(
            d.get("workflows"),
            f"{path}.workflows",
            base["workflows"] if base else None,
            "workflows" in d,
            self_id=self_id,
            pending=pending,
        ),
    }
    return result, pending


def _roster_lists(multiagent: dict[str, Any]) -> list[list[dict[str, Any]]]:
    if multiagent["type"] == COORDINATOR:
        return [multiagent["agents"]]
    return [
        multiagent[key]["predefined_agents"]
        for key in ("subagents", "workflows")
        if multiagent[key]["type"] == "enabled"
    ]


def render_multiagent(stored: dict[str, Any] | None, *, agent_id: str, version: int) -> dict[str, Any] | None:
    """Stored form → response form: ``self`` becomes ``{type:"agent", id, version}``."""
    if stored is None:
        return None
    out = copy.deepcopy(stored)
    for roster in _roster_lists(out):
        for i, entry in enumerate(roster):
            if entry["type"] == "self":
                roster[i] = {"type": "agent", "id": agent_id, "version": version}
    return out


def roster_refs(multiagent: dict[str, Any] | None) -> list[tuple[str, int]]:
    """Every ``(agent_id, version)`` a rendered ``multiagent`` refers to, in order, deduplicated."""
    if multiagent is None:
        return []
    seen: list[tuple[str, int]] = []
    for roster in _roster_lists(multiagent):
        for entry in roster:
            if entry["type"] == "agent" and (entry["id"], entry["version"]) not in seen:
                seen.append((entry["id"], entry["version"]))
    return seen


def expand_multiagent(
    multiagent: dict[str, Any] | None,
    *,
    resolve: Mapping[tuple[str, int], dict[str, Any]],
) -> dict[str, Any] | None:
    """A rendered ``multiagent`` with each agent reference replaced by ``resolve[(id, version)]``
    (a ``BetaManagedAgentsSessionThreadAgent``), as ``BetaManagedAgentsSessionMultiagent`` wants."""
    if multiagent is None:
        return None
    out = copy.deepcopy(multiagent)
    for roster in _roster_lists(out):
        for i, entry in enumerate(roster):
            if entry["type"] == "agent":
                key = (entry["id"], entry["version"])
                if key not in resolve:
                    raise KeyError(f"roster agent {key[0]} version {key[1]} was not supplied")
                roster[i] = copy.deepcopy(resolve[key])
    return out
