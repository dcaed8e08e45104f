"""Acknowledged writes survive `kill -9`; a session killed mid-turn resumes from its log."""

from __future__ import annotations

import time
from typing import Any

import anthropic

from tests.conftest import API_KEY
from tests.sessions_helpers import all_events, make_agent_env, user_message, wait_idle


def test_acknowledged_writes_survive_sigkill_and_turns_resume(make_server: Any) -> None:
    srv = make_server()
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
        agent_id, env_id = make_agent_env(client)
        s = client.beta.sessions.create(agent=agent_id, environment_id=env_id, metadata={"k": "v"})
        sent = client.beta.sessions.events.send(s.id, events=[user_message("done before the crash")])
        wait_idle(client, s.id)
        before = [e.id for e in all_events(client, s.id)]
        # A slow turn is in flight when the server is killed.
        slow = client.beta.sessions.events.send(s.id, events=[user_message("[[sleep:800]] in flight")])
        deadline = time.monotonic() + 5
        while client.beta.sessions.retrieve(s.id).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
    srv.kill()
    again = make_server(data_dir=srv.data_dir, database_url=srv.database_url)
    with anthropic.Anthropic(base_url=again.base_url, api_key=API_KEY, max_retries=0) as client:
        restored = client.beta.sessions.retrieve(s.id)
        assert restored.metadata == {"k": "v"}
        events = wait_idle(client, s.id, turns=2)
        ids = [e.id for e in events]
        assert ids[: len(before)] == before, "acknowledged history changed"
        assert sent.data is not None and slow.data is not None
        assert sent.data[0].id in ids and slow.data[0].id in ids
        assert len(ids) == len(set(ids))
        # The interrupted turn was re-run from the log and answered.
        last_reply = [e for e in events if e.type == "agent.message"][-1]
        assert "in flight" in last_reply.content[0].text
        assert events[-1].type == "session.status_idle"
