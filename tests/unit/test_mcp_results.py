"""MCP results: content conversion to SDK blocks, and oversized results spilled to a file
(the mcp_max_result_bytes setting), end to end with a real MCP server."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import mcp_types as types
import pytest
from anthropic.types.beta.sessions import BetaManagedAgentsAgentMCPToolResultEvent

from hangar.config import Settings
from hangar.runtime.mcp import McpCallResult, McpSessionPool, spill_large_result
from hangar.runtime.mcp.content import convert_result
from tests.helpers import strict
from tests.mcp_servers import McpTestServer, big_text


def event(result: McpCallResult) -> BetaManagedAgentsAgentMCPToolResultEvent:
    """The result as it would travel in an agent.mcp_tool_result event, strictly validated."""
    checked: BetaManagedAgentsAgentMCPToolResultEvent = strict(
        BetaManagedAgentsAgentMCPToolResultEvent,
        {
            "type": "agent.mcp_tool_result",
            "id": "sevt_1",
            "mcp_tool_use_id": "sevt_0",
            "processed_at": "2026-01-01T00:00:00Z",
            "content": result.content,
            "is_error": result.is_error,
        },
    )
    return checked


# --------------------------------------------------------------------------- conversion


def test_every_content_kind_becomes_an_sdk_block() -> None:
    png = base64.b64encode(b"\x89PNG fake").decode()
    result = types.CallToolResult(
        content=[
            types.TextContent(type="text", text="hello"),
            types.TextContent(type="text", text=""),
            types.ImageContent(type="image", data=png, mime_type="image/png"),
            types.ImageContent(type="image", data=png, mime_type="image/tiff"),
            types.AudioContent(type="audio", data=base64.b64encode(b"1234").decode(), mime_type="audio/wav"),
            types.ResourceLink(
                type="resource_link", name="spec", uri="file:///spec.md", description="the spec"
            ),
            types.EmbeddedResource(
                type="resource", resource=types.TextResourceContents(uri="memo://2", text="body")
            ),
            types.EmbeddedResource(
                type="resource",
                resource=types.BlobResourceContents(uri="blob://x", blob=png, mime_type="image/webp"),
            ),
            types.EmbeddedResource(
                type="resource",
                resource=types.BlobResourceContents(uri="blob://y", blob=png, mime_type="application/zip"),
            ),
        ],
        is_error=True,
    )
    converted = convert_result(result)
    assert converted.is_error is True
    assert converted.content == [
        {"type": "text", "text": "hello"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "text", "text": "[image (image/tiff, 9 bytes) not shown]"},
        {"type": "text", "text": "[audio (audio/wav, 4 bytes) not shown]"},
        {"type": "text", "text": "[resource link] spec: file:///spec.md (the spec)"},
        {"type": "text", "text": "[resource memo://2]\nbody"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": png}},
        {"type": "text", "text": "[resource blob://y (application/zip, 9 bytes) not shown]"},
    ]
    event(converted)


def test_empty_content_is_never_empty() -> None:
    assert convert_result(types.CallToolResult(content=[])).content == [
        {"type": "text", "text": "(no output)"}
    ]
    structured = convert_result(types.CallToolResult(content=[], structured_content={"n": 1}))
    assert structured.content == [{"type": "text", "text": '{"n": 1}'}]
    assert structured.is_error is False


# --------------------------------------------------------------------------- spilling


def test_the_limit_is_a_documented_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().mcp_max_result_bytes == 400_000
    monkeypatch.setenv("HANGAR_MCP_MAX_RESULT_BYTES", "2048")
    assert Settings().mcp_max_result_bytes == 2048
    assert Settings.model_fields["mcp_max_result_bytes"].description


async def test_small_result_is_untouched(tmp_path: Path) -> None:
    result = McpCallResult([{"type": "text", "text": "x" * 1000}])
    assert await spill_large_result(result, tool="t", directory=tmp_path, limit=1000) is result
    assert list(tmp_path.iterdir()) == []


async def test_oversized_result_is_spilled_with_a_preview(tmp_path: Path) -> None:
    text = "é" * 3000  # 6000 bytes of UTF-8
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    result = McpCallResult([{"type": "text", "text": text}, image], is_error=True)
    spilled = await spill_large_result(
        result, tool="search", server="git hub", directory=tmp_path / "mcp", limit=5000, preview_bytes=101
    )
    assert spilled.is_error is True
    [path] = list((tmp_path / "mcp").iterdir())
    assert path.name.startswith("git_hub-search-") and path.suffix == ".txt"
    assert path.read_text() == text
    note = spilled.content[0]["text"]
    assert note.startswith(
        f"[The output of search is 6000 bytes, more than the 5000-byte limit for a tool result. "
        f"It was saved in full to {path}; read that file for the rest. The first 100 bytes follow.]\n\n"
    )
    assert note.endswith("é" * 50), "the preview is cut at a character boundary"
    assert spilled.content[1] == image
    event(spilled)


async def test_spilled_path_as_the_sandbox_shows_it(tmp_path: Path) -> None:
    result = McpCallResult([{"type": "text", "text": "y" * 3000}])
    spilled = await spill_large_result(
        result, tool="dump", directory=tmp_path / ".mcp", limit=2000, shown_as="/workspace/.mcp"
    )
    [path] = list((tmp_path / ".mcp").iterdir())
    assert f"saved in full to /workspace/.mcp/{path.name};" in spilled.text
    assert str(tmp_path) not in spilled.text


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[McpSessionPool]:
    pool = McpSessionPool(connect_timeout_s=5)
    yield pool
    await pool.aclose()


async def test_real_oversized_result_is_spilled(
    pool: McpSessionPool, mcp_server: McpTestServer, tmp_path: Path
) -> None:
    limit = Settings(mcp_max_result_bytes=20_000).mcp_max_result_bytes
    conn = await pool.get("sesn_spill", {"name": "big", "url": mcp_server.url})
    small = await conn.call("big", {"size": limit}, timeout_s=10)
    assert await spill_large_result(small, tool="big", directory=tmp_path, limit=limit) is small

    large = await conn.call("big", {"size": 250_000}, timeout_s=10)
    assert len(large.text) == 250_000
    spilled = await spill_large_result(large, tool="big", server="big", directory=tmp_path, limit=limit)
    [path] = list(tmp_path.iterdir())
    assert path.read_text() == big_text(250_000)
    assert len(spilled.text.encode()) < limit
    assert str(path) in spilled.text
    assert "line 000000\nline 000001\n" in spilled.text
    event(spilled)
