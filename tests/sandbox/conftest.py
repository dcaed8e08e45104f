"""Fixtures of the sandbox battery: executors that are always closed, local listeners, and the
checks every containment test ends with (the host and other sandboxes are unaffected).

Everything stays on this machine: the only listeners are the tests' own on 127.0.0.1, and the
egress proxy of a test either allows only loopback literals or resolves every name to loopback.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hangar.config import Settings
from hangar.sandbox import BwrapExecutor

HAVE_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(
    not HAVE_BWRAP, reason="bubblewrap is not installed (apt-get install bubblewrap socat util-linux)"
)

MakeExecutor = Callable[..., BwrapExecutor]


def uid_processes(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                status = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            found.append(int(entry))
    return found


async def run(ex: BwrapExecutor, command: str, **extra: Any) -> tuple[str, bool]:
    result = await ex.run("bash", {"command": command, **extra})
    return result.text, result.is_error


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
async def make_executor(tmp_path: Path, settings: Settings) -> AsyncIterator[MakeExecutor]:
    """``make_executor(session_id, networking=..., **kwargs)``: a BwrapExecutor on
    ``<tmp>/data/workspaces/<session_id>`` (a unique session id by default), closed at the end
    of the test."""
    made: list[BwrapExecutor] = []

    def make(
        session_id: str | None = None, *, settings_: Settings | None = None, **kwargs: Any
    ) -> BwrapExecutor:
        # A session's sandbox uid derives from its id: tests that count the processes of a uid
        # must not see a sandbox of another test running at the same time in another worker.
        session_id = session_id or f"sesn_test_{uuid.uuid4().hex[:12]}"
        s = settings_ or settings
        executor = BwrapExecutor(session_id, s.data_dir / "workspaces" / session_id, s, **kwargs)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        await executor.close()


@pytest.fixture
async def bystander(make_executor: MakeExecutor) -> BwrapExecutor:
    """Another session's sandbox, started before the attack, that must keep working."""
    executor = make_executor("sesn_bystander")
    assert await run(executor, "echo ready") == ("ready", False)
    return executor


async def assert_unaffected(bystander: BwrapExecutor, listener: Listener | None = None) -> None:
    """The other sandbox still runs commands, the host still starts processes, and the host's
    listener (if any) still answers."""
    assert await run(bystander, "echo still here") == ("still here", False)
    assert subprocess.run(["true"], check=False).returncode == 0
    if listener is not None:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET /health HTTP/1.0\r\n\r\n")
        await writer.drain()
        assert b"200 OK" in await reader.read()
        writer.close()


@dataclass
class Listener:
    """A tiny HTTP server on 127.0.0.1 that answers ``200 OK`` with ``hello from the host``."""

    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        self.requests.append(head)
        body = b"hello from the host\n"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = Listener()
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = server.server.sockets[0].getsockname()[1]
    yield server
    server.server.close()
    await server.server.wait_closed()


async def wait_until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
