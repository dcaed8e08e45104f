"""A session whose agent uses a local model id (``local-llama``), routed to the `openai` provider
and served by the fake chat-completions server from ``hangar.testing`` (the only faked
component: the model)."""

from __future__ import annotations

from typing import Any

from anthropic.types.beta import BetaManagedAgentsAgent

from hangar.testing.fake_openai import FakeOpenAI
from tests.fakes import assert_key_stays_inside, hangar_client, retried_turn
from tests.helpers import strict
from tests.sessions_helpers import make_agent_env, user_message, wait_idle

UPSTREAM_KEY = "sk-openai-canary-" + "o" * 24


def test_local_model_turn_through_fake_openai_server(make_server: Any) -> None:
    with FakeOpenAI() as fake:
        srv = make_server(
            env={
                "HANGAR_OPENAI_BASE_URL": fake.base_url,
                "HANGAR_OPENAI_API_KEY": UPSTREAM_KEY,
                "HANGAR_OPENAI_MODEL_MAP": '{"local-llama": "llama3.1:8b"}',
                "HANGAR_MODEL_ROUTES": '{"local-*": "openai", "scripted*": "scripted"}',
                "HANGAR_MODEL_MAX_ATTEMPTS": "2",
            }
        )
        with hangar_client(srv) as client:
            # Agents take any model id string: nothing checks it against the catalogue.
            agent_id, env_id = make_agent_env(client, model="local-llama", system="You are terse.")
            agent = strict(BetaManagedAgentsAgent, client.beta.agents.retrieve(agent_id))
            assert agent.model.id == "local-llama"
            s = client.beta.sessions.create(agent=agent_id, environment_id=env_id)
            fake.enqueue_text("Streamed hello from a local model", prompt_tokens=21, completion_tokens=6)
            client.beta.sessions.events.send(s.id, events=[user_message("hi local")])
            events = wait_idle(client, s.id)
            message = next(e for e in events if e.type == "agent.message")
            assert message.content[0].text == "Streamed hello from a local model"
            end = next(e for e in events if e.type == "span.model_request_end")
            assert (end.model_usage.input_tokens, end.model_usage.output_tokens) == (21, 6)

            [req] = fake.requests
            assert req.path == "/v1/chat/completions"
            assert req.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
            assert req.body["model"] == "llama3.1:8b" and req.body["stream"] is True
            assert req.body["messages"] == [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "hi local"},
            ]

            # One upstream failure: retried by the loop (one HTTP request per attempt).
            fake.enqueue_error(503, "engine busy")
            fake.enqueue_text("Recovered")
            retried_turn(client, s.id, fake, "again", "Recovered")
            assert fake.requests[2].body["messages"][1:] == [
                {"role": "user", "content": "hi local"},
                {"role": "assistant", "content": "Streamed hello from a local model"},
                {"role": "user", "content": "again"},
            ]
            # The upstream key never leaves the server: not in events, not in the log.
            assert_key_stays_inside(srv, s.id, UPSTREAM_KEY)
