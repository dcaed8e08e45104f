"""The tool-execution contract the agent loop programs against.

An :class:`Executor` runs the built-in ``agent_toolset_20260401`` tools for one session:
``run(name, tool_input)`` returns a :class:`ToolResult` and never raises for a tool-level
failure (bad input, missing file, non-zero exit, timeout, interrupt). Those become
``is_error`` results whose text starts with the tool name, e.g. ``read: path '../x' is outside
the session's working directory``.

Inside this package a tool signals such a failure by raising :class:`ToolError`; the executor
turns it into the result. Anything else escaping a tool is a bug, and propagates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

OUTPUT_LIMIT = 100 * 1024
"""Bytes of bash and grep output kept (bash keeps the tail, grep the head)."""

TRUNCATED = "[output truncated]"


@dataclass(frozen=True)
class ToolResult:
    """What one tool call produced, as Messages-API content blocks.

    ``content`` holds ``{"type": "text", "text"}``, ``{"type": "image", "source": {"type":
    "base64", ...}}`` or ``{"type": "document", ...}`` blocks; it is never empty and a text
    block is never empty (the Messages API rejects both).
    """

    content: list[dict[str, Any]]
    is_error: bool = False

    @property
    def text(self) -> str:
        """The concatenated text blocks (convenient for logs and tests)."""
        return "".join(b["text"] for b in self.content if b.get("type") == "text")


class ToolContext(Protocol):
    """What a tool run may use."""

    session_id: str
    workdir: Path
    """The session's workspace directory (absolute, symlinks resolved)."""


class Executor(Protocol):
    """Where the agent's hands run. The first implementation is
    :class:`~hangar.runtime.tools.executor.WorkspaceExecutor`; a bubblewrap sandbox comes later
    behind the same protocol."""

    async def run(self, name: str, tool_input: dict[str, Any]) -> ToolResult:
        """Run one tool call. Tool-level failures become ``is_error`` results whose text starts
        with the tool name; an interrupted call returns ``"<tool>: interrupted"``."""
        ...

    async def cancel(self) -> None:
        """Interrupt: kill whatever runs now (the whole process tree) within 200 ms."""
        ...

    async def close(self) -> None:
        """End of the session's executor: kill the shell and release resources."""
        ...


class ToolError(Exception):
    """A tool-level failure; its message becomes the text of an ``is_error`` result.

    The message must start with the tool name (``"read: ..."``).
    """


def text_result(text: str, *, is_error: bool = False, empty: str = "(no output)") -> ToolResult:
    """A single-text-block result; an empty ``text`` is replaced by ``empty``."""
    return ToolResult([{"type": "text", "text": text or empty}], is_error=is_error)


def error_result(message: str) -> ToolResult:
    return text_result(message, is_error=True)
