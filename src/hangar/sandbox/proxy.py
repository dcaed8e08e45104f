"""``EgressProxy``: the only way out of a sandbox under ``limited`` networking.

Hangar runs one proxy per session, outside the sandbox, listening on a unix socket that is
bind-mounted into the sandbox at ``/run/hangar/egress.sock``. Inside, a ``socat`` forwarder
listens on ``127.0.0.1:3128`` (the sandbox's own loopback) and ``HTTP_PROXY``/``HTTPS_PROXY``
point there, so curl, pip, npm, git, apt and Python's urllib go through it. The sandbox has a
network namespace of its own with nothing but ``lo``: there is no other route out.

The proxy speaks the two things clients send a forward proxy:

- ``CONNECT host:port`` (HTTPS and anything else tunnelled): answered ``200`` and then bytes are
  copied both ways, untouched;
- plain ``http://`` requests in absolute form (``GET http://host/path HTTP/1.1``): forwarded in
  origin form with ``Connection: close`` (one request per client connection).

The exception: with an :class:`~hangar.sandbox.inject.Injector` (the session has
``environment_variable`` credentials), requests to a host a credential covers are intercepted
(TLS terminated with the session CA's leaf, placeholders replaced by values, sent on over
verified TLS): see :mod:`hangar.sandbox.inject`. A sandbox sharing the host's network reaches the
proxy on a loopback TCP port that wants a per-session token (:meth:`EgressProxy.start_tcp`).

A host is allowed when it matches the policy (:class:`EgressPolicy`):

- the environment's ``allowed_hosts``: exact names (case-insensitive, a trailing dot ignored),
  ``*.example.com`` for any subdomain of example.com at any depth (not example.com itself), and IP
  literals (compared as addresses);
- :data:`PACKAGE_REGISTRY_HOSTS` when ``allow_package_managers``;
- the MCP hosts passed explicitly (``mcp_servers``, URLs or host names) when ``allow_mcp_servers``.

Everything else gets ``403`` with a ``text/plain`` body naming the host and the reason; the
status line's reason phrase says the same, so tools that only show the status line of a refused
``CONNECT`` (pip, requests: ``Tunnel connection failed: 403 ...``) still tell the agent why. Each
denial is logged at WARNING with ``extra={"session_id", "host", "port", "reason"}``.

Names are resolved by the proxy, which connects to the address it checked (no second lookup).
Unless ``allow_private_addresses`` is set, a *name* that resolves to a loopback, private,
link-local or otherwise non-public address is refused too (an allowed name must not become a way
into the host or its network); an IP literal or ``localhost`` listed in ``allowed_hosts`` is
taken as meant and may be reached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from hangar.sandbox.inject import Binding, Injector

log = logging.getLogger(__name__)

PACKAGE_REGISTRY_HOSTS: tuple[str, ...] = (
    # pip
    "pypi.org",
    "files.pythonhosted.org",
    # npm / yarn
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    # apt (Debian, Ubuntu)
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    # cargo
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    # gem
    "rubygems.org",
    "index.rubygems.org",
    # go
    "proxy.golang.org",
    "sum.golang.org",
)
"""Hosts opened by ``allow_package_managers``: the public registries of the six package managers
an environment's ``packages`` can name (apt, cargo, gem, go, npm, pip)."""

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
_LINGER_S = 2.0
_LINGER_BYTES = 64 * 1024 * 1024
_COPY_CHUNK = 65536
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te"}
)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``resolve(host, port) -> [address, ...]``: how the proxy turns a name into addresses."""


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_matches(host: str, entry: str) -> bool:
    """Whether ``host`` is allowed by one ``allowed_hosts`` ``entry`` (see the module docstring)."""
    host, entry = normalize_host(host), normalize_host(entry)
    if not host or not entry:
        return False
    if entry.startswith("*."):
        return _ip(host) is None and host.endswith(entry[1:])
    host_ip, entry_ip = _ip(host), _ip(entry)
    if host_ip is not None or entry_ip is not None:
        return host_ip is not None and host_ip == entry_ip
    return host == entry


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one host."""

    allowed: bool
    reason: str
    explicit: bool = False
    """Allowed by an ``allowed_hosts`` entry naming an IP literal or ``localhost``: the address
    may then be a non-public one."""


@dataclass(frozen=True)
class EgressPolicy:
    """What a ``limited`` sandbox may reach (see the module docstring)."""

    allowed_hosts: tuple[str, ...] = ()
    allow_package_managers: bool = False
    allow_mcp_servers: bool = False
    mcp_hosts: tuple[str, ...] = ()

    @classmethod
    def from_networking(
        cls, networking: Mapping[str, Any] | None, *, mcp_servers: Iterable[str] = ()
    ) -> EgressPolicy | None:
        """The policy of an environment's ``networking`` object; ``None`` for ``unrestricted``
        (or no networking object at all). ``mcp_servers`` are the agent's MCP server URLs (or
        host names), honoured when the networking has ``allow_mcp_servers``."""
        if not networking or networking.get("type") != "limited":
            return None
        return cls(
            allowed_hosts=tuple(str(h) for h in networking.get("allowed_hosts") or ()),
            allow_package_managers=bool(networking.get("allow_package_managers")),
            allow_mcp_servers=bool(networking.get("allow_mcp_servers")),
            mcp_hosts=tuple(h for h in (_host_of(s) for s in mcp_servers) if h),
        )

    def check(self, host: str) -> Verdict:
        for entry in self.allowed_hosts:
            if host_matches(host, entry):
                entry = normalize_host(entry)
                explicit = _ip(entry) is not None or entry == "localhost"
                return Verdict(True, f"allowed_hosts entry {entry}", explicit)
        if self.allow_package_managers and any(host_matches(host, h) for h in PACKAGE_REGISTRY_HOSTS):
            return Verdict(True, "package registry (allow_package_managers)")
        if self.allow_mcp_servers and any(host_matches(host, h) for h in self.mcp_hosts):
            return Verdict(True, "MCP server (allow_mcp_servers)")
        reason = "not in the environment's allowed_hosts"
        if not self.allow_package_managers:
            reason += "; package registries are closed (allow_package_managers is false)"
        if not self.allow_mcp_servers and self.mcp_hosts:
            reason += "; MCP servers are closed (allow_mcp_servers is false)"
        return Verdict(False, reason)


def _host_of(server: str) -> str:
    """The host of an MCP server URL (or a bare host name)."""
    if "://" in server:
        try:
            return normalize_host(urlsplit(server).hostname or "")
        except ValueError:
            return ""
    bare = server.split("/", 1)[0]
    if bare.count(":") == 1:
        bare = bare.rsplit(":", 1)[0]
    return normalize_host(bare)


def is_public(address: str) -> bool:
    ip = _ip(address)
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses of ``host`` from the system resolver, in its order, deduplicated."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class ProxyError(Exception):
    """A request the proxy answers itself (status, reason phrase, body)."""

    def __init__(self, status: int, phrase: str, body: str) -> None:
        super().__init__(body)
        self.status, self.phrase, self.body = status, phrase, body


class EgressProxy:
    """An HTTP(S) forward proxy on a unix socket, enforcing an :class:`EgressPolicy`.

    ``policy`` may be reassigned at any time (new connections use it); ``None`` allows every
    host. Use ``await proxy.start()`` / ``await proxy.close()`` (or ``async with``).
    """

    def __init__(
        self,
        socket_path: Path,
        policy: EgressPolicy | None,
        *,
        session_id: str,
        allow_private_addresses: bool = False,
        resolver: Resolver | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        injector: Injector | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.injector = injector
        """The session's ``environment_variable`` credentials (see :mod:`.inject`); may be set
        any time. ``None``: nothing is intercepted."""
        self._tcp: asyncio.AbstractServer | None = None
        self._tcp_token = ""
        self.tcp_port: int | None = None
        """The port of the loopback TCP listener (:meth:`start_tcp`), when started."""
        self.policy = policy
        self.session_id = session_id
        self.allow_private_addresses = allow_private_addresses
        self._resolve: Resolver = resolver or system_resolver
        self._connect_timeout_s = connect_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._sockets: list[asyncio.AbstractServer] = []  # serve_socket()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.denied = 0
        """How many requests were refused by the policy so far."""

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen on ``socket_path`` (a stale socket file there is replaced); mode 0600."""
        if self._server is not None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._accept, path=str(self.socket_path), limit=MAX_HEAD_BYTES
        )
        os.chmod(self.socket_path, 0o600)

    async def start_tcp(self, token: str) -> int:
        """Also listen on ``127.0.0.1`` (a free port, returned): for a sandbox sharing the host's
        network (``unrestricted``). Every request there must authenticate with
        ``Proxy-Authorization: Basic`` and ``token`` as the password (else ``407``), since any
        local process can connect."""
        if self._tcp is None:
            self._tcp_token = token
            self._tcp = await asyncio.start_server(
                partial(self._accept, need_auth=True), "127.0.0.1", 0, limit=MAX_HEAD_BYTES
            )
            self.tcp_port = int(self._tcp.sockets[0].getsockname()[1])
        assert self.tcp_port is not None
        return self.tcp_port

    async def serve_socket(self, sock: socket.socket) -> asyncio.AbstractServer:
        """Also accept on ``sock``: a listening socket only a sandbox can reach (Hangar opened it
        inside the sandbox's network namespace), so no token is asked for. Closing the returned
        server stops it; :meth:`close` stops it at the latest."""
        server = await asyncio.start_server(self._accept, sock=sock, limit=MAX_HEAD_BYTES)
        self._sockets = [s for s in self._sockets if s.is_serving()] + [server]
        return server

    async def close(self) -> None:
        """Stop listening, cut every open connection and remove the socket file. Idempotent."""
        server, self._server = self._server, None
        tcp, self._tcp = self._tcp, None
        for extra in self._sockets:
            extra.close()
        self._sockets = []
        if tcp is not None:
            tcp.close()
            self.tcp_port = None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if tcp is not None:
            await tcp.wait_closed()
        if server is not None:
            await server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    async def __aenter__(self) -> EgressProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ one client connection

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, need_auth: bool = False
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer, need_auth)
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ssl.SSLError,
        ):
            pass  # the client went away, stalled or broke its TLS; nothing to answer
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, need_auth: bool
    ) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await _answer(
                writer, ProxyError(431, "Request Header Fields Too Large", "request head too large")
            )
            return
        if need_auth and not _authorized(head, self._tcp_token):
            await _answer(
                writer, ProxyError(407, "Proxy Authentication Required", "hangar egress proxy: bad token")
            )
            return
        injector = self.injector
        try:
            method, host, port, forward = _parse_head(head)
            bindings = injector.for_host(host) if injector is not None else []
            upstream = await self._open(host, port)
        except ProxyError as refused:
            await _answer(writer, refused)
            return
        up_reader, up_writer = upstream
        self._writers.add(up_writer)
        try:
            if bindings:
                assert injector is not None
                await self._intercept(method, host, reader, writer, forward, upstream, bindings)
                return
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
            else:
                up_writer.write(forward)
                await up_writer.drain()
            await asyncio.gather(copy_stream(reader, up_writer), copy_stream(up_reader, writer))
        finally:
            self._writers.discard(up_writer)
            up_writer.transport.abort()

    async def _intercept(
        self,
        method: str,
        host: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        forward: bytes,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        bindings: Sequence[Binding],
    ) -> None:
        """One request to a host a credential covers, placeholders substituted (see :mod:`.inject`)."""
        injector = self.injector
        assert injector is not None
        up_reader, up_writer = upstream
        try:
            if method == "CONNECT":
                try:
                    async with asyncio.timeout(self._connect_timeout_s):
                        await up_writer.start_tls(injector.upstream, server_hostname=host)
                except (ssl.SSLError, OSError, TimeoutError) as exc:
                    detail = (
                        f"hangar egress proxy: TLS to {host} failed: {getattr(exc, 'reason', None) or exc}"
                    )
                    raise ProxyError(502, "Bad Gateway", detail) from None
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
                try:
                    async with asyncio.timeout(HEAD_TIMEOUT_S):
                        await writer.start_tls(injector.ca.server_context(host))
                        head = await reader.readuntil(b"\r\n\r\n")
                except (ssl.SSLError, asyncio.LimitOverrunError) as exc:
                    log.info(
                        "egress interception: no request from the client",
                        extra={"session_id": self.session_id, "host": host, "error": type(exc).__name__},
                    )
                    return
            else:
                head = forward
            log.debug("egress request with credentials", extra={"session_id": self.session_id, "host": host})
            await injector.relay(head, reader, writer, up_writer, bindings)
        except ProxyError as refused:
            await _answer(writer, refused)
            await _linger(reader)
            return
        await copy_stream(up_reader, writer)

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        policy = self.policy
        verdict = Verdict(True, "unrestricted", explicit=True) if policy is None else policy.check(host)
        if not verdict.allowed:
            self._deny(host, port, verdict.reason)
        if _ip(host) is not None:
            addresses = [host]
        else:
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                detail = f"hangar egress proxy: cannot resolve {host}: {exc}"
                raise ProxyError(502, "Bad Gateway", detail) from None
        if not (verdict.explicit or self.allow_private_addresses):
            private = [a for a in addresses if not is_public(a)]
            if private:
                self._deny(host, port, f"it resolves to a non-public address ({private[0]})")
        last: OSError | None = None
        for address in addresses:
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    return await asyncio.open_connection(address, port, limit=_COPY_CHUNK)
            except TimeoutError:
                last = OSError(f"timed out after {self._connect_timeout_s:g}s")
            except OSError as exc:
                last = exc
        detail = (last.strerror or str(last)) if last is not None else "no address"
        raise ProxyError(
            502, "Bad Gateway", f"hangar egress proxy: cannot connect to {host}:{port}: {detail}"
        )

    def _deny(self, host: str, port: int, reason: str) -> None:
        self.denied += 1
        if self.injector is not None:
            self.injector.note_denied(host)
        log.warning(
            "egress denied: %s:%s (%s)",
            host,
            port,
            reason,
            extra={"session_id": self.session_id, "host": host, "port": port, "reason": reason},
        )
        raise ProxyError(
            403,
            f"Forbidden by the sandbox network policy: {_safe(host)} is not allowed",
            f"hangar egress proxy: access to {host} denied: {reason} (networking: limited)",
        )


def _parse_head(head: bytes) -> tuple[str, str, int, bytes]:
    """(method, host, port, the request head to send upstream for plain HTTP)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ProxyError(400, "Bad Request", "hangar egress proxy: malformed request line")
    method, target, version = parts
    headers = [line for line in lines[1:] if line]
    if method.upper() == "CONNECT":
        host, port = _split_host_port(target, None)
        return "CONNECT", host, port, b""
    if target.lower().startswith("http://"):
        try:
            url = urlsplit(target)
            host, port = normalize_host(url.hostname or ""), url.port or 80
        except ValueError:
            raise ProxyError(400, "Bad Request", f"hangar egress proxy: bad URL {target!r}") from None
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    elif target.startswith("/"):
        host_header = next((h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("host:")), "")
        if not host_header:
            raise ProxyError(400, "Bad Request", "hangar egress proxy: no host in the request")
        host, port = _split_host_port(host_header, 80)
        path = target
    else:
        detail = f"hangar egress proxy: unsupported request target {target!r} (use CONNECT for https)"
        raise ProxyError(400, "Bad Request", detail)
    if not host:
        raise ProxyError(400, "Bad Request", "hangar egress proxy: no host in the request")
    kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
    forward = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""])
    return method, host, port, forward.encode("latin-1")


def _split_host_port(text: str, default: int | None) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or (host.count(":") and not host.endswith("]")):  # no port, or a bare IPv6 address
        host, port_text = text, ""
    if not port_text:
        if default is None:
            raise ProxyError(400, "Bad Request", f"hangar egress proxy: {text!r} has no port")
        return normalize_host(host), default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ProxyError(400, "Bad Request", f"hangar egress proxy: bad port in {text!r}")
    return normalize_host(host), int(port_text)


def _authorized(head: bytes, token: str) -> bool:
    """The request head carries ``Proxy-Authorization: Basic`` with ``token`` as the password."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() != b"proxy-authorization":
            continue
        scheme, _, encoded = value.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            password = base64.b64decode(encoded.strip(), validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            return False
        return bool(token) and hmac.compare_digest(password, token.encode())
    return False


def _safe(text: str) -> str:
    """``text`` fit for a status line (printable ASCII, bounded)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:200]


async def _answer(writer: asyncio.StreamWriter, refused: ProxyError) -> None:
    body = (refused.body + "\n").encode()
    kind = "denied" if refused.status == 403 else "error"
    writer.write(
        f"HTTP/1.1 {refused.status} {_safe(refused.phrase)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nX-Hangar-Egress: {kind}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _linger(reader: asyncio.StreamReader) -> None:
    """Discard what the client is still sending (a refused body) for a moment before closing:
    closing a socket with unread input resets the connection, and the client would see
    "connection reset" instead of the answer it was just sent. Bounded in bytes and time."""
    left = _LINGER_BYTES
    with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
        async with asyncio.timeout(_LINGER_S):
            while left > 0 and (chunk := await reader.read(min(_COPY_CHUNK, left))):
                left -= len(chunk)


async def copy_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close the other side."""
    try:
        while chunk := await reader.read(_COPY_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except ConnectionError:
        writer.transport.abort()
