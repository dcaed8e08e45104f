"""Owns one driver task per active session; wakes them when input arrives.

Structured concurrency: every task is created, tracked, cancelled and awaited here. A session
has at most one driver at a time, so its transitions are strictly serial.
"""

from __future__ import annotations

import asyncio
import logging

from hangar.runtime.loop import Loop
from hangar.store import Store

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, store: Store, loop: Loop) -> None:
        self.store = store
        self.loop = loop
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._closing = False

    def wake(self, session_id: str) -> None:
        """Make sure the session's driver runs (again) soon."""
        if self._closing:
            return
        self._again.add(session_id)
        if session_id not in self._tasks:
            task = asyncio.create_task(self._drive(session_id), name=f"session:{session_id}")
            self._tasks[session_id] = task

    def running(self, session_id: str) -> bool:
        return session_id in self._tasks

    async def _drive(self, session_id: str) -> None:
        try:
            while session_id in self._again:
                self._again.discard(session_id)
                step = await self.loop.step(session_id)
                while step is not None:
                    step = await self.loop.step(session_id, step)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not kill the server or leave the session wedged: log it with the
            # session id; the session's state is in the log and the next wake retries.
            log.exception("session driver failed", extra={"session_id": session_id})
        finally:
            self._tasks.pop(session_id, None)

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
