"""The journal's shortcuts, checked against the log itself.

- On PostgreSQL a process builds a session's next transaction on the row it wrote last, and
  a guard sent with the transaction's writes checks that the row is still that version
  (``hangar.runtime.journal``). Two server processes on one database write the same session
  in turns here, so each one's copy is regularly out of date.
- The loop folds its own transactions into the cached conversation instead of reading the log
  again before each model request. Conversations built that way must equal those read cold
  from the log (after a restart): the scripted model reports the words of everything it was
  sent as ``input_tokens``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import pytest
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.sessions_helpers import all_events, user_message

TOOLSET = {"type": "agent_toolset_20260401"}
LOOKUP = {
    "type": "custom",
    "name": "lookup",
    "description": "Look a word up.",
    "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
}


def api(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0)


def settled(client: anthropic.Anthropic, session_id: str, timeout: float = 20) -> list[Any]:
    """The session's events once it is idle with every input taken in."""
    deadline = time.monotonic() + timeout
    events: list[Any] = []
    while time.monotonic() < deadline:
        events = all_events(client, session_id)
        waiting = [e for e in events if e.type.startswith("user.") and e.processed_at is None]
        last_idle = bool(events) and events[-1].type == "session.status_idle"
        if last_idle and not waiting and client.beta.sessions.retrieve(session_id).status == "idle":
            return events
        time.sleep(0.05)
    raise AssertionError(f"{session_id} did not settle: {[e.type for e in events]}")


def check_log(events: list[Any]) -> None:
    """Every event once, every turn closed, no errors."""
    assert len({e.id for e in events}) == len(events)
    kinds = [e.type for e in events]
    assert "session.error" not in kinds, kinds
    assert kinds.count("span.model_request_start") == kinds.count("span.model_request_end"), kinds


# --- two processes, one PostgreSQL database ---------------------------------------------------


@pytest.fixture
def two_servers(
    backend: str, make_server: Callable[..., ServerProcess], pg_cluster: Any
) -> list[ServerProcess]:
    if backend != "postgres":
        pytest.skip("two server processes share a database on PostgreSQL")
    url = pg_cluster.create_database()
    return [make_server(database_url=url), make_server(database_url=url)]


def test_two_processes_write_one_session_in_turns(two_servers: list[ServerProcess]) -> None:
    with api(two_servers[0]) as a, api(two_servers[1]) as b:
        env = a.beta.environments.create(name="shared")
        agent = a.beta.agents.create(name="shared", model="scripted")
        session = a.beta.sessions.create(agent=agent.id, environment_id=env.id)
        clients = [a, b, a, b, b, a]
        for i, client in enumerate(clients, start=1):
            sent = client.beta.sessions.events.send(session.id, events=[user_message(f"turn {i}")])
            assert [e.type for e in sent.data] == ["user.message"]
            settled(client, session.id)
        events = all_events(a, session.id)
        check_log(events)
        replies = [e.content[0].text for e in events if e.type == "agent.message"]
        assert replies == [f"Hello! You said: turn {i}" for i in range(1, len(clients) + 1)]
        # Each process now holds a copy of the row the other has since changed: archiving
        # through one must stop events sent through the other.
        a.beta.sessions.archive(session.id)
        archived = all_events(a, session.id)
        with pytest.raises(anthropic.APIStatusError) as err:
            b.beta.sessions.events.send(session.id, events=[user_message("too late")])
        assert err.value.status_code == 409
        assert all_events(b, session.id) == archived  # nothing was appended


def test_a_session_deleted_by_another_process_is_gone(two_servers: list[ServerProcess]) -> None:
    with api(two_servers[0]) as a, api(two_servers[1]) as b:
        env = a.beta.environments.create(name="shared")
        agent = a.beta.agents.create(name="shared", model="scripted")
        session = a.beta.sessions.create(agent=agent.id, environment_id=env.id)
        a.beta.sessions.events.send(session.id, events=[user_message("hello")])
        settled(a, session.id)
        b.beta.sessions.delete(session.id)
        with pytest.raises(anthropic.NotFoundError):
            a.beta.sessions.events.send(session.id, events=[user_message("anyone?")])


# --- input taken in by the client's own transaction ------------------------------------------


def test_concurrent_input_to_an_idle_session_runs_each_model_request_once(
    make_server: Callable[..., ServerProcess],
) -> None:
    # Input sent to an idle session is taken in by the transaction that appends it, and the
    # session's driver starts from there; racing senders must not start a second driver or
    # open a model request twice (a second one would close the first as failed).
    with api(make_server()) as client:
        env = client.beta.environments.create(name="race")
        agent = client.beta.agents.create(name="race", model="scripted")
        s = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        for burst in range(5):
            texts = [f"burst {burst} message {i}" for i in range(6)]
            with ThreadPoolExecutor(len(texts)) as pool:
                list(
                    pool.map(
                        lambda t: client.beta.sessions.events.send(s.id, events=[user_message(t)]), texts
                    )
                )
            events = settled(client, s.id)
        check_log(events)
        ends = [
            strict(BetaManagedAgentsSessionEvent, e) for e in events if e.type == "span.model_request_end"
        ]
        assert ends and not any(e.is_error for e in ends)
        messages = [e for e in events if e.type == "user.message"]
        assert len(messages) == 30 and all(e.processed_at is not None for e in messages)
        # Messages sent while a turn ran were taken in by a turn of their own, none left behind.
        kinds = [e.type for e in events]
        assert kinds.count("session.status_running") == kinds.count("session.status_idle")


# --- what the remembered row says about resources ------------------------------------------


def bash_turn(client: anthropic.Anthropic, session_id: str, command: str) -> str:
    text = f"[[tool:bash {json.dumps({'command': command})}]]"
    client.beta.sessions.events.send(session_id, events=[user_message(text)])
    events = settled(client, session_id)
    result = [e for e in events if e.type == "agent.tool_result"][-1]
    assert not result.is_error
    return "".join(b.text for b in result.content if b.type == "text").strip()


def test_resources_added_and_removed_after_a_plain_turn_are_seen(
    make_server: Callable[..., ServerProcess],
) -> None:
    # After a turn without tools the journal remembers that the session has no resources, and
    # on PostgreSQL the next turn is built on that copy: adding one must make the copy stale.
    with api(make_server()) as client:
        env = client.beta.environments.create(name="late", config={"type": "cloud"})
        agent = client.beta.agents.create(name="late", model="scripted", tools=[TOOLSET])
        s = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        client.beta.sessions.events.send(s.id, events=[user_message("hello")])
        settled(client, s.id)
        upload = client.beta.files.upload(file=("late.txt", b"added late\n", "text/plain"))
        added = client.beta.sessions.resources.add(
            s.id, type="file", file_id=upload.id, mount_path="late.txt"
        )
        assert bash_turn(client, s.id, "cat /mnt/session/uploads/late.txt") == "added late"
        client.beta.sessions.resources.delete(added.id, session_id=s.id)
        client.beta.sessions.events.send(s.id, events=[user_message("hello again")])
        settled(client, s.id)
        probe = "test -e /mnt/session/uploads/late.txt && echo mounted || echo gone"
        assert bash_turn(client, s.id, probe) == "gone"


# --- conversations folded in memory against conversations read from the log ----------------


def conversation_steps(
    client: anthropic.Anthropic, session_id: str, restart: Callable[[], None]
) -> list[int]:
    """Run the same turns (a message, a custom tool call and its result, a message sent while
    the model answers, a message) calling ``restart`` before each input; returns the words the
    model was sent for each request, in order."""
    inputs: list[Callable[[list[Any]], list[dict[str, Any]]]] = [
        lambda _: [user_message("first question about apples")],
        lambda _: [user_message('look it up [[tool:lookup {"word": "pear"}]]')],
        lambda events: [
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": next(
                    e.id for e in reversed(events) if e.type == "agent.custom_tool_use"
                ),
                "content": [{"type": "text", "text": "a pear is a sweet fruit"}],
            }
        ],
        lambda _: [user_message("[[sleep:300]] a slow answer please")],
        lambda _: [user_message("and the last one")],
    ]
    events: list[Any] = []
    for i, make in enumerate(inputs):
        restart()
        client.beta.sessions.events.send(session_id, events=make(events))  # type: ignore[arg-type]
        if i == 3:  # steering: a message while the model is still answering
            time.sleep(0.1)
            client.beta.sessions.events.send(session_id, events=[user_message("one more thing")])
        events = settled(client, session_id)
    check_log(events)
    ends = [strict(BetaManagedAgentsSessionEvent, e) for e in events if e.type == "span.model_request_end"]
    return [e.model_usage.input_tokens for e in ends]


def test_conversations_folded_in_memory_equal_those_read_from_the_log(
    make_server: Callable[..., ServerProcess], backend: str, pg_cluster: Any, tmp_path: Any
) -> None:
    url = pg_cluster.create_database() if backend == "postgres" else None
    data_dir = tmp_path / "data"
    servers = [make_server(data_dir=data_dir, database_url=url)]
    with api(servers[0]) as client:
        env = client.beta.environments.create(name="fold")
        agent = client.beta.agents.create(name="fold", model="scripted", tools=[LOOKUP])
        warm = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        cold = client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        folded = conversation_steps(client, warm.id, restart=lambda: None)

        def restart() -> None:  # a new process: nothing cached
            servers[-1].stop()
            servers.append(make_server(data_dir=data_dir, database_url=url))
            client.base_url = servers[-1].base_url

        read = conversation_steps(client, cold.id, restart=restart)
    assert len(folded) >= 6  # five inputs, one of them a tool round
    assert folded == read
