"""The agent loop: an explicit state machine whose state is read from the session's log.

    IDLE ──(client input)──▶ INPUTS ──▶ MODEL_REQUEST ──(tool uses)──▶ TOOLS ──▶ MODEL_REQUEST …
                               │             │    ▲                      │
                               │             │    └──(retryable error: RESCHEDULING, backoff)
                               │             └──(no tool use)──▶ IDLE (end_turn)
                               └──(calls still held)──▶ AWAIT ──▶ IDLE (requires_action)

State lives in the durable log and in the session row, which every transition rewrites in the
same transaction as the events it appends (``Journal``). ``step()`` takes exactly one
transition; each is persisted before it is acted on, so a server killed anywhere resumes from
what is stored: a session left ``running`` re-issues its model request (closing the span the
crash left open), a call that was running is reported as interrupted (never run twice), held
calls and queued input wait as they were.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from hangar.config import Settings
from hangar.errors import NotFound
from hangar.ids import new_id
from hangar.runtime import calls as c
from hangar.runtime.compaction import Compactor
from hangar.runtime.context import Conversation, ConversationCache
from hangar.runtime.journal import Journal, Tx
from hangar.runtime.mcp import McpToolMap
from hangar.runtime.mcp_tools import McpTools, error_events
from hangar.runtime.models.base import (
    ModelError,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingStart,
    Usage,
)
from hangar.runtime.models.router import ModelRouter
from hangar.runtime.provision import Provisioner
from hangar.runtime.tools.definitions import find_toolset
from hangar.runtime.tools.executor import ExecutorPool, WorkspaceExecutor
from hangar.sandbox.inject import load_env_credentials
from hangar.store import Store
from hangar.store.bus import EventBus, Preview
from hangar.store.db import now_us
from hangar.store.events import NewEvent, StoredEvent
from hangar.store.sessions import SessionRecord
from hangar.wire import events as ev

log = logging.getLogger(__name__)

MODEL_ERROR_TYPES = {"overloaded": "model_overloaded_error", "rate_limited": "model_rate_limited_error"}
TURN_INPUTS = (
    ev.USER_MESSAGE,
    ev.SYSTEM_MESSAGE,
    ev.USER_TOOL_CONFIRMATION,
    ev.USER_CUSTOM_TOOL_RESULT,
    ev.USER_TOOL_RESULT,
)
STEERING = (ev.USER_MESSAGE, ev.SYSTEM_MESSAGE)
INTERRUPTED = "interrupted: the user interrupted the turn"
RESTARTED = "interrupted: the server restarted while this tool was running; it was not run again"


class State(Enum):
    IDLE = "idle"
    INPUTS = "inputs"
    MODEL_REQUEST = "model_request"
    TOOLS = "tools"
    AWAIT = "await"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"  # read it from the store


@dataclass(frozen=True)
class Step:
    """A state plus what the transition into it already knows."""

    state: State
    inputs: list[StoredEvent] = field(default_factory=list)
    span_start_id: str | None = None
    session: SessionRecord | None = None  # the row as the transition left it (spares a read)
    started: str | None = None  # a call this transition persisted as running, to run next
    has_resources: bool | None = None  # whether the session has resources, if known


@dataclass(frozen=True)
class Taken:
    """Input a client's transaction took in (``Loop.take_in``), and what comes next."""

    session_id: str
    after: Step | None


def start_next(calls: list[c.Call]) -> tuple[list[c.Call], str | None]:
    """Mark the first pending call running, in the transaction that hands the calls to
    ``_tools``: persisted as running before it runs (a restart reports it interrupted, never
    runs it twice) without a write of its own."""
    call = next((x for x in calls if x.state == "pending"), None)
    if call is None or any(x.state == "running" for x in calls):
        return calls, None
    return c.with_state(calls, call.id, "running"), call.id


def steering(pending: list[StoredEvent]) -> list[StoredEvent]:
    """The queued input a model request takes in when it opens (messages, not answers)."""
    return [e for e in pending if e.type in STEERING]


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
    """Drives one session through the state machine. Holds no per-session state of its own."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        journal: Journal,
        models: ModelRouter,
        settings: Settings,
        executors: ExecutorPool,
        mcp: McpTools | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.journal = journal
        self.models = models
        self.settings = settings
        self.executors = executors
        self.mcp = mcp
        self.retry = RetryPolicy(max_attempts=settings.model_max_attempts)
        self.context = ConversationCache(store.events)
        journal.listeners.append(self.context.committed)
        self.compactor = Compactor(settings, models)
        self.provision = Provisioner(store, settings, journal, executors)

    # --- reading the state ------------------------------------------------------------------

    def _state(self, session: SessionRecord, pending: list[StoredEvent]) -> Step:
        if session.status == "terminated":
            return Step(State.TERMINATED)
        if session.status in ("running", "rescheduling"):
            open_calls = c.load_calls(session.data)
            if any(call.state in ("pending", "running") for call in open_calls):
                return Step(State.TOOLS)
            if open_calls:
                return Step(State.AWAIT)
            return Step(State.MODEL_REQUEST)
        inputs = [e for e in pending if e.type in TURN_INPUTS]
        return Step(State.INPUTS, inputs=inputs) if inputs else Step(State.IDLE)

    async def _begin(self, session_id: str) -> tuple[bool, Step | None]:
        """Read the state (the session row, locked, with its queued input; on PostgreSQL the
        journal's copy of them when it has one, checked by the guard) and when it is input
        waiting take the input in, in the same transaction. Returns whether input was taken
        in (a transition) and then what comes next, else the state read (``None``: the
        session is gone)."""

        async def body(tx: Tx) -> tuple[bool, Step | None]:  # may run twice (Journal.run)
            found = self._state(tx.session, tx.pending)
            if found.state is not State.INPUTS:
                return False, found
            return True, await self._take_inputs(tx, found.inputs)

        try:
            took, after = await self.journal.run(session_id, body, durable=False)
        except NotFound:  # deleted
            return False, None
        if took and after is None:
            await self.provision.after_turn(session_id)  # outputs reach the Files API
        return took, after

    async def take_in(self, tx: Tx, appended: list[StoredEvent]) -> Taken | None:
        """In a client's transaction that appended ``appended``: when that leaves input waiting
        (the session is idle), take it in now, as ``_begin`` would; ``None`` otherwise."""
        found = self._state(tx.session, [*tx.pending, *appended])
        if found.state is not State.INPUTS:
            return None
        return Taken(tx.session.id, await self._take_inputs(tx, found.inputs))

    async def resume(self, taken: Taken) -> Step | None:
        """Carry on after input a client's transaction took in (``take_in``)."""
        if taken.after is None:
            await self.provision.after_turn(taken.session_id)  # outputs reach the Files API
        return taken.after

    async def step(self, session_id: str, hint: Step | None = None) -> Step | None:
        """Take one transition. Returns what is known to come next (sparing a read of the
        store), or ``None`` once the session is idle: input posted from then on calls
        ``Scheduler.wake``, which runs the state machine again from the store."""
        if hint is None or hint.state is State.UNKNOWN:
            took_input, hint = await self._begin(session_id)
            if took_input or hint is None:
                return hint
        match hint.state:
            case State.MODEL_REQUEST:
                after = await self._model_request(
                    session_id, hint.span_start_id, hint.session, hint.has_resources
                )
            case State.TOOLS:
                return await self._tools(session_id, hint.session, hint.started)
            case State.AWAIT:
                await self._await(session_id)
                after = None  # idle: input that arrives later wakes the driver again
            case _:
                return None
        if after is None:
            await self.provision.after_turn(session_id)  # outputs reach the Files API
        return after

    # --- transitions ------------------------------------------------------------------------

    async def _take_inputs(self, tx: Tx, inputs: list[StoredEvent]) -> Step | None:
        """In ``tx``: consume client input while idle: new messages start a turn, confirmations
        and results resolve held calls; the turn (re)starts once nothing is held."""
        data = dict(tx.session.data)
        thread_id = data["primary_thread_id"]
        open_calls = c.load_calls(data)
        new_turn = False
        answered = False
        results: list[NewEvent] = []
        for e in inputs:
            if e.type in STEERING:
                new_turn = True
                open_calls = [call for call in open_calls if call.state != "held"]  # superseded
            elif e.type == ev.USER_TOOL_CONFIRMATION:
                call = next((x for x in open_calls if x.id == e.data.get("tool_use_id")), None)
                if call is None or call.state != "held":
                    continue
                answered = True
                if e.data.get("result") == "allow":
                    if not call.remote:  # a remote call stays held until the worker's result
                        open_calls = c.with_state(open_calls, call.id, "pending")
                else:
                    open_calls = c.without(open_calls, call.id)
                    text = c.rejection_text(call.name, e.data.get("deny_message"))
                    results.append(c.result_for(call, text, thread_id, is_error=True))
            else:  # a custom or self-hosted tool result: the event itself is the result
                call_id = e.data.get("custom_tool_use_id") or e.data.get("tool_use_id")
                remaining = [x for x in open_calls if not (x.id == call_id and x.state == "held")]
                answered = answered or len(remaining) < len(open_calls)
                open_calls = remaining
        await tx.consume(inputs)
        data["calls"] = c.dump_calls(open_calls)
        held = [x.id for x in open_calls if x.state == "held"]
        if held and not new_turn:
            # A partial resolution: say again what is still awaited.
            await tx.append(*results)
            await self._append_idle(tx, data, {"type": "requires_action", "event_ids": held})
            return None
        self._mark_running(tx, data)
        data["rounds"] = 0
        opening = self._running_events(tx)
        runnable = any(x.state == "pending" for x in open_calls)
        if not (new_turn or runnable or results or answered):
            # Nothing to act on (a duplicate result, a stale confirmation): an empty turn.
            await tx.append(*opening)
            await self._append_idle(tx, data, {"type": "end_turn"})
            return None  # idle: input that arrives later wakes the driver again
        if runnable:
            await tx.append(*opening, *results)
            tx.save(data=data, status="running")
            return Step(State.TOOLS, session=replace(tx.session, data=data, status="running"))
        events = await tx.append(*opening, *results, NewEvent(ev.SPAN_MODEL_START, {}, thread_id=thread_id))
        data["open_span"] = events[-1].id
        tx.save(data=data, status="running")
        session = replace(tx.session, data=data, status="running")
        return Step(
            State.MODEL_REQUEST,
            span_start_id=events[-1].id,
            session=session,
            has_resources=tx.has_resources,
        )

    async def _model_request(
        self,
        session_id: str,
        span_start_id: str | None,
        session: SessionRecord | None = None,
        has_resources: bool | None = None,
    ) -> Step | None:
        if session is None or span_start_id is None:
            session = await self.store.sessions.get(None, session_id)
            if session is None or session.status not in ("running", "rescheduling"):
                return None
            if span_start_id is None:
                span_start_id = await self._open_span(session_id)
                session = await self.store.sessions.get(None, session_id)
                assert session is not None
        agent = session.data["agent"]
        attempt = int(session.data.get("attempt", 0))
        if int(session.data.get("rounds", 0)) >= self.settings.max_model_requests_per_turn:
            await self._give_up(
                session_id,
                span_start_id,
                "tool_use_limit_reached_error",
                f"The turn made more than {self.settings.max_model_requests_per_turn} "
                "model requests without ending.",
            )
            return None  # idle: input that arrives later wakes the driver again
        if int(session.data.get("rounds", 0)) == 0 and attempt == 0:
            problem = await self.provision.before_turn(session, has_resources)  # packages, resources
            if problem is not None:
                await self._give_up(session_id, span_start_id, "unknown_error", problem)
                return None  # idle: input that arrives later wakes the driver again
        tools = c.tool_definitions(agent)
        reserved = frozenset(t["name"] for t in tools)
        # Right after a transition of this loop: the journal knows the session's last event.
        through = self.journal.last_seq(session_id)
        conversation = await self.context.conversation(
            session_id, session.data.get("compaction"), reserved, through
        )
        mcp = await self._mcp_tools(session)
        if mcp is not None:
            tools = [*tools, *mcp.definitions]
        try:
            messages, compacted = await self._maybe_compact(session_id, agent, conversation, tools)
        except ModelError as exc:
            await self._model_failed(session_id, span_start_id, exc, attempt)
            return Step(State.UNKNOWN)
        if compacted is False:
            await self._give_up(
                session_id,
                span_start_id,
                "compaction_limit_reached_error",
                "The conversation does not fit the model's context window even after compaction.",
            )
            return None  # idle: input that arrives later wakes the driver again
        request = ModelRequest(
            model=agent["model"]["id"],
            system=agent.get("system"),
            messages=messages,
            tools=tools,
            effort=(agent["model"].get("effort") or {}).get("type"),
        )
        ids = PreviewIds(message=new_id("event"), thinking=new_id("event"))
        try:
            response = await self._stream(session_id, request, ids)
        except ModelError as exc:
            await self._model_failed(session_id, span_start_id, exc, attempt)
            return Step(State.UNKNOWN)
        return await self._model_succeeded(session_id, span_start_id, ids, response, mcp)

    async def _open_span(self, session_id: str) -> str:
        """Open a model request (after a retry wait, a tool round or a restart), taking in any
        message the client sent meanwhile, and closing a span a crash left open."""

        async def body(tx: Tx) -> str:  # may run twice (Journal.run)
            return await self._span_opening(tx, dict(tx.session.data), steering(tx.pending))

        return await self.journal.run(session_id, body, durable=False)

    async def _span_opening(self, tx: Tx, data: dict[str, Any], pending: list[StoredEvent]) -> str:
        """In ``tx``: take in ``pending`` messages, close a span a crash left open, append
        ``span.model_request_start`` and stage ``data``; returns the span's id."""
        thread_id = data["primary_thread_id"]
        opening: list[NewEvent] = []
        if data.get("open_span"):
            opening.append(self._span_end(data["open_span"], thread_id, Usage(), is_error=True))
        if tx.session.status == "rescheduling":
            opening.append(NewEvent(ev.STATUS_RUNNING, {}, thread_id=thread_id))
        await tx.consume(pending)
        events = await tx.append(*opening, NewEvent(ev.SPAN_MODEL_START, {}, thread_id=thread_id))
        data["open_span"] = events[-1].id
        tx.save(data=data, status="running")
        return events[-1].id

    async def _stream(self, session_id: str, request: ModelRequest, ids: PreviewIds) -> ModelResponse:
        """Consume the model's stream, publishing previews to streams that asked for them."""
        provider = self.models.provider_for(request.model)
        started = False
        final: ModelResponse | None = None
        async for item in provider.stream(request):
            if isinstance(item, ThinkingStart):
                if self.bus.wants_previews(session_id, ev.AGENT_THINKING):
                    start = {"type": "event_start", "event": {"type": ev.AGENT_THINKING, "id": ids.thinking}}
                    self.bus.publish(session_id, [Preview(ev.AGENT_THINKING, start)])
            elif isinstance(item, TextDelta):
                if not self.bus.wants_previews(session_id, ev.AGENT_MESSAGE):
                    continue
                if not started:
                    started = True
                    start = {"type": "event_start", "event": {"type": ev.AGENT_MESSAGE, "id": ids.message}}
                    self.bus.publish(session_id, [Preview(ev.AGENT_MESSAGE, start)])
                content = {"type": "text", "text": item.text}
                delta = {
                    "type": "event_delta",
                    "event_id": ids.message,
                    "delta": {"type": "content_delta", "index": item.index, "content": content},
                }
                self.bus.publish(session_id, [Preview(ev.AGENT_MESSAGE, delta)])
            else:
                final = item
        if final is None:
            raise ModelError("request_failed", "the model stream ended without a response", retryable=True)
        return final

    async def _mcp_tools(self, session: SessionRecord) -> McpToolMap | None:
        """The agent's MCP tools for the next request; servers that failed are reported."""
        if self.mcp is None or not session.data["agent"].get("mcp_servers"):
            return None
        found, errors = await self.mcp.tools(session)
        if errors:
            async with self.journal.transaction(session.id, durable=False) as tx:
                await tx.append(*error_events(errors, tx.session.data["primary_thread_id"]))
        return found

    async def _model_succeeded(
        self, session_id: str, start_id: str, ids: PreviewIds, response: ModelResponse, mcp: McpToolMap | None
    ) -> Step | None:
        async def body(tx: Tx) -> Step | None:  # may run twice (Journal.run)
            data = dict(tx.session.data)
            thread_id = data["primary_thread_id"]
            agent = data["agent"]
            text = [
                {"type": "text", "text": b.get("text", "")}
                for b in response.content
                if b.get("type") == "text" and b.get("text")
            ]
            planned = c.plan_tool_uses(
                agent, response.content, thread_id, new_id, remote=bool(data.get("self_hosted")), mcp=mcp
            )
            events: list[NewEvent] = []
            if any(b.get("type") == "thinking" for b in response.content):
                events.append(NewEvent(ev.AGENT_THINKING, {}, thread_id=thread_id, id=ids.thinking))
            if text:
                events.append(
                    NewEvent(ev.AGENT_MESSAGE, {"content": text}, thread_id=thread_id, id=ids.message)
                )
            events += planned.uses
            events.append(self._span_end(start_id, thread_id, response.usage))
            events += planned.results
            data["turn_usage"] = add_usage(data.get("turn_usage") or {}, response.usage)
            if tx.at - int(data.get("usage_event_at") or 0) >= self.settings.usage_event_interval_s * 1e6:
                events.append(self._usage_event(data, tx.at))
                data["usage_event_at"] = tx.at
            await tx.append(*events)
            data["open_span"] = None
            data["attempt"] = 0
            data["rounds"] = int(data.get("rounds", 0)) + 1
            open_calls, started = start_next(c.load_calls(data) + planned.calls)
            data["calls"] = c.dump_calls(open_calls)
            if started is not None:
                tx.save(data=data)
                return Step(State.TOOLS, session=replace(tx.session, data=data), started=started)
            if open_calls:
                tx.save(data=data)
                return Step(State.AWAIT)
            if planned.uses:  # every call was denied: the model reads the denials
                tx.save(data=data)
                return Step(State.MODEL_REQUEST)
            if response.stop_reason == "refusal":
                details = {"type": "refusal", "category": None, "explanation": None}
                await self._append_idle(tx, data, {"type": "refusal"}, details)
            else:
                await self._append_idle(tx, data, {"type": "end_turn"})
            return None  # idle: input that arrives later wakes the driver again

        return await self.journal.run(session_id, body, durable=False)

    async def _tools(
        self, session_id: str, session: SessionRecord | None = None, started: str | None = None
    ) -> Step:
        """Run the turn's allowed calls one by one, each persisted as running first. ``session``
        is the row as the previous transition left it (else it is read); ``started`` a call that
        transition already persisted as running (any other running call was cut short by a
        restart)."""
        while True:
            if session is None:
                session = await self.store.sessions.get(None, session_id)
            if session is None or session.status not in ("running", "rescheduling"):
                return Step(State.UNKNOWN)
            open_calls = c.load_calls(session.data)
            call = next((x for x in open_calls if x.state in ("pending", "running")), None)
            if call is None:
                return Step(State.AWAIT) if open_calls else Step(State.MODEL_REQUEST)
            thread_id = session.data["primary_thread_id"]
            if call.state == "running" and call.id != started:
                restarted = c.result_for(call, RESTARTED, thread_id, is_error=True)
                step, session, started = await self._resolve(session, call, restarted)
                if step is not None:
                    return step
                continue
            if call.state == "pending":
                # Persisted before it runs (a restart reports it interrupted, never runs it twice).
                calls = c.dump_calls(c.with_state(open_calls, call.id, "running"))
                await self.store.sessions.set_calls(session_id, calls, at=now_us())
                session = replace(session, data={**session.data, "calls": calls})
            executor = await self._executor(session)
            if call.kind == "mcp" and self.mcp is not None:
                outcome, error = await self.mcp.call(session, call, executor)
                result = c.mcp_tool_result(call.id, outcome.content, thread_id, is_error=outcome.is_error)
                step, session, started = await self._resolve(
                    session, call, result, *error_events([error] if error else [], thread_id)
                )
            else:
                ran = await executor.run(call.name, call.input)
                # e.g. credential_host_unreachable_error, seen by the sandbox's egress proxy
                reported = [
                    NewEvent(ev.SESSION_ERROR, {"error": error}, thread_id=thread_id)
                    for error in executor.take_session_errors()
                ]
                result = c.tool_result(call.id, ran.content, thread_id, is_error=ran.is_error)
                step, session, started = await self._resolve(session, call, result, *reported)
            if step is not None:
                return step

    async def _executor(self, session: SessionRecord) -> WorkspaceExecutor:
        agent = session.data["agent"]
        credentials = await load_env_credentials(
            self.store.vaults, session.workspace_id, session.data.get("vault_ids") or []
        )
        executor = self.executors.get(
            session.id,
            toolset=find_toolset(agent.get("tools")),
            networking=session.data.get("networking"),
            credentials=credentials,
            mcp_servers=[str(s["url"]) for s in agent.get("mcp_servers") or ()],
        )
        await self.provision.attach(session.id, executor)  # packages layer, uploads, outputs
        return executor

    async def _resolve(
        self, session: SessionRecord, call: c.Call, *events: NewEvent
    ) -> tuple[Step | None, SessionRecord, str | None]:
        """Record a call's result. When it was the turn's last open call, the next model request
        opens in the same transaction (and is returned as the next step); otherwise returns
        ``None``, the row as written and the next call, persisted as running (``start_next``)."""

        async def body(tx: Tx) -> tuple[Step | None, SessionRecord, str | None]:  # may run twice
            data = dict(tx.session.data)
            remaining, started = start_next(c.without(c.load_calls(data), call.id))
            data["calls"] = c.dump_calls(remaining)
            await tx.append(*events)
            if remaining:
                tx.save(data=data)
                return None, replace(tx.session, data=data), started
            span = await self._span_opening(tx, data, steering(tx.pending))
            written = replace(tx.session, data=data, status="running")
            return Step(State.MODEL_REQUEST, span_start_id=span, session=written), written, None

        return await self.journal.run(session.id, body, durable=False)

    async def _await(self, session_id: str) -> None:
        async with self.journal.transaction(session_id, durable=False) as tx:
            data = dict(tx.session.data)
            held = [x.id for x in c.load_calls(data) if x.state == "held"]
            await self._append_idle(tx, data, {"type": "requires_action", "event_ids": held})

    async def interrupted(self, session_id: str) -> None:
        """End the turn now (the in-flight request or tool was already cancelled): close the
        open span, report started calls as interrupted, drop held ones, go idle."""
        async with self.journal.transaction(session_id, durable=False) as tx:
            data = dict(tx.session.data)
            if tx.session.status not in ("running", "rescheduling") and not data.get("calls"):
                return
            thread_id = data["primary_thread_id"]
            events: list[NewEvent] = []
            if data.get("open_span"):
                events.append(self._span_end(data["open_span"], thread_id, Usage(), is_error=True))
            for call in c.load_calls(data):
                if call.kind in ("builtin", "mcp") and call.state in ("pending", "running"):
                    events.append(c.result_for(call, INTERRUPTED, thread_id, is_error=True))
            await tx.append(*events)
            data["calls"] = []
            data["open_span"] = None
            await self._append_idle(tx, data, {"type": "end_turn"})

    # --- failures ---------------------------------------------------------------------------

    async def failed(self, session_id: str) -> None:
        """An unexpected error broke a transition: close what is open and end the turn with
        ``unknown_error`` (the details are in the server log, not in the event)."""
        async with self.journal.transaction(session_id, durable=False) as tx:
            if tx.session.status not in ("running", "rescheduling"):
                return
            data = dict(tx.session.data)
            thread_id = data["primary_thread_id"]
            events: list[NewEvent] = []
            if data.get("open_span"):
                events.append(self._span_end(data["open_span"], thread_id, Usage(), is_error=True))
            for call in c.load_calls(data):
                if call.kind in ("builtin", "mcp") and call.state in ("pending", "running"):
                    events.append(c.result_for(call, "interrupted: internal error", thread_id, is_error=True))
            error = {
                "type": "unknown_error",
                "message": "An internal error ended the turn.",
                "retry_status": {"type": "exhausted"},
            }
            events.append(NewEvent(ev.SESSION_ERROR, {"error": error}, thread_id=thread_id))
            await tx.append(*events)
            data["calls"] = []
            data["open_span"] = None
            await self._append_idle(tx, data, {"type": "retries_exhausted"})

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
        async with self.journal.transaction(session_id, durable=False) as tx:
            data = dict(tx.session.data)
            thread_id = data["primary_thread_id"]
            await tx.append(
                self._span_end(start_id, thread_id, Usage(), is_error=True),
                NewEvent(ev.SESSION_ERROR, {"error": error}, thread_id=thread_id),
            )
            data["open_span"] = None
            if retry:
                data["attempt"] = attempt + 1
                await tx.append(NewEvent(ev.STATUS_RESCHEDULED, {}, thread_id=thread_id))
                tx.save(data=data, status="rescheduling")
            else:
                data["calls"] = []
                await self._append_idle(tx, data, {"type": "retries_exhausted"})
        if retry:
            await asyncio.sleep(self.retry.delay(attempt, exc.retry_after_s))

    async def _give_up(self, session_id: str, start_id: str, error_type: str, message: str) -> None:
        async with self.journal.transaction(session_id, durable=False) as tx:
            data = dict(tx.session.data)
            thread_id = data["primary_thread_id"]
            error = {"type": error_type, "message": message, "retry_status": {"type": "exhausted"}}
            await tx.append(
                self._span_end(start_id, thread_id, Usage(), is_error=True),
                NewEvent(ev.SESSION_ERROR, {"error": error}, thread_id=thread_id),
            )
            data["open_span"] = None
            data["calls"] = []
            await self._append_idle(tx, data, {"type": "retries_exhausted"})

    async def _maybe_compact(
        self, session_id: str, agent: dict[str, Any], conversation: Conversation, tools: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], bool | None]:
        """Compact when the request nears the model's window. Returns the messages to send and
        True (compacted), None (no need) or False (too large even after compacting)."""
        messages = conversation.messages
        if not self.compactor.needed(agent, conversation.size, tools):
            return messages, None
        summary = await self.compactor.summarize(agent, messages, conversation.starts)
        if summary is None:
            return messages, False
        async with self.journal.transaction(session_id, durable=False) as tx:
            data = dict(tx.session.data)
            await tx.append(NewEvent(ev.AGENT_CONTEXT_COMPACTED, {}, thread_id=data["primary_thread_id"]))
            data["compaction"] = {"key": summary.cut_key, "summary": summary.text}
            data["compactions"] = int(data.get("compactions", 0)) + 1
            tx.save(data=data)
        compacted = await self.context.conversation(session_id, data["compaction"])
        if self.compactor.needed(agent, compacted.size, tools):
            return compacted.messages, False
        return compacted.messages, True

    # --- shared pieces ----------------------------------------------------------------------

    def _span_end(self, start_id: str, thread_id: str, usage: Usage, *, is_error: bool = False) -> NewEvent:
        return NewEvent(
            ev.SPAN_MODEL_END,
            {"model_request_start_id": start_id, "is_error": is_error, "model_usage": model_usage(usage)},
            thread_id=thread_id,
        )

    def _usage_event(self, data: dict[str, Any], at: int) -> NewEvent:
        """``session.usage``: the cumulative usage so far (the running turn included)."""
        total = add_usage(data["usage"], usage_of(data.get("turn_usage") or {}))
        active = data.get("active_us", 0) + (at - data["running_since"] if data.get("running_since") else 0)
        snapshot = {**total, "active_seconds": round(active / 1e6, 6)}
        return NewEvent(
            ev.SESSION_USAGE,
            {"usage": snapshot, "budget": data.get("budget")},
            thread_id=data["primary_thread_id"],
        )

    def _mark_running(self, tx: Tx, data: dict[str, Any]) -> None:
        if data.get("running_since") is None:
            data["usage_event_at"] = tx.at  # session.usage is periodic within a running turn
        data["running_since"] = data.get("running_since") or tx.at
        data.setdefault("first_run_at", tx.at)

    def _running_events(self, tx: Tx) -> list[NewEvent]:
        thread_id = tx.session.data["primary_thread_id"]
        name = tx.session.data["agent"]["name"]
        return [
            NewEvent(ev.STATUS_RUNNING, {}, thread_id=thread_id),
            NewEvent(
                ev.THREAD_RUNNING, {"session_thread_id": thread_id, "agent_name": name}, thread_id=thread_id
            ),
        ]

    async def _append_idle(
        self, tx: Tx, data: dict[str, Any], stop: dict[str, Any], details: dict[str, Any] | None = None
    ) -> None:
        """Go idle: the primary thread first, then the session (the order the SDK expects)."""
        thread_id = data["primary_thread_id"]
        name = data["agent"]["name"]
        if data.get("running_since") is not None:
            data["active_us"] = data.get("active_us", 0) + max(0, tx.at - data["running_since"])
        data["running_since"] = None
        data["attempt"] = 0
        data["turns"] = data.get("turns", 0) + 1
        # Tokens reach the session's usage when the turn ends (as on the hosted service).
        data["usage"] = add_usage(data["usage"], usage_of(data.pop("turn_usage", None) or {}))
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


@dataclass(frozen=True)
class PreviewIds:
    """Ids chosen before a model request, so previews and the final events share them."""

    message: str
    thinking: str


def usage_of(total: dict[str, Any]) -> Usage:
    return Usage(
        total.get("input_tokens", 0),
        total.get("output_tokens", 0),
        total.get("cache_read_input_tokens", 0),
        (total.get("cache_creation") or {}).get("ephemeral_5m_input_tokens", 0),
    )


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
