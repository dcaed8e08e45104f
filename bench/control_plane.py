"""Control-plane benchmark: a real `hangar serve` on loopback, the scripted model at zero latency.

    python bench/control_plane.py [--backends sqlite,postgres] [--turns 200] [--sessions 100]
                                  [--idle-sessions 10000] [--out bench/results/control_plane.json]

Measures, per backend:
  (a) server overhead per turn: POST user.message → `session.status_idle` seen on the stream,
      p50/p95 over N sequential turns;
  (b) turns/s with M sessions running turns in parallel;
  (c) events/s appended (batches of 50 user.message per POST) and delivered to a live stream;
  (d) server RSS before and after storing K idle sessions.
Every loop is bounded in count and time; all traffic stays on 127.0.0.1.

The client is aiohttp, not httpx (which the other scripts use): the client shares the two cores
with the server and its own time lies on every measured path. On this machine a GET /healthz
round trip takes 0.56 ms with aiohttp (0.2 ms of client CPU) against 1.4-1.9 ms with httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from hangar.testing import PostgresCluster, ServerProcess

KEY = "sk-hangar-bench-" + "b" * 32
HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
DEADLINE_S = 300


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def msg(text: str) -> dict[str, Any]:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


class Api:
    """This script's client (aiohttp, see the module docstring): JSON in, JSON out."""

    def __init__(self, base_url: str) -> None:
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them, or
        # a request could race the server's close.
        connector = aiohttp.TCPConnector(limit=400, keepalive_timeout=2)
        self.s = aiohttp.ClientSession(
            base_url=base_url,
            headers=HEADERS,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.s.post(path, json=body) as r:
            r.raise_for_status()
            return await r.json()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        async with self.s.get(path, params=params) as r:
            r.raise_for_status()
            return await r.json()

    async def close(self) -> None:
        await self.s.close()


async def setup(c: Api) -> tuple[str, str]:
    env = (await c.post("/v1/environments", {"name": "bench"}))["id"]
    agent = (await c.post("/v1/agents", {"name": "bench", "model": "scripted"}))["id"]
    return agent, env


async def open_session(c: Api, agent: str, env: str) -> str:
    return str((await c.post("/v1/sessions", {"agent": agent, "environment_id": env}))["id"])


class Stream:
    """A live SSE reader that signals each `session.status_idle` and counts frames."""

    def __init__(self, c: Api, session_id: str) -> None:
        self.c = c
        self.session_id = session_id
        self.idle = asyncio.Queue[float]()
        self.frames = 0
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        # Count frames on raw bytes rather than splitting lines: the benchmark measures the
        # server, not the client's SSE parser (both share this machine's two cores).
        url = f"/v1/sessions/{self.session_id}/events/stream"
        idle = b"\nevent: session.status_idle\n"
        tail = b""
        forever = aiohttp.ClientTimeout(total=None)
        async with self.c.s.get(url, timeout=forever, headers={"accept": "text/event-stream"}) as resp:
            resp.raise_for_status()
            self.ready.set()
            async for chunk in resp.content.iter_any():
                data = tail + chunk
                self.frames += data.count(b"\nevent: ") - tail.count(b"\nevent: ")
                now = time.perf_counter()
                for _ in range(data.count(idle) - tail.count(idle)):
                    self.idle.put_nowait(now)
                tail = data[-64:]

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def turn_latency(c: Api, agent: str, env: str, turns: int) -> dict[str, float]:
    sid = await open_session(c, agent, env)
    stream = Stream(c, sid)
    await stream.ready.wait()
    samples: list[float] = []
    deadline = time.monotonic() + DEADLINE_S
    for i in range(turns + 10):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        await c.post(f"/v1/sessions/{sid}/events", {"events": [msg(f"turn {i}")]})
        t1 = await asyncio.wait_for(stream.idle.get(), 30)
        if i >= 10:  # warm-up
            samples.append((t1 - t0) * 1000)
    await stream.close()
    return {
        "turn_p50_ms": pct(samples, 0.5),
        "turn_p95_ms": pct(samples, 0.95),
        "turns_measured": len(samples),
    }


async def parallel_turns(c: Api, agent: str, env: str, sessions: int, rounds: int) -> dict[str, float]:
    sids = await asyncio.gather(*(open_session(c, agent, env) for _ in range(sessions)))
    streams = [Stream(c, s) for s in sids]
    await asyncio.gather(*(s.ready.wait() for s in streams))

    async def run(sid: str, stream: Stream) -> int:
        done = 0
        for i in range(rounds):
            await c.post(f"/v1/sessions/{sid}/events", {"events": [msg(f"r{i}")]})
            await asyncio.wait_for(stream.idle.get(), 60)
            done += 1
        return done

    t0 = time.perf_counter()
    done = await asyncio.gather(*(run(s, st) for s, st in zip(sids, streams, strict=True)))
    elapsed = time.perf_counter() - t0
    for st in streams:
        await st.close()
    return {"parallel_sessions": sessions, "parallel_turns_per_s": sum(done) / elapsed}


async def event_throughput(c: Api, agent: str, env: str, posts: int) -> dict[str, float]:
    sid = await open_session(c, agent, env)
    stream = Stream(c, sid)
    await stream.ready.wait()
    t0 = time.perf_counter()
    for i in range(posts):
        await c.post(f"/v1/sessions/{sid}/events", {"events": [msg(f"e{i}-{j}") for j in range(50)]})
    appended_s = time.perf_counter() - t0
    # Wait until the loop has consumed everything and the stream has delivered it all.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        s = await c.get(f"/v1/sessions/{sid}")
        total = len((await c.get(f"/v1/sessions/{sid}/events", {"limit": 1, "order": "desc"}))["data"])
        newest_input = {"types[]": "user.message", "order": "desc", "limit": 1}
        pending = (await c.get(f"/v1/sessions/{sid}/events", newest_input))["data"]
        if s["status"] == "idle" and total and pending and pending[0]["processed_at"]:
            break
        await asyncio.sleep(0.05)
    # Count every stored event and wait for the stream to have delivered all of them.
    count = 0
    page: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if page:
            params["page"] = page
        body = await c.get(f"/v1/sessions/{sid}/events", params)
        count += len(body["data"])
        page = body["next_page"]
        if not page:
            break
    while stream.frames < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - t0
    await stream.close()
    return {
        "events_appended_via_api_per_s": posts * 50 / appended_s,
        "events_total": count,
        "events_delivered_per_s": stream.frames / elapsed,
    }


async def idle_memory(c: Api, agent: str, env: str, pid: int, count: int) -> dict[str, float]:
    before = rss_mb(pid)
    sem = asyncio.Semaphore(16)

    async def one() -> None:
        async with sem:
            await open_session(c, agent, env)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    created_s = time.perf_counter() - t0
    await asyncio.sleep(1)
    after = rss_mb(pid)
    return {
        "idle_sessions": count,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_per_1000_sessions_mb": (after - before) / count * 1000,
        "session_creates_per_s": count / created_s,
    }


async def run_backend(name: str, url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"hangar-bench-{name}-") as tmp:
        srv = ServerProcess(
            Path(tmp), api_key=KEY, database_url=url, env={"HANGAR_LOG_LEVEL": "warning"}
        ).start()
        try:
            assert srv.proc is not None
            c = Api(srv.base_url)
            try:
                agent, env = await setup(c)
                out: dict[str, Any] = {"backend": name}
                out |= await turn_latency(c, agent, env, args.turns)
                out |= await parallel_turns(c, agent, env, args.sessions, args.rounds)
                out |= await event_throughput(c, agent, env, args.posts)
                out |= await idle_memory(c, agent, env, srv.proc.pid, args.idle_sessions)
                return out
            finally:
                await c.close()
        finally:
            srv.stop()


def run_backends(
    backends: str, run: Callable[[str, str | None], dict[str, Any]], db_name: str
) -> list[dict[str, Any]]:
    """``run(backend, database_url)`` for each of the comma-separated ``backends``, PostgreSQL in
    a throwaway cluster started once (``database_url`` ``None``: SQLite)."""
    results = []
    cluster: PostgresCluster | None = None
    try:
        for backend in [b.strip() for b in backends.split(",") if b.strip()]:
            url = None
            if backend == "postgres":
                cluster = cluster or PostgresCluster().start()
                url = cluster.create_database(db_name)
            results.append(run(backend, url))
    finally:
        if cluster:
            cluster.stop()
    return results


def report(results: list[dict[str, Any]], out_path: str | Path, note: str = "") -> None:
    """Print one row per metric and one column per backend, and write the JSON results."""
    keys = [k for k in results[0] if k != "backend"]
    print(f"{'metric':34}" + "".join(f"{r['backend']:>14}" for r in results))
    for k in keys:
        print(
            f"{k:34}"
            + "".join(f"{r[k]:>14.2f}" if isinstance(r[k], float) else f"{r[k]:>14}" for r in results)
        )
    if note:
        print(note)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}, indent=2)
    )
    print(f"wrote {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--turns", type=int, default=200)
    p.add_argument("--sessions", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--posts", type=int, default=100)
    p.add_argument("--idle-sessions", type=int, default=10_000)
    p.add_argument("--out", default="bench/results/control_plane.json")
    args = p.parse_args()
    results = run_backends(
        args.backends, lambda name, url: asyncio.run(run_backend(name, url, args)), "bench"
    )
    report(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
