"""Oversized MCP results go to a file; the model gets a preview and the path.

:func:`spill_large_result` measures the text of a result (UTF-8 bytes of its text blocks).
Within ``limit`` the result is returned unchanged. Over it, the whole text is written to a new
file under ``directory`` (the session's workspace, or a folder in it) and the text blocks are
replaced by one block::

    [The output of search is 1234567 bytes, more than the 400000-byte limit for a tool
    result. It was saved in full to /workspace/.mcp_results/github-search-1a2b3c4d.txt; read
    that file for the rest. The first 4096 bytes follow.]

    <preview>

Image blocks are kept. ``shown_as`` is ``directory`` as the agent sees it (a sandbox mounts the
workspace at ``/workspace``); by default the real path is shown.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path, PurePosixPath

from hangar.runtime.mcp.results import McpCallResult

PREVIEW_BYTES = 4096
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


async def spill_large_result(
    result: McpCallResult,
    *,
    tool: str,
    directory: Path,
    limit: int,
    server: str | None = None,
    shown_as: str | None = None,
    preview_bytes: int = PREVIEW_BYTES,
) -> McpCallResult:
    """``result``, or a preview of it when its text is over ``limit`` bytes (see the module)."""
    text = result.text
    data = text.encode()
    if len(data) <= limit:
        return result
    stem = "-".join(_safe(part) for part in (server, tool) if part) or "result"
    name = f"{stem[:80]}-{secrets.token_hex(4)}.txt"
    path = directory / name
    await asyncio.to_thread(_write, path, data)
    where = str(PurePosixPath(shown_as) / name) if shown_as is not None else str(path)
    head = data[: min(preview_bytes, limit)].decode(errors="ignore")
    note = (
        f"[The output of {tool} is {len(data)} bytes, more than the {limit}-byte limit for a tool "
        f"result. It was saved in full to {where}; read that file for the rest. The first "
        f"{len(head.encode())} bytes follow.]\n\n{head}"
    )
    others = [b for b in result.content if b.get("type") != "text"]
    return McpCallResult([{"type": "text", "text": note}, *others], is_error=result.is_error)


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part).strip("._") or "x"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        f.write(data)
