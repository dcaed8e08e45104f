"""Helpers for session tests: build an agent + environment, run a turn, wait for idle."""

from __future__ import annotations

import time
from typing import Any

import anthropic
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from tests.helpers import strict


def make_agent_env(client: anthropic.Anthropic, model: str = "scripted", **agent: Any) -> tuple[str, str]:
    env = client.beta.environments.create(name="test-env")
    ag = client.beta.agents.create(name=agent.pop("name", "test-agent"), model=model, **agent)
    return ag.id, env.id


def user_message(text: str) -> dict[str, Any]:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


def all_events(client: anthropic.Anthropic, session_id: str) -> list[Any]:
    return [strict(BetaManagedAgentsSessionEvent, e) for e in client.beta.sessions.events.list(session_id)]


def wait_idle(client: anthropic.Anthropic, session_id: str, turns: int = 1, timeout: float = 20) -> list[Any]:
    """Poll history until ``turns`` end-of-turn idles are logged; returns all events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = all_events(client, session_id)
        idles = [e for e in events if e.type == "session.status_idle"]
        if len(idles) >= turns and client.beta.sessions.retrieve(session_id).status == "idle":
            return events
        time.sleep(0.05)
    raise AssertionError(f"session {session_id} did not reach {turns} idle(s): {[e.type for e in events]}")
