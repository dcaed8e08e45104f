"""BwrapExecutor as an Executor: the persistent shell inside the sandbox, the workspace mapping of
the file tools, restarts, timeouts, cancel and close."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from hangar.config import Settings
from hangar.runtime.tools import Executor
from hangar.sandbox import BwrapExecutor, SandboxUnavailable, sandbox_problems, sandbox_uid
from hangar.sandbox.bwrap import ETC_MASKED

from .conftest import Listener, MakeExecutor, needs_bwrap, run, uid_processes, wait_until

pytestmark = needs_bwrap


async def test_the_shell_persists_inside_the_sandbox(make_executor: MakeExecutor) -> None:
    ex: Executor = make_executor()
    assert await run(ex, "pwd; hostname") == ("/workspace\nsandbox", False)  # type: ignore[arg-type]
    assert await run(ex, "mkdir -p sub && cd sub && export GREETING=hello") == ("(no output)", False)  # type: ignore[arg-type]
    assert await run(ex, 'pwd; echo "$GREETING"') == ("/workspace/sub\nhello", False)  # type: ignore[arg-type]
    text, is_error = await run(ex, "exit 3")  # type: ignore[arg-type]
    assert is_error and text.startswith("bash: the shell exited with code 3")
    assert await run(ex, "pwd") == ("/workspace", False)  # type: ignore[arg-type]


async def test_the_sandbox_sees_only_itself(
    make_executor: MakeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("SOME_HOST_SECRET", "hunter2")
    ex = make_executor()
    text, _ = await run(ex, "env")
    assert "sk-secret" not in text and "hunter2" not in text
    assert "HOME=/home/agent" in text and "PATH=/usr/local/sbin:" in text
    # Only the sandbox's own processes: bwrap's init, the shell and ps.
    text, _ = await run(ex, "ps -eo pid=,comm= | wc -l; ls /proc | grep -c '^[0-9]'")
    assert int(text.split()[0]) <= 4
    assert await run(ex, "id -un; ls /run/hangar") == ("agent\ncmd", False)
    text, is_error = await run(ex, "cat /etc/shadow")
    assert is_error and "Permission denied" in text
    for name in ETC_MASKED:  # the host's package-manager settings are hidden
        if os.path.isfile(f"/etc/{name}"):
            assert await run(ex, f"wc -c < /etc/{name}") == ("0", False)
    assert await run(ex, "python3 -c 'print(6 * 7)'; git --version | cut -d' ' -f1") == ("42\ngit", False)


async def test_file_tools_map_workspace_paths(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    result = await ex.run("write", {"file_path": "/workspace/pkg/mod.py", "content": "print('hi')\n"})
    assert (result.text, result.is_error) == ("wrote 12 bytes to /workspace/pkg/mod.py", False)
    assert (ex.workdir / "pkg" / "mod.py").read_text() == "print('hi')\n"
    # The sandbox can change what the host-side tools wrote (it owns it).
    assert await run(ex, "echo '# more' >> pkg/mod.py && touch pkg/new && python3 pkg/mod.py") == (
        "hi",
        False,
    )
    assert (await ex.run("read", {"file_path": "/workspace/pkg/mod.py"})).text == "print('hi')\n# more\n"
    result = await ex.run("edit", {"file_path": "pkg/mod.py", "old_string": "more", "new_string": "less"})
    assert result.text == "edited pkg/mod.py (1 replacement(s))"
    assert (await ex.run("glob", {"pattern": "**/*.py"})).text == "/workspace/pkg/mod.py"
    assert (
        await ex.run("glob", {"pattern": "*.py", "path": "/workspace/pkg"})
    ).text == "/workspace/pkg/mod.py"
    grep = await ex.run("grep", {"pattern": "less", "output_mode": "content"})
    assert grep.text == "/workspace/pkg/mod.py:2:# less"
    missing = await ex.run("read", {"file_path": "/workspace/nope.txt"})
    assert (missing.text, missing.is_error) == ("read: /workspace/nope.txt: no such file or directory", True)
    outside = await ex.run("read", {"file_path": "/etc/passwd"})
    assert outside.is_error and "outside the session's working directory" in outside.text
    assert str(ex.workdir) not in outside.text
    if ex.privileged:
        for path in (ex.workdir, ex.workdir / "pkg", ex.workdir / "pkg" / "mod.py"):
            assert path.stat().st_uid == ex.uid


async def test_existing_workspace_files_are_given_to_the_sandbox(
    make_executor: MakeExecutor, settings: Settings
) -> None:
    workdir = settings.data_dir / "workspaces" / "sesn_old"
    (workdir / "repo").mkdir(parents=True)
    (workdir / "repo" / "README").write_text("old\n")
    ex = make_executor("sesn_old")
    assert await run(ex, "echo new >> repo/README && cat repo/README") == ("old\nnew", False)


async def test_timeout_kills_the_sandbox_and_the_next_call_gets_a_new_one(
    make_executor: MakeExecutor,
) -> None:
    ex = make_executor()
    await run(ex, "export OLD=1; sleep 1000 &")
    started = time.monotonic()
    text, is_error = await run(ex, "echo waiting; sleep 60", timeout_ms=300)
    assert time.monotonic() - started < 3.0
    assert is_error and text.startswith("bash: command timed out after 0.3s and was killed")
    assert await run(ex, 'echo "${OLD:-unset}"; pgrep -c sleep') == ("bash: exit code 1\nunset\n0", True)


async def test_restart_and_start(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    await ex.start()
    pid = ex._bash.shell_pid
    await ex.start()  # already running: nothing happens
    assert ex._bash.shell_pid == pid
    await run(ex, "export X=1")
    result = await ex.run("bash", {"restart": True})
    assert result.text == "bash session restarted"
    assert await run(ex, 'echo "${X:-unset}"') == ("unset", False)


async def test_cancel_kills_the_running_command_within_200_ms(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    assert await run(ex, "echo warm") == ("warm", False)
    task = asyncio.create_task(ex.run("bash", {"command": "trap '' TERM INT; sleep 30"}))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await ex.cancel()
    result = await task
    elapsed = time.monotonic() - started
    assert (result.text, result.is_error) == ("bash: interrupted", True)
    assert elapsed < 0.2, elapsed
    if ex.privileged:
        assert await wait_until(lambda: not uid_processes(ex.uid), timeout=0.5)
    assert await run(ex, "echo after") == ("after", False)


async def test_close_leaves_no_process_and_is_idempotent(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    await run(ex, "sleep 1000 & (sleep 1001 &); setsid sleep 1002 & nohup sleep 1003 >/dev/null 2>&1 &")
    if ex.privileged:
        assert len(uid_processes(ex.uid)) >= 5
    runtime = ex._runtime
    assert runtime is not None and runtime.exists()
    await ex.close()
    if ex.privileged:
        assert uid_processes(ex.uid) == []
    assert not runtime.exists()
    await ex.close()
    result = await ex.run("bash", {"command": "true"})
    assert (result.text, result.is_error) == ("bash: the session's executor is closed", True)


async def test_networking_change_replaces_the_sandbox(make_executor: MakeExecutor) -> None:
    ex = make_executor()
    assert await run(
        ex, "cat /sys/class/net/lo/operstate 2>/dev/null; ls /proc/net/dev >/dev/null; echo ok"
    ) == (
        "ok",
        False,
    )
    assert ex.network_mode == "unrestricted"
    text, _ = await run(ex, "grep -c : /proc/net/dev")
    shared = int(text)
    ex.configure(networking={"type": "limited", "allowed_hosts": []})
    assert ex.network_mode == "limited"
    text, _ = await run(ex, "grep -c : /proc/net/dev; echo $HTTPS_PROXY")
    assert text.split() == ["1", "http://127.0.0.1:3128"]  # lo only
    assert shared >= 1
    assert ex.proxy is not None and ex.proxy.running


def test_sandbox_uid_is_stable_and_unprivileged() -> None:
    assert sandbox_uid("sesn_a") == sandbox_uid("sesn_a") != sandbox_uid("sesn_b")
    assert all(0x10000000 <= sandbox_uid(f"sesn_{i}") < 0x50000000 for i in range(100))


def test_missing_bubblewrap_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    problems = sandbox_problems({"type": "limited"})
    assert "bwrap is not installed (install the bubblewrap package)" in problems
    assert any("socat" in p for p in problems)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        BwrapExecutor("sesn_x", tmp_path / "ws", Settings(data_dir=tmp_path))
    assert os.environ["PATH"] == str(tmp_path)


async def test_adopt_gives_host_written_files_to_the_sandbox(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    ex = make_executor()
    await ex.start()
    (ex.workdir / "clone" / "src").mkdir(parents=True)
    (ex.workdir / "clone" / "src" / "main.py").write_text("x = 1\n")
    await ex.adopt(ex.workdir / "clone")
    assert await run(
        ex, "echo 'y = 2' >> clone/src/main.py && touch clone/src/new && cat clone/src/main.py"
    ) == (
        "x = 1\ny = 2",
        False,
    )
    with pytest.raises(ValueError, match="outside the session's workspace"):
        await ex.adopt(tmp_path)


async def test_an_unrestricted_sandbox_shares_the_hosts_network(
    make_executor: MakeExecutor, listener: Listener
) -> None:
    ex = make_executor(networking={"type": "unrestricted"})
    text, is_error = await run(
        ex, f"curl -sS -m 5 http://127.0.0.1:{listener.port}/; echo ${{HTTPS_PROXY:-no proxy}}"
    )
    assert (text, is_error) == ("hello from the host\nno proxy", False)
    assert ex.proxy is None
