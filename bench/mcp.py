"""MCP benchmark: the overhead Hangar adds to an MCP tool call, against a direct call.

    python bench/mcp.py [--backends sqlite,postgres] [--calls 200] [--direct 500]
                        [--no-tunnel] [--tunnel-url URL] [--out bench/results/mcp.json]

A real `hangar serve` on loopback, the scripted model at zero latency, a real MCP server
(tests/mcp_servers.py, streamable HTTP, the `add` tool) and an agent whose `mcp_toolset` allows
every tool. Measures, per backend:
  direct_call      the `mcp` package's own client calling `add` on the same server over one
                   connection (the floor: what any MCP client pays).
  mcp_dispatch     from the events' own timestamps: agent.mcp_tool_result - span.model_request_end
                   of the request that asked for the tool (persist the call as running, call the
                   server through the session's pooled connection, start persisting the result).
  mcp_overhead     mcp_dispatch p50/p95 - direct_call p50/p95: what Hangar adds (target: p50 ≤ 3 ms).
  mcp_round        the next span.model_request_start - that span.model_request_end.
  turn_with_mcp / turn_without_mcp
                   a whole turn from the client clock (POST user.message → session.status_idle on
                   the stream), with the MCP call and without any tool, alternated in one session.
  tunnel_*         the Hangar cases once more with the agent's MCP URL on an MCP tunnel: a tunnel
                   made through the API (with a CA certificate), a real `hangar tunnel`
                   subprocess routing `bench=` to the same MCP server, and the agent's server URL
                   `https://bench.<tunnel domain>/mcp`. tunnel_overhead = tunnel_mcp_dispatch -
                   direct_call (what Hangar plus the relay add). `--no-tunnel` skips it;
                   `--tunnel-url URL` uses a tunnel set up outside this script instead.
Every loop is bounded in count and time; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx

# Run as `python bench/mcp.py`: this directory is on sys.path for runtime's and control_plane's
# helpers; then it is taken off again (runtime puts it first), because `import mcp` must find the
# SDK, not this file.
HERE = Path(__file__).resolve().parent
from control_plane import HEADERS, KEY, msg, report, run_backends  # noqa: E402
from runtime import IDLE, first, open_session, send, summary  # noqa: E402

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from hangar.sandbox.ca import SessionCA  # noqa: E402
from hangar.testing import ServerProcess  # noqa: E402
from hangar.testing.server import free_port  # noqa: E402

DEADLINE_S = 300
WARMUP = 10
TOOL = '[[tool:mcp__bench__add {"a": 1, "b": 2}]]'


async def direct_calls(url: str, calls: int) -> dict[str, Any]:
    """The `mcp` client calling the server directly: one connection, `calls` sequential calls."""
    from mcp import Client

    samples: list[float] = []
    deadline = time.monotonic() + DEADLINE_S
    async with Client(url) as client:
        for i in range(calls + WARMUP):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            result = await client.call_tool("add", {"a": 1, "b": i})
            elapsed = (time.perf_counter() - t0) * 1000
            if result.is_error:
                raise RuntimeError(f"direct add failed: {result}")
            if i >= WARMUP:
                samples.append(elapsed)
    return {"direct_calls": len(samples)} | summary("direct_call", samples)


async def setup(c: httpx.AsyncClient, url: str) -> tuple[str, str]:
    env = (await c.post("/v1/environments", json={"name": "bench-mcp"})).json()["id"]
    toolset = {
        "type": "mcp_toolset",
        "mcp_server_name": "bench",
        "default_config": {"permission_policy": {"type": "always_allow"}},
    }
    r = await c.post(
        "/v1/agents",
        json={
            "name": "bench-mcp",
            "model": "scripted",
            "mcp_servers": [{"type": "url", "name": "bench", "url": url}],
            "tools": [toolset],
        },
    )
    r.raise_for_status()
    return str(r.json()["id"]), env


async def hangar_calls(c: httpx.AsyncClient, url: str, calls: int, prefix: str = "") -> dict[str, Any]:
    agent, env = await setup(c, url)
    sid, stream = await open_session(c, agent, env)
    dispatch: list[float] = []
    round_leg: list[float] = []
    turns: dict[bool, list[float]] = {True: [], False: []}
    deadline = time.monotonic() + DEADLINE_S
    try:
        for i in range(calls + WARMUP):
            if time.monotonic() > deadline:
                break
            for tool in (True, False):
                t0 = time.perf_counter()
                await send(c, sid, msg(f"{TOOL} turn {i}" if tool else f"turn {i}"))
                frames = await stream.until(IDLE)
                if tool:
                    end = first(frames, "span.model_request_end")
                    result = first(frames, "agent.mcp_tool_result", end)
                    restart = first(frames, "span.model_request_start", result)
                    if frames[result].data.get("is_error"):
                        raise RuntimeError(f"the MCP call failed: {frames[result].data}")
                if i < WARMUP:
                    continue
                turns[tool].append((frames[-1].at - t0) * 1000)
                if tool:
                    dispatch.append((frames[result].processed_us - frames[end].processed_us) / 1000)
                    round_leg.append((frames[restart].processed_us - frames[end].processed_us) / 1000)
    finally:
        await stream.close()
    out: dict[str, Any] = {f"{prefix}mcp_calls_measured": len(dispatch)}
    out |= summary(f"{prefix}mcp_dispatch", dispatch)
    out |= summary(f"{prefix}mcp_round", round_leg)
    out |= summary(f"{prefix}turn_with_mcp", turns[True])
    out |= summary(f"{prefix}turn_without_mcp", turns[False])
    return out


@contextmanager
def mcp_server() -> Iterator[str]:
    """tests/mcp_servers.py's server (streamable HTTP) in a child process; yields its URL."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.mcp_servers", "streamable_http", str(port)],
        cwd=HERE.parent,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MCP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        child.terminate()
        child.wait(10)


@asynccontextmanager
async def mcp_tunnel(c: httpx.AsyncClient, server_url: str, mcp_url: str) -> AsyncIterator[str]:
    """A tunnel made through the API (with a CA certificate) and a `hangar tunnel` subprocess
    routing `bench` to the MCP server; yields the agent-side URL of that server."""
    r = await c.post("/v1/tunnels", json={"display_name": "bench"})
    r.raise_for_status()
    tunnel = r.json()
    ca = SessionCA("bench-tunnel")
    r = await c.post(
        f"/v1/tunnels/{tunnel['id']}/certificates", json={"ca_certificate_pem": ca.cert_pem.decode()}
    )
    r.raise_for_status()
    r = await c.post(f"/v1/tunnels/{tunnel['id']}/reveal_token")
    r.raise_for_status()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANGAR_")}
    env["HANGAR_TUNNEL_TOKEN"] = r.json()["tunnel_token"]  # not on the command line
    route = "bench=" + mcp_url.removesuffix("/mcp")
    with tempfile.NamedTemporaryFile(prefix="hangar-bench-tunnel-", suffix=".log") as log:
        relay = subprocess.Popen(
            [sys.executable, "-m", "hangar", "tunnel", "--server", server_url, "--route", route],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while b"connected: tunnel" not in Path(log.name).read_bytes():
                if relay.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"hangar tunnel did not connect:\n{Path(log.name).read_text()}")
                await asyncio.sleep(0.05)
            yield f"https://bench.{tunnel['domain']}/mcp"
        finally:
            relay.terminate()
            relay.wait(10)
            await c.post(f"/v1/tunnels/{tunnel['id']}/archive")


async def tunnel_calls(
    c: httpx.AsyncClient, srv: ServerProcess, mcp_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The Hangar cases through an MCP tunnel (`--tunnel-url`, else one set up here)."""
    if args.tunnel_url:
        return await hangar_calls(c, str(args.tunnel_url), args.calls, prefix="tunnel_")
    async with mcp_tunnel(c, srv.base_url, mcp_url) as url:
        return await hangar_calls(c, url, args.calls, prefix="tunnel_")


async def run_backend(
    name: str, db_url: str | None, args: argparse.Namespace, mcp_url: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"hangar-bench-mcp-{name}-") as tmp:
        srv = ServerProcess(
            Path(tmp), api_key=KEY, database_url=db_url, env={"HANGAR_LOG_LEVEL": "warning"}
        ).start()
        try:
            limits = httpx.Limits(keepalive_expiry=2)  # below uvicorn's 5 s keep-alive
            async with httpx.AsyncClient(
                base_url=srv.base_url, headers=HEADERS, limits=limits, timeout=60
            ) as c:
                out: dict[str, Any] = {"backend": name, "loadavg_1m_start": os.getloadavg()[0]}
                out |= await direct_calls(mcp_url, args.direct)
                out |= await hangar_calls(c, mcp_url, args.calls)
                for q in ("p50", "p95"):
                    out[f"mcp_overhead_{q}_ms"] = out[f"mcp_dispatch_{q}_ms"] - out[f"direct_call_{q}_ms"]
                if args.tunnel or args.tunnel_url:
                    out |= await tunnel_calls(c, srv, mcp_url, args)
                    for q in ("p50", "p95"):
                        out[f"tunnel_overhead_{q}_ms"] = (
                            out[f"tunnel_mcp_dispatch_{q}_ms"] - out[f"direct_call_{q}_ms"]
                        )
                out["loadavg_1m_end"] = os.getloadavg()[0]
                return out
        finally:
            srv.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--calls", type=int, default=200, help="turns with an MCP call (and as many without)")
    p.add_argument("--direct", type=int, default=500, help="direct calls with the mcp client")
    p.add_argument(
        "--no-tunnel", dest="tunnel", action="store_false", help="skip the cases through an MCP tunnel"
    )
    p.add_argument("--tunnel-url", default=None, help="use this tunnel URL to the same MCP server")
    p.add_argument("--out", default="bench/results/mcp.json")
    args = p.parse_args()
    with mcp_server() as mcp_url:
        results = run_backends(
            args.backends, lambda name, url: asyncio.run(run_backend(name, url, args, mcp_url)), "bench_mcp"
        )
    report(results, args.out, "(target: mcp_overhead_p50_ms <= 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
