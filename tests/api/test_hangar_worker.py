"""``hangar worker``: a real ``hangar serve`` with a self-hosted environment, real ``hangar worker``
processes serving its sessions in bubblewrap sandboxes over the work queue.

The scripted model calls the tools (``[[tool:NAME {...}]]`` directives); every result comes back
as a ``user.tool_result`` from the worker, and ``bash`` demonstrably ran in the sandbox (hostname
``sandbox``, an unprivileged uid, ``/workspace``, the configured networking). A SIGTERMed worker
finishes the call in flight, stops its item, closes its sandboxes and exits 0; a SIGKILLed
worker's item is reclaimed by a second worker once its lease lapses.

One server per module (SQLite: the worker does not touch the database; the work queue is tested
on both backends in ``test_work_queue``/``test_environment_worker``), with a short lease so a
dead worker's item comes back within seconds.
"""

from __future__ import annotations

import os
import shutil
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
from anthropic.types.beta.environments import BetaSelfHostedWork

from hangar.testing import ServerProcess
from hangar.wire.common import parse_ts
from tests.api.test_environment_worker import directive, history, items_of, result_text
from tests.api.test_work_queue import environment_key
from tests.conftest import API_KEY
from tests.helpers import strict

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

LEASE_TTL_S = 5
TOOLSET = {"type": "agent_toolset_20260401"}


@pytest.fixture(scope="module")
def hangar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("hangar-worker-server")
    proc = ServerProcess(data_dir, api_key=API_KEY, env={"HANGAR_WORK_LEASE_TTL_SECONDS": str(LEASE_TTL_S)})
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def api(hangar: ServerProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=hangar.base_url, api_key=API_KEY, max_retries=0) as c:
        yield c


class Workers:
    """``hangar worker`` processes of one test, each in its own process group."""

    def __init__(self, tmp_path: Path, server: ServerProcess) -> None:
        self.tmp_path = tmp_path
        self.server = server
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, env_id: str, key: str, data_dir: Path, *args: str, path: str | None = None
    ) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "HANGAR_"))}
        env |= {"HANGAR_WORKER_KEY": key, "PYTHONUNBUFFERED": "1"}
        if path is not None:
            env["PATH"] = path
        cmd = [sys.executable, "-m", "hangar", "worker", "--environment", env_id]
        cmd += ["--server", self.server.base_url, "--data-dir", str(data_dir), "--worker-id", name, *args]
        log = (self.tmp_path / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace") for p in self.tmp_path.glob("*.log")
        )

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}\n--- server\n{self.server.log()}")


@pytest.fixture
def workers(tmp_path: Path, hangar: ServerProcess) -> Iterator[Workers]:
    w = Workers(tmp_path, hangar)
    try:
        yield w
    finally:
        for proc in w.procs:
            w.kill(proc)


def self_hosted(api: anthropic.Anthropic, server: ServerProcess, name: str) -> tuple[str, str, str]:
    """A self-hosted environment, its key and a scripted agent with the toolset."""
    env = strict(BetaEnvironment, api.beta.environments.create(name=name, config={"type": "self_hosted"}))
    agent = api.beta.agents.create(name=f"{name}-agent", model="scripted", tools=[TOOLSET])  # type: ignore[list-item]
    return env.id, environment_key(server, env.id), agent.id


def new_session(api: anthropic.Anthropic, agent_id: str, env_id: str) -> str:
    session: BetaManagedAgentsSession = strict(
        BetaManagedAgentsSession, api.beta.sessions.create(agent=agent_id, environment_id=env_id)
    )
    return session.id


def call(
    api: anthropic.Anthropic, sid: str, workers: Workers, tool: str, tool_input: dict[str, Any]
) -> tuple[str, bool]:
    """Have the model call ``tool``; the worker's result (text, is_error) once the turn ended."""
    turns = len(ended_turns(api, sid))
    api.beta.sessions.events.send(sid, events=[directive(tool, tool_input)])  # type: ignore[list-item]
    workers.wait_for(f"{tool} in {sid}", lambda: len(ended_turns(api, sid)) > turns)
    events = history(api, sid)
    [use] = [e for e in events if e.type == "agent.tool_use"][-1:]
    assert use.name == tool and use.input == tool_input
    [result] = [e for e in events if e.type == "user.tool_result" and e.tool_use_id == use.id]
    reply = [e for e in events if e.type == "agent.message"][-1]
    verb = "failed" if result.is_error else "returned"
    assert f"The {tool} tool {verb}:" in result_text(reply)  # the model read the worker's result
    return result_text(result), bool(result.is_error)


def ended_turns(api: anthropic.Anthropic, sid: str) -> list[Any]:
    return [
        e for e in history(api, sid) if e.type == "session.status_idle" and e.stop_reason.type == "end_turn"
    ]


def item_states(
    api: anthropic.Anthropic, key: str, server: ServerProcess, env_id: str
) -> dict[str, list[str]]:
    """Each session's items' states, oldest first."""
    states: dict[str, list[str]] = {}
    for item in sorted(items_of(api, key, server, env_id), key=lambda i: i.created_at):
        states.setdefault(item.data.id, []).append(item.state)
    return states


def served_and_stopped(states: list[str]) -> bool:
    """The worker stopped the item it served. When it left while the turn was still running (the
    model answering the last result), the server queued another item for the next worker."""
    return states[0] == "stopped" and all(s == "queued" for s in states[1:]) and len(states) <= 2


def processes_running(marker: str) -> list[int]:
    """Pids whose command line is exactly ``marker`` (e.g. ``sleep 97.25``)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if cmdline == marker:
                found.append(int(entry))
    return found


def test_worker_serves_sessions_in_sandboxes(
    api: anthropic.Anthropic, hangar: ServerProcess, workers: Workers, tmp_path: Path
) -> None:
    env_id, key, agent_id = self_hosted(api, hangar, "hangar-worker")
    first, second = new_session(api, agent_id, env_id), new_session(api, agent_id, env_id)
    data_dir = tmp_path / "worker-data"
    worker = workers.start(
        "worker-limited",
        env_id,
        key,
        data_dir,
        "--max-sessions",
        "2",
        "--network",
        "limited",
        "--max-idle",
        "60",
    )

    out, err = call(
        api,
        first,
        workers,
        "bash",
        {"command": "echo host=$(uname -n) uid=$(id -u) pwd=$(pwd); mkdir -p src"},
    )
    assert not err and "host=sandbox" in out and "pwd=/workspace" in out, out
    uid = int(out.split("uid=")[1].split()[0])
    assert uid != 0
    out, err = call(
        api,
        first,
        workers,
        "write",
        {"file_path": "src/hello.py", "content": "def hello():\n    return 'hi'\n"},
    )
    assert not err and "hello.py" in out, out
    out, err = call(api, first, workers, "read", {"file_path": "/workspace/src/hello.py"})
    assert not err and "return 'hi'" in out, out
    out, err = call(
        api,
        first,
        workers,
        "edit",
        {"file_path": "src/hello.py", "old_string": "'hi'", "new_string": "'hello there'"},
    )
    assert not err and "hello.py" in out, out
    out, err = call(api, first, workers, "bash", {"command": "echo 'alpha beta' > src/notes.txt; ls -n src"})
    assert not err and f" {uid} " in out, out  # the host-side file tools gave their files to the sandbox
    out, err = call(api, first, workers, "glob", {"pattern": "src/*.py"})
    assert not err and "/workspace/src/hello.py" in out and "notes" not in out, out
    out, err = call(api, first, workers, "grep", {"pattern": "hello there"})
    assert not err and "hello.py" in out and "notes" not in out, out
    out, err = call(api, first, workers, "read", {"file_path": "../../../../etc/hostname"})
    assert err and out.startswith("read:"), out

    # limited networking: no direct route out (not even to the server on this host's loopback),
    # and the egress proxy refuses a host the worker does not allow.
    command = (
        f"curl -sS -m 5 -o /dev/null -w 'direct=%{{http_code}}\\n' {hangar.base_url}/healthz; "
        "curl -sS -m 5 -o /dev/null -w 'proxied=%{http_code}\\n' http://blocked.example/; echo proxy=$HTTP_PROXY"
    )
    out, err = call(api, first, workers, "bash", {"command": command})
    assert "direct=000" in out and "proxied=403" in out and "proxy=http://127.0.0.1:3128" in out, out

    # web_fetch (which the SDK's own worker leaves unanswered) runs on the worker under the same rules.
    out, err = call(api, first, workers, "web_fetch", {"url": "http://blocked.example/"})
    assert err and out.startswith("web_fetch:") and "blocked.example" in out, out

    # The second session is served at the same time (--max-sessions 2), in a sandbox of its own
    # that does not see the first session's workspace.
    out, err = call(
        api, second, workers, "bash", {"command": "uname -n; ls -A /workspace; ls /workspace/src"}
    )
    assert err and out.startswith("bash: exit code 2\nsandbox\nls: ") and "No such file" in out, out

    assert "agent.tool_result" not in {e.type for e in history(api, first, validate=True)}
    workspace = data_dir / "workspaces" / first
    assert (workspace / "src" / "hello.py").read_text() == "def hello():\n    return 'hello there'\n"
    assert (workspace / "src" / "notes.txt").read_text() == "alpha beta\n"
    assert item_states(api, key, hangar, env_id) == {first: ["active"], second: ["active"]}

    # SIGTERM while idle: both items stopped, the sandboxes gone, status 0.
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, workers.logs()
    assert item_states(api, key, hangar, env_id) == {first: ["stopped"], second: ["stopped"]}
    log = workers.logs()
    assert f"session {first}: sandbox closed" in log and f"session {second}: sandbox closed" in log
    assert "Traceback" not in log, log


def test_sigterm_finishes_the_call_in_flight_and_sigkill_is_reclaimed(
    api: anthropic.Anthropic, hangar: ServerProcess, workers: Workers, tmp_path: Path
) -> None:
    # Each case has an environment of its own: an item the server queues again for a session a
    # worker left mid-turn must not keep the next case's worker busy.

    # SIGTERM during a bash call (unrestricted networking: the server is reachable): the call
    # finishes and its result is posted; a process it left in the background dies with the sandbox.
    env_id, key, agent_id = self_hosted(api, hangar, "worker-drained")
    sid = new_session(api, agent_id, env_id)
    data_dir = tmp_path / "drained"
    worker = workers.start("worker-drained", env_id, key, data_dir, "--max-idle", "60")
    command = (
        "(sleep 83.25 >/dev/null 2>&1 &); touch started; "
        f"curl -sS -m 5 -o /dev/null -w 'net=%{{http_code}} ' {hangar.base_url}/healthz; sleep 3; echo drained-ok"
    )
    api.beta.sessions.events.send(sid, events=[directive("bash", {"command": command})])  # type: ignore[list-item]
    workers.wait_for("the command to start", (data_dir / "workspaces" / sid / "started").exists)
    worker.send_signal(signal.SIGTERM)
    workers.wait_for("the turn to end", lambda: ended_turns(api, sid))
    assert worker.wait(30) == 0, workers.logs()
    [result] = [e for e in history(api, sid, validate=True) if e.type == "user.tool_result"]
    assert not result.is_error and result_text(result).strip() == "net=200 drained-ok", result_text(result)
    assert served_and_stopped(item_states(api, key, hangar, env_id)[sid])
    assert processes_running("sleep 83.25") == []

    # A call still running when --drain-timeout runs out is interrupted (its processes killed),
    # and the model is told so; the worker still exits 0.
    env_id, key, agent_id = self_hosted(api, hangar, "worker-interrupted")
    sid = new_session(api, agent_id, env_id)
    data_dir = tmp_path / "interrupted"
    worker = workers.start("worker-impatient", env_id, key, data_dir, "--drain-timeout", "1")
    command = "touch started; sleep 61.5; echo never"
    api.beta.sessions.events.send(sid, events=[directive("bash", {"command": command})])  # type: ignore[list-item]
    workers.wait_for("the long command to start", (data_dir / "workspaces" / sid / "started").exists)
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0, workers.logs()
    assert time.monotonic() - signalled < 15
    workers.wait_for("the turn to end", lambda: ended_turns(api, sid))
    [result] = [e for e in history(api, sid) if e.type == "user.tool_result"]
    assert result.is_error and result_text(result) == "bash: interrupted", result_text(result)
    assert served_and_stopped(item_states(api, key, hangar, env_id)[sid])
    assert processes_running("sleep 61.5") == []

    # SIGKILL mid-call: the lease lapses and a second worker (same machine, same data dir)
    # reclaims the item and runs the unanswered call again.
    env_id, key, agent_id = self_hosted(api, hangar, "worker-killed")
    sid = new_session(api, agent_id, env_id)
    data_dir = tmp_path / "shared"
    doomed = workers.start("worker-doomed", env_id, key, data_dir, "--max-idle", "60")
    command = "if [ -f started ]; then echo served-by-the-second-worker; else touch started; sleep 97.25; fi"
    api.beta.sessions.events.send(sid, events=[directive("bash", {"command": command})])  # type: ignore[list-item]
    workers.wait_for(
        "the doomed worker to start the command", (data_dir / "workspaces" / sid / "started").exists
    )
    [item] = [i for i in items_of(api, key, hangar, env_id) if i.data.id == sid]
    workers.kill(doomed)
    killed_at = time.time()
    workers.wait_for("the sandbox to die with its worker", lambda: not processes_running("sleep 97.25"), 10)

    rescuer = workers.start("worker-rescuer", env_id, key, data_dir, "--max-idle", "1")
    workers.wait_for("the reclaimed turn to end", lambda: ended_turns(api, sid))
    [result] = [e for e in history(api, sid, validate=True) if e.type == "user.tool_result"]
    assert not result.is_error and result_text(result).strip() == "served-by-the-second-worker"

    def current() -> BetaSelfHostedWork:
        got: BetaSelfHostedWork = strict(
            BetaSelfHostedWork, api.beta.environments.work.retrieve(item.id, environment_id=env_id)
        )
        return got

    workers.wait_for("the rescuer to stop the item", lambda: current().state == "stopped")
    assert [i.id for i in items_of(api, key, hangar, env_id) if i.data.id == sid] == [item.id]
    acked = current().acknowledged_at
    assert acked is not None and parse_ts(acked, "acknowledged_at") / 1e6 > killed_at  # acked again
    assert rescuer.poll() is None  # still polling for more work
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(30) == 0, workers.logs()


def test_worker_refuses_to_start_without_bubblewrap_or_a_key(workers: Workers, tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    # Started together: each is a process start, and they are independent.
    procs = {
        "no-bwrap": workers.start("no-bwrap", "env_x", "sk-key", tmp_path / "d", path=str(empty)),
        "no-key": workers.start("no-key", "env_x", "", tmp_path / "d"),
        "bad-key": workers.start("bad-key", "env_x", "sk-not-a-key", tmp_path / "d"),
    }
    assert {name: proc.wait(30) for name, proc in procs.items()} == dict.fromkeys(procs, 1), workers.logs()
    log = {name: (tmp_path / f"{name}.log").read_text() for name in procs}
    assert "refusing to start" in log["no-bwrap"] and "(install the bubblewrap package)" in log["no-bwrap"]
    assert "no environment key: pass --key or set HANGAR_WORKER_KEY" in log["no-key"]
    assert "the server refused the worker (401): Authentication failed" in log["bad-key"]
