"""The built-in ``agent_toolset_20260401``: tool execution, definitions and permission policies.

- :mod:`.base`: the contract (:class:`Executor`, :class:`ToolResult`, :class:`ToolContext`).
- :mod:`.executor`: :class:`WorkspaceExecutor` (tools run in the session's workspace directory)
  and :class:`ExecutorPool` (one executor per session).
- :mod:`.bash`, :mod:`.files`, :mod:`.web`: the tools themselves.
- :mod:`.definitions`: Messages-API tool definitions and per-tool config of an agent's toolset.
- :mod:`.policy`: ``always_allow`` / ``always_ask`` / ``auto`` → :class:`Verdict`.

Typical use by the agent loop::

    toolset = find_toolset(agent["tools"])
    tools = toolset_definitions(toolset) if toolset else []
    ...
    executor = pool.get(session_id, toolset=toolset, networking=environment_networking)
    verdict = evaluate(
        tool_policy(toolset, name), name, tool_input, AutoClassifier(executor.workdir)
    )
    # verdict.evaluation goes on the agent.tool_use event; "ask" waits for a confirmation;
    # "deny" records an is_error result with denied_text(name, verdict).
    if verdict.permission == "allow":
        result = await executor.run(name, tool_input)   # a ToolResult, never raises
"""

from hangar.runtime.tools.base import Executor, ToolContext, ToolError, ToolResult
from hangar.runtime.tools.definitions import (
    AGENT_TOOLSET,
    TOOL_NAMES,
    enabled_tools,
    find_toolset,
    tool_config,
    tool_policy,
    toolset_definitions,
)
from hangar.runtime.tools.executor import ExecutorPool, WorkspaceExecutor
from hangar.runtime.tools.policy import AutoClassifier, Classifier, Judgement, Verdict, denied_text, evaluate
from hangar.runtime.tools.web import WebRules

__all__ = [
    "AGENT_TOOLSET",
    "TOOL_NAMES",
    "AutoClassifier",
    "Classifier",
    "Executor",
    "ExecutorPool",
    "Judgement",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Verdict",
    "WebRules",
    "WorkspaceExecutor",
    "denied_text",
    "enabled_tools",
    "evaluate",
    "find_toolset",
    "tool_config",
    "tool_policy",
    "toolset_definitions",
]
