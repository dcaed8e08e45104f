"""ExecutorPool: a pluggable factory, and no more than max_live shells kept open."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hangar.config import Settings
from hangar.runtime.tools.executor import ExecutorPool, WorkspaceExecutor


async def test_least_recently_used_idle_executor_is_closed(tmp_path: Path) -> None:
    made: list[str] = []

    def factory(session_id: str, workdir: Path, settings: Settings, **kw: Any) -> WorkspaceExecutor:
        made.append(session_id)
        return WorkspaceExecutor(session_id, workdir, settings, **kw)

    pool = ExecutorPool(Settings(data_dir=tmp_path), factory, max_live=2)
    try:
        a = pool.get("sesn_a")
        assert (await a.run("bash", {"command": "echo a"})).text.strip() == "a"
        pool.get("sesn_b")
        pool.get("sesn_a")  # a is now the most recently used
        pool.get("sesn_c")  # evicts b, the least recently used
        await asyncio.sleep(0.2)
        assert "sesn_b" not in pool and "sesn_a" in pool and "sesn_c" in pool
        assert made == ["sesn_a", "sesn_b", "sesn_c"]
        # An evicted session gets a fresh executor next time; its workspace is kept.
        (tmp_path / "workspaces" / "sesn_b" / "kept.txt").write_text("still here")
        b = pool.get("sesn_b")
        assert "still here" in (await b.run("read", {"file_path": "kept.txt"})).text
    finally:
        await pool.aclose()
