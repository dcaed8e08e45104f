"""Canary helpers: a recording HTTP(S) server on 127.0.0.1 and the scan that proves a secret went
nowhere but where it was meant to.

Usage::

    canary = new_canary("envvar")
    with RecordingServer(tls=test_ca) as allowed, RecordingServer(tls=test_ca) as other:
        ... run the session ...
    scan = CanaryScan(canary)
    scan.add("events", raw_events_json)
    scan.add_dir("workspace", workspace_dir)
    scan.add("allowed host traffic", allowed.raw(), expected=True)
    scan.check()  # the canary is in every expected place and in no other

Add new credential types by scanning more places (``scan.add``); the check stays the same. Several
canaries over the same places: ``scan.expecting(other_canary, "place", ...).check()``.
"""

from __future__ import annotations

import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from hangar.sandbox.ca import SessionCA


def new_canary(label: str) -> str:
    """A unique, greppable secret value (letters and digits only: the same in JSON, URLs, logs)."""
    return f"canary{label}{secrets.token_hex(12)}"


class TestCA:
    """A CA of the tests' own that test servers present leaves of (trusted by the egress proxy via
    ``HANGAR_EGRESS_UPSTREAM_CA_FILE``, not by the sandbox)."""

    __test__ = False

    def __init__(self, directory: Path) -> None:
        self._ca = SessionCA("tests-upstream")
        self.cert_file = directory / "test-ca.pem"
        self.cert_file.write_bytes(self._ca.cert_pem)

    def server_context(self, host: str = "127.0.0.1") -> ssl.SSLContext:
        return self._ca.server_context(host)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    raw: bytes


@dataclass
class RecordingServer:
    """An HTTP server on 127.0.0.1 (HTTPS when ``tls`` is given) recording every request whole and
    answering ``200 ok``."""

    tls: ssl.SSLContext | None = None
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> RecordingServer:
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                head = self.raw_requestline + bytes(self.headers)
                recorded.append(
                    Recorded(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        head + body,
                    )
                )
                reply = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply)
                self.close_connection = True

            do_GET = do_POST = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def raw(self) -> bytes:
        return b"\n".join(r.raw for r in self.requests)


@dataclass
class CanaryScan:
    """Places to look for ``canary`` in; ``expected`` ones must contain it, the others must not."""

    canary: str
    places: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def add(self, name: str, content: str | bytes, *, expected: bool = False) -> None:
        data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
        self.places.append((name, data, expected))

    def add_dir(self, name: str, root: Path) -> None:
        """Every regular file under ``root`` (symlinks not followed)."""
        for path in _files(root):
            try:
                self.add(f"{name}: {path}", path.read_bytes())
            except OSError:
                continue

    def expecting(self, canary: str, *names: str) -> CanaryScan:
        """The same places, scanned for another ``canary`` that must be in exactly ``names``."""
        unknown = set(names) - {name for name, _, _ in self.places}
        assert not unknown, f"no such places: {sorted(unknown)}"
        return CanaryScan(canary, [(name, data, name in names) for name, data, _ in self.places])

    def leaks(self) -> list[str]:
        needle = self.canary.encode()
        return [name for name, data, expected in self.places if not expected and needle in data]

    def missing(self) -> list[str]:
        needle = self.canary.encode()
        return [name for name, data, expected in self.places if expected and needle not in data]

    def check(self) -> None:
        assert not self.leaks(), f"the canary leaked into: {self.leaks()}"
        assert not self.missing(), f"the canary is missing from: {self.missing()}"


def _files(root: Path) -> Iterator[Path]:
    if not root.exists():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path
