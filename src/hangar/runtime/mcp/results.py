"""What an MCP server hands back, in Hangar's terms: its tools and the results of calls.

(No import of the ``mcp`` SDK here: it costs seconds, and only a connection needs it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class McpTool:
    """One tool as the server lists it (``name`` is the bare MCP name)."""

    name: str
    description: str | None
    input_schema: dict[str, Any]
    annotations: dict[str, Any] | None = None


@dataclass(frozen=True)
class McpCallResult:
    """The outcome of one MCP tool call as Messages-API content blocks: ``text``,
    ``image`` (base64 source) and nothing else; never empty, no empty text block."""

    content: list[dict[str, Any]]
    is_error: bool = False

    @property
    def text(self) -> str:
        """The concatenated text blocks (convenient for logs and tests)."""
        return "".join(b["text"] for b in self.content if b.get("type") == "text")


def error_result(text: str) -> McpCallResult:
    return McpCallResult([{"type": "text", "text": text}], is_error=True)
