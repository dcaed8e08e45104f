"""Shared by the MCP tests: one ``hangar serve`` per backend for the whole package (with a small
``mcp_max_result_bytes``), a recording client, a tools server, and session/turn helpers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from hangar.testing import ServerProcess
from tests.conftest import API_KEY, database_url_for
from tests.mcp_servers import McpTestServer
from tests.sessions_helpers import user_message, wait_idle

MAX_RESULT = 2048
ALLOW = {"type": "always_allow"}
ALLOW_ALL = {"default_config": {"permission_policy": ALLOW}}


def tool(name: str, **tool_input: Any) -> str:
    return f"[[tool:{name} {json.dumps(tool_input)}]]"


@pytest.fixture(scope="package")
def hangar(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp(f"hangar-mcp-{backend}"),
        api_key=API_KEY,
        database_url=database_url_for(backend, request),
        env={"HANGAR_MCP_MAX_RESULT_BYTES": str(MAX_RESULT)},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class Recording:
    """A client whose every raw response body is kept, to scan for secrets."""

    def __init__(self, base_url: str) -> None:
        self.bodies: list[str] = []
        self.http = httpx2.Client(event_hooks={"response": [self._keep]})
        self.client = anthropic.Anthropic(
            base_url=base_url, api_key=API_KEY, max_retries=0, http_client=self.http
        )

    def _keep(self, response: httpx2.Response) -> None:
        response.read()
        self.bodies.append(response.text)


@pytest.fixture(scope="package")
def recording(hangar: ServerProcess) -> Iterator[Recording]:
    rec = Recording(hangar.base_url)
    with rec.client:
        yield rec


@pytest.fixture
def client(recording: Recording) -> anthropic.Anthropic:
    return recording.client


@pytest.fixture(scope="package")
def tools_server() -> Iterator[McpTestServer]:
    with McpTestServer(name="tools") as srv:
        yield srv


def session_for(
    client: anthropic.Anthropic,
    servers: list[dict[str, str]],
    toolsets: dict[str, dict[str, Any]] | None = None,
    vault_ids: list[str] | None = None,
) -> str:
    toolsets = toolsets or {}
    tools = [
        {"type": "mcp_toolset", "mcp_server_name": s["name"], **toolsets.get(s["name"], {})} for s in servers
    ]
    agent = client.beta.agents.create(
        name="mcp-agent",
        model="scripted",
        mcp_servers=[{"type": "url", **s} for s in servers],  # type: ignore[misc]
        tools=tools,  # type: ignore[arg-type]
    )
    env = client.beta.environments.create(name="mcp-env")
    extra: dict[str, Any] = {"vault_ids": vault_ids} if vault_ids else {}
    return client.beta.sessions.create(agent=agent.id, environment_id=env.id, **extra).id


def turn(client: anthropic.Anthropic, sid: str, text: str, turns: int, timeout: float = 30) -> list[Any]:
    client.beta.sessions.events.send(sid, events=[user_message(text)])  # type: ignore[list-item]
    return wait_idle(client, sid, turns=turns, timeout=timeout)


def last_turn(events: list[Any]) -> list[Any]:
    starts = [i for i, e in enumerate(events) if e.type == "user.message"]
    return events[starts[-1] :]


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]
