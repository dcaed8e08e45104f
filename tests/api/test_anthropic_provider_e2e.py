"""A session whose agent uses a Claude model, served through the `anthropic` provider against the
fake Messages-API server from ``hangar.testing`` (the only faked component: the model)."""

from __future__ import annotations

from typing import Any

from hangar.testing.fake_anthropic import FakeAnthropic
from tests.fakes import assert_key_stays_inside, hangar_client, retried_turn
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
        with hangar_client(srv) as client:
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
            events = retried_turn(client, s.id, fake, "again", "Recovered")
            assert any(e.type == "session.status_rescheduled" for e in events)
            # The upstream key never leaves the server: not in events, not in API responses.
            assert_key_stays_inside(srv, s.id, UPSTREAM_KEY)
