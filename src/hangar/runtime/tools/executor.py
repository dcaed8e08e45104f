"""``WorkspaceExecutor``: the built-in tools running directly in a session's workspace directory,
and ``ExecutorPool``: one executor per session.

The executor runs whatever it is asked to; deciding whether a tool may run (enabled, permission
policy) is the agent loop's job (:mod:`.definitions`, :mod:`.policy`).

The web tools need the agent's toolset config (domain lists, ``max_content_tokens``) and the
environment's networking; pass them when getting the executor,
``pool.get(session_id, toolset=agent_toolset_entry, networking=environment_networking)``, or
later with :meth:`WorkspaceExecutor.configure`. Without them the web tools are unrestricted
(except for non-public addresses, see :mod:`.web`).

Interrupts: :meth:`WorkspaceExecutor.cancel` kills a running bash command's whole process tree
with SIGKILL and makes every ``run()`` in progress return ``"<tool>: interrupted"`` at once. A
file tool already running in its thread finishes there, but its result is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangar.config import Settings
from hangar.runtime.tools import files
from hangar.runtime.tools.base import ToolError, ToolResult, error_result
from hangar.runtime.tools.bash import BashTool
from hangar.runtime.tools.web import WebRules, WebTools

if TYPE_CHECKING:
    from hangar.sandbox.inject import EnvCredential

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[ToolResult]]
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class WorkspaceExecutor:
    """Runs the ``agent_toolset_20260401`` tools of one session inside ``workdir``."""

    def __init__(
        self,
        session_id: str,
        workdir: Path,
        settings: Settings,
        *,
        toolset: dict[str, Any] | None = None,
        networking: dict[str, Any] | None = None,
        credentials: Sequence[EnvCredential] = (),
        mcp_servers: Iterable[str] = (),
    ) -> None:
        """``credentials`` (``environment_variable`` ones) are used by the sandbox only (see
        :mod:`hangar.sandbox.inject`): without a sandbox there is no egress proxy to put their
        values in, and the workspace's ``bash`` gets neither the values nor placeholders.
        ``mcp_servers`` matter only to a sandbox's egress policy (``allow_mcp_servers``)."""
        self.session_id = session_id
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(os.path.realpath(workdir))
        self._bash = BashTool(
            self.workdir,
            default_timeout_s=settings.bash_timeout_s,
            max_timeout_s=settings.bash_max_timeout_s,
        )
        self._toolset = toolset
        self._networking = networking
        self._web = WebTools(
            search_url=settings.web_search_url,
            timeout_s=settings.web_fetch_timeout_s,
            allow_private=settings.web_allow_private_addresses,
            rules=WebRules.from_config(toolset, networking),
        )
        self.rg = files.find_rg(self.workdir)
        """The ``rg`` used by grep (``None``: the Python fallback); may be reassigned."""
        self._handlers: dict[str, Handler] = {
            "bash": self._bash.run,
            "read": partial(files.read, self),
            "write": partial(files.write, self),
            "edit": partial(files.edit, self),
            "glob": partial(files.glob, self),
            "grep": self._grep,
            "web_fetch": self._web.fetch,
            "web_search": self._web.search,
        }
        self._interrupts: set[asyncio.Future[None]] = set()
        self._closed = False

    def configure(
        self,
        *,
        toolset: dict[str, Any] | None = None,
        networking: dict[str, Any] | None = None,
        credentials: Sequence[EnvCredential] | None = None,
        mcp_servers: Iterable[str] | None = None,
    ) -> None:
        """Update the web tools' rules from the agent's toolset entry and/or the environment's
        networking object; an argument left ``None`` keeps its current value (pass
        ``{"type": "unrestricted"}`` to lift a networking limit)."""
        if toolset is not None:
            self._toolset = toolset
        if networking is not None:
            self._networking = networking
        self._web.rules = WebRules.from_config(self._toolset, self._networking)

    def take_session_errors(self) -> list[dict[str, Any]]:
        """``session.error`` ``error`` objects the executor has to report since the last call
        (the sandbox's ``credential_host_unreachable_error``); none here."""
        return []

    async def _grep(self, tool_input: dict[str, Any]) -> ToolResult:
        return await files.grep(self, tool_input, rg=self.rg)

    async def run(self, name: str, tool_input: dict[str, Any]) -> ToolResult:
        """Run one tool call; never raises for tool-level failures (see :mod:`.base`)."""
        handler = self._handlers.get(name)
        if handler is None:
            return error_result(f"{name}: unknown tool")
        if self._closed:
            return error_result(f"{name}: the session's executor is closed")
        if not isinstance(tool_input, dict):
            return error_result(f"{name}: input must be an object")
        interrupt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._interrupts.add(interrupt)
        task = asyncio.ensure_future(handler(tool_input))
        try:
            await asyncio.wait((task, interrupt), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _stop(task)
            raise
        finally:
            self._interrupts.discard(interrupt)
        if interrupt.done() and not task.done():
            await _stop(task)
            return error_result(f"{name}: interrupted")
        if interrupt.done():
            with contextlib.suppress(ToolError, asyncio.CancelledError):
                task.result()  # retrieve it: the interrupt wins
            return error_result(f"{name}: interrupted")
        try:
            return task.result()
        except ToolError as exc:
            return error_result(str(exc))

    @property
    def busy(self) -> bool:
        """A tool call is running."""
        return bool(self._interrupts)

    async def cancel(self) -> None:
        """Interrupt: SIGKILL the running bash command's process tree and end every ``run()`` in
        progress with ``"<tool>: interrupted"``. The next bash call starts a new shell."""
        if not self._interrupts:
            return
        if self._bash.busy:
            self._bash.kill()
        for interrupt in list(self._interrupts):
            if not interrupt.done():
                interrupt.set_result(None)
        await asyncio.sleep(0)  # let the interrupted runs return

    async def close(self) -> None:
        """End of the session's executor: interrupt what runs, kill the shell, close the HTTP
        client. Idempotent; later ``run()`` calls return an error."""
        if self._closed:
            return
        self._closed = True
        await self.cancel()
        await self._bash.close()
        await self._web.close()


async def _stop(task: asyncio.Future[ToolResult]) -> None:
    """Cancel a tool task and wait for its clean-up (killing a shell takes a few ms)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, ToolError):
        await asyncio.shield(task)


ExecutorFactory = Callable[..., WorkspaceExecutor]
"""Builds a session's executor: ``factory(session_id, workdir, settings, toolset=…, networking=…)``
(``WorkspaceExecutor`` itself, or the bubblewrap sandbox)."""


class ExecutorPool:
    """One executor per session, created lazily, closed on demand / at shutdown.

    At most ``max_live`` executors are kept: opening one more closes the least recently used
    idle one (its workspace stays; the next call starts a fresh shell), so sessions that are not
    working hold no shell or sandbox however many there are.
    """

    def __init__(
        self,
        settings: Settings,
        factory: ExecutorFactory | None = None,
        *,
        max_live: int = 32,
        on_close: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._on_close = on_close
        """Awaited with a session id when its executor is closed or evicted (its MCP
        connections go too)."""
        self._factory: ExecutorFactory = factory or WorkspaceExecutor
        self._max_live = max_live
        self._executors: OrderedDict[str, WorkspaceExecutor] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def root(self) -> Path:
        return self._settings.data_dir / "workspaces"

    def get(
        self,
        session_id: str,
        *,
        toolset: dict[str, Any] | None = None,
        networking: dict[str, Any] | None = None,
        credentials: Sequence[EnvCredential] | None = None,
        mcp_servers: list[str] | None = None,
    ) -> WorkspaceExecutor:
        """The session's executor; its workdir is ``<data_dir>/workspaces/<session_id>``
        (created). ``toolset``/``networking``, when given, (re)configure the web tools;
        ``credentials``, when given, set the session's ``environment_variable`` credentials;
        ``mcp_servers`` (the agent's MCP server URLs) the sandbox's ``allow_mcp_servers``."""
        executor = self._executors.get(session_id)
        if executor is None:
            if not _SESSION_ID.match(session_id):
                raise ValueError(f"invalid session id {session_id!r}")
            extra: dict[str, Any] = {}
            if credentials:
                extra["credentials"] = credentials
            if mcp_servers:
                extra["mcp_servers"] = mcp_servers
            executor = self._factory(
                session_id,
                self.root / session_id,
                self._settings,
                toolset=toolset,
                networking=networking,
                **extra,
            )
            self._executors[session_id] = executor
            self._evict()
        elif any(x is not None for x in (toolset, networking, credentials, mcp_servers)):
            executor.configure(
                toolset=toolset, networking=networking, credentials=credentials, mcp_servers=mcp_servers
            )
        self._executors.move_to_end(session_id)
        return executor

    def _evict(self) -> None:
        """Close the least recently used idle executors beyond ``max_live`` (in the background:
        ``get`` stays synchronous)."""
        for session_id in list(self._executors)[: max(0, len(self._executors) - self._max_live)]:
            executor = self._executors[session_id]
            if executor.busy:
                continue
            del self._executors[session_id]
            task = asyncio.get_running_loop().create_task(self._close(session_id, executor))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._executors

    async def _close(self, session_id: str, executor: WorkspaceExecutor | None) -> None:
        if executor is not None:
            await executor.close()
        if self._on_close is not None:
            await self._on_close(session_id)

    async def close(self, session_id: str) -> None:
        """Close the session's executor (if any); its workspace directory is kept."""
        await self._close(session_id, self._executors.pop(session_id, None))

    async def aclose(self) -> None:
        """Close every executor (server shutdown)."""
        executors = list(self._executors.values())
        self._executors.clear()
        await asyncio.gather(*self._closing, return_exceptions=True)
        results = await asyncio.gather(*(e.close() for e in executors), return_exceptions=True)
        for executor, result in zip(executors, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "closing the executor failed",
                    extra={"session_id": executor.session_id, "error": repr(result)},
                )
