"""The web tools: ``web_fetch {url}`` and ``web_search {query}``.

Both run on the server (httpx) with the session's rules, given as a :class:`WebRules`:

- the tool config's ``allowed_domains`` / ``blocked_domains`` (a domain matches itself and its
  subdomains; a ``web_search`` entry may carry a path prefix, ``example.com/docs``);
- the environment's networking: ``limited`` networking confines both tools to its
  ``allowed_hosts`` (``*.x.com`` matches any subdomain of x.com, not x.com itself; an empty list
  allows nothing, and the tools then fail with ``url_not_allowed``);
- unless ``Settings.web_allow_private_addresses`` is set, ``web_fetch`` refuses hosts that
  resolve to loopback, private, link-local or otherwise non-public addresses (every redirect hop
  is checked again).

``web_fetch`` follows up to 10 redirects, sends ``User-Agent: Claude-User/1.0``, and returns one
``document`` block ``{type:"document", source:{type:"text", media_type:"text/plain", data},
title}`` (HTML reduced to text; a PDF comes back as a base64 pdf document block). The text is cut
to 4 times ``max_content_tokens`` characters when the config sets it.

``web_search`` queries a SearXNG-compatible JSON API at ``Settings.web_search_url``, a URL
template whose ``{query}`` is replaced by the URL-encoded query (without ``{query}`` the query is
added as ``q=``). The result is a JSON string ``{"query", "results": [{"title", "url",
"snippet"}]}``. Without a backend the tool fails with a message naming the setting.

Errors read ``web_fetch: <code>: <detail>`` with the hosted error codes (``url_not_allowed``,
``url_not_accessible``, ``unsupported_content_type``, ``invalid_input``, ``timeout``).
"""

from __future__ import annotations

import asyncio
import base64
import html
import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote_plus, urljoin, urlsplit

import httpx

from hangar.runtime.tools.base import ToolError, ToolResult, text_result

USER_AGENT = "Claude-User/1.0"
MAX_REDIRECTS = 10
MAX_FETCH_BYTES = 10 * 1024 * 1024
MAX_TEXT_CHARS = 400_000
MAX_SEARCH_RESULTS = 10
_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|xml|xhtml\+xml|javascript|x-javascript|ecmascript|[\w.+-]+\+(json|xml)))$"
)


@dataclass(frozen=True)
class WebRules:
    """What the web tools of one session may reach (see the module docstring)."""

    fetch_allowed: tuple[str, ...] | None = None
    fetch_blocked: tuple[str, ...] = ()
    max_content_tokens: int | None = None
    search_allowed: tuple[str, ...] | None = None
    search_blocked: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] | None = None
    """The environment's ``limited`` networking hosts; ``None`` is unrestricted."""

    @classmethod
    def from_config(
        cls, toolset: dict[str, Any] | None, networking: dict[str, Any] | None = None
    ) -> WebRules:
        """Rules from an agent's resolved ``agent_toolset_20260401`` entry and an environment's
        ``networking`` object (either may be ``None``)."""
        fetch: dict[str, Any] = {}
        search: dict[str, Any] = {}
        for config in (toolset or {}).get("configs") or ():
            if config.get("name") == "web_fetch":
                fetch = config
            elif config.get("name") == "web_search":
                search = config
        hosts = None
        if networking and networking.get("type") == "limited":
            hosts = tuple(networking.get("allowed_hosts") or ())
        return cls(
            fetch_allowed=_tuple(fetch.get("allowed_domains")),
            fetch_blocked=_tuple(fetch.get("blocked_domains")) or (),
            max_content_tokens=fetch.get("max_content_tokens"),
            search_allowed=_tuple(search.get("allowed_domains")),
            search_blocked=_tuple(search.get("blocked_domains")) or (),
            allowed_hosts=hosts,
        )


def _tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def domain_matches(host: str, path: str, entry: str) -> bool:
    """Whether ``host``/``path`` falls under a domain-list ``entry`` (``example.com`` or
    ``example.com/docs``): the host itself or any subdomain, and the path prefix if given."""
    domain, slash, prefix = entry.lower().rstrip(".").partition("/")
    host = host.lower().rstrip(".")
    if host != domain and not host.endswith("." + domain):
        return False
    return not slash or path.lstrip("/").startswith(prefix)


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Environment ``allowed_hosts`` matching: exact (case-insensitive), or ``*.x.com`` for any
    subdomain depth of x.com (not x.com itself)."""
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]):
                return True
        elif host == entry:
            return True
    return False


def _domain_rule(
    host: str, path: str, allowed: tuple[str, ...] | None, blocked: tuple[str, ...]
) -> str | None:
    if allowed is not None and not any(domain_matches(host, path, d) for d in allowed):
        return f"{host} is not in allowed_domains"
    if any(domain_matches(host, path, d) for d in blocked):
        return f"{host} is in blocked_domains"
    return None


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class WebTools:
    """The web tools of one session. ``close()`` releases the HTTP client."""

    def __init__(
        self,
        *,
        search_url: str | None,
        timeout_s: float,
        allow_private: bool,
        rules: WebRules | None = None,
    ) -> None:
        self.rules = rules or WebRules()
        self._search_url = search_url
        self._timeout = httpx.Timeout(timeout_s)
        self._allow_private = allow_private
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout, headers={"User-Agent": USER_AGENT}, follow_redirects=False
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ----------------------------------------------------------------------- web_fetch

    async def fetch(self, tool_input: dict[str, Any]) -> ToolResult:
        url = tool_input.get("url")
        if not isinstance(url, str) or not url.strip():
            raise ToolError("web_fetch: invalid_input: url is required")
        url = url.strip()
        for _ in range(MAX_REDIRECTS + 1):
            await self._check_fetch_url(url)
            try:
                async with self._http().stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code >= 400:
                        raise ToolError(
                            f"web_fetch: url_not_accessible: HTTP {response.status_code} "
                            f"{response.reason_phrase} for {url}"
                        )
                    body = await _read_capped(response)
                    return _document(url, response.headers.get("content-type", ""), body, self.rules)
            except httpx.TimeoutException:
                raise ToolError(f"web_fetch: timeout: no response from {url} in time") from None
            except httpx.HTTPError as exc:
                raise ToolError(f"web_fetch: url_not_accessible: {exc or type(exc).__name__}") from None
            except (httpx.InvalidURL, ValueError) as exc:
                raise ToolError(f"web_fetch: invalid_input: {url!r}: {exc}") from None
        raise ToolError(f"web_fetch: url_not_accessible: more than {MAX_REDIRECTS} redirects")

    async def _check_fetch_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = parts.hostname
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if host and any(c.isspace() or ord(c) < 33 or c in "<>\\^`{|}" for c in host):
                raise ValueError(host)
        except ValueError:
            raise ToolError(f"web_fetch: invalid_input: {url!r} is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise ToolError(f"web_fetch: invalid_input: {url!r} is not an http(s) URL")
        self._check_networking(host, "web_fetch")
        reason = _domain_rule(host, parts.path, self.rules.fetch_allowed, self.rules.fetch_blocked)
        if reason:
            raise ToolError(f"web_fetch: url_not_allowed: {reason}")
        if not self._allow_private:
            await _check_public(host, port)

    def _check_networking(self, host: str, tool: str) -> None:
        hosts = self.rules.allowed_hosts
        if hosts is not None and not host_allowed(host, hosts):
            raise ToolError(f"{tool}: url_not_allowed: {host} is not in the environment's allowed_hosts")

    # ----------------------------------------------------------------------- web_search

    async def search(self, tool_input: dict[str, Any]) -> ToolResult:
        query = tool_input.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("web_search: invalid_input: query is required")
        if not self._search_url:
            raise ToolError("web_search: no search backend is configured (set HANGAR_WEB_SEARCH_URL)")
        if self.rules.allowed_hosts is not None and not self.rules.allowed_hosts:
            raise ToolError("web_search: url_not_allowed: the environment allows no hosts")
        if "{query}" in self._search_url:
            url = self._search_url.replace("{query}", quote_plus(query))
        else:
            url = self._search_url + ("&" if "?" in self._search_url else "?") + f"q={quote_plus(query)}"
        try:
            response = await self._http().get(url, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            raise ToolError("web_search: timeout: the search backend did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"web_search: unavailable: {exc or type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ToolError(
                f"web_search: unavailable: the search backend answered HTTP {response.status_code}"
            )
        try:
            payload = response.json()
        except ValueError:
            raise ToolError("web_search: unavailable: the search backend did not return JSON") from None
        raw = payload.get("results") if isinstance(payload, dict) else None
        results = [r for r in self._allowed_results(raw if isinstance(raw, list) else [])]
        return text_result(json.dumps({"query": query, "results": results[:MAX_SEARCH_RESULTS]}))

    def _allowed_results(self, raw: list[Any]) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                continue
            try:
                parts = urlsplit(item["url"])
            except ValueError:
                continue
            host = parts.hostname or ""
            if not host or _domain_rule(
                host, parts.path, self.rules.search_allowed, self.rules.search_blocked
            ):
                continue
            hosts = self.rules.allowed_hosts
            if hosts is not None and not host_allowed(host, hosts):
                continue
            out.append(
                {
                    "title": str(item.get("title") or ""),
                    "url": item["url"],
                    "snippet": str(item.get("content") or item.get("snippet") or ""),
                }
            )
        return out


async def _check_public(host: str, port: int) -> None:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ToolError(f"web_fetch: url_not_accessible: cannot resolve {host}") from None
    for info in infos:
        if not _is_public(str(info[4][0])):
            raise ToolError(
                f"web_fetch: url_not_allowed: {host} resolves to a non-public address "
                "(set HANGAR_WEB_ALLOW_PRIVATE_ADDRESSES to allow it)"
            )


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_FETCH_BYTES:
            raise ToolError(f"web_fetch: url_not_accessible: the response exceeds {MAX_FETCH_BYTES} bytes")
    return bytes(body)


def _document(url: str, content_type: str, body: bytes, rules: WebRules) -> ToolResult:
    media_type = content_type.split(";", 1)[0].strip().lower() or "text/plain"
    if media_type == "application/pdf":
        data = base64.standard_b64encode(body).decode("ascii")
        source = {"type": "base64", "media_type": "application/pdf", "data": data}
        return ToolResult([{"type": "document", "source": source, "title": url}])
    if not _TEXT_TYPES.match(media_type):
        raise ToolError(f"web_fetch: unsupported_content_type: {media_type}")
    charset = re.search(r"charset=([\w.-]+)", content_type, re.IGNORECASE)
    try:
        text = body.decode(charset.group(1) if charset else "utf-8", errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    title = url
    if media_type in ("text/html", "application/xhtml+xml"):
        page_title, text = html_to_text(text)
        title = page_title or url
    limit = MAX_TEXT_CHARS
    if rules.max_content_tokens:
        limit = min(limit, rules.max_content_tokens * 4)
    if len(text) > limit:
        text = text[:limit] + "\n[content truncated]"
    source = {"type": "text", "media_type": "text/plain", "data": text or "(empty document)"}
    return ToolResult([{"type": "document", "source": source, "title": title}])


_BLOCK_TAGS = frozenset(
    str.split(
        "address article aside blockquote br dd div dl dt fieldset figcaption figure footer form "
        "h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section table tbody td tfoot th thead tr ul"
    )
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False
        self._pre = 0
        self._line_start = True  # drop leading blanks of a new line (outside <pre>)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
            self._line_start = True
            if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
                self.parts.append("#" * int(tag[1]) + " ")
            elif tag == "li":
                self.parts.append("- ")
            elif tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")
            self._line_start = True
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            if not self._pre:
                data = re.sub(r"\s+", " ", data)
                if self._line_start:
                    data = data.lstrip()
            if data:
                self.parts.append(data)
                self._line_start = False


def html_to_text(markup: str) -> tuple[str, str]:
    """(title, text) of an HTML page: scripts, styles and tags dropped, blocks on lines."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    lines = [line.rstrip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = html.unescape(" ".join("".join(parser.title).split()))
    return title, text
