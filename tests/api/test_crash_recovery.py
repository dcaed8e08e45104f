"""Crash recovery: SIGKILL the server at random points of multi-step turns (a model request, a
running tool, a held confirmation), restart it, and check every session still reaches a
consistent end: nothing lost or duplicated, every span closed once, every tool call answered
once (completed, or reported as interrupted: never run twice)."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.sessions_helpers import all_events, make_agent_env, user_message

ITERATIONS = 20
TOOLS = [
    {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "write", "permission_policy": {"type": "always_ask"}}],
    }
]
BASH = {"command": "echo ran >> runs.txt; sleep 0.3"}
WRITE = {"file_path": "w.txt", "content": "ok"}
PROMPT = f"[[sleep:250]] [[tool:bash {json.dumps(BASH)}]] [[tool:write {json.dumps(WRITE)}]]"


def settle(client: anthropic.Anthropic, session_id: str, timeout: float = 30) -> list[Any]:
    """Drive the session to the end of its turn, answering the confirmation when asked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = client.beta.sessions.retrieve(session_id)
        events = all_events(client, session_id)
        idles = [e for e in events if e.type == "session.status_idle"]
        if session.status == "idle" and idles:
            last = idles[-1]
            if last.stop_reason.type != "requires_action":
                return events
            confirmed = {e.tool_use_id for e in events if e.type == "user.tool_confirmation"}
            for call_id in last.stop_reason.event_ids:
                if call_id not in confirmed:
                    client.beta.sessions.events.send(
                        session_id,
                        events=[
                            {"type": "user.tool_confirmation", "tool_use_id": call_id, "result": "allow"}
                        ],
                    )
        time.sleep(0.05)
    raise AssertionError(
        f"session {session_id} did not settle: {[e.type for e in all_events(client, session_id)]}"
    )


def check_consistent(events: list[Any], workdir: Path) -> dict[str, Any]:
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), "an event was duplicated"
    kinds = Counter(e.type for e in events)
    assert kinds["user.message"] == 1 and events[0].type == "user.message" and events[0].processed_at
    starts = [e.id for e in events if e.type == "span.model_request_start"]
    ends = Counter(e.model_request_start_id for e in events if e.type == "span.model_request_end")
    assert all(ends[s] == 1 for s in starts) and sum(ends.values()) == len(starts), "a span was left open"
    uses = {e.id: e for e in events if e.type == "agent.tool_use"}
    results = Counter(e.tool_use_id for e in events if e.type == "agent.tool_result")
    assert all(results[u] == 1 for u in uses) and sum(results.values()) == len(uses), (
        "a call not answered once"
    )
    outcome = {}
    for e in events:
        if e.type == "agent.tool_result":
            name = uses[e.tool_use_id].name
            text = e.content[0].text if e.content else ""
            assert not e.is_error or "interrupted" in text, text
            outcome[name] = "interrupted" if e.is_error else "done"
    runs = (workdir / "runs.txt").read_text().count("ran") if (workdir / "runs.txt").exists() else 0
    bash_uses = sum(1 for u in uses.values() if u.name == "bash")
    assert runs <= bash_uses, "a tool ran twice"
    if outcome.get("bash") == "done":
        assert runs >= 1
    assert ((workdir / "w.txt").exists()) == (outcome.get("write") == "done")
    final = events[-1]
    assert final.type == "session.status_idle" and final.stop_reason.type == "end_turn"
    assert kinds["agent.message"] >= 1
    return outcome


def test_sigkill_at_random_points(make_server: Any) -> None:
    rng = random.Random(20261122)
    srv: ServerProcess = make_server()
    data_dir, url = srv.data_dir, srv.database_url
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client, tools=TOOLS)
        # The uninterrupted run every crashed run must end like.
        ref = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
        client.beta.sessions.events.send(ref.id, events=[user_message(PROMPT)])
        reference = check_consistent(settle(client, ref.id), data_dir / "workspaces" / ref.id)
        assert reference == {"bash": "done", "write": "done"}
    outcomes = []
    for _ in range(ITERATIONS):
        with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
            s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
            client.beta.sessions.events.send(s.id, events=[user_message(PROMPT)])
            if rng.random() < 0.3:
                # Crash while the write is held, or right after it was confirmed.
                settle_until_held(client, s.id)
                if rng.random() < 0.5:
                    held = client.beta.sessions.events.list(s.id, order="desc", limit=1).data[0]
                    client.beta.sessions.events.send(
                        s.id,
                        events=[
                            {
                                "type": "user.tool_confirmation",
                                "tool_use_id": held.stop_reason.event_ids[0],
                                "result": "allow",
                            }
                        ],
                    )
                    time.sleep(rng.uniform(0, 0.3))
            else:
                # Crash during the model request (250 ms) or the bash call (300 ms).
                time.sleep(rng.uniform(0.05, 0.9))
        srv.kill()
        srv = make_server(data_dir=data_dir, database_url=url)
        with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
            events = settle(client, s.id)
            outcomes.append(check_consistent(events, data_dir / "workspaces" / s.id))
    # The crashes did land at different points: some calls were cut off, some completed.
    assert any(o.get("bash") == "done" for o in outcomes)
    assert len({tuple(sorted(o.items())) for o in outcomes}) >= 2, outcomes


def settle_until_held(client: anthropic.Anthropic, session_id: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = all_events(client, session_id)
        if (
            events
            and events[-1].type == "session.status_idle"
            and events[-1].stop_reason.type == "requires_action"
        ):
            return
        time.sleep(0.03)
    raise AssertionError("the write call was never held")
