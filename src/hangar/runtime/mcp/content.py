"""MCP tool results as Messages-API content blocks.

An MCP ``CallToolResult`` holds text, image, audio, resource-link and embedded-resource blocks;
``agent.mcp_tool_result`` (and the model) take text, image and document blocks. The mapping:

- text → ``{"type": "text", "text"}`` (empty text is dropped);
- image → ``{"type": "image", "source": {"type": "base64", "media_type", "data"}}`` for the media
  types the Messages API accepts (png, jpeg, gif, webp), otherwise a text note;
- embedded resource → its text, after a ``[resource <uri>]`` line; a binary resource that is an
  accepted image becomes an image, any other binary resource a text note;
- resource link → a text line naming it; audio → a text note;
- no content at all → the structured content as JSON, or ``(no output)``.

The result is never empty and no text block is empty (the Messages API rejects both).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

import mcp_types as types

from hangar.runtime.mcp.results import McpCallResult

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
NO_OUTPUT = "(no output)"


def convert_result(result: types.CallToolResult) -> McpCallResult:
    """An MCP ``CallToolResult`` as an :class:`McpCallResult`."""
    blocks = [b for block in result.content for b in _convert(block)]
    if not blocks:
        structured = result.structured_content
        text = NO_OUTPUT if structured is None else json.dumps(structured, ensure_ascii=False)
        blocks = [{"type": "text", "text": text}]
    return McpCallResult(blocks, is_error=bool(result.is_error))


def _convert(block: types.ContentBlock) -> Iterable[dict[str, Any]]:
    if isinstance(block, types.TextContent):
        if block.text:
            yield _text(block.text)
    elif isinstance(block, types.ImageContent):
        yield _image(block.data, block.mime_type, "image")
    elif isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            yield _text(f"[resource {resource.uri}]\n{resource.text}")
        else:
            yield _image(
                resource.blob, resource.mime_type or "application/octet-stream", f"resource {resource.uri}"
            )
    elif isinstance(block, types.ResourceLink):
        about = f" ({block.description})" if block.description else ""
        yield _text(f"[resource link] {block.name}: {block.uri}{about}")
    elif isinstance(block, types.AudioContent):
        yield _text(f"[audio ({block.mime_type}, {_size(block.data)} bytes) not shown]")


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _image(data: str, media_type: str, what: str) -> dict[str, Any]:
    media_type = media_type.split(";")[0].strip().lower()
    if media_type in IMAGE_TYPES:
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return _text(f"[{what} ({media_type}, {_size(data)} bytes) not shown]")


def _size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return len(data)
