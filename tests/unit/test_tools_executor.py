"""WorkspaceExecutor dispatch and ExecutorPool lifecycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import hangar.runtime.tools as tools
from hangar.config import Settings
from hangar.runtime.tools import Executor, ExecutorPool, WorkspaceExecutor


def test_public_names() -> None:
    assert tools.__all__ == [
        "AGENT_TOOLSET",
        "TOOL_NAMES",
        "AutoClassifier",
        "Classifier",
        "Executor",
        "ExecutorPool",
        "Judgement",
        "ToolContext",
        "ToolError",
        "ToolResult",
        "Verdict",
        "WebRules",
        "WorkspaceExecutor",
        "denied_text",
        "enabled_tools",
        "evaluate",
        "find_toolset",
        "tool_config",
        "tool_policy",
        "toolset_definitions",
    ]


async def test_unknown_tools_and_bad_input_are_error_results(tmp_path: Path) -> None:
    executor: Executor = WorkspaceExecutor("sesn_x", tmp_path / "ws", Settings(data_dir=tmp_path))
    try:
        result = await executor.run("teleport", {})
        assert (result.text, result.is_error) == ("teleport: unknown tool", True)
        result = await executor.run("read", ["not", "a", "dict"])  # type: ignore[arg-type]
        assert (result.text, result.is_error) == ("read: input must be an object", True)
    finally:
        await executor.close()


async def test_workdir_is_created_and_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    executor = WorkspaceExecutor("sesn_x", tmp_path / "alias" / "ws", Settings(data_dir=tmp_path))
    try:
        assert executor.workdir == tmp_path / "real" / "ws"
        assert executor.workdir.is_dir()
        result = await executor.run("write", {"file_path": "a.txt", "content": "x"})
        assert not result.is_error
        assert (tmp_path / "real" / "ws" / "a.txt").read_text() == "x"
    finally:
        await executor.close()


async def test_pool_gives_one_executor_per_session(tmp_path: Path) -> None:
    pool = ExecutorPool(Settings(data_dir=tmp_path / "data"))
    try:
        first = pool.get("sesn_one")
        assert pool.get("sesn_one") is first
        assert "sesn_one" in pool
        assert first.workdir == (tmp_path / "data" / "workspaces" / "sesn_one").resolve()
        assert first.workdir.is_dir()
        second = pool.get("sesn_two")
        assert second is not first
        await first.run("bash", {"command": "echo one > marker"})
        result = await second.run("bash", {"command": "ls"})
        assert (result.text, result.is_error) == ("(no output)", False)
        with pytest.raises(ValueError, match="invalid session id"):
            pool.get("../escape")
        await pool.close("sesn_one")
        assert "sesn_one" not in pool
        assert (await first.run("bash", {"command": "true"})).text == "bash: the session's executor is closed"
        again = pool.get("sesn_one")
        assert again is not first
        assert (await again.run("read", {"file_path": "marker"})).text == "one\n"  # the workspace stays
        await pool.close("sesn_unknown")  # no-op
    finally:
        await pool.aclose()
    assert "sesn_one" not in pool and "sesn_two" not in pool


async def test_pool_get_reconfigures_web_rules(tmp_path: Path) -> None:
    pool = ExecutorPool(Settings(data_dir=tmp_path))
    try:
        executor = pool.get("sesn_w", networking={"type": "limited", "allowed_hosts": []})
        result = await executor.run("web_fetch", {"url": "https://example.com/"})
        assert (
            result.text == "web_fetch: url_not_allowed: example.com is not in the environment's allowed_hosts"
        )
        toolset = {
            "type": "agent_toolset_20260401",
            "configs": [{"name": "web_fetch", "blocked_domains": ["example.com"]}],
        }
        assert pool.get("sesn_w", toolset=toolset) is executor
        result = await executor.run("web_fetch", {"url": "https://example.com/"})  # networking kept
        assert (
            result.text == "web_fetch: url_not_allowed: example.com is not in the environment's allowed_hosts"
        )
        pool.get("sesn_w", networking={"type": "unrestricted"})
        result = await executor.run("web_fetch", {"url": "https://example.com/"})  # toolset kept
        assert result.text == "web_fetch: url_not_allowed: example.com is in blocked_domains"
    finally:
        await pool.aclose()


async def test_aclose_interrupts_running_calls(tmp_path: Path) -> None:
    pool = ExecutorPool(Settings(data_dir=tmp_path))
    executor = pool.get("sesn_busy")
    task = asyncio.create_task(executor.run("bash", {"command": "sleep 30"}))
    await asyncio.sleep(0.2)
    await pool.aclose()
    result = await asyncio.wait_for(task, 1.0)
    assert (result.text, result.is_error) == ("bash: interrupted", True)


async def test_cancelling_the_caller_stops_the_tool(tmp_path: Path) -> None:
    executor = WorkspaceExecutor("sesn_c", tmp_path / "ws", Settings(data_dir=tmp_path))
    try:
        task = asyncio.create_task(executor.run("bash", {"command": "sleep 30"}))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await asyncio.wait_for(executor.run("bash", {"command": "echo fresh"}), 2.0)
        assert (result.text, result.is_error) == ("fresh", False)
    finally:
        await executor.close()
