"""A session whose agent uses a Claude model, served through the `anthropic` provider against the
fake Messages-API server from ``hangar.testing`` (the only faked component: the model)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx

from hangar.testing.fake_anthropic import FakeAnthropic
from tests.conftest import API_KEY
from tests.sessions_helpers import make_agent_env, user_message, wait_idle

UPSTREAM_KEY = "sk-upstream-canary-" + "u" * 24


def test_claude_turn_through_fake_upstream(make_server: Any) -> None:
    with FakeAnthropic() as fake:
        srv = make_server(
            env={
                "HANGAR_ANTHROPIC_BASE_URL": fake.base_url,
                "HANGAR_ANTHROPIC_API_KEY": UPSTREAM_KEY,
                "HANGAR_MODEL_MAX_ATTEMPTS": "2",
            }
        )
        with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as client:
            agent_id, env_id = make_agent_env(client, model="claude-sonnet-4-6", system="You are terse.")
            s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
            fake.enqueue_text("Streamed hello from upstream")
            client.beta.sessions.events.send(s.id, events=[user_message("hi upstream")])
            events = wait_idle(client, s.id)
            message = next(e for e in events if e.type == "agent.message")
            assert message.content[0].text == "Streamed hello from upstream"
            end = next(e for e in events if e.type == "span.model_request_end")
            assert end.model_usage.output_tokens > 0
            assert len(fake.requests) == 1
            req = fake.requests[0]
            body = req.body
            assert body["model"] == "claude-sonnet-4-6" and body["stream"] is True
            assert body["system"] == "You are terse."
            assert body["messages"][-1]["role"] == "user"
            assert "hi upstream" in str(body["messages"][-1]["content"])
            # One upstream failure: retried by the loop (not silently by the SDK), shown as events.
            fake.enqueue_error(529)
            fake.enqueue_text("Recovered")
            client.beta.sessions.events.send(s.id, events=[user_message("again")])
            events = wait_idle(client, s.id, turns=2)
            assert len(fake.requests) == 3
            errors = [e for e in events if e.type == "session.error"]
            assert [(e.error.type, e.error.retry_status.type) for e in errors] == [
                ("model_overloaded_error", "retrying")
            ]
            assert any(e.type == "session.status_rescheduled" for e in events)
            assert [e for e in events if e.type == "agent.message"][-1].content[0].text == "Recovered"
            # The upstream key never leaves the server: not in events, not in API responses.
            raw = httpx.get(f"{srv.base_url}/v1/sessions/{s.id}/events", headers={"x-api-key": API_KEY}).text
            assert UPSTREAM_KEY not in raw
            assert UPSTREAM_KEY not in srv.log()
