"""Why an MCP server could not be used.

::

    McpError                      (server_name, message)
    ├── McpConnectionFailed       → session.error mcp_connection_failed_error
    └── McpAuthenticationFailed   → session.error mcp_authentication_failed_error (HTTP 401/403)

Messages name the server and what went wrong in words Hangar chose; they never quote header
values, tokens, or the query string of the server's URL, so they are safe for events and logs.
A tool that runs and fails is not an error here: it is an ``is_error`` result.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

RetryStatus = Literal["retrying", "exhausted", "terminal"]


class McpError(Exception):
    """An MCP server could not be reached or used."""

    error_type: ClassVar[str] = "mcp_connection_failed_error"

    def __init__(self, server_name: str, message: str) -> None:
        super().__init__(message)
        self.server_name = server_name
        self.message = message

    def session_error(self, retry_status: RetryStatus = "exhausted") -> dict[str, Any]:
        """The ``error`` object of a ``session.error`` event (API §3.3)."""
        return {
            "type": self.error_type,
            "message": self.message,
            "retry_status": {"type": retry_status},
            "mcp_server_name": self.server_name,
        }


class McpConnectionFailed(McpError):
    """The server could not be reached, the handshake failed, or the connection was lost."""

    error_type: ClassVar[str] = "mcp_connection_failed_error"


class McpAuthenticationFailed(McpError):
    """The server answered HTTP 401 or 403."""

    error_type: ClassVar[str] = "mcp_authentication_failed_error"
