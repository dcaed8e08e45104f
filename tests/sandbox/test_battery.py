"""The containment battery: each attack must fail, and afterwards the host and another session's
sandbox (``bystander``, started before the attack) must be unaffected.

Network tests use listeners of their own on 127.0.0.1 and proxies that allow only loopback
literals (or resolve every name to loopback): nothing here reaches the internet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest

from hangar.sandbox import BwrapExecutor, EgressProxy, SandboxLimits

from .conftest import Listener, MakeExecutor, assert_unaffected, needs_bwrap, run, uid_processes, wait_until

pytestmark = needs_bwrap

LIMITED = {"type": "limited", "allowed_hosts": ["127.0.0.1"], "allow_package_managers": False}

# A client run inside the sandbox: fetch a URL through the proxy settings of the environment
# (urllib honours HTTP_PROXY), print the status and body or the error.
FETCH = """
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status, r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())
except OSError as e:
    print("error", e)
"""

# CONNECT through the in-sandbox forwarder by hand (what https clients do).
CONNECT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", 3128), timeout=5)
s.sendall(f"CONNECT {sys.argv[1]} HTTP/1.1\\r\\nHost: {sys.argv[1]}\\r\\n\\r\\n".encode())
print(s.recv(4096).decode().split("\\r\\n")[0])
"""


async def test_a_limited_sandbox_cannot_reach_a_host_loopback_port(
    make_executor: MakeExecutor, bystander: BwrapExecutor, listener: Listener
) -> None:
    ex = make_executor("sesn_attacker", networking=LIMITED)
    text, is_error = await run(ex, f"exec 3<>/dev/tcp/127.0.0.1/{listener.port} && echo CONNECTED")
    assert is_error and "Connection refused" in text and "CONNECTED" not in text
    text, is_error = await run(ex, f"curl -sS --noproxy '*' -m 5 http://127.0.0.1:{listener.port}/ 2>&1")
    assert is_error and "hello from the host" not in text
    # Other addresses of the host are not routable at all from the sandbox's own namespace.
    text, is_error = await run(ex, "exec 3<>/dev/tcp/10.0.0.1/80 && echo CONNECTED")
    assert is_error and "CONNECTED" not in text
    assert listener.requests == []
    await assert_unaffected(bystander, listener)


async def test_the_proxy_lets_allowed_hosts_through_and_403s_the_rest(
    make_executor: MakeExecutor,
    bystander: BwrapExecutor,
    listener: Listener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ex = make_executor("sesn_attacker", networking=LIMITED)
    await ex.run("write", {"file_path": "/workspace/fetch.py", "content": FETCH})
    await ex.run("write", {"file_path": "/workspace/connect.py", "content": CONNECT})
    # Allowed: 127.0.0.1 is in allowed_hosts; the proxy (outside the sandbox) reaches the listener.
    # (NO_PROXY lists 127.0.0.1: the sandbox's own servers are reached directly; here we want the proxy.)
    assert await run(ex, f"NO_PROXY= no_proxy= python3 fetch.py http://127.0.0.1:{listener.port}/") == (
        "200 hello from the host",
        False,
    )
    assert await run(ex, f"python3 connect.py 127.0.0.1:{listener.port}") == (
        "HTTP/1.1 200 Connection Established",
        False,
    )
    with caplog.at_level(logging.WARNING, logger="hangar.sandbox.proxy"):
        # Not allowed: the same listener by another name, and an outside host.
        text, _ = await run(ex, f"NO_PROXY= no_proxy= python3 fetch.py http://localhost:{listener.port}/")
        assert text.startswith(
            "403 hangar egress proxy: access to localhost denied: not in the environment's"
        )
        text, _ = await run(ex, "python3 connect.py example.com:443")
        assert text == "HTTP/1.1 403 Forbidden by the sandbox network policy: example.com is not allowed"
        text, is_error = await run(ex, "curl -sS -m 5 http://pypi.org/simple/ 2>&1")
        assert "hangar egress proxy: access to pypi.org denied" in text
        text, is_error = await run(ex, "curl -sS -m 5 https://example.com/ 2>&1")
        assert is_error and "403" in text
    denied = [(r.session_id, r.host) for r in caplog.records if r.name == "hangar.sandbox.proxy"]  # type: ignore[attr-defined]
    assert denied == [
        ("sesn_attacker", "localhost"),
        ("sesn_attacker", "example.com"),
        ("sesn_attacker", "pypi.org"),
        ("sesn_attacker", "example.com"),
    ]
    assert len(listener.requests) == 1  # only the allowed request (the allowed tunnel sent none)
    await assert_unaffected(bystander, listener)


async def test_the_proxy_follows_allow_package_managers_and_mcp_hosts(
    make_executor: MakeExecutor, bystander: BwrapExecutor, listener: Listener, tmp_path: Path
) -> None:
    async def loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    proxy = EgressProxy(
        tmp_path / "egress.sock", None, session_id="sesn_pm", resolver=loopback, allow_private_addresses=True
    )
    networking = {
        "type": "limited",
        "allowed_hosts": [],
        "allow_package_managers": True,
        "allow_mcp_servers": True,
    }
    ex = make_executor(
        "sesn_pm", networking=networking, proxy=proxy, mcp_servers=["https://mcp.example.test/mcp"]
    )
    await ex.run("write", {"file_path": "fetch.py", "content": FETCH})
    assert proxy.policy is not None and proxy.policy.allow_package_managers  # set by the executor
    for host in ("pypi.org", "registry.npmjs.org", "mcp.example.test"):
        assert await run(ex, f"python3 fetch.py http://{host}:{listener.port}/") == (
            "200 hello from the host",
            False,
        )
    text, _ = await run(ex, f"python3 fetch.py http://evil.example.test:{listener.port}/")
    assert text.startswith("403 ")
    await ex.close()
    assert proxy.running  # the caller's proxy is the caller's to close
    await proxy.close()
    await assert_unaffected(bystander, listener)


async def test_writes_outside_the_workspace_fail(
    make_executor: MakeExecutor, bystander: BwrapExecutor
) -> None:
    ex = make_executor("sesn_attacker")
    targets = [
        "/usr/evil",
        "/usr/bin/evil",
        "/etc/evil",
        "/etc/passwd",
        "/evil",
        "/run/hangar/evil",
        "/proc/sys/kernel/hostname",
    ]
    for target in targets:
        text, is_error = await run(ex, f"echo pwned > {target}")
        assert is_error, (target, text)
    text, is_error = await run(ex, "echo pwned >> /run/hangar/cmd/command")
    assert is_error
    for target in ("/usr/evil", "/usr/bin/evil", "/etc/evil", "/evil"):
        assert not os.path.exists(target)
    assert "pwned" not in Path("/etc/passwd").read_text()
    # The file tools refuse too, whatever the path looks like.
    for path in ("/etc/evil", "../evil", "/workspace/../evil"):
        result = await ex.run("write", {"file_path": path, "content": "pwned"})
        assert result.is_error and "outside the session's working directory" in result.text, path
    assert not (ex.workdir.parent / "evil").exists()
    assert await run(ex, "echo fine > /tmp/ok && cat /tmp/ok") == ("fine", False)
    await assert_unaffected(bystander)


async def test_another_sessions_workspace_is_not_reachable(
    make_executor: MakeExecutor, bystander: BwrapExecutor
) -> None:
    await bystander.run("write", {"file_path": "secret.txt", "content": "the bystander's secret"})
    ex = make_executor("sesn_attacker")
    victim = bystander.workdir
    for command in (
        f"cat {victim}/secret.txt",
        "cat /workspace/../sesn_bystander/secret.txt",
        "find / -path /proc -prune -o -path /usr -prune -o -name secret.txt -print 2>/dev/null | grep .",
        'grep -rs "bystander\'s secret" /workspace /tmp /home /var /etc | grep .',
    ):
        text, is_error = await run(ex, command)
        assert is_error and "the bystander's secret" not in text, command
    for path in (
        f"{victim}/secret.txt",
        "../sesn_bystander/secret.txt",
        "/workspace/../sesn_bystander/secret.txt",
    ):
        result = await ex.run("read", {"file_path": path})
        assert result.is_error and "outside the session's working directory" in result.text, path
    # A symlink planted in the workspace does not lead the host-side tools out either.
    await run(ex, f"ln -s {victim}/secret.txt link.txt")
    result = await ex.run("read", {"file_path": "link.txt"})
    assert result.is_error and "the bystander's secret" not in result.text
    await assert_unaffected(bystander)
    assert (await bystander.run("read", {"file_path": "secret.txt"})).text == "the bystander's secret"


async def test_a_fork_bomb_is_contained_by_the_process_limit(
    make_executor: MakeExecutor, bystander: BwrapExecutor
) -> None:
    ex = make_executor("sesn_attacker")  # default limits
    assert await run(ex, "echo warm") == ("warm", False)
    bomb = asyncio.create_task(run(ex, "bomb() { bomb | bomb & }; bomb; sleep 30", timeout_ms=20_000))
    await asyncio.sleep(1.5)
    counts = []
    for _ in range(5):
        counts.append(len(uid_processes(ex.uid)) if ex.privileged else 0)
        # While the bomb runs, another session's sandbox and the host work.
        await assert_unaffected(bystander)
    if ex.privileged:
        assert ex.limits.max_processes // 2 <= max(counts) <= ex.limits.max_processes, counts
    started = time.monotonic()
    await ex.close()
    assert (await bomb) == ("bash: interrupted", True)
    assert time.monotonic() - started < 5
    if ex.privileged:
        assert uid_processes(ex.uid) == []
    await assert_unaffected(bystander)


SPAWN = """
import subprocess
procs = []
try:
    for i in range(30):
        procs.append(subprocess.Popen(["sleep", "100"]))
except OSError as e:
    print("failed after", len(procs), e)
for p in procs:
    p.kill()
"""


async def test_the_process_limit_is_enforced(make_executor: MakeExecutor) -> None:
    ex = make_executor("sesn_nproc", limits=SandboxLimits(max_processes=16))
    await ex.run("write", {"file_path": "spawn.py", "content": SPAWN})
    # 16 processes of the sandbox's uid: the shell, python and 14 children.
    assert await run(ex, "python3 spawn.py") == (
        "failed after 14 [Errno 11] Resource temporarily unavailable",
        False,
    )


async def test_a_1_gb_allocation_fails(make_executor: MakeExecutor, bystander: BwrapExecutor) -> None:
    ex = make_executor("sesn_attacker")  # default limits
    text, is_error = await run(ex, "python3 -c 'b = bytearray(1 << 30); print(len(b))'")
    assert is_error and "MemoryError" in text
    text, is_error = await run(
        ex, "python3 -c 'chunks = [bytes(1 << 20) for _ in range(1100)]; print(len(chunks))'"
    )  # 1 GB in 1 MiB pieces (heap, not one mapping)
    assert is_error and "MemoryError" in text
    # Modest allocations still work.
    assert await run(ex, "python3 -c 'print(len(bytearray(200 << 20)))'") == (str(200 << 20), False)
    await assert_unaffected(bystander)


async def test_cpu_and_file_size_limits(make_executor: MakeExecutor) -> None:
    ex = make_executor("sesn_limits", limits=SandboxLimits(cpu_time_s=1, max_file_mb=1, tmp_mb=2))
    started = time.monotonic()
    text, is_error = await run(ex, "python3 -c 'while True: pass'", timeout_ms=20_000)
    assert is_error and "CPU time limit exceeded" in text
    assert time.monotonic() - started < 15
    text, is_error = await run(ex, "head -c 2M /dev/zero > big.bin; ls -l big.bin | awk '{print $5}'")
    assert "File size limit exceeded" in text and text.endswith("\n1048576")
    text, is_error = await run(ex, "for f in a b c; do head -c 1M /dev/zero > /tmp/$f || exit 1; done")
    assert is_error and "No space left on device" in text


async def test_a_command_ignoring_sigterm_is_killed_by_the_timeout(
    make_executor: MakeExecutor, bystander: BwrapExecutor
) -> None:
    ex = make_executor("sesn_attacker")
    command = "trap '' TERM HUP INT; (trap '' TERM HUP INT; sleep 1000) & sleep 1000"
    started = time.monotonic()
    text, is_error = await run(ex, command, timeout_ms=500)
    assert is_error and text.startswith("bash: command timed out after 0.5s and was killed")
    assert time.monotonic() - started < 3
    if ex.privileged:
        assert await wait_until(lambda: not uid_processes(ex.uid), timeout=1.0)
    assert await run(ex, "pgrep -c sleep || true") == ("0", False)
    await assert_unaffected(bystander)


async def test_a_command_ignoring_sigterm_is_killed_by_cancel(
    make_executor: MakeExecutor, bystander: BwrapExecutor
) -> None:
    ex = make_executor("sesn_attacker")
    assert await run(ex, "echo warm") == ("warm", False)
    task = asyncio.create_task(
        ex.run("bash", {"command": "trap '' TERM HUP INT; setsid sleep 1000 & sleep 1000"})
    )
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await ex.cancel()
    result = await task
    assert time.monotonic() - started < 0.2
    assert (result.text, result.is_error) == ("bash: interrupted", True)
    if ex.privileged:
        assert await wait_until(lambda: not uid_processes(ex.uid), timeout=0.5)
    await assert_unaffected(bystander)


async def test_background_processes_do_not_outlive_the_sandbox(
    make_executor: MakeExecutor, bystander: BwrapExecutor
) -> None:
    ex = make_executor("sesn_attacker")
    text, is_error = await run(
        ex,
        "sleep 1000 & (sleep 1001 &); setsid sleep 1002 & nohup sleep 1003 >/dev/null 2>&1 & "
        "python3 -c 'import os, time\nif os.fork() == 0:\n os.setsid()\n if os.fork() == 0: time.sleep(1000)' & "
        "sleep 0.3; pgrep -c sleep",
    )
    assert (text, is_error) == ("4", False)
    # They survive between calls (like a terminal's background jobs) ...
    assert await run(ex, "pgrep -c sleep") == ("4", False)
    if ex.privileged:
        assert len(uid_processes(ex.uid)) >= 6
    # ... and not the sandbox.
    await ex.close()
    if ex.privileged:
        assert uid_processes(ex.uid) == []
    await assert_unaffected(bystander)


async def test_no_capabilities_and_not_root(make_executor: MakeExecutor, bystander: BwrapExecutor) -> None:
    ex = make_executor("sesn_attacker")
    text, _ = await run(ex, "id -u; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status")
    lines = text.splitlines()
    assert lines[0] != "0"
    fields = dict(line.split(":\t") for line in lines[1:])
    assert fields == {
        "CapInh": "0000000000000000",
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "CapAmb": "0000000000000000",
        "NoNewPrivs": "1",
    }
    if ex.privileged:
        assert int(lines[0]) == ex.uid
    # Root-only operations fail.
    for command in ("mount -t tmpfs none /tmp", "chown root /workspace", "kill -9 1", "hostname evil"):
        _, is_error = await run(ex, command)
        assert is_error, command
    await assert_unaffected(bystander)
