"""Runtime benchmark: a real `hangar serve` on loopback, the scripted model at zero latency, an
agent with the built-in toolset (`agent_toolset_20260401`, workspace executor, always_allow).

    python bench/runtime.py [--backends sqlite,postgres] [--turns 200] [--interrupts 20]
                            [--out bench/results/runtime.json]

Measures, per backend:
  (a) tool round trip. Each tool turn asks the model for `bash {"command": "true"}` once; the
      next request gets the text reply. From the events' own timestamps (`processed_at`, the
      start of the transaction that wrote them):
        tool_dispatch  = agent.tool_result - span.model_request_end (of the request that asked
                         for the tool): persist the call as running, run it, start persisting
                         the result. `true` is a shell builtin, so this is all overhead;
        tool_round     = the next span.model_request_start - that span.model_request_end: the
                         whole leg from the model's tool_use back to the next model request.
      From the client clock: a whole turn (POST user.message → `session.status_idle` on the
      stream) with the tool and without it, alternated in one session, and their difference;
      `*_server` is the same turn from the events' timestamps (session.status_running → idle).
  (b) interrupt latency: a turn whose tool is `sleep 30` (after `agent.tool_use` is on the
      stream, plus --settle-ms so the process is running) or whose model request sleeps 30 s
      (`[[sleep:30000]]`, after `span.model_request_start`); then POST `user.interrupt` and time
      until `session.status_idle` arrives on the stream. One fresh session per sample.
Every loop is bounded in count and time; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

# Run as `python bench/runtime.py`: this directory is on sys.path; share control_plane's helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from control_plane import HEADERS, KEY, msg, pct, report, run_backends

from hangar.testing import ServerProcess

DEADLINE_S = 300
WAIT_S = 30
TOOLSET = [{"type": "agent_toolset_20260401"}]
TOOL_TRUE = '[[tool:bash {"command":"true"}]]'
TOOL_SLEEP = '[[tool:bash {"command":"sleep 30"}]]'
MODEL_SLEEP = "[[sleep:30000]]"
IDLE = "session.status_idle"


async def new_session(c: httpx.AsyncClient, agent: str, env: str) -> str:
    r = await c.post("/v1/sessions", json={"agent": agent, "environment_id": env})
    r.raise_for_status()
    return str(r.json()["id"])


def micros(stamp: str) -> int:
    dt = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


@dataclass(frozen=True)
class Frame:
    at: float  # client perf_counter when the chunk holding the frame arrived
    type: str
    data: dict[str, Any]

    @property
    def processed_us(self) -> int:
        return micros(self.data["processed_at"])


class EventStream:
    """A live SSE reader on raw bytes (as control_plane.Stream) that keeps every frame's type and
    data, so a turn's events and their `processed_at` can be read back in order."""

    def __init__(self, c: httpx.AsyncClient, session_id: str) -> None:
        self.c = c
        self.session_id = session_id
        self.frames = asyncio.Queue[Frame]()
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        url = f"/v1/sessions/{self.session_id}/events/stream"
        buf = b""
        async with self.c.stream("GET", url, timeout=None) as resp:
            resp.raise_for_status()
            self.ready.set()
            async for chunk in resp.aiter_bytes():
                now = time.perf_counter()
                buf += chunk
                *complete, buf = buf.split(b"\n\n")
                for raw in complete:
                    kind = data = None
                    for line in raw.split(b"\n"):
                        if line.startswith(b"event: "):
                            kind = line[7:].decode()
                        elif line.startswith(b"data: "):
                            data = line[6:]
                    if kind and data:
                        self.frames.put_nowait(Frame(now, kind, json.loads(data)))

    async def until(self, kind: str, timeout: float = WAIT_S) -> list[Frame]:
        """Frames up to and including the next one of type `kind`."""
        seen: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frames.get()
                seen.append(frame)
                if frame.type == kind:
                    return seen

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def setup(c: httpx.AsyncClient) -> tuple[str, str]:
    env = (await c.post("/v1/environments", json={"name": "bench-runtime"})).json()["id"]
    r = await c.post("/v1/agents", json={"name": "bench-runtime", "model": "scripted", "tools": TOOLSET})
    r.raise_for_status()
    return str(r.json()["id"]), env


async def open_session(c: httpx.AsyncClient, agent: str, env: str) -> tuple[str, EventStream]:
    sid = await new_session(c, agent, env)
    stream = EventStream(c, sid)
    await asyncio.wait_for(stream.ready.wait(), WAIT_S)
    return sid, stream


async def send(c: httpx.AsyncClient, sid: str, event: dict[str, Any]) -> None:
    r = await c.post(f"/v1/sessions/{sid}/events", json={"events": [event]})
    r.raise_for_status()


def first(frames: list[Frame], kind: str, start: int = 0) -> int:
    return next(i for i in range(start, len(frames)) if frames[i].type == kind)


def summary(prefix: str, samples: list[float]) -> dict[str, float]:
    if not samples:
        return {f"{prefix}_p50_ms": float("nan"), f"{prefix}_p95_ms": float("nan")}
    return {f"{prefix}_p50_ms": pct(samples, 0.5), f"{prefix}_p95_ms": pct(samples, 0.95)}


async def tool_round_trip(c: httpx.AsyncClient, agent: str, env: str, turns: int) -> dict[str, Any]:
    sid, stream = await open_session(c, agent, env)
    dispatch: list[float] = []
    round_leg: list[float] = []
    with_tool: list[float] = []
    without_tool: list[float] = []
    server: dict[bool, list[float]] = {True: [], False: []}
    deadline = time.monotonic() + DEADLINE_S
    warmup = 10
    try:
        for i in range(turns + warmup):
            if time.monotonic() > deadline:
                break
            for tool in (True, False):
                t0 = time.perf_counter()
                await send(c, sid, msg(f"{TOOL_TRUE} turn {i}" if tool else f"turn {i}"))
                frames = await stream.until(IDLE)
                elapsed = (frames[-1].at - t0) * 1000
                if i < warmup:
                    continue
                (with_tool if tool else without_tool).append(elapsed)
                running = frames[first(frames, "session.status_running")]
                server[tool].append((frames[-1].processed_us - running.processed_us) / 1000)
                if not tool:
                    continue
                end = first(frames, "span.model_request_end")
                result = first(frames, "agent.tool_result", end)
                restart = first(frames, "span.model_request_start", result)
                if frames[result].data.get("is_error"):
                    raise RuntimeError(f"bash true failed: {frames[result].data}")
                dispatch.append((frames[result].processed_us - frames[end].processed_us) / 1000)
                round_leg.append((frames[restart].processed_us - frames[end].processed_us) / 1000)
    finally:
        await stream.close()
    out: dict[str, Any] = {"tool_turns_measured": len(with_tool)}
    out |= summary("tool_dispatch", dispatch)
    out |= summary("tool_round", round_leg)
    out |= summary("turn_with_tool", with_tool)
    out |= summary("turn_without_tool", without_tool)
    out |= summary("turn_with_tool_server", server[True])
    out |= summary("turn_without_tool_server", server[False])
    out["tool_share_of_turn_p50_ms"] = out["turn_with_tool_p50_ms"] - out["turn_without_tool_p50_ms"]
    return out


async def interrupt_latency(
    c: httpx.AsyncClient, agent: str, env: str, samples: int, settle_ms: float
) -> dict[str, Any]:
    cases = {
        "interrupt_tool": (TOOL_SLEEP, "agent.tool_use"),
        "interrupt_model": (MODEL_SLEEP, "span.model_request_start"),
    }
    out: dict[str, Any] = {}
    deadline = time.monotonic() + DEADLINE_S
    for name, (text, started) in cases.items():
        client_ms: list[float] = []
        server_ms: list[float] = []
        for i in range(samples + 1):  # the first is a warm-up
            if time.monotonic() > deadline:
                break
            sid, stream = await open_session(c, agent, env)
            try:
                await send(c, sid, msg(f"{text} interrupt {i}"))
                await stream.until(started)
                await asyncio.sleep(settle_ms / 1000)
                t0 = time.perf_counter()
                await send(c, sid, {"type": "user.interrupt"})
                frames = await stream.until(IDLE)
            finally:
                await stream.close()
            if name == "interrupt_tool":
                result = frames[first(frames, "agent.tool_result")]
                if "interrupted" not in json.dumps(result.data["content"]):
                    raise RuntimeError(f"the tool was not interrupted: {result.data}")
            if i == 0:
                continue
            client_ms.append((frames[-1].at - t0) * 1000)
            marker = frames[first(frames, "user.interrupt")]
            server_ms.append((frames[-1].processed_us - marker.processed_us) / 1000)
        out |= summary(name, client_ms)
        out |= summary(f"{name}_server", server_ms)
        out[f"{name}_samples"] = len(client_ms)
    return out


async def run_backend(name: str, url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"hangar-bench-runtime-{name}-") as tmp:
        srv = ServerProcess(
            Path(tmp), api_key=KEY, database_url=url, env={"HANGAR_LOG_LEVEL": "warning"}
        ).start()
        try:
            # keepalive_expiry below uvicorn's 5 s keep-alive: see control_plane.run_backend.
            limits = httpx.Limits(keepalive_expiry=2)
            async with httpx.AsyncClient(
                base_url=srv.base_url, headers=HEADERS, limits=limits, timeout=60
            ) as c:
                agent, env = await setup(c)
                # Other work on the machine shares its cores: record how busy it was.
                out: dict[str, Any] = {"backend": name, "loadavg_1m_start": os.getloadavg()[0]}
                out |= await tool_round_trip(c, agent, env, args.turns)
                out |= await interrupt_latency(c, agent, env, args.interrupts, args.settle_ms)
                out["loadavg_1m_end"] = os.getloadavg()[0]
                return out
        finally:
            srv.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--turns", type=int, default=200, help="tool turns (and as many turns without)")
    p.add_argument("--interrupts", type=int, default=20, help="samples per interrupt case")
    p.add_argument("--settle-ms", type=float, default=50, help="wait after the start event")
    p.add_argument("--out", default="bench/results/runtime.json")
    args = p.parse_args()
    results = run_backends(
        args.backends, lambda name, url: asyncio.run(run_backend(name, url, args)), "bench_runtime"
    )
    report(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
