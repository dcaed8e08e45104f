"""EgressProxy and EgressPolicy on their own: a client on the unix socket, local listeners only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hangar.sandbox.proxy import PACKAGE_REGISTRY_HOSTS, EgressPolicy, EgressProxy, host_matches

from .conftest import Listener


def test_host_matching() -> None:
    assert host_matches("Example.COM.", "example.com")
    assert not host_matches("www.example.com", "example.com")
    assert host_matches("a.example.com", "*.example.com")
    assert host_matches("a.b.example.com", "*.Example.com")
    assert not host_matches("example.com", "*.example.com")
    assert not host_matches("badexample.com", "*.example.com")
    assert host_matches("127.0.0.1", "127.0.0.1")
    assert not host_matches("127.0.0.2", "127.0.0.1")
    assert host_matches("[::1]", "::1")
    assert not host_matches("127.0.0.1", "*.0.0.1")
    assert not host_matches("", "")


def test_policy_from_networking() -> None:
    assert EgressPolicy.from_networking(None) is None
    assert EgressPolicy.from_networking({"type": "unrestricted"}) is None
    policy = EgressPolicy.from_networking(
        {"type": "limited", "allowed_hosts": ["api.example.com"], "allow_mcp_servers": True},
        mcp_servers=["https://mcp.example.net:8443/sse", "tools.example.org"],
    )
    assert policy == EgressPolicy(
        allowed_hosts=("api.example.com",),
        allow_package_managers=False,
        allow_mcp_servers=True,
        mcp_hosts=("mcp.example.net", "tools.example.org"),
    )
    assert policy.check("api.example.com").allowed
    assert policy.check("mcp.example.net").allowed
    assert not policy.check("pypi.org").allowed
    empty = EgressPolicy.from_networking({"type": "limited", "allowed_hosts": []})
    assert empty is not None and not empty.check("api.example.com").allowed


def test_package_registries_and_mcp_hosts_need_their_flags() -> None:
    closed = EgressPolicy(mcp_hosts=("mcp.example.net",))
    assert not closed.check("pypi.org").allowed
    verdict = closed.check("mcp.example.net")
    assert not verdict.allowed
    assert "allow_mcp_servers is false" in verdict.reason
    assert "allow_package_managers is false" in verdict.reason
    opened = EgressPolicy(allow_package_managers=True, allow_mcp_servers=True, mcp_hosts=("mcp.example.net",))
    for host in PACKAGE_REGISTRY_HOSTS:
        assert opened.check(host).allowed, host
    assert opened.check("mcp.example.net").allowed
    assert not opened.check("evil.example.net").allowed
    # MCP hosts are never opened without the flag, whatever was passed.
    assert (
        not EgressPolicy(allow_package_managers=True, mcp_hosts=("mcp.example.net",))
        .check("mcp.example.net")
        .allowed
    )


async def loopback_resolver(host: str, port: int) -> list[str]:
    """Every name resolves to 127.0.0.1 (tests never reach the internet)."""
    return ["127.0.0.1"]


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[EgressProxy]:
    p = EgressProxy(
        tmp_path / "egress.sock",
        EgressPolicy(allowed_hosts=("127.0.0.1",)),
        session_id="sesn_proxy",
        resolver=loopback_resolver,
    )
    await p.start()
    yield p
    await p.close()


async def exchange(proxy: EgressProxy, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_plain_http_to_an_allowed_host_is_forwarded_in_origin_form(
    proxy: EgressProxy, listener: Listener
) -> None:
    response = await exchange(
        proxy,
        f"GET http://127.0.0.1:{listener.port}/path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{listener.port}\r\n"
        "Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n\r\n".encode(),
    )
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert response.endswith(b"hello from the host\n")
    (head,) = listener.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "GET /path?q=1 HTTP/1.1"
    assert "X-Kept: yes" in lines and "Connection: close" in lines
    assert not any(line.lower().startswith("proxy-") for line in lines)


async def test_connect_to_an_allowed_host_tunnels_bytes(proxy: EgressProxy, listener: Listener) -> None:
    reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
    writer.write(f"CONNECT 127.0.0.1:{listener.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection Established\r\n\r\n"
    writer.write(b"GET /tunnelled HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"hello from the host\n")
    assert listener.requests[0].startswith(b"GET /tunnelled HTTP/1.1")
    writer.close()


async def test_a_host_not_allowed_gets_403_naming_it_and_is_logged(
    proxy: EgressProxy, listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hangar.sandbox.proxy"):
        response = await exchange(proxy, b"CONNECT evil.example.com:443 HTTP/1.1\r\n\r\n")
        plain = await exchange(
            proxy, b"GET http://other.example.org/ HTTP/1.1\r\nHost: other.example.org\r\n\r\n"
        )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(
        b"HTTP/1.1 403 Forbidden by the sandbox network policy: evil.example.com is not allowed"
    )
    assert b"X-Hangar-Egress: denied" in head
    assert body.decode() == (
        "hangar egress proxy: access to evil.example.com denied: not in the environment's allowed_hosts; "
        "package registries are closed (allow_package_managers is false) (networking: limited)\n"
    )
    assert plain.startswith(b"HTTP/1.1 403 ") and b"other.example.org" in plain
    assert listener.requests == []  # nothing was forwarded
    assert proxy.denied == 2
    records = [r for r in caplog.records if r.name == "hangar.sandbox.proxy"]
    assert [(r.session_id, r.host, r.port) for r in records] == [  # type: ignore[attr-defined]
        ("sesn_proxy", "evil.example.com", 443),
        ("sesn_proxy", "other.example.org", 80),
    ]


async def test_wildcards_and_names_resolved_by_the_proxy(tmp_path: Path, listener: Listener) -> None:
    policy = EgressPolicy(allowed_hosts=("*.example.test",))
    async with EgressProxy(
        tmp_path / "p.sock", policy, session_id="s", resolver=loopback_resolver, allow_private_addresses=True
    ) as proxy:
        ok = await exchange(proxy, f"GET http://api.example.test:{listener.port}/ HTTP/1.1\r\n\r\n".encode())
        assert ok.startswith(b"HTTP/1.1 200 OK")
        bare = await exchange(proxy, f"GET http://example.test:{listener.port}/ HTTP/1.1\r\n\r\n".encode())
        assert bare.startswith(b"HTTP/1.1 403 ")


async def test_an_allowed_name_resolving_to_a_private_address_is_refused(
    tmp_path: Path, listener: Listener
) -> None:
    policy = EgressPolicy(allowed_hosts=("internal.example.test", "localhost"))
    async with EgressProxy(tmp_path / "p.sock", policy, session_id="s", resolver=loopback_resolver) as proxy:
        response = await exchange(
            proxy, f"CONNECT internal.example.test:{listener.port} HTTP/1.1\r\n\r\n".encode()
        )
        assert response.startswith(b"HTTP/1.1 403 ")
        assert b"it resolves to a non-public address (127.0.0.1)" in response
        # `localhost` and IP literals listed explicitly are taken as meant.
        ok = await exchange(proxy, f"GET http://localhost:{listener.port}/ HTTP/1.1\r\n\r\n".encode())
        assert ok.startswith(b"HTTP/1.1 200 OK")


async def test_bad_requests_and_unreachable_hosts(proxy: EgressProxy, tmp_path: Path) -> None:
    assert (await exchange(proxy, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    assert (await exchange(proxy, b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    https = await exchange(proxy, b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n")
    assert https.startswith(b"HTTP/1.1 400 ") and b"use CONNECT for https" in https
    # A closed port on an allowed host: 502 naming it.
    refused = await exchange(proxy, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 502 ") and b"cannot connect to 127.0.0.1:1" in refused
    assert proxy.denied == 0

    async def failing(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    policy = EgressPolicy(allowed_hosts=("nowhere.example.test",))
    async with EgressProxy(tmp_path / "q.sock", policy, session_id="s", resolver=failing) as other:
        response = await exchange(other, b"CONNECT nowhere.example.test:443 HTTP/1.1\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 502 ") and b"cannot resolve nowhere.example.test" in response


async def test_policy_changes_apply_to_new_connections(proxy: EgressProxy, listener: Listener) -> None:
    request = f"GET http://127.0.0.1:{listener.port}/ HTTP/1.1\r\n\r\n".encode()
    assert (await exchange(proxy, request)).startswith(b"HTTP/1.1 200 ")
    proxy.policy = EgressPolicy(allowed_hosts=())
    assert (await exchange(proxy, request)).startswith(b"HTTP/1.1 403 ")
    proxy.policy = None  # unrestricted
    assert (await exchange(proxy, request)).startswith(b"HTTP/1.1 200 ")


async def test_close_cuts_open_tunnels_and_removes_the_socket(tmp_path: Path) -> None:
    held = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = EgressProxy(tmp_path / "egress.sock", EgressPolicy(allowed_hosts=("127.0.0.1",)), session_id="s")
    await proxy.start()
    assert (tmp_path / "egress.sock").stat().st_mode & 0o777 == 0o600
    reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
    writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.wait_for(held.wait(), 5)
    await asyncio.wait_for(proxy.close(), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert not (tmp_path / "egress.sock").exists()
    writer.close()
    server.close()
    await server.wait_closed()
