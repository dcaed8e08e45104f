"""MCP through a tunnel, end to end: a real MCP server on a loopback port that only the
``hangar tunnel`` subprocess is told about, a Hangar served in this process (so its
:class:`TunnelHub` can be handed to an :class:`McpSessionPool`, as the agent loop does), and the
official client driving the tunnels API.

Covered: list_tools and calls (a large result and SSE streams included), cancellation of
abandoned streams, token rotation keeping the live connection (and refusing the old token for
new ones), a killed client failing calls fast with ``McpConnectionFailed`` and a new one taking
over, refusal without a certificate, for an unknown route or domain or another workspace, and
for an archived tunnel (whose client is disconnected and exits).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import uvicorn
from anthropic.types.beta import BetaTunnel, BetaTunnelToken
from anthropic.types.beta.tunnels import BetaTunnelCertificate
from fastapi import FastAPI

from hangar.cli.database import prepare_database
from hangar.config import Settings
from hangar.http import create_app
from hangar.runtime.mcp import McpConnectionFailed, McpSessionPool
from hangar.testing import free_port
from hangar.tunnel import TunnelClient, TunnelHub, TunnelRejected, parse_route
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.mcp_servers import McpTestServer
from tests.tunnel.certs import issue

PARENT = "tunnel.test"
SESSION = "sesn_tunnel_test"


@dataclass
class Hangar:
    app: FastAPI
    base_url: str
    api: anthropic.AsyncAnthropic

    @property
    def hub(self) -> TunnelHub:
        hub: TunnelHub = self.app.state.tunnels
        return hub


@pytest.fixture(scope="module")
async def hangar(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hangar]:
    port = free_port()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("tunnel-hangar"),
        api_key=API_KEY,
        port=port,
        tunnel_domain=PARENT,
        log_level="warning",
    )
    await asyncio.to_thread(prepare_database, settings, migrate=True)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the in-process Hangar did not start"
        await asyncio.sleep(0.02)
    base_url = f"http://127.0.0.1:{port}"
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key=API_KEY, max_retries=0) as api:
        yield Hangar(app, base_url, api)
    server.should_exit = True
    await task


@pytest.fixture(scope="module")
def private_mcp() -> Iterator[McpTestServer]:
    with McpTestServer(name="private") as srv:
        yield srv


@pytest.fixture
async def pool(hangar: Hangar) -> AsyncIterator[McpSessionPool]:
    pool = McpSessionPool(connect_timeout_s=5, transport_resolver=hangar.hub.transport_for)
    yield pool
    await pool.aclose()


class Relay:
    """A ``hangar tunnel`` subprocess."""

    def __init__(self, server: str, token: str, *routes: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_TUNNEL_")}
        env["HANGAR_TUNNEL_TOKEN"] = token  # not on the command line
        cmd = [sys.executable, "-m", "hangar", "tunnel", "--server", server, "--max-backoff", "0.5"]
        for route in routes:
            cmd += ["--route", route]
        self.log_path = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def exited(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"hangar tunnel did not exit:\n{self.log()}"
            await asyncio.sleep(0.05)
        return self.proc.returncode


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[list[Relay]]:
    started: list[Relay] = []
    yield started
    for relay in started:
        relay.kill()


async def connected(hub: TunnelHub, tunnel_id: str, relay: Relay, count: int = 1) -> None:
    deadline = time.monotonic() + 30
    while hub.connected(tunnel_id) < count:
        assert relay.proc.poll() is None, f"hangar tunnel exited:\n{relay.log()}"
        assert time.monotonic() < deadline, f"hangar tunnel did not connect:\n{relay.log()}"
        await asyncio.sleep(0.05)


async def new_tunnel(hangar: Hangar, *, certificate: bool = True) -> tuple[BetaTunnel, str]:
    tunnel: BetaTunnel = strict(BetaTunnel, await hangar.api.beta.tunnels.create(display_name="private"))
    if certificate:
        made = await hangar.api.beta.tunnels.certificates.create(
            tunnel.id, ca_certificate_pem=issue("ca").pem
        )
        strict(BetaTunnelCertificate, made)
    token: BetaTunnelToken = strict(BetaTunnelToken, await hangar.api.beta.tunnels.reveal_token(tunnel.id))
    return tunnel, token.tunnel_token


def mcp_server(tunnel: BetaTunnel, route: str = "files") -> dict[str, str]:
    return {"name": "private", "url": f"https://{route}.{tunnel.domain}/mcp"}


async def test_mcp_through_a_tunnel(
    hangar: Hangar, private_mcp: McpTestServer, pool: McpSessionPool, relays: list[Relay], tmp_path: Path
) -> None:
    tunnel, token = await new_tunnel(hangar)
    relay = Relay(hangar.base_url, token, f"files={private_mcp.base_url}", log=tmp_path / "relay1.log")
    relays.append(relay)
    await connected(hangar.hub, tunnel.id, relay)

    conn = await pool.get(SESSION, mcp_server(tunnel))
    assert {t.name for t in await conn.list_tools()} >= {"add", "echo", "big", "slow"}
    result = await conn.call("add", {"a": 2, "b": 40}, timeout_s=10)
    assert not result.is_error and result.content == [{"type": "text", "text": "42"}]
    big = await conn.call("big", {"size": 300_000}, timeout_s=20)  # many DATA frames
    assert len(big.content[0]["text"]) == 300_000
    assert private_mcp.calls_of("add") == 1

    # A call the caller gives up on is cancelled through the tunnel; the connection lives on.
    slow = await conn.call("slow", {"seconds": 3}, timeout_s=0.5)
    assert slow.is_error
    assert (await conn.call("echo", {"text": "still here"}, timeout_s=10)).content[0]["text"] == "still here"

    # Rotation: the live connection stays; the old token no longer connects.
    rotated: BetaTunnelToken = strict(
        BetaTunnelToken, await hangar.api.beta.tunnels.rotate_token(tunnel.id, reason="test")
    )
    assert not (await conn.call("add", {"a": 1, "b": 1}, timeout_s=10)).is_error
    assert hangar.hub.connected(tunnel.id) == 1
    stale = TunnelClient(hangar.base_url, token, [parse_route(f"files={private_mcp.base_url}")])
    with pytest.raises(TunnelRejected, match="unknown, rotated or archived tunnel token"):
        await asyncio.wait_for(stale.run(), 20)

    # Closing the session's connections closes their streams through the tunnel.
    await pool.close_session(SESSION)
    deadline = time.monotonic() + 10
    while hangar.hub.open_streams(tunnel.id):
        assert time.monotonic() < deadline, "streams stayed open after the MCP connection closed"
        await asyncio.sleep(0.05)

    # Killing the client fails calls fast.
    conn = await pool.get(SESSION, mcp_server(tunnel))
    relay.kill()
    started = time.monotonic()
    with pytest.raises(McpConnectionFailed):
        await conn.call("add", {"a": 1, "b": 2}, timeout_s=30)
    assert time.monotonic() - started < 5
    with pytest.raises(McpConnectionFailed):
        await pool.get(SESSION, mcp_server(tunnel, "other"))

    # A new client with the new token takes over.
    fresh = Relay(
        hangar.base_url, rotated.tunnel_token, f"files={private_mcp.base_url}", log=tmp_path / "relay2.log"
    )
    relays.append(fresh)
    await connected(hangar.hub, tunnel.id, fresh)
    await pool.close_session(SESSION)
    conn = await pool.get(SESSION, mcp_server(tunnel))
    assert (await conn.call("add", {"a": 5, "b": 5}, timeout_s=10)).content[0]["text"] == "10"

    # Archiving refuses traffic and disconnects the client, which exits.
    await hangar.api.beta.tunnels.archive(tunnel.id)
    with pytest.raises(McpConnectionFailed):
        await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)
    assert await fresh.exited() == 3
    assert "archived" in fresh.log()


async def test_refusals(hangar: Hangar, private_mcp: McpTestServer, pool: McpSessionPool) -> None:
    tunnel, token = await new_tunnel(hangar, certificate=False)
    # An in-process client this time (the CLI is covered above).
    client = TunnelClient(hangar.base_url, token, [parse_route(f"files={private_mcp.base_url}")])
    running = asyncio.create_task(client.run())
    hub = hangar.hub
    deadline = time.monotonic() + 20
    while not hub.connected(tunnel.id):
        assert not running.done() and time.monotonic() < deadline, "the tunnel client did not connect"
        await asyncio.sleep(0.02)

    async def refused(url: str, why: str, workspace_id: str | None = None) -> None:
        transport = hub.transport_for(url, workspace_id=workspace_id)
        assert transport is not None
        async with httpx2.AsyncClient(transport=transport) as http:
            with pytest.raises(httpx2.ConnectError) as err:
                await http.post(url, json={})
        assert why in str(err.value)

    url = f"https://files.{tunnel.domain}/mcp"
    # No certificate yet: refused, by the transport and through the MCP client.
    await refused(url, "has no active CA certificate")
    with pytest.raises(McpConnectionFailed):
        await pool.get(SESSION, {"name": "private", "url": url})
    cert = await hangar.api.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=issue("ca").pem)
    conn = await pool.get(SESSION, {"name": "private", "url": url})
    assert not (await conn.call("add", {"a": 1, "b": 1}, timeout_s=10)).is_error

    # Another workspace's agent cannot use it; unknown routes and domains are refused.
    await refused(url, f"no tunnel has the domain {tunnel.domain}", workspace_id="wrkspc_other")
    await refused(f"https://nope.{tunnel.domain}/mcp", "no route named 'nope'")
    await refused(f"https://files.0000000000000000.{PARENT}/mcp", "no tunnel has the domain")
    await refused(f"https://{tunnel.domain}/mcp", "names no route")
    assert hub.transport_for("https://example.com/mcp") is None
    assert hub.transport_for(f"https://{PARENT}.example.com/mcp") is None

    # Archiving the last certificate refuses traffic again.
    await hangar.api.beta.tunnels.certificates.archive(cert.id, tunnel_id=tunnel.id)
    await refused(url, "has no active CA certificate")
    await hangar.api.beta.tunnels.archive(tunnel.id)
    await refused(url, "is archived")
    with pytest.raises(TunnelRejected, match="tunnel archived"):
        await asyncio.wait_for(running, 20)


async def test_https_routes_trust_only_the_registered_ca(hangar: Hangar, tmp_path: Path) -> None:
    ca, stranger = issue("private CA"), issue("someone else's CA")
    leaf = issue("secure", ca=False, issuer=ca, dns=["localhost"])
    (tmp_path / "cert.pem").write_text(leaf.pem)
    (tmp_path / "key.pem").write_text(leaf.key_pem)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"secure hello"})

    port = free_port()
    tls = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(tmp_path / "cert.pem"),
            ssl_keyfile=str(tmp_path / "key.pem"),
        )
    )
    serving = asyncio.create_task(tls.serve())
    tunnel, token = await new_tunnel(hangar, certificate=False)
    first = await hangar.api.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=stranger.pem)
    client = TunnelClient(hangar.base_url, token, [parse_route(f"secure=https://localhost:{port}")])
    running = asyncio.create_task(client.run())
    try:
        while not (tls.started and hangar.hub.connected(tunnel.id)):
            assert not running.done() and not serving.done()
            await asyncio.sleep(0.02)
        url = f"https://secure.{tunnel.domain}/hello"
        transport = hangar.hub.transport_for(url)
        async with httpx2.AsyncClient(transport=transport) as http:
            with pytest.raises(httpx2.ConnectError, match="route 'secure'"):
                await http.get(url)  # the server's certificate is not signed by a registered CA
            # Registering the right CA reaches the connected client without a reconnect.
            await hangar.api.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=ca.pem)
            await hangar.api.beta.tunnels.certificates.archive(first.id, tunnel_id=tunnel.id)
            response = await http.get(url)
            assert response.status_code == 200 and response.text == "secure hello"
        assert client.connects == 0  # still the first connection (counted when it ends)
    finally:
        running.cancel()
        tls.should_exit = True
        await asyncio.gather(running, serving, return_exceptions=True)
        await hangar.api.beta.tunnels.archive(tunnel.id)
