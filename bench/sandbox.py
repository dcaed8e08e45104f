"""Bubblewrap sandbox cost through BwrapExecutor: how long until a new session's sandbox has run its
first command, and the round trip of a `bash` call into a running one.

    python bench/sandbox.py [--sandboxes 30] [--calls 300] [--out bench/results/sandbox.json]

Measures p50/p95 (ms) of, for `unrestricted` and `limited` networking:
  ready   BwrapExecutor(...) created → first `bash echo ready` returned (the sandbox, its
          long-lived shell, the resource limits and, under `limited`, the egress proxy and the
          in-sandbox forwarder); each sample is a new session (new uid, new workspace);
  warm    `bash echo hi` into the running sandbox (framing, the pipe round trip and dispatch);
  close   BwrapExecutor.close() until every process of the sandbox is gone.
Targets on the reference machine: ready ≤ 100 ms p50, warm ≤ 15 ms p50. The machine's load
average is recorded with the results (the numbers move with it). Nothing touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hangar.config import Settings
from hangar.sandbox import BwrapExecutor, sandbox_problems

NETWORKING: dict[str, dict[str, Any] | None] = {
    "unrestricted": None,
    "limited": {"type": "limited", "allowed_hosts": [], "allow_package_managers": False},
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(samples, 0.5), 3), "p95_ms": round(pct(samples, 0.95), 3), "n": len(samples)}


async def bench_mode(
    root: Path, settings: Settings, mode: str, sandboxes: int, calls: int
) -> dict[str, dict[str, float]]:
    networking = NETWORKING[mode]
    ready: list[float] = []
    close: list[float] = []
    for i in range(sandboxes):
        session_id = f"sesn_bench_{mode}_{i}"
        started = time.perf_counter()
        executor = BwrapExecutor(session_id, root / session_id, settings, networking=networking)
        result = await executor.run("bash", {"command": "echo ready"})
        ready.append((time.perf_counter() - started) * 1000)
        if result.is_error or result.text != "ready":
            raise SystemExit(f"{mode}: the sandbox failed: {result.text}")
        started = time.perf_counter()
        await executor.close()
        close.append((time.perf_counter() - started) * 1000)
    warm: list[float] = []
    executor = BwrapExecutor(f"sesn_bench_{mode}_warm", root / "warm", settings, networking=networking)
    try:
        await executor.run("bash", {"command": "true"})
        for _ in range(calls):
            started = time.perf_counter()
            result = await executor.run("bash", {"command": "echo hi"})
            warm.append((time.perf_counter() - started) * 1000)
            assert result.text == "hi", result.text
    finally:
        await executor.close()
    return {"ready": summary(ready), "warm": summary(warm), "close": summary(close)}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sandboxes", type=int, default=30)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    problems = sandbox_problems(NETWORKING["limited"])
    if problems:
        print("; ".join(problems), file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_before": round(os.getloadavg()[0], 2),
            "root": os.geteuid() == 0,
            "bwrap": shutil.which("bwrap"),
        }
    }
    with tempfile.TemporaryDirectory(prefix="hangar-bench-sandbox-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        for mode in NETWORKING:
            results[mode] = await bench_mode(Path(tmp) / "ws", settings, mode, args.sandboxes, args.calls)
    results["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    for mode in NETWORKING:
        for name, value in results[mode].items():
            p50, p95, n = value["p50_ms"], value["p95_ms"], value["n"]
            print(f"{mode:12} {name:6} p50 {p50:8.3f} ms   p95 {p95:8.3f} ms   (n={n})")
    before, after = results["machine"]["load_average_1m_before"], results["machine"]["load_average_1m_after"]
    print(f"load average (1 min): {before} before, {after} after")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
