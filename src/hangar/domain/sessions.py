"""Session rules: creating a session from an agent reference, and what an update may change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hangar.domain.repositories import FIELDS, build_repository_resource
from hangar.domain.work import enqueue_session
from hangar.errors import InvalidRequest, NotFound
from hangar.ids import new_id
from hangar.services import Services
from hangar.store.db import now_us
from hangar.store.events import NewEvent
from hangar.store.sessions import SessionRecord, ThreadRecord
from hangar.wire import agents as agent_wire
from hangar.wire import events as ev
from hangar.wire.common import check_metadata
from hangar.wire.sessions import (
    MAX_FILES_PER_SESSION,
    MAX_INITIAL_EVENTS,
    MAX_TITLE,
    check_mount_overlap,
    file_mount_path,
    zero_usage,
)

CREATE_FIELDS = frozenset(
    {"agent", "environment_id", "budget", "initial_events", "metadata", "title", "resources", "vault_ids"}
)
OVERRIDE_FIELDS = frozenset({"type", "id", "version", "model", "system", "tools", "mcp_servers", "skills"})


@dataclass(frozen=True)
class ResolvedAgent:
    id: str
    version: int
    snapshot: dict[str, Any]
    from_reference: bool


def _version(raw: Any, path: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise InvalidRequest(f"{path}: expected an integer ≥ 1")
    return raw


async def resolve_agent(svc: Services, workspace_id: str, raw: Any) -> ResolvedAgent:
    """``"agent_id"`` | ``{type:"agent", id, version}`` | ``{type:"agent_with_overrides", ...}``."""
    overrides: dict[str, Any] = {}
    if isinstance(raw, str):
        agent_id, version = raw, None
    elif isinstance(raw, dict):
        kind = raw.get("type")
        if kind not in ("agent", "agent_with_overrides"):
            raise InvalidRequest(
                f'agent.type: "{kind}" is not a valid value; expected one of agent, agent_with_overrides'
            )
        allowed = OVERRIDE_FIELDS if kind == "agent_with_overrides" else frozenset({"type", "id", "version"})
        for key in raw:
            if key not in allowed:
                raise InvalidRequest(f"agent.{key}: unknown field")
        raw_id = raw.get("id")
        if not isinstance(raw_id, str) or not raw_id:
            raise InvalidRequest("agent.id: field required")
        agent_id = raw_id
        version = _version(raw.get("version"), "agent.version")
        overrides = {k: v for k, v in raw.items() if k not in ("type", "id", "version")}
    else:
        raise InvalidRequest("agent: expected an agent id or an agent object")
    agent = await svc.store.agents.get(workspace_id, agent_id)
    if agent is None:
        raise NotFound(f"Agent {agent_id} not found.")
    if agent.get("archived_at") is not None:
        raise InvalidRequest(f"agent {agent_id} is archived and cannot be used to create a session")
    if version is not None and version != agent["version"]:
        pinned = await svc.store.agents.get(workspace_id, agent_id, version)
        if pinned is None:
            raise NotFound(f"agent.version: {version} not found")
        agent = pinned
    agent = dict(agent)
    if "model" in overrides:
        if overrides["model"] is None:
            raise InvalidRequest(
                "agent.model: the model cannot be cleared", error_code="agent_model_required"
            )
        agent["model"] = agent_wire.normalize_model(overrides["model"], path="agent.model")
    if "system" in overrides:
        system = overrides["system"]
        if system is not None and (not isinstance(system, str) or len(system) > 100_000):
            raise InvalidRequest("agent.system: expected a string of at most 100000 characters")
        agent["system"] = system or None
    if "mcp_servers" in overrides:
        agent["mcp_servers"] = agent_wire.normalize_mcp_servers(
            overrides["mcp_servers"] or [], path="agent.mcp_servers"
        )
    if "tools" in overrides or "mcp_servers" in overrides:
        tools = overrides["tools"] if "tools" in overrides else agent["tools"]
        agent["tools"] = agent_wire.normalize_tools(tools or [], agent["mcp_servers"], path="agent.tools")
    if "skills" in overrides:
        agent["skills"] = agent_wire.normalize_skills(overrides["skills"] or [], path="agent.skills")
    roster = await svc.store.agents.roster(workspace_id, agent)
    snapshot = agent_wire.session_agent_snapshot(agent, roster=roster)
    return ResolvedAgent(agent["id"], agent["version"], snapshot, not overrides)


async def build_resources(
    svc: Services, workspace_id: str, session_id: str, raw: Any
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The session's resources, and the sealed tokens of repository resources by resource id."""
    if raw is None:
        return [], {}
    if not isinstance(raw, list):
        raise InvalidRequest("resources: expected an array")
    if len(raw) > MAX_FILES_PER_SESSION:
        raise InvalidRequest(f"resources: at most {MAX_FILES_PER_SESSION} resources are allowed")
    for i, item in enumerate(raw):  # validate every repository before copying any file
        if isinstance(item, dict) and item.get("type") == "github_repository":
            for key in item:
                if key not in FIELDS:
                    raise InvalidRequest(f"resources[{i}].{key}: unknown field")
    out: list[dict[str, Any]] = []
    secrets: dict[str, str] = {}
    for i, item in enumerate(raw):
        path = f"resources[{i}]"
        if isinstance(item, dict) and item.get("type") == "github_repository":
            repos = [r["mount_path"] for r in out if r["type"] == "github_repository"]
            resource, sealed = build_repository_resource(svc, item, path, repos)
            out.append(resource)
            if sealed is not None:
                secrets[resource["id"]] = sealed
            continue
        files = [r["mount_path"] for r in out if r["type"] == "file"]
        out.append(await build_file_resource(svc, workspace_id, session_id, item, path, files))
    return out, secrets


async def check_file_resource(
    svc: Services, workspace_id: str, item: Any, path: str, taken: list[str]
) -> tuple[str, str]:
    """Validate a file resource request; returns (file_id, mount_path)."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"{path}: expected an object")
    kind = item.get("type")
    if kind == "memory_store":
        raise InvalidRequest(
            f"{path}.type: {kind} resources are not supported by this Hangar yet; use file resources"
        )
    if kind != "file":
        raise InvalidRequest(
            f'{path}.type: "{kind}" is not a valid value; expected one of file, '
            "github_repository, memory_store"
        )
    for key in item:
        if key not in ("type", "file_id", "mount_path"):
            raise InvalidRequest(f"{path}.{key}: unknown field")
    file_id = item.get("file_id")
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequest(f"{path}.file_id: field required")
    meta = await svc.store.files.get(workspace_id, file_id)
    if meta is None:
        raise NotFound(f"File {file_id} not found.")
    mount = file_mount_path(item.get("mount_path"), file_id, f"{path}.mount_path")
    check_mount_overlap(taken, mount)
    return file_id, mount


async def build_file_resource(
    svc: Services, workspace_id: str, session_id: str, item: Any, path: str, taken: list[str]
) -> dict[str, Any]:
    file_id, mount = await check_file_resource(svc, workspace_id, item, path, taken)
    copy = await svc.store.files.copy_to_session(workspace_id, file_id, session_id, svc.settings.files_dir)
    at = copy["created_at"]
    return {
        "type": "file",
        "id": new_id("resource"),
        "file_id": copy["id"],
        "mount_path": mount,
        "created_at": at,
        "updated_at": at,
    }


def parse_initial_events(raw: Any) -> list[ev.EventParam]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("initial_events: expected an array")
    if len(raw) > MAX_INITIAL_EVENTS:
        raise InvalidRequest(
            f"initial_events: at most {MAX_INITIAL_EVENTS} events are allowed, got {len(raw)}"
        )
    parsed: list[ev.EventParam] = []
    for i, item in enumerate(raw):
        event = ev.parse_event(item, f"initial_events[{i}]")
        if event.type not in (ev.USER_MESSAGE, ev.USER_DEFINE_OUTCOME):
            raise InvalidRequest(
                f'initial_events[{i}].type: "{event.type}" is not a valid value; '
                "expected one of user.message, user.define_outcome"
            )
        parsed.append(event)
    return parsed


def check_title(raw: Any, path: str = "title") -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > MAX_TITLE:
        raise InvalidRequest(f"{path}: expected a string of at most {MAX_TITLE} characters")
    return raw


def check_budget(raw: Any, path: str = "budget") -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "limit":
        raise InvalidRequest(f'{path}.type: expected "limit"')
    cost = raw.get("max_list_cost")
    if not isinstance(cost, dict):
        raise InvalidRequest(f"{path}.max_list_cost: field required")
    amount, currency = cost.get("amount"), cost.get("currency", "USD")
    if not isinstance(amount, str) or not amount.isdigit():
        raise InvalidRequest(f"{path}.max_list_cost.amount: expected an integer string of minor units")
    if currency != "USD":
        raise InvalidRequest(
            f'{path}.max_list_cost.currency: "{currency}" is not a valid value; expected USD'
        )
    return {"type": "limit", "max_list_cost": {"amount": str(int(amount)), "currency": "USD"}}


async def create_session(svc: Services, workspace_id: str, body: dict[str, Any]) -> str:
    for key in body:
        if key not in CREATE_FIELDS:
            raise InvalidRequest(f"{key}: unknown field")
    if "agent" not in body:
        raise InvalidRequest("agent: field required")
    env_id = body.get("environment_id")
    if not isinstance(env_id, str) or not env_id:
        raise InvalidRequest("environment_id: field required")
    metadata = body.get("metadata")
    check_metadata(metadata)
    title = check_title(body.get("title"))
    budget = check_budget(body.get("budget"))
    vault_ids = body.get("vault_ids") or []
    if not isinstance(vault_ids, list) or not all(isinstance(v, str) for v in vault_ids):
        raise InvalidRequest("vault_ids: expected an array of strings")
    known = await svc.store.vaults.usable_vaults(workspace_id, vault_ids)
    for vid in vault_ids:
        if vid not in known:
            raise NotFound(f"Vault {vid} not found.")
        if known[vid]:
            raise InvalidRequest(f"Vault {vid} is archived.")
    initial = parse_initial_events(body.get("initial_events"))
    resolved = await resolve_agent(svc, workspace_id, body["agent"])
    env = await svc.store.environments.get(workspace_id, env_id)
    if env is None:
        raise NotFound(f"Environment {env_id} not found.", error_code="environment_not_found")
    if env.get("archived_at") is not None:
        raise InvalidRequest(f"Environment {env_id} is archived.", error_code="environment_archived")
    config = env.get("config") or {}
    if config.get("type") != "self_hosted" and svc.sandbox_error is not None:
        raise InvalidRequest(
            f"This Hangar cannot run cloud sessions: {svc.sandbox_error}. Install it and restart, "
            "or start `hangar serve --unsafe-no-sandbox` (no isolation: development only)."
        )
    session_id, thread_id = new_id("session"), new_id("thread")
    resources, secrets = await build_resources(svc, workspace_id, session_id, body.get("resources"))
    at = now_us()
    data = {
        "title": title,
        "metadata": metadata or {},
        "agent": resolved.snapshot,
        "from_reference": resolved.from_reference,
        "vault_ids": vault_ids,
        "budget": budget,
        "usage": zero_usage(),
        "outcome_evaluations": [],
        "primary_thread_id": thread_id,
        # Built-in tools of a self-hosted environment run in the customer's worker.
        "self_hosted": config.get("type") == "self_hosted",
        # The environment's networking when the session was created (updates reach new sessions).
        "networking": config.get("networking"),
        # …and its packages (installed once per packages spec, see hangar.sandbox.packages).
        "packages": config.get("packages"),
        "active_us": 0,
        "running_since": None,
    }
    record = SessionRecord(
        session_id, workspace_id, resolved.id, resolved.version, env_id, "idle", data, 0, at, at, None
    )
    thread_data = {"agent": agent_wire.thread_agent(resolved.snapshot)}
    thread = ThreadRecord(thread_id, session_id, None, "idle", thread_data, at, at, None)
    async with svc.store.db.write() as conn:
        await svc.store.sessions.insert(conn, record)
        await svc.store.sessions.insert_thread(conn, thread)
        for res in resources:
            await svc.store.sessions.insert_resource(conn, session_id, res, secrets.get(res["id"]))
        await svc.store.events.append(
            conn,
            session_id,
            [NewEvent(e.type, ev.event_body(e), processed=False, thread_id=thread_id) for e in initial],
            at=at,
        )
        if data["self_hosted"]:  # a worker is to serve it: queue its first work item
            await enqueue_session(
                svc, conn, workspace_id=workspace_id, environment_id=env_id, session_id=session_id, at=at
            )
    if initial:
        svc.scheduler.wake(session_id)
    return session_id
