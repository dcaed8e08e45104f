"""web_fetch and web_search against a local HTTP server on 127.0.0.1 (no outside network)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from hangar.config import Settings
from hangar.runtime.tools import ToolResult, WorkspaceExecutor
from hangar.runtime.tools.web import domain_matches, host_allowed, html_to_text

PAGE = b"""<!doctype html><html><head><title>Test &amp; Page</title>
<style>body { color: red }</style><script>var hidden = "do not show";</script></head>
<body><h1>Heading</h1><p>First   paragraph
with <b>bold</b> text.</p><ul><li>one</li><li>two</li></ul><noscript>nope</noscript></body></html>"""

SEARCH_RESULTS = [
    {"url": "https://docs.example.com/a", "title": "A", "content": "first"},
    {"url": "https://blocked.test/b", "title": "B", "content": "second"},
    {"url": "https://other.org/c", "title": "C", "content": "third"},
    {"title": "no url"},
]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        port = self.server.server_port  # type: ignore[attr-defined]
        if url.path == "/page":
            self.send(200, PAGE, "text/html; charset=utf-8")
        elif url.path == "/plain":
            self.send(200, "plain text é\n".encode("latin-1"), "text/plain; charset=latin-1")
        elif url.path == "/json":
            self.send(200, b'{"a": 1}', "application/json")
        elif url.path == "/ua":
            self.send(200, self.headers.get("User-Agent", "").encode(), "text/plain")
        elif url.path == "/redirect":
            self.send(302, b"", "text/plain", Location="/page")
        elif url.path == "/redirect-localhost":
            self.send(302, b"", "text/plain", Location=f"http://localhost:{port}/page")
        elif url.path == "/loop":
            self.send(302, b"", "text/plain", Location="/loop")
        elif url.path == "/binary":
            self.send(200, b"\x00\x01", "application/octet-stream")
        elif url.path == "/pdf":
            self.send(200, b"%PDF-1.4 fake", "application/pdf")
        elif url.path == "/long":
            self.send(200, b"x" * 1000, "text/plain")
        elif url.path == "/slow":
            time.sleep(1.5)
            self.send(200, b"late", "text/plain")
        elif url.path == "/search":
            query = parse_qs(url.query).get("q", [""])[0]
            self.send(
                200, json.dumps({"query": query, "results": SEARCH_RESULTS}).encode(), "application/json"
            )
        elif url.path == "/search-broken":
            self.send(200, b"<html>not json</html>", "text/html")
        elif url.path == "/search-error":
            self.send(503, b"down", "text/plain")
        else:
            self.send(404, b"missing", "text/plain")


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make(tmp_path: Path, origin: str, **settings: Any) -> WorkspaceExecutor:
    settings.setdefault("web_allow_private_addresses", True)
    settings.setdefault("web_search_url", origin + "/search?q={query}&format=json")
    return WorkspaceExecutor("sesn_web", tmp_path / "ws", Settings(data_dir=tmp_path / "d", **settings))


@pytest.fixture
async def ex(tmp_path: Path, origin: str) -> AsyncIterator[WorkspaceExecutor]:
    executor = make(tmp_path, origin)
    yield executor
    await executor.close()


def toolset(**configs: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "agent_toolset_20260401",
        "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
        "configs": [{"name": name, "type": name, **config} for name, config in configs.items()],
    }


def document(result: ToolResult) -> tuple[str, str]:
    assert not result.is_error, result.text
    [block] = result.content
    assert block["type"] == "document"
    assert set(block) == {"type", "source", "title"}
    assert block["source"]["type"] == "text" and block["source"]["media_type"] == "text/plain"
    return block["title"], block["source"]["data"]


def error(result: ToolResult) -> str:
    assert result.is_error, result.content
    return result.text


# --------------------------------------------------------------------------- web_fetch


async def test_fetch_html_as_a_text_document(ex: WorkspaceExecutor, origin: str) -> None:
    title, text = document(await ex.run("web_fetch", {"url": origin + "/page"}))
    assert title == "Test & Page"
    assert text == "# Heading\n\nFirst paragraph with bold text.\n\n- one\n\n- two"


async def test_fetch_text_types_and_charsets(ex: WorkspaceExecutor, origin: str) -> None:
    assert document(await ex.run("web_fetch", {"url": origin + "/plain"})) == (
        origin + "/plain",
        "plain text é\n",
    )
    assert document(await ex.run("web_fetch", {"url": origin + "/json"})) == (origin + "/json", '{"a": 1}')


async def test_fetch_sends_the_claude_user_agent(ex: WorkspaceExecutor, origin: str) -> None:
    assert document(await ex.run("web_fetch", {"url": origin + "/ua"}))[1] == "Claude-User/1.0"


async def test_fetch_follows_redirects(ex: WorkspaceExecutor, origin: str) -> None:
    title, _ = document(await ex.run("web_fetch", {"url": origin + "/redirect"}))
    assert title == "Test & Page"
    assert error(await ex.run("web_fetch", {"url": origin + "/loop"})) == (
        "web_fetch: url_not_accessible: more than 10 redirects"
    )


async def test_fetch_errors(ex: WorkspaceExecutor, origin: str) -> None:
    assert error(await ex.run("web_fetch", {"url": origin + "/missing"})) == (
        f"web_fetch: url_not_accessible: HTTP 404 Not Found for {origin}/missing"
    )
    assert error(await ex.run("web_fetch", {"url": origin + "/binary"})) == (
        "web_fetch: unsupported_content_type: application/octet-stream"
    )
    assert error(await ex.run("web_fetch", {})) == "web_fetch: invalid_input: url is required"
    assert error(await ex.run("web_fetch", {"url": "file:///etc/passwd"})) == (
        "web_fetch: invalid_input: 'file:///etc/passwd' is not an http(s) URL"
    )
    assert error(await ex.run("web_fetch", {"url": "http://[::1"})) == (
        "web_fetch: invalid_input: 'http://[::1' is not a valid URL"
    )
    assert error(await ex.run("web_fetch", {"url": "http://127.0.0.1:99999/"})) == (
        "web_fetch: invalid_input: 'http://127.0.0.1:99999/' is not a valid URL"
    )
    assert error(await ex.run("web_fetch", {"url": "http://exa mple.test/"})) == (
        "web_fetch: invalid_input: 'http://exa mple.test/' is not a valid URL"
    )
    assert error(await ex.run("web_fetch", {"url": "http://127.0.0.1:1/"})).startswith(
        "web_fetch: url_not_accessible: "
    )


async def test_fetch_pdf_as_a_base64_document(ex: WorkspaceExecutor, origin: str) -> None:
    result = await ex.run("web_fetch", {"url": origin + "/pdf"})
    assert result.content == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQgZmFrZQ=="},
            "title": origin + "/pdf",
        }
    ]


async def test_fetch_refuses_private_addresses_by_default(tmp_path: Path, origin: str) -> None:
    executor = make(tmp_path, origin, web_allow_private_addresses=False)
    try:
        for url in (origin + "/page", origin.replace("127.0.0.1", "localhost") + "/page"):
            assert error(await executor.run("web_fetch", {"url": url})).startswith(
                "web_fetch: url_not_allowed: "
            )
            assert "resolves to a non-public address" in error(await executor.run("web_fetch", {"url": url}))
    finally:
        await executor.close()


async def test_fetch_honours_domain_lists(ex: WorkspaceExecutor, origin: str) -> None:
    ex.configure(toolset=toolset(web_fetch={"blocked_domains": ["127.0.0.1"]}))
    assert error(await ex.run("web_fetch", {"url": origin + "/page"})) == (
        "web_fetch: url_not_allowed: 127.0.0.1 is in blocked_domains"
    )
    ex.configure(toolset=toolset(web_fetch={"allowed_domains": ["example.com"]}))
    assert error(await ex.run("web_fetch", {"url": origin + "/page"})) == (
        "web_fetch: url_not_allowed: 127.0.0.1 is not in allowed_domains"
    )
    ex.configure(toolset=toolset(web_fetch={"allowed_domains": ["127.0.0.1"]}))
    assert document(await ex.run("web_fetch", {"url": origin + "/redirect"}))[0] == "Test & Page"
    # Every redirect hop is checked again.
    assert error(await ex.run("web_fetch", {"url": origin + "/redirect-localhost"})) == (
        "web_fetch: url_not_allowed: localhost is not in allowed_domains"
    )


async def test_fetch_honours_max_content_tokens(ex: WorkspaceExecutor, origin: str) -> None:
    ex.configure(toolset=toolset(web_fetch={"max_content_tokens": 10}))
    _, text = document(await ex.run("web_fetch", {"url": origin + "/long"}))
    assert text == "x" * 40 + "\n[content truncated]"


async def test_environment_networking_limits_web_tools(ex: WorkspaceExecutor, origin: str) -> None:
    ex.configure(networking={"type": "limited", "allowed_hosts": []})
    assert error(await ex.run("web_fetch", {"url": origin + "/page"})) == (
        "web_fetch: url_not_allowed: 127.0.0.1 is not in the environment's allowed_hosts"
    )
    assert error(await ex.run("web_search", {"query": "x"})) == (
        "web_search: url_not_allowed: the environment allows no hosts"
    )
    ex.configure(networking={"type": "limited", "allowed_hosts": ["127.0.0.1", "*.example.com"]})
    assert document(await ex.run("web_fetch", {"url": origin + "/page"}))[0] == "Test & Page"
    results = json.loads((await ex.run("web_search", {"query": "x"})).text)["results"]
    assert [r["url"] for r in results] == ["https://docs.example.com/a"]
    ex.configure(networking={"type": "unrestricted"})
    assert document(await ex.run("web_fetch", {"url": origin + "/page"}))[0] == "Test & Page"


async def test_fetch_timeout(tmp_path: Path, origin: str) -> None:
    executor = make(tmp_path, origin, web_fetch_timeout_s=0.3)
    try:
        started = time.monotonic()
        assert error(await executor.run("web_fetch", {"url": origin + "/slow"})) == (
            f"web_fetch: timeout: no response from {origin}/slow in time"
        )
        assert time.monotonic() - started < 1.2
    finally:
        await executor.close()


async def test_fetch_can_be_interrupted(ex: WorkspaceExecutor, origin: str) -> None:
    task = asyncio.create_task(ex.run("web_fetch", {"url": origin + "/slow"}))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await ex.cancel()
    result = await task
    assert (result.text, result.is_error) == ("web_fetch: interrupted", True)
    assert time.monotonic() - started < 0.2


# --------------------------------------------------------------------------- web_search


async def test_search_without_a_backend(tmp_path: Path, origin: str) -> None:
    executor = make(tmp_path, origin, web_search_url=None)
    try:
        assert error(await executor.run("web_search", {"query": "x"})) == (
            "web_search: no search backend is configured (set HANGAR_WEB_SEARCH_URL)"
        )
    finally:
        await executor.close()


async def test_search_returns_a_json_string(ex: WorkspaceExecutor) -> None:
    result = await ex.run("web_search", {"query": "hangar & agents"})
    assert not result.is_error
    assert json.loads(result.text) == {
        "query": "hangar & agents",
        "results": [
            {"title": "A", "url": "https://docs.example.com/a", "snippet": "first"},
            {"title": "B", "url": "https://blocked.test/b", "snippet": "second"},
            {"title": "C", "url": "https://other.org/c", "snippet": "third"},
        ],
    }
    assert error(await ex.run("web_search", {"query": " "})) == "web_search: invalid_input: query is required"


async def test_search_template_without_placeholder_adds_q(tmp_path: Path, origin: str) -> None:
    executor = make(tmp_path, origin, web_search_url=origin + "/search?format=json")
    try:
        assert json.loads((await executor.run("web_search", {"query": "abc"})).text)["query"] == "abc"
    finally:
        await executor.close()


async def test_search_filters_results_by_domain_lists(ex: WorkspaceExecutor) -> None:
    ex.configure(toolset=toolset(web_search={"blocked_domains": ["blocked.test"]}))
    results = json.loads((await ex.run("web_search", {"query": "x"})).text)["results"]
    assert [r["title"] for r in results] == ["A", "C"]
    ex.configure(toolset=toolset(web_search={"allowed_domains": ["example.com/a"]}))
    results = json.loads((await ex.run("web_search", {"query": "x"})).text)["results"]
    assert [r["title"] for r in results] == ["A"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/search-broken", "web_search: unavailable: the search backend did not return JSON"),
        ("/search-error", "web_search: unavailable: the search backend answered HTTP 503"),
    ],
)
async def test_search_backend_failures(tmp_path: Path, origin: str, path: str, message: str) -> None:
    executor = make(tmp_path, origin, web_search_url=origin + path + "?q={query}")
    try:
        assert error(await executor.run("web_search", {"query": "x"})) == message
    finally:
        await executor.close()


# --------------------------------------------------------------------------- helpers


def test_domain_and_host_matching() -> None:
    assert domain_matches("example.com", "/", "example.com")
    assert domain_matches("docs.Example.com", "/x", "example.com")
    assert not domain_matches("badexample.com", "/", "example.com")
    assert domain_matches("example.com", "/docs/a", "example.com/docs")
    assert not domain_matches("example.com", "/blog", "example.com/docs")
    assert host_allowed("a.b.x.com", ("*.x.com",))
    assert not host_allowed("x.com", ("*.x.com",))
    assert host_allowed("API.Example.com", ("api.example.com",))
    assert not host_allowed("evil.com", ("api.example.com",))


def test_html_to_text_handles_pre_and_entities() -> None:
    title, text = html_to_text("<title> A  &lt;b&gt; </title><pre>  keep\n   spacing</pre><p>x &amp; y</p>")
    assert title == "A <b>"
    assert text == "keep\n   spacing\n\nx & y"
