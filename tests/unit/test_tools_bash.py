"""The bash tool through WorkspaceExecutor: persistence, output handling, timeouts, interrupts."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hangar.config import Settings
from hangar.runtime.tools import WorkspaceExecutor
from hangar.runtime.tools.base import OUTPUT_LIMIT, TRUNCATED


def make(tmp_path: Path, **settings: Any) -> WorkspaceExecutor:
    return WorkspaceExecutor("sesn_bash", tmp_path / "ws", Settings(data_dir=tmp_path / "data", **settings))


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[WorkspaceExecutor]:
    executor = make(tmp_path)
    yield executor
    await executor.close()


async def bash(ex: WorkspaceExecutor, command: str, **extra: Any) -> tuple[str, bool]:
    result = await ex.run("bash", {"command": command, **extra})
    assert len(result.content) == 1 and result.content[0]["type"] == "text"
    assert result.content[0]["text"], "text blocks are never empty"
    return result.text, result.is_error


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_dead(pid: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return not alive(pid)


async def test_starts_in_workdir_and_keeps_cwd_and_env(ex: WorkspaceExecutor) -> None:
    assert await bash(ex, "pwd") == (str(ex.workdir), False)
    assert await bash(ex, "mkdir -p sub && cd sub && export GREETING=hello") == ("(no output)", False)
    assert await bash(ex, 'pwd; echo "$GREETING"') == (f"{ex.workdir}/sub\nhello", False)


async def test_credentials_are_removed_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("HANGAR_API_KEY", "hk-secret")
    monkeypatch.setenv("HARMLESS_VAR", "visible")
    executor = make(tmp_path)
    try:
        text, _ = await bash(
            executor, 'echo "${ANTHROPIC_API_KEY:-unset} ${HANGAR_API_KEY:-unset} $HARMLESS_VAR"'
        )
        assert text == "unset unset visible"
        text, _ = await bash(executor, "env | grep -c -E '^(ANTHROPIC|HANGAR)_' || true")
        assert text == "0"
    finally:
        await executor.close()


async def test_stdout_and_stderr_are_merged_and_ansi_is_stripped(ex: WorkspaceExecutor) -> None:
    text, is_error = await bash(
        ex, "echo out; echo err >&2; printf '\\033[31mred\\033[0m \\033]0;title\\007done\\n'"
    )
    assert (text, is_error) == ("out\nerr\nred done", False)


async def test_non_zero_exit_is_an_error_with_the_output_and_code(ex: WorkspaceExecutor) -> None:
    text, is_error = await bash(ex, "echo partial; exit_with() { return $1; }; exit_with 3")
    assert is_error
    assert text == "bash: exit code 3\npartial"


async def test_no_command_and_bad_input_are_errors(ex: WorkspaceExecutor) -> None:
    for tool_input in ({}, {"command": ""}, {"command": "   "}, {"restart": False}):
        result = await ex.run("bash", tool_input)
        assert result.is_error and result.text.startswith("bash: command is required")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"command": 5}, "bash: command must be a string"),
        ({"command": "true", "timeout_ms": "5"}, "bash: timeout_ms must be a non-negative integer"),
        ({"command": "true", "timeout_ms": -1}, "bash: timeout_ms must be a non-negative integer"),
        ({"restart": "yes"}, "bash: restart must be a boolean"),
    ]
    for tool_input, message in cases:
        result = await ex.run("bash", tool_input)
        assert (result.text, result.is_error) == (message, True)


async def test_restart_gives_a_fresh_shell(ex: WorkspaceExecutor) -> None:
    await bash(ex, "export KEEP=1; cd /")
    result = await ex.run("bash", {"restart": True})
    assert (result.text, result.is_error) == ("bash session restarted", False)
    assert await bash(ex, 'echo "${KEEP:-gone} $PWD"') == (f"gone {ex.workdir}", False)


async def test_syntax_errors_do_not_break_the_shell(ex: WorkspaceExecutor) -> None:
    for broken in ("echo 'unterminated", 'echo "open', "echo $(x", "if then", "f() {"):
        text, is_error = await bash(ex, broken)
        assert is_error and text.startswith("bash: exit code 2\nbash: line ")
        assert await bash(ex, "echo still-fine") == ("still-fine", False)


async def test_exit_ends_the_shell_and_the_next_call_starts_a_new_one(ex: WorkspaceExecutor) -> None:
    await bash(ex, "export GONE=1")
    text, is_error = await bash(ex, "echo bye; exit 5")
    assert is_error and text == "bash: the shell exited with code 5; the next command starts a new one\nbye"
    assert await bash(ex, 'echo "${GONE:-fresh}"') == ("fresh", False)


async def test_commands_get_no_stdin(ex: WorkspaceExecutor) -> None:
    assert await bash(ex, "cat; read -r line; echo done", timeout_ms=5000) == ("done", False)


async def test_output_keeps_the_last_100_kib(ex: WorkspaceExecutor) -> None:
    text, is_error = await bash(ex, "seq 1 100000")  # 588,895 bytes
    assert not is_error
    assert text.startswith(TRUNCATED + "\n")
    body = text.removeprefix(TRUNCATED + "\n")
    assert len(body.encode()) <= OUTPUT_LIMIT
    assert body.endswith("\n99999\n100000")
    assert "\n1\n" not in body
    # The shell is still in step: the next command gets exactly its own output.
    assert await bash(ex, "echo next") == ("next", False)


async def test_output_under_the_limit_is_whole(ex: WorkspaceExecutor) -> None:
    text, _ = await bash(ex, "head -c 90000 /dev/zero | tr '\\0' x")
    assert text == "x" * 90000


async def test_timeout_kills_the_process_tree_and_restarts_the_shell(ex: WorkspaceExecutor) -> None:
    await bash(ex, "cd /tmp && export OLD=1")
    started = time.monotonic()
    text, is_error = await bash(
        ex, f"sleep 60 & echo $! > {ex.workdir}/bg.pid; echo waiting; wait", timeout_ms=300
    )
    assert time.monotonic() - started < 2.0
    assert is_error
    assert text.startswith("bash: command timed out after 0.3s and was killed")
    assert text.endswith("\nwaiting")
    assert await wait_dead(int((ex.workdir / "bg.pid").read_text()))
    assert await bash(ex, 'echo "$PWD ${OLD:-unset}"') == (f"{ex.workdir} unset", False)


async def test_default_timeout_and_cap_come_from_settings(tmp_path: Path) -> None:
    executor = make(tmp_path, bash_timeout_s=0.3, bash_max_timeout_s=0.6)
    try:
        started = time.monotonic()
        text, is_error = await bash(executor, "sleep 5")
        assert is_error and text.startswith("bash: command timed out after 0.3s")
        text, is_error = await bash(executor, "sleep 5", timeout_ms=60_000)  # capped at 0.6 s
        assert is_error and text.startswith("bash: command timed out after 0.6s")
        assert time.monotonic() - started < 3.0
        assert await bash(executor, "sleep 0.1; echo ok", timeout_ms=2000) == ("ok", False)
    finally:
        await executor.close()


async def test_cancel_kills_the_running_command_within_200_ms(ex: WorkspaceExecutor) -> None:
    assert await bash(ex, "echo warm") == ("warm", False)
    task = asyncio.create_task(ex.run("bash", {"command": f"echo $$ > {ex.workdir}/shell.pid; sleep 30"}))
    await asyncio.sleep(0.3)
    shell_pid = int((ex.workdir / "shell.pid").read_text())
    started = time.monotonic()
    await ex.cancel()
    result = await task
    elapsed = time.monotonic() - started
    assert (result.text, result.is_error) == ("bash: interrupted", True)
    assert elapsed < 0.5, elapsed
    assert await wait_dead(shell_pid, timeout=0.2)
    assert await bash(ex, "echo after") == ("after", False)


async def test_cancel_with_nothing_running_keeps_the_shell(ex: WorkspaceExecutor) -> None:
    await bash(ex, "export STAY=1")
    await ex.cancel()
    assert await bash(ex, 'echo "$STAY"') == ("1", False)


async def test_concurrent_calls_run_one_after_the_other(ex: WorkspaceExecutor) -> None:
    results = await asyncio.gather(*(bash(ex, f"sleep 0.05; echo {i}") for i in range(4)))
    assert results == [(str(i), False) for i in range(4)]


async def test_close_kills_the_shell(tmp_path: Path) -> None:
    executor = make(tmp_path)
    text, _ = await bash(executor, "echo $$")
    await executor.close()
    assert await wait_dead(int(text))
    result = await executor.run("bash", {"command": "true"})
    assert result.is_error and result.text == "bash: the session's executor is closed"


async def test_the_sentinel_cannot_be_spoofed(ex: WorkspaceExecutor) -> None:
    text, is_error = await bash(ex, "echo __HANGAR_0000000000000000__0; echo real")
    assert (text, is_error) == ("__HANGAR_0000000000000000__0\nreal", False)
    assert os.path.isdir(ex.workdir)
