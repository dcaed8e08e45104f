"""McpSessionPool / McpConnection against real MCP servers (tests/mcp_servers.py) on 127.0.0.1:
streamable HTTP, legacy SSE and the SSE fallback, error results, bearer auth, a server that is
down, a server restarted between calls, and the pool's bookkeeping."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import pytest

import hangar.runtime.mcp as mcp_pkg
from hangar.runtime.mcp import (
    McpAuthenticationFailed,
    McpConnectionFailed,
    McpSessionPool,
)
from tests.mcp_servers import McpTestServer, free_port

SESSION = "sesn_mcp_test"
TOKEN = "tok-canary-7c1d44e0a9"


@pytest.fixture(scope="module")
def streamable() -> Iterator[McpTestServer]:
    with McpTestServer(name="stream") as server:
        yield server


@pytest.fixture(scope="module")
def sse() -> Iterator[McpTestServer]:
    with McpTestServer(transport="sse", name="legacy") as server:
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[McpSessionPool]:
    pool = McpSessionPool(connect_timeout_s=5)
    yield pool
    await pool.aclose()


def server(srv: McpTestServer, name: str = "srv") -> dict[str, str]:
    return {"name": name, "url": srv.url}


class Headers:
    """A headers_factory that counts its calls (one per HTTP request)."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls = 0

    async def __call__(self) -> Mapping[str, str]:
        self.calls += 1
        return {"Authorization": f"Bearer {self.token}"}


def test_public_api_is_pinned() -> None:
    assert sorted(mcp_pkg.__all__) == [
        "HeadersFactory",
        "McpAuthenticationFailed",
        "McpCallResult",
        "McpConnection",
        "McpConnectionFailed",
        "McpError",
        "McpSessionPool",
        "McpTool",
        "McpToolMap",
        "McpToolRef",
        "TransportKind",
        "UnauthorizedHook",
        "find_mcp_toolset",
        "mcp_tool_definitions",
        "model_tool_name",
        "policy_for",
        "spill_large_result",
    ]


# --------------------------------------------------------------------------- transports


async def test_streamable_http_lists_and_calls(pool: McpSessionPool, streamable: McpTestServer) -> None:
    conn = await pool.get(SESSION, server(streamable))
    assert conn.transport == "streamable_http"
    tools = await conn.list_tools()
    assert [t.name for t in tools] == ["add", "echo", "fail", "big", "picture", "memo", "slow"]
    add = tools[0]
    assert add.description == "Add two integers."
    assert add.input_schema["type"] == "object"
    assert set(add.input_schema["properties"]) == {"a", "b"}
    before = streamable.calls_of("add")
    result = await conn.call("add", {"a": 2, "b": 40}, timeout_s=10)
    assert result.content == [{"type": "text", "text": "42"}]
    assert result.is_error is False
    assert streamable.calls_of("add") == before + 1


async def test_sse_lists_and_calls(pool: McpSessionPool, sse: McpTestServer) -> None:
    assert sse.url.endswith("/sse")
    conn = await pool.get(SESSION, server(sse))
    assert conn.transport == "sse"
    assert "echo" in [t.name for t in await conn.list_tools()]
    result = await conn.call("echo", {"text": "över SSE"}, timeout_s=10)
    assert result.content == [{"type": "text", "text": "över SSE"}]
    assert not result.is_error


async def test_sse_fallback_when_streamable_handshake_gets_405(pool: McpSessionPool) -> None:
    with McpTestServer(transport="sse", sse_path="/events") as srv:
        conn = await pool.get(SESSION, server(srv))
        assert conn.transport == "sse"
        assert (await conn.call("add", {"a": 1, "b": 1}, timeout_s=10)).text == "2"


async def test_wrong_path_is_a_connection_failure(pool: McpSessionPool, streamable: McpTestServer) -> None:
    with pytest.raises(McpConnectionFailed) as caught:
        await pool.get(SESSION, {"name": "nowhere", "url": streamable.base_url + "/nope"})
    assert caught.value.server_name == "nowhere"
    assert "HTTP 404" in caught.value.message


async def test_tool_list_is_cached_per_connection(pool: McpSessionPool, streamable: McpTestServer) -> None:
    headers = Headers()
    conn = await pool.get(SESSION, server(streamable), headers_factory=headers)
    first = await conn.list_tools()
    requests = headers.calls
    assert await conn.list_tools() == first
    assert headers.calls == requests, "a cached listing sends no request"
    assert await conn.refresh() == first
    assert headers.calls > requests


# --------------------------------------------------------------------------- results


async def test_tool_error_is_an_error_result(pool: McpSessionPool, streamable: McpTestServer) -> None:
    conn = await pool.get(SESSION, server(streamable))
    result = await conn.call("fail", {"message": "the disk is on fire"}, timeout_s=10)
    assert result.is_error is True
    assert "the disk is on fire" in result.text
    unknown = await conn.call("no_such_tool", {}, timeout_s=10)
    assert unknown.is_error is True
    assert "no_such_tool" in unknown.text


async def test_image_and_embedded_resource(pool: McpSessionPool, sse: McpTestServer) -> None:
    conn = await pool.get(SESSION, server(sse))
    picture = await conn.call("picture", {}, timeout_s=10)
    assert picture.content == [
        {
            "type": "image",
            "source": {
                "type": "base64",
                "media_type": "image/png",
                "data": picture.content[0]["source"]["data"],
            },
        }
    ]
    assert picture.content[0]["source"]["data"].startswith("iVBORw0KGgo")
    memo = await conn.call("memo", {}, timeout_s=10)
    assert memo.content == [{"type": "text", "text": "[resource memo://1]\nremember the milk"}]


async def test_call_timeout_is_an_error_result(pool: McpSessionPool, streamable: McpTestServer) -> None:
    conn = await pool.get(SESSION, server(streamable))
    started = time.monotonic()
    result = await conn.call("slow", {"seconds": 5}, timeout_s=0.5)
    assert time.monotonic() - started < 3
    assert result.is_error is True
    assert result.text == "slow: the MCP server did not answer within 0.5 s"
    assert (await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)).text == "3", "the connection survives"


# --------------------------------------------------------------------------- authentication


async def test_bearer_token_required(pool: McpSessionPool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with McpTestServer(tokens={TOKEN}) as srv:
        with pytest.raises(McpAuthenticationFailed) as caught:
            await pool.get(SESSION, server(srv, "secured"))
        error = caught.value
        assert error.server_name == "secured"
        assert "HTTP 401" in error.message
        assert error.session_error() == {
            "type": "mcp_authentication_failed_error",
            "message": error.message,
            "retry_status": {"type": "exhausted"},
            "mcp_server_name": "secured",
        }
        assert pool.connections(SESSION) == {}, "a failed connection is not kept"

        headers = Headers()
        conn = await pool.get(SESSION, server(srv, "secured"), headers_factory=headers)
        assert (await conn.call("add", {"a": 20, "b": 22}, timeout_s=10)).text == "42"
        assert TOKEN in srv.tokens_seen
        calls = headers.calls
        await conn.call("add", {"a": 1, "b": 1}, timeout_s=10)
        assert headers.calls > calls, "headers are asked for on every request"

        # wrong token → 401 too, and the message never quotes it
        with pytest.raises(McpAuthenticationFailed) as wrong:
            await pool.get(SESSION, server(srv, "other"), headers_factory=Headers("tok-wrong-1234567"))
        assert "tok-wrong" not in wrong.value.message
    assert TOKEN not in caplog.text, "header values are never logged"


async def test_revoked_token_fails_the_call(pool: McpSessionPool) -> None:
    with McpTestServer(tokens={TOKEN}) as srv:
        conn = await pool.get(SESSION, server(srv, "secured"), headers_factory=Headers())
        assert (await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)).text == "3"
        srv.tokens = set()
        with pytest.raises(McpAuthenticationFailed) as caught:
            await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)
        assert caught.value.server_name == "secured"
        assert TOKEN not in caught.value.message
        assert srv.calls_of("add") == 1


async def test_on_unauthorized_gets_one_chance_to_refresh(pool: McpSessionPool) -> None:
    with McpTestServer(tokens={"tok-fresh-000001"}) as srv:
        headers = Headers("tok-stale-000001")
        refreshed: list[str] = []

        async def refresh() -> None:
            refreshed.append(headers.token)
            headers.token = "tok-fresh-000001"

        conn = await pool.get(SESSION, server(srv, "oauth"), headers_factory=headers, on_unauthorized=refresh)
        assert refreshed == ["tok-stale-000001"]
        assert (await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)).text == "3"
        assert srv.tokens_seen[:2] == ["tok-stale-000001", "tok-fresh-000001"]


async def test_failing_headers_factory_is_a_connection_failure(
    pool: McpSessionPool, streamable: McpTestServer
) -> None:
    async def sealed() -> Mapping[str, str]:
        raise LookupError("the vault is sealed")

    with pytest.raises(McpConnectionFailed) as caught:
        await pool.get(SESSION, server(streamable, "sealed"), headers_factory=sealed)
    assert caught.value.message.endswith(": LookupError")


# --------------------------------------------------------------------------- failures and reconnects


async def test_server_down_is_a_connection_failure(pool: McpSessionPool) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp?api_key=sekrit-query-value"
    with pytest.raises(McpConnectionFailed) as caught:
        await pool.get(SESSION, {"name": "offline", "url": url})
    error = caught.value
    assert error.server_name == "offline"
    assert "connection refused" in error.message
    assert "sekrit" not in error.message
    assert error.session_error()["type"] == "mcp_connection_failed_error"
    assert pool.connections(SESSION) == {}


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_reconnects_after_a_restart(pool: McpSessionPool, transport: str) -> None:
    with McpTestServer(transport=transport) as srv:  # type: ignore[arg-type]
        conn = await pool.get(SESSION, server(srv))
        assert (await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)).text == "3"
        srv.restart()
        assert (await conn.call("add", {"a": 3, "b": 4}, timeout_s=10)).text == "7"
        assert srv.calls == [("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4})], "each call ran once"
        # legacy SSE holds a stream that the restart broke: the call reconnected; modern
        # streamable HTTP is stateless per request: it did not even need to
        assert conn.connects == (2 if transport == "sse" else 1)
        assert (await conn.list_tools())[0].name == "add"


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_server_down_between_calls_then_back(pool: McpSessionPool, transport: str) -> None:
    with McpTestServer(transport=transport) as srv:  # type: ignore[arg-type]
        conn = await pool.get(SESSION, server(srv))
        assert (await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)).text == "3"
        srv.stop()
        with pytest.raises(McpConnectionFailed) as caught:
            await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)
        assert "connection refused" in caught.value.message
        srv.start()
        assert (await conn.call("add", {"a": 5, "b": 5}, timeout_s=10)).text == "10"
        assert srv.calls_of("add") == 2
        assert conn.connects == 2


async def test_a_call_that_may_have_run_is_not_sent_again(pool: McpSessionPool) -> None:
    with McpTestServer() as srv:
        conn = await pool.get(SESSION, server(srv))
        call = asyncio.create_task(conn.call("slow", {"seconds": 30}, timeout_s=60))
        while srv.calls_of("slow") == 0:
            await asyncio.sleep(0.02)
        await asyncio.to_thread(srv.stop)
        with pytest.raises(McpConnectionFailed) as caught:
            await call
        assert "may or may not have run" in caught.value.message
        assert srv.calls_of("slow") == 1
        srv.start()
        assert (await conn.call("add", {"a": 1, "b": 2}, timeout_s=10)).text == "3"


# --------------------------------------------------------------------------- the pool


async def test_one_connection_per_session_and_server(pool: McpSessionPool, streamable: McpTestServer) -> None:
    conns = await asyncio.gather(*(pool.get("sesn_a", server(streamable)) for _ in range(5)))
    assert all(c is conns[0] for c in conns)
    assert conns[0].connects == 1
    other = await pool.get("sesn_b", server(streamable))
    assert other is not conns[0]
    assert set(pool.connections("sesn_a")) == {"srv"}


async def test_close_session(pool: McpSessionPool, streamable: McpTestServer, sse: McpTestServer) -> None:
    a = await pool.get("sesn_close", server(streamable, "one"))
    await pool.get("sesn_close", server(sse, "two"))
    kept = await pool.get("sesn_keep", server(streamable, "one"))
    await pool.close_session("sesn_close")
    assert pool.connections("sesn_close") == {}
    with pytest.raises(McpConnectionFailed):
        await a.call("add", {"a": 1, "b": 2}, timeout_s=10)
    assert (await kept.call("add", {"a": 1, "b": 2}, timeout_s=10)).text == "3"
    again = await pool.get("sesn_close", server(streamable, "one"))
    assert again is not a


async def test_changed_url_replaces_the_connection(
    pool: McpSessionPool, streamable: McpTestServer, sse: McpTestServer
) -> None:
    first = await pool.get(SESSION, {"name": "moving", "url": streamable.url})
    second = await pool.get(SESSION, {"name": "moving", "url": sse.url})
    assert second is not first
    assert second.transport == "sse"
    with pytest.raises(McpConnectionFailed):
        await first.call("add", {"a": 1, "b": 2}, timeout_s=10)


async def test_closed_pool_refuses(streamable: McpTestServer) -> None:
    pool = McpSessionPool()
    await pool.get(SESSION, server(streamable))
    await pool.aclose()
    with pytest.raises(RuntimeError):
        await pool.get(SESSION, server(streamable))
