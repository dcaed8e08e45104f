"""``SandboxWorker``: Hangar's bubblewrap sandbox serving a self-hosted environment's work queue
from any machine that can reach the API server.

The protocol (poll → ack → heartbeat while serving → answer ``agent.tool_use`` with
``user.tool_result`` → force-stop) is the official SDK's own
:class:`~anthropic.lib.environments.EnvironmentWorker`, not a copy of it: the worker runs
``max_sessions`` of them side by side (one session each at a time, sharing one worker id), and
gives each a tool *factory*. For every claimed session the factory builds a
:class:`~hangar.sandbox.BwrapExecutor` on the session's workspace,
``<data_dir>/workspaces/<session_id>`` (kept across items, so a dormant session that comes back
finds its files), and hands the SDK's runner :func:`~hangar.worker.tools.sandbox_tools` bound to
it. The sandbox is closed (every process in it killed) when the SDK tears the session's
``AgentToolContext`` down: the factory chains the executor's ``close`` onto that context's
``close``, which the SDK awaits, shielded, before it stops the item. The SDK exposes no other
per-session end hook, and this one keeps its lease, retry and teardown order intact.

Networking is the worker's (a ``self_hosted`` environment's config carries none): an
environment-style ``networking`` object, ``unrestricted`` or ``limited`` with ``allowed_hosts``
(enforced by the executor's egress proxy, as for cloud sessions).

Stopping (:meth:`SandboxWorker.drain`, on SIGTERM): no more items are claimed; the SDK finishes a
tool call in flight and posts its result (it runs each call shielded), then closes the sandbox
and stops the item; the server queues a new item for a session that still needs one, so another
worker takes over. A call still running after ``drain_timeout_s`` (or at once, after
:meth:`SandboxWorker.abort`) is interrupted: its process tree is killed and the model gets
``"<tool>: interrupted"``.

Not carried over from the SDK's worker: memory-store sync (Hangar's sessions token does not
reach memory stores) and skills (the SDK would download them next to, not into, the sandbox;
Hangar serves no skills).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anthropic
from anthropic.lib.environments import DEFAULT_MAX_IDLE, BetaAnyRunnableTool, EnvironmentWorker

from hangar.config import Settings
from hangar.sandbox import BwrapExecutor, SandboxUnavailable, sandbox_problems
from hangar.worker.tools import sandbox_tools

if TYPE_CHECKING:
    from anthropic.lib.tools.agent_toolset import AgentToolContext

log = logging.getLogger(__name__)

TOOLSET_TYPE = "agent_toolset_20260401"
INTERRUPT_GRACE_S = 10.0
"""After interrupting the calls still running at the end of a drain: how long the SDK gets to
post their results and stop the items before the worker gives up on them."""
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class WorkerOptions:
    """What ``hangar worker`` serves, and how."""

    environment_id: str
    server_url: str
    key: str = field(repr=False)
    """The environment key (``hangar keys create --environment``)."""
    max_sessions: int = 1
    """Sessions served at the same time (each in its own sandbox)."""
    networking: Mapping[str, Any] = field(default_factory=lambda: {"type": "unrestricted"})
    """The sandboxes' networking, shaped like a cloud environment's ``networking``."""
    max_idle: float | None = DEFAULT_MAX_IDLE
    """Seconds a session stays served after it went idle (the SDK runner's ``max_idle``)."""
    drain_timeout_s: float = 30.0
    """On :meth:`SandboxWorker.drain`: how long running tool calls get to finish."""
    worker_id: str | None = None
    """The ``Anthropic-Worker-ID`` of every poll (default: ``<host>-<12 hex>``)."""


class SandboxWorker:
    """Serves one self-hosted environment with bubblewrap sandboxes until drained.

    ``await worker.run()`` polls and serves; :meth:`drain` (from a signal handler) makes it
    return once in-flight work is handed back; :meth:`abort` makes it return sooner. Raises
    :class:`~hangar.sandbox.SandboxUnavailable` when bubblewrap is missing and the SDK's
    ``APIStatusError`` when the server refuses the key or the environment.
    """

    def __init__(self, settings: Settings, options: WorkerOptions) -> None:
        if options.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.settings = settings
        self.options = options
        self.worker_id = options.worker_id or f"{socket.gethostname()}-{secrets.token_hex(6)}"
        self.workspaces = settings.data_dir / "workspaces"
        self._executors: dict[int, tuple[str, BwrapExecutor]] = {}
        self._drain = asyncio.Event()
        self._abort = asyncio.Event()

    @property
    def sessions(self) -> list[str]:
        """The sessions served right now (one live sandbox each)."""
        return [sid for sid, _ in self._executors.values()]

    def drain(self) -> None:
        """Stop claiming; let running tool calls finish (up to ``drain_timeout_s``); return."""
        self._drain.set()

    def abort(self) -> None:
        """Like :meth:`drain`, but interrupt running tool calls now."""
        self._drain.set()
        self._abort.set()

    async def run(self) -> None:
        problems = sandbox_problems(self.options.networking)
        if problems:
            raise SandboxUnavailable("cannot run sandboxes: " + "; ".join(problems))
        self.workspaces.mkdir(parents=True, exist_ok=True)
        opts = self.options
        log.info(
            "worker %s serving environment %s from %s: up to %d session(s), networking %s",
            self.worker_id,
            opts.environment_id,
            opts.server_url,
            opts.max_sessions,
            opts.networking.get("type"),
        )
        async with anthropic.AsyncAnthropic(base_url=opts.server_url, api_key=opts.key) as client:
            slots = [
                asyncio.create_task(self._serve(client, n), name=f"hangar-worker-slot-{n}")
                for n in range(opts.max_sessions)
            ]
            drained = asyncio.create_task(self._drain.wait())
            failure: BaseException | None = None
            try:
                await asyncio.wait([*slots, drained], return_when=asyncio.FIRST_COMPLETED)
                for task in slots:
                    if task.done() and not task.cancelled() and failure is None:
                        failure = task.exception()
                await self._stop(slots)
            finally:
                drained.cancel()
                for _, executor in list(self._executors.values()):
                    await executor.close()
                self._executors.clear()
                # Collect every slot's outcome (a cancelled one's CancelledError included).
                await asyncio.gather(*(t for t in slots if t.done()), return_exceptions=True)
        if failure is not None:
            raise failure
        log.info("worker %s stopped", self.worker_id)

    async def _serve(self, client: anthropic.AsyncAnthropic, slot: int) -> None:
        """One session at a time, for ever: the SDK's worker with sandboxed tools."""
        workdir = self.settings.data_dir / "worker" / f"slot-{slot}"
        workdir.mkdir(parents=True, exist_ok=True)
        worker = EnvironmentWorker(
            client,
            environment_id=self.options.environment_id,
            environment_key=self.options.key,
            tools=self._tools_for,
            workdir=workdir,
            max_idle=self.options.max_idle,
            memory_sync_interval=None,
            worker_id=self.worker_id,
        )
        await worker.run()

    def _tools_for(self, ctx: AgentToolContext) -> Sequence[BetaAnyRunnableTool]:
        """The SDK's per-session tool factory: a sandbox on the session's workspace."""
        session = ctx.session
        if session is None:  # the SDK's worker always passes the session it fetched
            raise RuntimeError("the SDK gave no session to the tool factory")
        if not _SESSION_ID.match(session.id):
            raise ValueError(f"refusing a malformed session id {session.id!r}")
        toolset = next(
            (
                t.model_dump(mode="json", exclude_none=True)
                for t in session.agent.tools
                if t.type == TOOLSET_TYPE
            ),
            None,
        )
        executor = BwrapExecutor(
            session.id,
            self.workspaces / session.id,
            self.settings,
            networking=dict(self.options.networking),
            toolset=toolset,
            mcp_servers=[s.url for s in session.agent.mcp_servers],
        )
        key = id(executor)
        self._executors[key] = (session.id, executor)
        sdk_close = ctx.close

        async def close() -> None:
            try:
                await executor.close()
            finally:
                self._executors.pop(key, None)
                log.info("session %s: sandbox closed", session.id, extra={"session_id": session.id})
                await sdk_close()

        ctx.close = close  # type: ignore[method-assign]  # see the module docstring
        log.info("session %s: serving in %s", session.id, executor.workdir, extra={"session_id": session.id})
        return sandbox_tools(executor, session.id)

    async def _stop(self, slots: list[asyncio.Task[None]]) -> None:
        """Drain: cancel the slots (the SDK finishes a call in flight, then stops its item),
        wait up to ``drain_timeout_s``, then interrupt what still runs."""
        for task in slots:
            task.cancel()
        pending = {t for t in slots if not t.done()}
        if not pending:
            return
        if self.sessions and not self._abort.is_set():
            log.info(
                "draining: %d session(s) finish their running tool calls (up to %gs)",
                len(self.sessions),
                self.options.drain_timeout_s,
            )
            pending = await _wait(pending, self.options.drain_timeout_s, self._abort)
        if pending:
            if self.sessions:
                log.warning("interrupting the tool calls still running in %s", ", ".join(self.sessions))
            for _, executor in list(self._executors.values()):
                await executor.cancel()
            pending = await _wait(pending, INTERRUPT_GRACE_S)
        if pending:
            log.error("%d session(s) did not stop in time; leaving their items to expire", len(pending))


async def _wait(
    tasks: set[asyncio.Task[None]], seconds: float, interrupt: asyncio.Event | None = None
) -> set[asyncio.Task[None]]:
    """Wait until ``tasks`` are done, ``seconds`` passed or ``interrupt`` is set; those not done."""
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(tasks))}
    if interrupt is not None:
        waiters.add(asyncio.ensure_future(interrupt.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    return {t for t in tasks if not t.done()}
