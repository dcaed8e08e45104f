"""Bubblewrap sandbox cost: how long until a new session's sandbox has run its first command, and
the round trip of a `bash echo hi` into a running one, in process, through the full stack and
through a self-hosted worker.

    python bench/sandbox.py [--sandboxes 30] [--calls 300] [--stack-sessions 15] [--stack-turns 100]
                            [--worker-sessions 5] [--worker-turns 50] [--legs inprocess,stack,worker]
                            [--out bench/results/sandbox.json]

p50/p95 (ms), each for `unrestricted` and `limited` networking:

in process (BwrapExecutor, no server):
  ready   BwrapExecutor(...) created → first `bash echo ready` returned (the sandbox, its
          long-lived shell, the resource limits and, under `limited`, the egress proxy and its
          listener in the sandbox); each sample is a new session (new uid, new workspace);
  warm    `bash echo hi` into the running sandbox (framing, the pipe round trip and dispatch);
  close   BwrapExecutor.close() until every process of the sandbox is gone.

full stack (a real `hangar serve` on SQLite, a cloud environment with that networking, the
scripted model at zero latency calling `[[tool:bash {"command":"echo hi"}]]`):
  *_dispatch  server clock: `agent.tool_result.processed_at - span.model_request_end.processed_at`
              (persist the call, run it in the sandbox, start persisting the result);
  *_client    client clock: POST user.message → `agent.tool_result` on the event stream;
  *_idle      client clock: POST user.message → `session.status_idle` (the whole turn: the tool,
              then a second model request);
  cold_*      the first `bash` of a new session (the sandbox starts); warm_* later turns.

worker (the same server, a self-hosted environment, a real `hangar worker --network <mode>`
subprocess; the model runs on the server, `bash` in the worker's sandbox):
  *_round     server clock: `agent.tool_use.processed_at` → `processed_at` of the
              `session.status_running` that resumes the turn once the `user.tool_result` is in
              (the worker gets the call on its event stream, runs it, POSTs the result; the
              server takes it up);
  *_client    client clock: POST user.message → `user.tool_result` on the event stream;
  cold_*      the first `bash` of a session the worker already serves (a `glob` turn first, so the
              work-queue claim, which waits for the worker's next poll, is not counted).

Targets on the reference machine: ready ≤ 100 ms p50, warm ≤ 15 ms p50. The machine's load
average is recorded with the results (the numbers move with it). Every loop is bounded in count
and time; all traffic stays on 127.0.0.1 (the sandboxes reach nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# Run as `python bench/sandbox.py`: this directory is on sys.path; share runtime's helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from control_plane import HEADERS, KEY, msg, pct
from runtime import EventStream, Frame, first, open_session, send

from hangar.config import Settings
from hangar.sandbox import BwrapExecutor, sandbox_problems
from hangar.testing import ServerProcess

NETWORKING: dict[str, dict[str, Any] | None] = {
    "unrestricted": None,
    "limited": {"type": "limited", "allowed_hosts": [], "allow_package_managers": False},
}


DEADLINE_S = 240  # per leg and mode
TOOLSET = [{"type": "agent_toolset_20260401"}]
ECHO = '[[tool:bash {"command":"echo hi"}]]'
GLOB = '[[tool:glob {"pattern":"*"}]]'
IDLE = "session.status_idle"


def summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "n": 0}
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


# ---------------------------------------------------------------------------- full stack


def _since(frames: list[Frame], later: int, earlier: int) -> float:
    return (frames[later].processed_us - frames[earlier].processed_us) / 1000


def _check_echo(frames: list[Frame], index: int, where: str) -> None:
    data = frames[index].data
    text = "".join(b.get("text", "") for b in data.get("content") or [] if isinstance(b, dict))
    if data.get("is_error") or text.strip() != "hi":
        raise SystemExit(f"{where}: bash echo failed: {json.dumps(data)[:500]}")


async def _stack_turn(
    c: httpx.AsyncClient, sid: str, stream: EventStream, text: str
) -> tuple[float, float, float]:
    """One turn whose model calls `bash echo hi`: (dispatch, client to the result, client to idle)."""
    t0 = time.perf_counter()
    await send(c, sid, msg(text))
    frames = await stream.until(IDLE)
    end = first(frames, "span.model_request_end")
    result = first(frames, "agent.tool_result", end)
    _check_echo(frames, result, f"full stack {sid}")
    return _since(frames, result, end), (frames[result].at - t0) * 1000, (frames[-1].at - t0) * 1000


async def _archive(c: httpx.AsyncClient, sid: str) -> None:
    """Archive a sampled session: the server closes its sandbox (live sandboxes stay few)."""
    r = await c.post(f"/v1/sessions/{sid}/archive", json={})
    if r.status_code >= 400:
        print(f"archiving {sid}: {r.status_code} {r.text[:200]}", file=sys.stderr)


async def stack_mode(
    c: httpx.AsyncClient, agent: str, mode: str, sessions: int, turns: int
) -> dict[str, dict[str, float]]:
    networking = NETWORKING[mode] or {"type": "unrestricted"}
    r = await c.post(
        "/v1/environments",
        json={"name": f"bench-sandbox-{mode}", "config": {"type": "cloud", "networking": networking}},
    )
    r.raise_for_status()
    env = str(r.json()["id"])
    deadline = time.monotonic() + DEADLINE_S
    cold: tuple[list[float], list[float], list[float]] = ([], [], [])
    for i in range(sessions + 1):  # the first one warms the server up
        if time.monotonic() > deadline:
            break
        sid, stream = await open_session(c, agent, env)
        try:
            sample = await _stack_turn(c, sid, stream, f"{ECHO} cold {i}")
        finally:
            await stream.close()
        await _archive(c, sid)
        if i:
            for into, value in zip(cold, sample, strict=True):
                into.append(value)
    warm: tuple[list[float], list[float], list[float]] = ([], [], [])
    sid, stream = await open_session(c, agent, env)
    try:
        for i in range(turns + 3):  # three warm-up turns
            if time.monotonic() > deadline:
                break
            sample = await _stack_turn(c, sid, stream, f"{ECHO} warm {i}")
            if i >= 3:
                for into, value in zip(warm, sample, strict=True):
                    into.append(value)
    finally:
        await stream.close()
    await _archive(c, sid)
    names = ("dispatch", "client", "idle")
    out = {f"cold_{n}": summary(v) for n, v in zip(names, cold, strict=True)}
    out |= {f"warm_{n}": summary(v) for n, v in zip(names, warm, strict=True)}
    return out


# ---------------------------------------------------------------------------- worker


def environment_key(srv: ServerProcess, env: str) -> str:
    """An environment key, made with `hangar keys create --environment` against the server's data."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hangar",
            "keys",
            "create",
            "--name",
            "bench-worker",
            "--environment",
            env,
            "--data-dir",
            str(srv.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_clean_env(),
    )
    return out.stdout.strip().splitlines()[-1].strip()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "HANGAR_"))}


def start_worker(
    srv: ServerProcess, env: str, key: str, mode: str, data_dir: Path
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "hangar", "worker", "--environment", env, "--server", srv.base_url]
    cmd += ["--data-dir", str(data_dir), "--network", mode, "--max-sessions", "2", "--max-idle", "1"]
    log = (data_dir.parent / f"worker-{mode}.log").open("ab")
    try:
        return subprocess.Popen(
            cmd,
            env=_clean_env() | {"HANGAR_WORKER_KEY": key, "HANGAR_LOG_LEVEL": "warning"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


async def _until_end_turn(stream: EventStream, timeout: float = 60) -> list[Frame]:
    """Frames up to the `session.status_idle` that ends the turn (a self-hosted session also goes
    idle, `requires_action`, while it waits for the worker's result)."""
    frames: list[Frame] = []
    async with asyncio.timeout(timeout):
        while True:
            frames += await stream.until(IDLE, timeout=timeout)
            if (frames[-1].data.get("stop_reason") or {}).get("type") != "requires_action":
                return frames


async def _worker_turn(c: httpx.AsyncClient, sid: str, stream: EventStream, text: str) -> tuple[float, float]:
    """One turn whose model calls `bash echo hi` in the worker: (round on the server, client)."""
    t0 = time.perf_counter()
    await send(c, sid, msg(text))
    frames = await _until_end_turn(stream)
    use = first(frames, "agent.tool_use")
    result = first(frames, "user.tool_result", use)
    _check_echo(frames, result, f"worker {sid}")
    # A user event is streamed as queued (no `processed_at`); the turn resumes when it is processed.
    resumed = first(frames, "session.status_running", result)
    return _since(frames, resumed, use), (frames[result].at - t0) * 1000


async def worker_mode(
    c: httpx.AsyncClient, srv: ServerProcess, agent: str, mode: str, sessions: int, turns: int, tmp: Path
) -> dict[str, dict[str, float]]:
    r = await c.post(
        "/v1/environments", json={"name": f"bench-worker-{mode}", "config": {"type": "self_hosted"}}
    )
    r.raise_for_status()
    env = str(r.json()["id"])
    key = await asyncio.to_thread(environment_key, srv, env)
    (tmp / f"worker-{mode}").mkdir()
    proc = start_worker(srv, env, key, mode, tmp / f"worker-{mode}")
    deadline = time.monotonic() + DEADLINE_S
    cold: tuple[list[float], list[float]] = ([], [])
    warm: tuple[list[float], list[float]] = ([], [])
    try:
        for i in range(sessions + 1):  # the first one warms the worker up
            if time.monotonic() > deadline:
                break
            sid, stream = await open_session(c, agent, env)
            try:
                await send(c, sid, msg(f"{GLOB} claim {i}"))  # waits for the worker to claim the session
                await _until_end_turn(stream)
                sample = await _worker_turn(c, sid, stream, f"{ECHO} cold {i}")
                if i:
                    for into, value in zip(cold, sample, strict=True):
                        into.append(value)
                if i == sessions:  # the last session also gives the warm samples
                    for j in range(turns + 3):
                        if time.monotonic() > deadline:
                            break
                        sample = await _worker_turn(c, sid, stream, f"{ECHO} warm {j}")
                        if j >= 3:
                            for into, value in zip(warm, sample, strict=True):
                                into.append(value)
            finally:
                await stream.close()
            await _archive(c, sid)
        if proc.poll() is not None:
            raise SystemExit(f"hangar worker exited with {proc.returncode}")
    finally:
        await asyncio.to_thread(stop_worker, proc)
    names = ("round", "client")
    out = {f"cold_{n}": summary(v) for n, v in zip(names, cold, strict=True)}
    out |= {f"warm_{n}": summary(v) for n, v in zip(names, warm, strict=True)}
    return out


async def server_legs(args: argparse.Namespace, legs: set[str], tmp: Path) -> dict[str, Any]:
    srv = ServerProcess(tmp / "server", api_key=KEY, env={"HANGAR_LOG_LEVEL": "warning"}).start()
    results: dict[str, Any] = {}
    try:
        limits = httpx.Limits(keepalive_expiry=2)  # below uvicorn's 5 s keep-alive
        async with httpx.AsyncClient(base_url=srv.base_url, headers=HEADERS, limits=limits, timeout=60) as c:
            r = await c.post(
                "/v1/agents", json={"name": "bench-sandbox", "model": "scripted", "tools": TOOLSET}
            )
            r.raise_for_status()
            agent = str(r.json()["id"])
            for mode in NETWORKING:
                if "stack" in legs:
                    results[f"stack_{mode}"] = await stack_mode(
                        c, agent, mode, args.stack_sessions, args.stack_turns
                    )
                if "worker" in legs:
                    results[f"worker_{mode}"] = await worker_mode(
                        c, srv, agent, mode, args.worker_sessions, args.worker_turns, tmp
                    )
    except BaseException:
        print(srv.log()[-4000:], file=sys.stderr)
        for log in tmp.glob("worker-*.log"):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
        raise
    finally:
        srv.stop()
    return results


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sandboxes", type=int, default=30, help="in process: new sandboxes per mode")
    parser.add_argument("--calls", type=int, default=300, help="in process: warm calls per mode")
    parser.add_argument("--stack-sessions", type=int, default=15, help="full stack: new sessions per mode")
    parser.add_argument("--stack-turns", type=int, default=100, help="full stack: warm turns per mode")
    parser.add_argument("--worker-sessions", type=int, default=5, help="worker: new sessions per mode")
    parser.add_argument("--worker-turns", type=int, default=50, help="worker: warm turns per mode")
    parser.add_argument("--legs", default="inprocess,stack,worker")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    legs = {leg.strip() for leg in args.legs.split(",") if leg.strip()}
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
        if "inprocess" in legs:
            settings = Settings(data_dir=Path(tmp) / "inprocess")
            for mode in NETWORKING:
                results[mode] = await bench_mode(Path(tmp) / "ws", settings, mode, args.sandboxes, args.calls)
        if legs & {"stack", "worker"}:
            results |= await server_legs(args, legs, Path(tmp))
    results["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    for leg, values in results.items():
        if leg == "machine":
            continue
        for name, value in values.items():
            p50, p95, n = value["p50_ms"], value["p95_ms"], value["n"]
            print(f"{leg:20} {name:14} p50 {p50:8.3f} ms   p95 {p95:8.3f} ms   (n={n})")
    before, after = results["machine"]["load_average_1m_before"], results["machine"]["load_average_1m_after"]
    print(f"load average (1 min): {before} before, {after} after")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
