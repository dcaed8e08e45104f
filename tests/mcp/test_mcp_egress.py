"""``allow_mcp_servers`` under ``limited`` networking, end to end: the sandbox reaches the agent's
MCP server host through the egress proxy, and nothing else; without the flag it does not.

The test MCP server is on 127.0.0.1, which the proxy's non-public-address guard refuses unless
``HANGAR_WEB_ALLOW_PRIVATE_ADDRESSES`` is set (an MCP host is not an explicit ``allowed_hosts``
entry), so this test's server sets it; the policy decisions checked here are the same."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.mcp.conftest import ALLOW_ALL, of_type, tool, turn
from tests.mcp_servers import McpTestServer

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
def private_ok(make_server: Any) -> Iterator[anthropic.Anthropic]:
    srv: ServerProcess = make_server(env={"HANGAR_WEB_ALLOW_PRIVATE_ADDRESSES": "true"})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as c:
        yield c


def probe(port: int) -> str:
    """curl the MCP server by its own host name and by another name for the same address."""
    fetch = "curl -sS -o /dev/null -w '%{http_code}\\n' -H 'Accept: application/json, text/event-stream'"
    return (
        "unset NO_PROXY no_proxy; "  # loopback hosts would otherwise bypass the proxy
        f"{fetch} http://127.0.0.1:{port}/mcp; {fetch} http://localhost:{port}/mcp"
    )


def codes(client: anthropic.Anthropic, server: McpTestServer, allow_mcp_servers: bool) -> list[str]:
    env = client.beta.environments.create(
        name="mcp-egress",
        config={
            "type": "cloud",
            "networking": {"type": "limited", "allowed_hosts": [], "allow_mcp_servers": allow_mcp_servers},
        },
    )
    agent = client.beta.agents.create(
        name="mcp-egress",
        model="scripted",
        mcp_servers=[{"type": "url", "name": "tools", "url": server.url}],
        tools=[
            {"type": "agent_toolset_20260401"},
            {"type": "mcp_toolset", "mcp_server_name": "tools", **ALLOW_ALL},  # type: ignore[list-item]
        ],
    )
    sid = client.beta.sessions.create(agent=agent.id, environment_id=env.id).id
    events = turn(client, sid, tool("bash", command=probe(server.port)), 1, timeout=60)
    results = of_type(events, "agent.tool_result")
    assert len(results) == 1, [e.type for e in events]
    return str(results[0].content[0].text).split()


def test_allow_mcp_servers_opens_only_the_mcp_host(
    private_ok: anthropic.Anthropic, tools_server: McpTestServer
) -> None:
    client = private_ok
    mcp_host, other_name = codes(client, tools_server, allow_mcp_servers=True)
    assert mcp_host != "403" and mcp_host.startswith("4")  # the MCP server's own answer to a bare GET
    assert other_name == "403"  # the proxy: localhost is not the agent's MCP host
    assert codes(client, tools_server, allow_mcp_servers=False) == ["403", "403"]
