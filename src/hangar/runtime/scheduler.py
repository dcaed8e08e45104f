"""Owns one driver task per active session; wakes them when input arrives, stops them on interrupt.

Structured concurrency: every task is created, tracked, cancelled and awaited here. A session
has at most one driver at a time, so its transitions are strictly serial.
"""

from __future__ import annotations

import asyncio
import logging

from hangar.runtime.journal import Tx
from hangar.runtime.loop import Loop, Taken
from hangar.runtime.tools.executor import ExecutorPool
from hangar.store import Store
from hangar.store.events import StoredEvent

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, store: Store, loop: Loop, executors: ExecutorPool) -> None:
        self.store = store
        self.loop = loop
        self.executors = executors
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._taken: dict[str, Taken] = {}  # input a client's transaction took in (`take_in`)
        self._interrupts: set[str] = set()
        self._closing = False

    async def take_in(self, tx: Tx, appended: list[StoredEvent]) -> Taken | None:
        """In a client's transaction that appended input: if no driver runs the session in this
        process, take the input in right there (the loop's INPUTS transition), sparing the turn
        a transaction of its own. Its result goes to ``wake`` straight after the commit, with
        nothing awaited in between, so no other driver can start first."""
        if self._closing or tx.session.id in self._tasks or tx.session.data.get("self_hosted"):
            return None
        return await self.loop.take_in(tx, appended)

    def wake(self, session_id: str, taken: Taken | None = None) -> None:
        """Make sure the session's driver runs (again) soon; ``taken`` is what ``take_in``
        returned, where the driver carries on."""
        if self._closing:
            return
        if taken is not None:
            self._taken[session_id] = taken
        else:
            self._again.add(session_id)
        if session_id not in self._tasks:
            self._tasks[session_id] = asyncio.create_task(
                self._drive(session_id), name=f"session:{session_id}"
            )

    def running(self, session_id: str) -> bool:
        return session_id in self._tasks

    async def interrupt(self, session_id: str) -> None:
        """Stop what the session is doing now (model request, tool process tree) and end the
        turn; the driver then carries on with any queued input."""
        if self._closing:
            return
        self._interrupts.add(session_id)
        if session_id in self.executors:
            await self.executors.get(session_id).cancel()
        task = self._tasks.get(session_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.wake(session_id)

    async def _drive(self, session_id: str) -> None:
        try:
            while session_id in self._again or session_id in self._taken or session_id in self._interrupts:
                # Resuming from taken input leaves a wake that came meanwhile for the next round:
                # its input was appended after the input taken in.
                taken = self._taken.pop(session_id, None)
                if taken is None or session_id in self._interrupts:
                    self._again.discard(session_id)
                if session_id in self._interrupts:
                    self._interrupts.discard(session_id)
                    taken = None  # the turn it began is over
                    await self.loop.interrupted(session_id)
                step = await (self.loop.step(session_id) if taken is None else self.loop.resume(taken))
                while step is not None:
                    step = await self.loop.step(session_id, step)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not kill the server or leave the session wedged: log it, and end the
            # turn with an `unknown_error` the client can see.
            log.exception("session driver failed", extra={"session_id": session_id})
            try:
                await self.loop.failed(session_id)
            except Exception:
                log.exception("could not record the failure", extra={"session_id": session_id})
        finally:
            if self._tasks.get(session_id) is asyncio.current_task():
                del self._tasks[session_id]

    async def start(self) -> None:
        """Resume every session a previous process left mid-turn or with queued input."""
        for session_id in await self.store.sessions.unsettled():
            self.wake(session_id)
        for session_id in await self.store.sessions.with_pending_input():
            self.wake(session_id)

    async def stop(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.executors.aclose()
