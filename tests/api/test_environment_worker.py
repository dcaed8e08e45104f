"""The official SDK's own worker (``client.beta.environments.work.worker(...).run()``, i.e.
``anthropic.lib.environments.EnvironmentWorker``) serves Hangar's self-hosted sessions end to end:
it polls with the environment key, acks, heartbeats and streams with the item's sessions token,
runs bash/write/read/edit/glob/grep in its own workdir and posts ``user.tool_result``s. A worker
SIGKILLed mid-call loses its lease; the item goes back to the queue and a second worker finishes.

Each worker is a real process (``python -c WORKER``) so it can be killed like a crashed host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import BetaEnvironment, BetaManagedAgentsSession
from anthropic.types.beta.environments import BetaSelfHostedWork, BetaSelfHostedWorkQueueStats
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from hangar.testing import ServerProcess
from hangar.wire.common import parse_ts
from tests.api.test_work_queue import environment_key
from tests.conftest import API_KEY
from tests.helpers import strict

WORKER = """
import asyncio, logging, sys
import anthropic

base_url, environment_id, key, workdir, worker_id, max_idle = sys.argv[1:7]
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")


async def main() -> None:
    async with anthropic.AsyncAnthropic(base_url=base_url, api_key=key) as client:
        await client.beta.environments.work.worker(
            environment_id=environment_id,
            environment_key=key,
            workdir=workdir,
            worker_id=worker_id,
            max_idle=float(max_idle),
        ).run()


asyncio.run(main())
"""

TOOLSET = {"type": "agent_toolset_20260401"}


class Workers:
    """Worker processes of one test, each in its own process group (its bash children too)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, server: ServerProcess, env_id: str, key: str, workdir: Path, name: str, max_idle: float
    ) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "HANGAR_"))}
        log = (self.tmp_path / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, server.base_url, env_id, key, str(workdir), name, str(max_idle)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("*.log")))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        for proc in w.procs:
            w.kill(proc)


def directive(tool: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    text = f"[[tool:{tool} {json.dumps(tool_input)}]]"
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


def history(client: anthropic.Anthropic, sid: str, *, validate: bool = False) -> list[Any]:
    """The session's events; ``validate`` re-checks each strictly (slow: once per test, not in
    polling loops)."""
    events = list(client.beta.sessions.events.list(sid))
    return [strict(BetaManagedAgentsSessionEvent, e) for e in events] if validate else events


def wait_for(what: str, check: Callable[[], Any], workers: Workers, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n--- worker logs ---\n{workers.logs()}")


def end_turns(client: anthropic.Anthropic, sid: str, n: int, workers: Workers) -> list[Any]:
    """Wait until the session has ended ``n`` turns (idle with end_turn); its history."""

    def check() -> list[Any] | None:
        events = history(client, sid)
        done = [e for e in events if e.type == "session.status_idle" and e.stop_reason.type == "end_turn"]
        return events if len(done) >= n else None

    return wait_for(f"{n} ended turn(s) of {sid}", check, workers)  # type: ignore[no-any-return]


def result_text(event: Any) -> str:
    return "".join(block.text for block in event.content if block.type == "text")


def setup_session(client: anthropic.Anthropic, server: ServerProcess, name: str) -> tuple[str, str, str]:
    env = strict(BetaEnvironment, client.beta.environments.create(name=name, config={"type": "self_hosted"}))
    agent = client.beta.agents.create(name=f"{name}-agent", model="scripted", tools=[TOOLSET])  # type: ignore[list-item]
    session = strict(
        BetaManagedAgentsSession, client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    )
    return env.id, environment_key(server, env.id), session.id


def items_of(
    client: anthropic.Anthropic, key: str, server: ServerProcess, env_id: str
) -> list[BetaSelfHostedWork]:
    with anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0) as ek:
        return [strict(BetaSelfHostedWork, w) for w in ek.beta.environments.work.list(env_id)]


def test_sdk_worker_serves_a_session(
    server: ServerProcess, client: anthropic.Anthropic, workers: Workers, tmp_path: Path
) -> None:
    env_id, key, sid = setup_session(client, server, "sdk-worker")
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    # max_idle: the worker keeps serving between our turns, and leaves 5 s after the last.
    workers.start(server, env_id, key, workdir, "worker-one", max_idle=5.0)

    steps: list[tuple[str, dict[str, Any], Callable[[str], bool]]] = [
        (
            "bash",
            {"command": "mkdir -p src && echo 'alpha beta' > src/notes.txt && pwd"},
            lambda out: str(workdir.resolve()) in out,
        ),
        (
            "write",
            {"file_path": "src/hello.py", "content": "def hello():\n    return 'hi'\n"},
            lambda out: "hello.py" in out,
        ),
        ("read", {"file_path": "src/hello.py"}, lambda out: "return 'hi'" in out),
        (
            "edit",
            {"file_path": "src/hello.py", "old_string": "'hi'", "new_string": "'hello there'"},
            lambda out: "hello.py" in out,
        ),
        ("glob", {"pattern": "src/*.py"}, lambda out: "hello.py" in out and "notes.txt" not in out),
        ("grep", {"pattern": "hello there"}, lambda out: "hello.py" in out and "notes" not in out),
    ]
    for turn, (tool, tool_input, expect) in enumerate(steps, start=1):
        client.beta.sessions.events.send(sid, events=[directive(tool, tool_input)])  # type: ignore[list-item]
        events = end_turns(client, sid, turn, workers)
        uses = [e for e in events if e.type == "agent.tool_use"]
        results = {e.tool_use_id: e for e in events if e.type == "user.tool_result"}
        assert len(uses) == turn and uses[-1].name == tool and uses[-1].input == tool_input
        answer = results[uses[-1].id]
        out = result_text(answer)
        assert not answer.is_error, out
        assert expect(out), f"{tool}: {out!r}"
        # The model read the worker's result (the scripted summary quotes it).
        reply = [e for e in events if e.type == "agent.message"][-1]
        assert f"The {tool} tool returned:" in result_text(reply)

    events = history(client, sid, validate=True)
    assert "agent.tool_result" not in [e.type for e in events]  # the server ran nothing itself
    assert (workdir / "src" / "hello.py").read_text() == "def hello():\n    return 'hello there'\n"
    assert (workdir / "src" / "notes.txt").read_text() == "alpha beta\n"

    # Idle past max_idle: the worker force-stops its item.
    [first] = items_of(client, key, server, env_id)
    wait_for(
        "the worker to stop its item",
        lambda: (
            strict(
                BetaSelfHostedWork, client.beta.environments.work.retrieve(first.id, environment_id=env_id)
            ).state
            == "stopped"
        ),
        workers,
    )
    got = strict(BetaSelfHostedWork, client.beta.environments.work.retrieve(first.id, environment_id=env_id))
    assert got.acknowledged_at and got.started_at and got.latest_heartbeat_at and got.stopped_at

    # The dormant session gets a new message: a new item, which the same worker process serves.
    client.beta.sessions.events.send(sid, events=[directive("bash", {"command": "cat src/hello.py"})])  # type: ignore[list-item]
    events = end_turns(client, sid, len(steps) + 1, workers)
    last = [e for e in history(client, sid, validate=True) if e.type == "user.tool_result"][-1]
    assert "hello there" in result_text(last)
    items = wait_for(
        "both items stopped",
        lambda: (
            (found := items_of(client, key, server, env_id))
            and all(i.state == "stopped" for i in found)
            and found
        ),
        workers,
    )
    assert len(items) == 2 and {i.data.id for i in items} == {sid}
    stats = strict(BetaSelfHostedWorkQueueStats, client.beta.environments.work.stats(env_id))
    assert (stats.depth, stats.pending, stats.workers_polling) == (0, 0, 1)


def test_killed_worker_item_is_reclaimed_by_another(
    make_server: Any, workers: Workers, tmp_path: Path
) -> None:
    # A short lease so the dead worker's item returns to the queue within seconds.
    server: ServerProcess = make_server(env={"HANGAR_WORK_LEASE_TTL_SECONDS": "3"})
    with anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0) as client:
        env_id, key, sid = setup_session(client, server, "killed-worker")
        workdir = tmp_path / "shared-workdir"
        workdir.mkdir()
        first = workers.start(server, env_id, key, workdir, "worker-doomed", max_idle=60.0)

        # The first run of this command blocks; a second run (the reclaiming worker) finishes.
        command = (
            "if [ -f started ]; then echo served-by-the-second-worker; else touch started; sleep 120; fi"
        )
        client.beta.sessions.events.send(sid, events=[directive("bash", {"command": command})])  # type: ignore[list-item]
        wait_for("the first worker to start the command", (workdir / "started").exists, workers)
        [item] = items_of(client, key, server, env_id)

        def current() -> BetaSelfHostedWork:
            found: BetaSelfHostedWork = strict(
                BetaSelfHostedWork, client.beta.environments.work.retrieve(item.id, environment_id=env_id)
            )
            return found

        held = current()
        assert held.state == "active" and held.latest_heartbeat_at is not None
        workers.kill(first)  # crash: no stop, no more heartbeats
        killed_at = time.time()

        second = workers.start(server, env_id, key, workdir, "worker-rescuer", max_idle=1.0)
        end_turns(client, sid, 1, workers)
        events = history(client, sid, validate=True)
        results = [e for e in events if e.type == "user.tool_result"]
        assert len(results) == 1 and not results[0].is_error
        assert result_text(results[0]).strip() == "served-by-the-second-worker"
        reply = [e for e in events if e.type == "agent.message"][-1]
        assert "served-by-the-second-worker" in result_text(reply)

        # One item, served twice: acked again after the kill, then stopped by the second worker.
        wait_for("the rescuer to stop the item", lambda: current().state == "stopped", workers)
        final = current()
        [only] = items_of(client, key, server, env_id)
        assert only.id == item.id
        acked = final.acknowledged_at
        assert acked is not None
        assert parse_ts(acked, "acknowledged_at") / 1e6 > killed_at
        stats = strict(BetaSelfHostedWorkQueueStats, client.beta.environments.work.stats(env_id))
        assert stats.workers_polling == 2 and stats.depth == 0
        assert second.poll() is None  # the rescuer keeps polling for more work
