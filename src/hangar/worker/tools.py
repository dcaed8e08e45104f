"""The session's tools as the SDK's runner sees them: each one a thin adapter from the SDK's
``BetaAsyncBuiltinFunctionTool`` interface onto one :class:`~hangar.sandbox.BwrapExecutor`.

The executor does the work (``bash`` inside the session's bubblewrap sandbox, the file tools
confined to the session's workspace, the web tools under the worker's networking rules); an
``is_error`` result becomes the SDK's :class:`~anthropic.lib.tools.ToolError`, so the runner
posts it as a ``user.tool_result`` with ``is_error: true``.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from anthropic.lib.tools import BetaAsyncBuiltinFunctionTool, BetaFunctionToolResultType, ToolError
from anthropic.types.beta import BetaToolUnionParam
from anthropic.types.beta.beta_tool_result_block_param import Content

from hangar.runtime.tools.base import Executor

log = logging.getLogger(__name__)

TOOL_NAMES = ("bash", "read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
"""The ``agent_toolset_20260401`` tools a Hangar worker answers. The SDK's own toolset has no
``web_fetch``/``web_search``; Hangar's executor does, under the worker's networking rules."""


class SandboxTool(BetaAsyncBuiltinFunctionTool):
    """One built-in tool of one session, run by ``executor``."""

    def __init__(self, name: str, executor: Executor, session_id: str) -> None:
        self._name = name
        self._executor = executor
        self._session_id = session_id

    @property
    def name(self) -> str:
        return self._name

    def to_dict(self) -> BetaToolUnionParam:
        # The runner only dispatches by name; the definition the model sees is the server's.
        return {"name": self._name, "input_schema": {"type": "object"}}

    async def call(self, input: object) -> BetaFunctionToolResultType:
        tool_input = cast("dict[str, Any]", input) if isinstance(input, dict) else {}
        result = await self._executor.run(self._name, tool_input)
        content = cast("list[Content]", result.content)
        if result.is_error:
            log.info("tool error session=%s tool=%s: %s", self._session_id, self._name, result.text[:200])
            raise ToolError(content)
        return content


def sandbox_tools(executor: Executor, session_id: str) -> list[SandboxTool]:
    """The tools of :data:`TOOL_NAMES`, all run by ``executor``."""
    return [SandboxTool(name, executor, session_id) for name in TOOL_NAMES]
