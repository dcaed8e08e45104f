"""The MCP client side of the runtime: connections to the agent's MCP servers, the tools the
model sees of them, and results too large for the context.

- :mod:`.client`: :class:`McpSessionPool` → :class:`McpConnection` (``list_tools``, ``call``),
  streamable HTTP with a legacy SSE fallback, reconnects, auth headers per request.
- :mod:`.toolsets`: :func:`mcp_tool_definitions` (Messages-API definitions of the enabled tools
  and the reverse name map), :func:`policy_for` (default ``always_ask``).
- :mod:`.spill`: :func:`spill_large_result` (oversized output to a file, a preview to the model).
- :mod:`.errors`: :class:`McpConnectionFailed`, :class:`McpAuthenticationFailed`.

Importing this package does not import the ``mcp`` SDK; the first connection does.
"""

from hangar.runtime.mcp._wire import HeadersFactory, UnauthorizedHook
from hangar.runtime.mcp.client import McpConnection, McpSessionPool, TransportKind
from hangar.runtime.mcp.errors import McpAuthenticationFailed, McpConnectionFailed, McpError
from hangar.runtime.mcp.results import McpCallResult, McpTool
from hangar.runtime.mcp.spill import spill_large_result
from hangar.runtime.mcp.toolsets import (
    McpToolMap,
    McpToolRef,
    find_mcp_toolset,
    mcp_tool_definitions,
    model_tool_name,
    policy_for,
)

__all__ = [
    "HeadersFactory",
    "McpAuthenticationFailed",
    "McpCallResult",
    "McpConnection",
    "McpConnectionFailed",
    "McpError",
    "McpSessionPool",
    "McpTool",
    "McpToolMap",
    "McpToolRef",
    "TransportKind",
    "UnauthorizedHook",
    "find_mcp_toolset",
    "mcp_tool_definitions",
    "model_tool_name",
    "policy_for",
    "spill_large_result",
]
