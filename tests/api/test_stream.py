"""SSE: framing, pings, previews, resume after a dropped connection, many concurrent readers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.sessions_helpers import make_agent_env, user_message, wait_idle

HEADERS = {"authorization": f"Bearer {API_KEY}"}


def frames(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse SSE frames from a streaming httpx response."""
    fields: dict[str, Any] = {}
    for line in resp.iter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            fields[key] = value[1:] if value.startswith(" ") else value


def read_until(
    url: str,
    stop_type: str,
    *,
    headers: dict[str, str] | None = None,
    count: int = 1,
    ready: threading.Event | None = None,
    out: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = [] if out is None else out
    seen = 0
    with httpx.stream("GET", url, headers={**HEADERS, **(headers or {})}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        if ready:
            ready.set()
        for f in frames(resp):
            got.append(f)
            if f.get("event") == stop_type:
                seen += 1
                if seen >= count:
                    break
    return got


def test_framing_and_sdk_stream(client: anthropic.Anthropic, server: ServerProcess) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    url = f"{server.base_url}/v1/sessions/{s.id}/events/stream"
    ready = threading.Event()
    got: list[dict[str, Any]] = []
    t = threading.Thread(
        target=read_until, args=(url, "session.status_idle"), kwargs={"ready": ready, "out": got}
    )
    t.start()
    assert ready.wait(10)
    time.sleep(0.2)
    client.beta.sessions.events.send(s.id, events=[user_message("hi")])
    t.join(20)
    assert got, "no frames"
    for f in got:
        data = json.loads(f["data"])
        assert f["event"] == data["type"]
        assert f["id"] == data["id"]
        strict(BetaManagedAgentsStreamSessionEvents, data)
    assert [f["event"] for f in got][-1] == "session.status_idle"
    # The official client's stream parses the same frames.
    types: list[str] = []

    def sdk_reader() -> None:
        with client.beta.sessions.events.stream(s.id) as stream:
            for event in stream:
                strict(BetaManagedAgentsStreamSessionEvents, event)
                types.append(event.type)
                if event.type == "session.status_idle":
                    return

    t2 = threading.Thread(target=sdk_reader)
    t2.start()
    time.sleep(0.3)
    client.beta.sessions.events.send(s.id, events=[user_message("again")])
    t2.join(20)
    assert types[0] == "user.message" and types[-1] == "session.status_idle" and "agent.message" in types


def test_ping_frames(make_server: Any) -> None:
    srv = make_server(env={"HANGAR_SSE_PING_INTERVAL_S": "0.2"})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client)
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    got = read_until(f"{srv.base_url}/v1/sessions/{s.id}/events/stream", "ping", count=2)
    pings = [f for f in got if f.get("event") == "ping"]
    assert len(pings) == 2 and pings[0]["data"] == "{}"


def test_resume_with_last_event_id(client: anthropic.Anthropic, server: ServerProcess) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    url = f"{server.base_url}/v1/sessions/{s.id}/events/stream"
    ready = threading.Event()
    first: list[dict[str, Any]] = []
    # Read the first turn only, then drop the connection.
    t = threading.Thread(
        target=read_until, args=(url, "span.model_request_start"), kwargs={"ready": ready, "out": first}
    )
    t.start()
    assert ready.wait(10)
    time.sleep(0.2)
    client.beta.sessions.events.send(s.id, events=[user_message("one")])
    t.join(20)
    last_id = first[-1]["id"]
    # While disconnected, the turn finishes and a second one runs.
    wait_idle(client, s.id)
    client.beta.sessions.events.send(s.id, events=[user_message("two")])
    history = wait_idle(client, s.id, turns=2)
    resumed = read_until(url, "session.status_idle", headers={"last-event-id": last_id}, count=2)
    ids = [f["id"] for f in resumed]
    expected = [e.id for e in history]
    assert ids == expected[expected.index(last_id) + 1 :]
    assert len(set(ids)) == len(ids)
    # ?after_id= works the same way.
    again = read_until(url + f"?after_id={last_id}", "session.status_idle", count=2)
    assert [f["id"] for f in again] == ids
    bad = httpx.get(url, headers={**HEADERS, "last-event-id": "sevt_unknown"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_fifty_concurrent_readers(client: anthropic.Anthropic, server: ServerProcess) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    url = f"{server.base_url}/v1/sessions/{s.id}/events/stream"
    outs: list[list[dict[str, Any]]] = [[] for _ in range(50)]
    readies = [threading.Event() for _ in range(50)]
    threads = [
        threading.Thread(
            target=read_until,
            args=(url, "session.status_idle"),
            kwargs={"ready": readies[i], "out": outs[i], "count": 3},
        )
        for i in range(50)
    ]
    for t in threads:
        t.start()
    for r in readies:
        assert r.wait(20)
    time.sleep(0.3)
    for i in range(3):
        client.beta.sessions.events.send(s.id, events=[user_message(f"m{i}")])
        wait_idle(client, s.id, turns=i + 1)
    for t in threads:
        t.join(30)
    history = [e.id for e in client.beta.sessions.events.list(s.id)]
    for out in outs:
        assert [f["id"] for f in out] == history


def test_previews_and_deleted_closes_stream(client: anthropic.Anthropic, server: ServerProcess) -> None:
    agent_id, env_id = make_agent_env(client)
    s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
    url = f"{server.base_url}/v1/sessions/{s.id}/events/stream?event_deltas[]=agent.message"
    ready = threading.Event()
    got: list[dict[str, Any]] = []
    t = threading.Thread(
        target=read_until, args=(url, "session.deleted"), kwargs={"ready": ready, "out": got}
    )
    t.start()
    assert ready.wait(10)
    time.sleep(0.2)
    client.beta.sessions.events.send(s.id, events=[user_message("[[words:6]]")])
    wait_idle(client, s.id)
    client.beta.sessions.delete(s.id)
    t.join(20)
    assert not t.is_alive(), "the stream did not close after the session was deleted"
    kinds = [f["event"] for f in got]
    assert kinds[-1] == "session.deleted"
    start = kinds.index("event_start")
    message = kinds.index("agent.message")
    assert kinds.index("span.model_request_start") < start < message
    start_data = json.loads(got[start]["data"])
    final = json.loads(got[message]["data"])
    assert start_data["event"]["id"] == final["id"]
    deltas = [json.loads(f["data"]) for f in got if f["event"] == "event_delta"]
    assert deltas and all(d["event_id"] == final["id"] for d in deltas)
    text = "".join(d["delta"]["content"]["text"] for d in deltas)
    assert text == final["content"][0]["text"]
    for f in got:
        strict(BetaManagedAgentsStreamSessionEvents, json.loads(f["data"]))
    assert (
        httpx.get(f"{server.base_url}/v1/sessions/{s.id}/events/stream", headers=HEADERS).status_code == 404
    )
