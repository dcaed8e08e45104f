"""Linux namespaces of a bubblewrap sandbox, seen from Hangar's side: a listener opened inside
the sandbox's network namespace (so the egress proxy is reachable at ``127.0.0.1`` in there
without a forwarder process), and waiting until every process of a sandbox's pid namespace is
gone."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import select
import signal
import socket
import time

from hangar.runtime.tools.bash import process_tree

log = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
_IP_FREEBIND = 15
_INFO_TIMEOUT_S = 10.0


def sandbox_listener(info_fd: int, port: int) -> socket.socket:
    """A socket listening on ``127.0.0.1:port`` in the network namespace of the sandbox
    bwrap reports on ``info_fd`` (``--info-fd``). Moves the calling thread into that namespace:
    call it from a thread of its own that ends afterwards. Refuses a namespace that is not the
    one bwrap reported, or that is the caller's own."""
    raw = b""
    deadline = time.monotonic() + _INFO_TIMEOUT_S
    while not raw.rstrip().endswith(b"}"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([info_fd], [], [], left)[0]:
            raise OSError(errno.ETIMEDOUT, "the sandbox did not report its namespaces")
        chunk = os.read(info_fd, 4096)
        if not chunk:
            raise OSError(errno.ECHILD, "the sandbox exited before it started")
        raw += chunk
    try:
        info = json.loads(raw)
        pid, expected = int(info["child-pid"]), int(info["net-namespace"])
    except (ValueError, KeyError, TypeError):
        raise OSError(errno.EPROTO, f"unexpected report from bwrap: {raw[:200]!r}") from None
    own = os.stat("/proc/thread-self/ns/net").st_ino
    ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        found = os.fstat(ns).st_ino
        if found != expected or found == own:
            raise OSError(errno.ESRCH, "the sandbox's network namespace is gone")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(ns, _CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns: {os.strerror(code)}")
    finally:
        os.close(ns)
    if os.stat("/proc/thread-self/ns/net").st_ino != expected:
        raise OSError(errno.ESRCH, "could not enter the sandbox's network namespace")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # bwrap brings `lo` up inside the sandbox concurrently: bind before 127.0.0.1 exists.
        sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _pid_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def pid_namespaces(root: int | None) -> set[str]:
    """The pid namespaces (other than ours) of ``root``'s process tree: the sandbox's."""
    if root is None:
        return set()
    own = _pid_namespace("self")
    return {ns for pid in process_tree(root) if (ns := _pid_namespace(pid)) is not None and ns != own}


def _live_in(namespaces: set[str]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_namespace(entry) in namespaces:
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    state = f.read().rpartition(b")")[2].split()[:1]
            except OSError:
                continue
            if state != [b"Z"]:
                found.append(int(entry))
    return found


async def wait_gone(namespaces: set[str], timeout_s: float = 2.0) -> None:
    """SIGKILL whatever still lives in ``namespaces`` and wait until nothing does."""
    if not namespaces:
        return
    deadline = time.monotonic() + timeout_s
    while pids := await asyncio.to_thread(_live_in, namespaces):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            log.warning("sandbox processes survived close", extra={"pids": pids[:20]})
            return
        await asyncio.sleep(0.005)
