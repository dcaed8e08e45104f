"""The ``scripted`` provider: deterministic, offline model replies for tests, demos and benchmarks.

Default replies (no script, no directive), computed from the text of the last user message:

- model ``scripted-echo``: the text itself, verbatim;
- any other model: ``"Hello! You said: <text>"`` (``"Hello!"`` when there is no text);
- when the last user message carries ``tool_result`` blocks: one line per result,
  ``"The <tool> tool returned: <text>"`` (``failed`` instead of ``returned`` for ``is_error``).

Text is streamed in up to four deltas. Usage is whitespace word counts: ``input_tokens`` over the
system prompt and every message (text, tool inputs, tool results), ``output_tokens`` over the
reply. A reply longer than ``max_tokens`` words is cut there with stop_reason ``max_tokens``.

Directives in the last user message's text force behaviours; they are removed from the echoed
text, and several may be combined:

``[[error:KIND]]``
    Raise ``ModelError(KIND)``; KIND is ``overloaded`` (status 529), ``rate_limited`` (429),
    ``request_failed`` (500), ``timeout``, ``authentication`` (401) or ``invalid_request`` (400).
    Options, space separated: ``times=N`` fails only the first N attempts of the same request
    (then the rest of the message is answered normally), ``retry_after=S`` sets
    ``retry_after_s``, ``partial`` streams the first delta of the reply before failing.
``[[tool:NAME {json}]]``
    Emit a ``tool_use`` block calling NAME with the JSON object as input (``{}`` when omitted),
    stop_reason ``tool_use``. Repeat the directive for parallel tool calls. The next request
    (whose last message holds the tool results) is answered with the summary above.
``[[sleep:MS]]``
    Wait MS milliseconds before answering (cancellable).
``[[refusal]]``
    Reply ``"I can't help with that."`` with stop_reason ``refusal``.
``[[words:N]]``
    Reply with N words, streamed one word per delta.
``[[thinking]]``
    Put a ``thinking`` block before the reply.

A script file (``HANGAR_SCRIPTED_SCRIPT``) is a JSON list of turns, tried before directives::

    [{"when": "regex searched in the last user text (optional)",
      "repeat": false,            # reusable instead of consumed once
      "sleep_ms": 0,
      "error": "overloaded",      # or {"kind", "message", "status", "retry_after_s"}
      "text": "shorthand for one text block",
      "content": [{"type": "text", "text": "..."},
                  {"type": "tool_use", "name": "bash", "input": {...}, "id": "optional"},
                  {"type": "thinking", "thinking": "..."}],
      "stop_reason": "end_turn",  # default: tool_use when content has a tool_use block
      "usage": {"input_tokens": 1, "output_tokens": 2}}]

Each request uses the first unconsumed turn whose ``when`` matches; with none left it falls
back to directives and the default reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from hangar.runtime.models.base import (
    ERROR_KINDS,
    ErrorKind,
    ModelError,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingStart,
    Usage,
)

NAME = "scripted"

ERROR_STATUS: dict[str, int | None] = {
    "overloaded": 529,
    "rate_limited": 429,
    "request_failed": 500,
    "timeout": None,
    "authentication": 401,
    "invalid_request": 400,
}
REFUSAL_TEXT = "I can't help with that."
_VOCABULARY = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua",
)  # fmt: skip
_MAX_DELTAS = 4
_SUMMARY_CHARS = 1000


# --- the script file ------------------------------------------------------------------------


class _ScriptError(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ErrorKind
    message: str | None = None
    status: int | None = None
    retry_after_s: float | None = None


class ScriptTurn(BaseModel):
    """One reply of a script file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    when: str | None = None
    repeat: bool = False
    sleep_ms: float = Field(default=0, ge=0)
    error: ErrorKind | _ScriptError | None = None
    text: str | None = None
    content: list[dict[str, Any]] | None = None
    stop_reason: str | None = None
    usage: dict[str, int] | None = None


_SCRIPT = TypeAdapter(list[ScriptTurn])


def load_script(path: Path) -> list[ScriptTurn]:
    """Read and validate a script file; a bad file is a ``ValueError`` naming the problem."""
    try:
        turns = _SCRIPT.validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise ValueError(f"invalid scripted-provider script {path}: {exc}") from exc
    for i, turn in enumerate(turns):
        if turn.when is not None:
            try:
                re.compile(turn.when)
            except re.error as exc:
                raise ValueError(f"invalid scripted-provider script {path}: [{i}].when: {exc}") from exc
    return turns


# --- directives -----------------------------------------------------------------------------


@dataclass
class _Directives:
    text: str = ""
    errors: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sleep_ms: float = 0.0
    refusal: bool = False
    words: int | None = None
    thinking: bool = False


_JSON = json.JSONDecoder()


def parse_directives(text: str) -> _Directives:
    """Split ``text`` into its directives and the remaining (stripped) text."""
    out = _Directives()
    if "[[" not in text:
        out.text = text.strip()
        return out
    kept: list[str] = []
    pos = 0
    while True:
        start = text.find("[[", pos)
        if start < 0:
            kept.append(text[pos:])
            break
        end = _parse_one(text, start + 2, out)
        if end is None:  # not a directive: keep the brackets as text
            kept.append(text[pos : start + 2])
            pos = start + 2
            continue
        kept.append(text[pos:start])
        pos = end
    out.text = re.sub(r"[ \t]{2,}", " ", "".join(kept)).strip()
    return out


def _parse_one(text: str, at: int, out: _Directives) -> int | None:
    """Parse the directive starting after ``[[`` at ``at``; return the index after ``]]``."""
    if text.startswith("tool:", at):
        name_end = at + 5
        while name_end < len(text) and not text[name_end].isspace() and not text.startswith("]]", name_end):
            name_end += 1
        name = text[at + 5 : name_end]
        cursor = name_end
        while cursor < len(text) and text[cursor].isspace():
            cursor += 1
        tool_input: Any = {}
        if not text.startswith("]]", cursor):
            try:
                tool_input, cursor = _JSON.raw_decode(text, cursor)
            except json.JSONDecodeError:
                return None
            while cursor < len(text) and text[cursor].isspace():
                cursor += 1
        if not name or not isinstance(tool_input, dict) or not text.startswith("]]", cursor):
            return None
        out.tools.append((name, tool_input))
        return cursor + 2
    close = text.find("]]", at)
    if close < 0:
        return None
    body = text[at:close]
    head, _, arg = body.partition(":")
    if head == "error":
        kind, *opts = arg.split()
        if kind not in ERROR_KINDS:
            return None
        options = dict(opt.partition("=")[::2] for opt in opts)
        out.errors.append((kind, options))
    elif head == "sleep":
        try:
            out.sleep_ms += max(0.0, float(arg))
        except ValueError:
            return None
    elif head == "words":
        if not arg.strip().isdigit():
            return None
        out.words = int(arg)
    elif body == "refusal":
        out.refusal = True
    elif body == "thinking":
        out.thinking = True
    else:
        return None
    return close + 2


# --- the provider ---------------------------------------------------------------------------


class ScriptedProvider:
    """Deterministic offline replies. ``latency_ms`` delays each request before its first byte."""

    name = NAME

    def __init__(self, latency_ms: float = 0, script: Path | None = None) -> None:
        self._latency_s = max(0.0, latency_ms) / 1000
        self._turns = load_script(script) if script is not None else []
        self._used = [False] * len(self._turns)
        self._attempts: dict[str, int] = {}
        self._counts = _WordCounts()

    async def aclose(self) -> None:
        return None

    async def stream(self, request: ModelRequest) -> AsyncIterator[TextDelta | ThinkingStart | ModelResponse]:
        last_text, tool_results = _last_user_input(request.messages)
        turn = self._take_turn(last_text) if self._turns else None
        if turn is not None:
            async for item in self._play_turn(request, turn):
                yield item
            return
        d = parse_directives(last_text)
        delay = self._latency_s + d.sleep_ms / 1000
        if delay > 0:
            await asyncio.sleep(delay)

        content: list[dict[str, Any]] = []
        if d.thinking:
            content.append(_thinking_block(d.text))
        stop_reason = "end_turn"
        word_stream = False
        if d.refusal:
            content.append({"type": "text", "text": REFUSAL_TEXT})
            stop_reason = "refusal"
        elif d.tools:
            for i, (tool_name, tool_input) in enumerate(d.tools):
                content.append(_tool_use_block(request, i, tool_name, tool_input))
            stop_reason = "tool_use"
        elif d.words is not None:
            words = [_VOCABULARY[i % len(_VOCABULARY)] for i in range(d.words)]
            content.append({"type": "text", "text": " ".join(words)})
            word_stream = True
        elif tool_results and not d.text:
            content.append({"type": "text", "text": _summarise(request.messages, tool_results)})
        elif request.model.startswith("scripted-echo"):
            if d.text:
                content.append({"type": "text", "text": d.text})
        else:
            content.append({"type": "text", "text": f"Hello! You said: {d.text}" if d.text else "Hello!"})

        content, stop_reason = _apply_max_tokens(content, stop_reason, request.max_tokens)
        error = self._pick_error(request, last_text, d.errors)
        if error is not None and not error[1]:
            raise error[0]
        if d.thinking:
            yield ThinkingStart()
        index = 0
        for block in content:
            if block["type"] != "text":
                continue
            for piece in _chunks(block["text"], word_stream):
                yield TextDelta(index, piece)
                if error is not None:
                    raise error[0]
            index += 1
        if error is not None:  # ``partial`` with nothing to stream
            raise error[0]
        yield ModelResponse(content, stop_reason, _usage(request, content, self._counts))

    # -- errors

    def _pick_error(
        self, request: ModelRequest, last_text: str, errors: list[tuple[str, dict[str, str]]]
    ) -> tuple[ModelError, bool] | None:
        """The error to raise for this attempt (and whether it is ``partial``), if any."""
        for kind, options in errors:
            times = options.get("times")
            if times is not None and times.isdigit():
                key = f"{request.model}\0{len(request.messages)}\0{kind}\0{last_text}"
                key = hashlib.sha256(key.encode()).hexdigest()
                seen = self._attempts.get(key, 0)
                if seen >= int(times):
                    continue
                self._attempts[key] = seen + 1
            retry_after = options.get("retry_after")
            return (
                ModelError(
                    cast(ErrorKind, kind),
                    f"Scripted {kind} error",
                    status=ERROR_STATUS[kind],
                    retry_after_s=float(retry_after) if retry_after else None,
                ),
                "partial" in options,
            )
        return None

    # -- scripts

    def _take_turn(self, last_text: str) -> ScriptTurn | None:
        for i, turn in enumerate(self._turns):
            if self._used[i]:
                continue
            if turn.when is not None and re.search(turn.when, last_text) is None:
                continue
            if not turn.repeat:
                self._used[i] = True
            return turn
        return None

    async def _play_turn(
        self, request: ModelRequest, turn: ScriptTurn
    ) -> AsyncIterator[TextDelta | ThinkingStart | ModelResponse]:
        delay = self._latency_s + turn.sleep_ms / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        if turn.error is not None:
            spec = turn.error if isinstance(turn.error, _ScriptError) else _ScriptError(kind=turn.error)
            raise ModelError(
                spec.kind,
                spec.message or f"Scripted {spec.kind} error",
                status=spec.status if spec.status is not None else ERROR_STATUS[spec.kind],
                retry_after_s=spec.retry_after_s,
            )
        blocks = list(turn.content or [])
        if turn.text is not None:
            blocks.insert(0, {"type": "text", "text": turn.text})
        content: list[dict[str, Any]] = []
        for i, block in enumerate(blocks):
            if block.get("type") == "tool_use":
                content.append(
                    {
                        "type": "tool_use",
                        "id": block.get("id") or _tool_use_block(request, i, block["name"], {})["id"],
                        "name": block["name"],
                        "input": block.get("input") or {},
                    }
                )
            elif block.get("type") == "thinking":
                content.append(
                    {"type": "thinking", "thinking": block.get("thinking", ""), "signature": "scripted"}
                )
            else:
                content.append(dict(block))
        index = 0
        for block in content:
            if block["type"] == "text":
                for piece in _chunks(block["text"], False):
                    yield TextDelta(index, piece)
                index += 1
        has_tool = any(b["type"] == "tool_use" for b in content)
        stop_reason = turn.stop_reason or ("tool_use" if has_tool else "end_turn")
        usage = Usage(**turn.usage) if turn.usage is not None else _usage(request, content, self._counts)
        yield ModelResponse(content, stop_reason, usage)


# --- helpers --------------------------------------------------------------------------------


def _last_user_input(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The last message's text (when it is a user message) and its tool_result blocks."""
    if not messages or messages[-1].get("role") != "user":
        return "", []
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    results: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_result":
            results.append(block)
    return "\n".join(texts), results


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content or [] if b.get("type") == "text")


def _summarise(messages: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    names: dict[str, str] = {}
    for message in messages:
        if message.get("role") == "assistant" and isinstance(message.get("content"), list):
            for block in message["content"]:
                if block.get("type") == "tool_use":
                    names[block.get("id", "")] = block.get("name", "")
    lines = []
    for block in results:
        name = names.get(block.get("tool_use_id", ""), "unknown")
        verb = "failed" if block.get("is_error") else "returned"
        text = _result_text(block).strip()
        if len(text) > _SUMMARY_CHARS:
            text = text[:_SUMMARY_CHARS] + "..."
        lines.append(f"The {name} tool {verb}: {text}")
    return "\n".join(lines)


def _tool_use_block(request: ModelRequest, i: int, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    seed = f"{len(request.messages)}\0{i}\0{name}\0{json.dumps(tool_input, sort_keys=True)}"
    tool_id = "toolu_scripted_" + hashlib.sha256(seed.encode()).hexdigest()[:20]
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


def _thinking_block(text: str) -> dict[str, Any]:
    return {
        "type": "thinking",
        "thinking": f"Considering: {text}" if text else "Considering.",
        "signature": "scripted",
    }


def _chunks(text: str, word_by_word: bool) -> list[str]:
    """Split ``text`` into deltas whose concatenation is ``text``: one per word, or at most four."""
    if not text:
        return []
    pieces = re.findall(r"\s*\S+", text)
    tail = text[len("".join(pieces)) :]
    if tail:
        pieces.append(tail)
    if word_by_word or len(pieces) <= _MAX_DELTAS:
        return pieces
    size = -(-len(pieces) // _MAX_DELTAS)
    return ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]


def _apply_max_tokens(
    content: list[dict[str, Any]], stop_reason: str, max_tokens: int
) -> tuple[list[dict[str, Any]], str]:
    """Cut text at ``max_tokens`` words (tool calls are dropped once the budget is spent)."""
    budget = max_tokens
    out: list[dict[str, Any]] = []
    for block in content:
        cost = _block_words(block)
        if cost <= budget:
            out.append(block)
            budget -= cost
            continue
        if block["type"] == "text" and budget > 0:
            out.append({"type": "text", "text": " ".join(block["text"].split()[:budget])})
        return out, "max_tokens"
    return out, stop_reason


def _words(text: str) -> int:
    return len(text.split())


def _block_words(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return _words(block.get("text", ""))
    if kind == "tool_use":
        return _words(json.dumps(block.get("input", {})))
    if kind == "thinking":
        return _words(block.get("thinking", ""))
    if kind == "tool_result":
        return _words(_result_text(block))
    return 0


class _WordCounts:
    """Word counts of messages, remembered by identity: the conversation cache hands the
    provider the same (never mutated) message and block objects request after request, so a
    long conversation is counted once rather than on every request (as a real model's prompt
    cache would spare it). Entries keep their object alive, so an id is never reused while
    cached."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._counts: OrderedDict[int, tuple[Any, int]] = OrderedDict()

    def _cached(self, obj: Any, compute: Any) -> int:
        found = self._counts.get(id(obj))
        if found is not None and found[0] is obj:
            return found[1]
        count: int = compute(obj)
        self._counts[id(obj)] = (obj, count)
        if len(self._counts) > self._max:
            self._counts.popitem(last=False)
        return count

    def message(self, message: dict[str, Any]) -> int:
        return self._cached(message, self._message)

    def _message(self, message: dict[str, Any]) -> int:
        body = message.get("content")
        if isinstance(body, str):
            return _words(body)
        return sum(self._cached(b, _block_words) for b in body or [])


def _usage(request: ModelRequest, content: list[dict[str, Any]], counts: _WordCounts | None = None) -> Usage:
    counts = counts or _WordCounts()
    tokens = _words(request.system or "") + sum(counts.message(m) for m in request.messages)
    return Usage(input_tokens=tokens, output_tokens=sum(_block_words(b) for b in content))
