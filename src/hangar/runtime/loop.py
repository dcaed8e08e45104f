"""The agent loop: an explicit state machine whose state is read from the session's event log.

States (derived, never held in memory between steps):

    IDLE ──(pending user input)──▶ TURN_START ──▶ MODEL_REQUEST ──▶ TURN_END ──▶ IDLE
                                                      │  ▲
                                        retryable error│  │backoff (session.status_rescheduled)
                                                      ▼  │
                                                  RESCHEDULING

``step()`` looks at the log, takes exactly one transition, and persists it (events and the
session row in one transaction) before acting on it, so a server killed at any point resumes
from the log: a session left ``running`` or ``rescheduling`` re-issues its model request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hangar.config import Settings
from hangar.ids import new_id
from hangar.runtime.context import ConversationCache
from hangar.runtime.journal import Journal, Tx
from hangar.runtime.models.base import ModelError, ModelRequest, ModelResponse, TextDelta, Usage
from hangar.runtime.models.router import ModelRouter
from hangar.store import Store
from hangar.store.bus import EventBus, Preview
from hangar.store.events import NewEvent, StoredEvent
from hangar.wire import events as ev

log = logging.getLogger(__name__)

MODEL_ERROR_TYPES = {
    "overloaded": "model_overloaded_error",
    "rate_limited": "model_rate_limited_error",
}


class State(Enum):
    IDLE = "idle"
    TURN_START = "turn_start"
    MODEL_REQUEST = "model_request"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"  # read it from the log


@dataclass(frozen=True)
class Step:
    """A state plus what the transition into it already knows."""

    state: State
    inputs: list[StoredEvent] = field(default_factory=list)
    span_start_id: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0

    def delay(self, attempt: int, hint: float | None) -> float:
        if hint is not None:
            return min(hint, self.cap_s * 4)
        return float(min(self.cap_s, self.base_s * 2**attempt) * (0.5 + random.random() / 2))


class Loop:
    """Drives one session through the state machine. Stateless between calls to ``step``."""

    def __init__(
        self, store: Store, bus: EventBus, journal: Journal, models: ModelRouter, settings: Settings
    ) -> None:
        self.store = store
        self.bus = bus
        self.journal = journal
        self.models = models
        self.settings = settings
        self.retry = RetryPolicy(max_attempts=settings.model_max_attempts)
        self.context = ConversationCache(store.events)

    async def state(self, session_id: str) -> tuple[State, list[StoredEvent]]:
        """Read the session's state from the store (the log and the session row)."""
        status = await self.store.sessions.status(session_id)
        if status is None or status == "terminated":
            return State.TERMINATED, []
        if status in ("running", "rescheduling"):
            return State.MODEL_REQUEST, []
        pending = await self.store.events.pending(session_id)
        turn_inputs = [e for e in pending if e.type in (ev.USER_MESSAGE, ev.SYSTEM_MESSAGE)]
        return (State.TURN_START, turn_inputs) if turn_inputs else (State.IDLE, [])

    async def step(self, session_id: str, hint: Step | None = None) -> Step | None:
        """Take one transition. Returns what is known to come next (sparing a read of the log),
        or ``None`` when there is nothing to do. Without a hint the state is read from the log."""
        if hint is None or hint.state is State.UNKNOWN:
            state, inputs = await self.state(session_id)
            hint = Step(state, inputs=inputs)
        if hint.state is State.TURN_START:
            start_id = await self._start_turn(session_id, hint.inputs)
            return Step(State.MODEL_REQUEST, span_start_id=start_id)
        if hint.state is State.MODEL_REQUEST:
            await self._model_turn(session_id, hint.span_start_id)
            return Step(State.UNKNOWN)
        return None

    async def _start_turn(self, session_id: str, inputs: list[StoredEvent]) -> str:
        """Consume the queued inputs, announce the turn and open its first model request."""
        async with self.journal.transaction(session_id) as tx:
            await self.store.events.mark_processed(tx.conn, session_id, [e.seq for e in inputs], tx.at)
            thread_id = tx.session.data["primary_thread_id"]
            name = tx.session.data["agent"]["name"]
            data = dict(tx.session.data)
            data["running_since"] = data.get("running_since") or tx.at
            data.setdefault("first_run_at", tx.at)
            _, _, start = await tx.append(
                NewEvent(ev.STATUS_RUNNING, {}, thread_id=thread_id),
                NewEvent(
                    ev.THREAD_RUNNING,
                    {"session_thread_id": thread_id, "agent_name": name},
                    thread_id=thread_id,
                ),
                NewEvent(ev.SPAN_MODEL_START, {}, thread_id=thread_id),
            )
            tx.save(data=data, status="running")
        return start.id

    async def _model_turn(self, session_id: str, span_start_id: str | None) -> None:
        session = await self.store.sessions.get(None, session_id)
        if session is None or session.status not in ("running", "rescheduling"):
            return
        agent = session.data["agent"]
        thread_id = session.data["primary_thread_id"]
        attempt = int(session.data.get("attempt", 0))
        if span_start_id is None:
            # Resuming (after a retry wait or a restart): announce and open a new request.
            async with self.journal.transaction(session_id) as tx:
                opening = [NewEvent(ev.SPAN_MODEL_START, {}, thread_id=thread_id)]
                if tx.session.status == "rescheduling":
                    opening.insert(0, NewEvent(ev.STATUS_RUNNING, {}, thread_id=thread_id))
                    tx.save(status="running")
                span_start_id = (await tx.append(*opening))[-1].id
        request = ModelRequest(
            model=agent["model"]["id"],
            system=agent.get("system"),
            messages=await self.context.messages(session_id),
            tools=[],
            effort=(agent["model"].get("effort") or {}).get("type"),
        )
        message_id = new_id("event")
        try:
            response = await self._stream(session_id, request, message_id)
        except ModelError as exc:
            await self._model_failed(session_id, span_start_id, exc, attempt)
            return
        await self._model_succeeded(session_id, span_start_id, message_id, response)

    async def _stream(self, session_id: str, request: ModelRequest, message_id: str) -> ModelResponse:
        provider = self.models.provider_for(request.model)
        started = False
        final: ModelResponse | None = None
        async for item in provider.stream(request):
            if isinstance(item, TextDelta):
                if not self.bus.wants_previews(session_id, ev.AGENT_MESSAGE):
                    continue
                if not started:
                    started = True
                    start = {"type": "event_start", "event": {"type": ev.AGENT_MESSAGE, "id": message_id}}
                    self.bus.publish(session_id, [Preview(ev.AGENT_MESSAGE, start)])
                delta = {
                    "type": "event_delta",
                    "event_id": message_id,
                    "delta": {
                        "type": "content_delta",
                        "index": item.index,
                        "content": {"type": "text", "text": item.text},
                    },
                }
                self.bus.publish(session_id, [Preview(ev.AGENT_MESSAGE, delta)])
            else:
                final = item
        if final is None:
            raise ModelError("request_failed", "the model stream ended without a response", retryable=True)
        return final

    async def _model_succeeded(
        self, session_id: str, start_id: str, message_id: str, response: ModelResponse
    ) -> None:
        text_blocks = [
            {"type": "text", "text": b.get("text", "")} for b in response.content if b.get("type") == "text"
        ]
        async with self.journal.transaction(session_id) as tx:
            thread_id = tx.session.data["primary_thread_id"]
            if text_blocks:
                await tx.append(
                    NewEvent(ev.AGENT_MESSAGE, {"content": text_blocks}, thread_id=thread_id, id=message_id)
                )
            await tx.append(
                NewEvent(
                    ev.SPAN_MODEL_END,
                    {
                        "model_request_start_id": start_id,
                        "is_error": False,
                        "model_usage": model_usage(response.usage),
                    },
                    thread_id=thread_id,
                )
            )
            stop: dict[str, Any] = {"type": "end_turn"}
            details = None
            if response.stop_reason == "refusal":
                stop, details = (
                    {"type": "refusal"},
                    {"type": "refusal", "category": None, "explanation": None},
                )
            await self._set_idle(tx, stop, details, usage=response.usage)

    async def _model_failed(self, session_id: str, start_id: str, exc: ModelError, attempt: int) -> None:
        error_type = MODEL_ERROR_TYPES.get(exc.kind, "model_request_failed_error")
        retry = exc.retryable and attempt + 1 < self.retry.max_attempts
        error = {
            "type": error_type,
            "message": exc.message,
            "retry_status": {"type": "retrying" if retry else "exhausted"},
        }
        log.warning(
            "model request failed", extra={"session_id": session_id, "kind": exc.kind, "attempt": attempt}
        )
        async with self.journal.transaction(session_id) as tx:
            thread_id = tx.session.data["primary_thread_id"]
            await tx.append(
                NewEvent(
                    ev.SPAN_MODEL_END,
                    {
                        "model_request_start_id": start_id,
                        "is_error": True,
                        "model_usage": model_usage(Usage()),
                    },
                    thread_id=thread_id,
                ),
                NewEvent(ev.SESSION_ERROR, {"error": error}, thread_id=thread_id),
            )
            if retry:
                data = dict(tx.session.data)
                data["attempt"] = attempt + 1
                await tx.append(NewEvent(ev.STATUS_RESCHEDULED, {}, thread_id=thread_id))
                tx.save(data=data, status="rescheduling")
            else:
                await self._set_idle(tx, {"type": "retries_exhausted"}, None, usage=Usage())
        if retry:
            await asyncio.sleep(self.retry.delay(attempt, exc.retry_after_s))

    async def _set_idle(
        self, tx: Tx, stop: dict[str, Any], details: dict[str, Any] | None, *, usage: Usage
    ) -> None:
        thread_id = tx.session.data["primary_thread_id"]
        name = tx.session.data["agent"]["name"]
        data = dict(tx.session.data)
        data["usage"] = add_usage(data["usage"], usage)
        data["active_us"] = data.get("active_us", 0) + max(0, tx.at - (data.get("running_since") or tx.at))
        data["running_since"] = None
        data["attempt"] = 0
        data["turns"] = data.get("turns", 0) + 1
        idle: dict[str, Any] = {"stop_reason": stop}
        if details is not None:
            idle["stop_details"] = details
        await tx.append(
            NewEvent(
                ev.THREAD_IDLE,
                {"session_thread_id": thread_id, "agent_name": name, **idle},
                thread_id=thread_id,
            ),
            NewEvent(ev.STATUS_IDLE, idle, thread_id=thread_id),
        )
        tx.save(data=data, status="idle")


def model_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "speed": None,
    }


def add_usage(total: dict[str, Any], u: Usage) -> dict[str, Any]:
    out = dict(total)
    out["input_tokens"] = (out.get("input_tokens") or 0) + u.input_tokens
    out["output_tokens"] = (out.get("output_tokens") or 0) + u.output_tokens
    out["cache_read_input_tokens"] = (out.get("cache_read_input_tokens") or 0) + u.cache_read_input_tokens
    if u.cache_creation_input_tokens:
        cache = dict(
            out.get("cache_creation") or {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0}
        )
        cache["ephemeral_5m_input_tokens"] = (
            cache.get("ephemeral_5m_input_tokens") or 0
        ) + u.cache_creation_input_tokens
        out["cache_creation"] = cache
    return out
