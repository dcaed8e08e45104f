"""How a ``limited`` sandbox reaches its egress proxy from its first command on.

As root, Hangar opens the sandbox's ``127.0.0.1:3128`` itself, inside the sandbox's network
namespace, while the sandbox starts (no forwarder process in the sandbox, nothing to wait for);
the listener belongs to that one sandbox and goes away with it. Everything stays on loopback: the
proxy refuses the (unresolved) host it is asked for.
"""

from __future__ import annotations

import os

from .conftest import MakeExecutor, needs_bwrap, run

pytestmark = needs_bwrap

LIMITED = {"type": "limited", "allowed_hosts": [], "allow_package_managers": False}

# The very first command of a new sandbox: CONNECT through 127.0.0.1:3128 at once.
CONNECT = (
    "exec 3<>/dev/tcp/127.0.0.1/3128 && printf 'CONNECT blocked.invalid:443 HTTP/1.1\\r\\n"
    "Host: blocked.invalid:443\\r\\n\\r\\n' >&3 && head -c 12 <&3; exec 3<&-"
)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_the_first_command_reaches_the_proxy_and_restarts_get_a_fresh_listener(
    make_executor: MakeExecutor,
) -> None:
    before = open_fds()
    ex = make_executor("sesn_startup", networking=LIMITED)
    for _ in range(2):
        assert await run(ex, CONNECT) == ("HTTP/1.1 403", False)
        assert ex.proxy is not None and ex.proxy.denied >= 1
        processes, _ = await run(ex, "cat /proc/[0-9]*/comm | sort -u")
        if ex.privileged:  # no forwarder: the shell (and this `cat`/`sort`) only
            assert "socat" not in processes.split(), processes
        else:
            assert "socat" in processes.split(), processes
        assert await run(ex, "", restart=True) == ("bash session restarted", False)
    # Across the restarts the old sandboxes' listeners were closed, and close() drops the last.
    await ex.close()
    assert open_fds() == before


async def test_a_sandbox_that_fails_to_start_reports_it(make_executor: MakeExecutor) -> None:
    ex = make_executor("sesn_badstart", networking=LIMITED)
    ex._bwrap = "/bin/false"  # exits at once: no sandbox, no namespace to listen in
    before = open_fds()
    text, is_error = await run(ex, "echo never")
    if ex.privileged:
        assert (text, is_error) == (
            "bash: cannot start the shell: the sandbox exited before it started",
            True,
        )
    else:
        assert is_error, text
    assert open_fds() <= before + 1  # the proxy's socket; no pipe left behind
    await ex.close()
