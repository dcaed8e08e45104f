"""Tool-execution overhead: the per-call cost of WorkspaceExecutor, excluding the work itself.

    python bench/tools.py [--calls 500] [--out bench/results/tools.json]

Measures p50/p95 (ms) of:
  bash  `true` (a builtin: what remains is framing, the pipe round trip and dispatch);
  read  a 1 KiB file (path resolution, a thread hop, stat + read);
  write a 1 KiB file;
  grep  one small file (rg when installed, else the Python walk).
The first call of each tool (starting the shell) is excluded. Everything runs in a temporary
directory; nothing touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from control_plane import pct

from hangar.config import Settings
from hangar.runtime.tools import WorkspaceExecutor


async def measure(
    executor: WorkspaceExecutor, name: str, tool_input: dict[str, Any], calls: int
) -> dict[str, float]:
    first = await executor.run(name, tool_input)
    if first.is_error:
        raise SystemExit(f"{name} failed: {first.text}")
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await executor.run(name, tool_input)
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(pct(samples, 0.5), 3), "p95_ms": round(pct(samples, 0.95), 3), "calls": calls}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hangar-bench-tools-") as tmp:
        executor = WorkspaceExecutor("sesn_bench", Path(tmp) / "ws", Settings(data_dir=Path(tmp)))
        try:
            (executor.workdir / "file.txt").write_text("x" * 1023 + "\n")
            results = {
                "bash_true": await measure(executor, "bash", {"command": "true"}, args.calls),
                "read_1k": await measure(executor, "read", {"file_path": "file.txt"}, args.calls),
                "write_1k": await measure(
                    executor, "write", {"file_path": "out.txt", "content": "y" * 1024}, args.calls
                ),
                "grep_1_file": await measure(
                    executor, "grep", {"pattern": "x", "path": "file.txt"}, args.calls
                ),
            }
        finally:
            await executor.close()
    results["grep_backend"] = "rg" if shutil.which("rg") else "python"  # type: ignore[assignment]
    for name, value in results.items():
        if isinstance(value, dict):
            p50, p95, calls = value["p50_ms"], value["p95_ms"], value["calls"]
            print(f"{name:12} p50 {p50:7.3f} ms   p95 {p95:7.3f} ms   ({calls} calls)")
    print(f"grep backend: {results['grep_backend']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
