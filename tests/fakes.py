"""Helpers for the tests that run a model provider against a fake upstream server
(:mod:`hangar.testing.fake_anthropic`, :mod:`hangar.testing.fake_openai`), in-process or behind a
real Hangar server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

import anthropic
import httpx
import pytest

from hangar.runtime.models import (
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    TextDelta,
    ThinkingStart,
)
from hangar.testing import ServerProcess
from hangar.testing._fake_server import FakeServer
from tests.conftest import API_KEY
from tests.sessions_helpers import user_message, wait_idle

F = TypeVar("F", bound=FakeServer[Any])
P = TypeVar("P", bound=ModelProvider)


# --------------------------------------------------------------------------- provider tests


def provider_fixtures(make_fake: Callable[[], F], make_provider: Callable[[F], P]) -> tuple[Any, Any]:
    """The ``fake`` fixture (one started server per module) and the ``provider`` fixture (a fresh
    provider per test, on the reset fake, closed afterwards). In a test module::

        fake, provider = provider_fixtures(FakeAnthropic, lambda f: AnthropicProvider(f.base_url, ...))
    """

    @pytest.fixture(scope="module")
    def fake() -> Iterator[F]:
        with make_fake() as server:
            yield server

    @pytest.fixture
    async def provider(fake: F) -> AsyncIterator[P]:
        fake.reset()
        async with contextlib.aclosing(make_provider(fake)) as p:
            yield p

    return fake, provider


R = TypeVar("R")

# Upstream HTTP failures that every provider maps alike: (status, more arguments of the fake's
# ``FakeReply.failure``, ModelError kind, retryable, retry_after_s).
_SHARED_FAILURES: list[tuple[int, dict[str, Any], str, bool, float | None]] = [
    (429, {"retry_after": 7}, "rate_limited", True, 7.0),
    (429, {"headers": {"retry-after-ms": "1500"}}, "rate_limited", True, 1.5),
    (529, {}, "overloaded", True, None),
    (500, {}, "request_failed", True, None),
    (408, {}, "timeout", True, None),
    (401, {}, "authentication", False, None),
    (403, {}, "authentication", False, None),
    (400, {"message": "messages: bad"}, "invalid_request", False, None),
]


def shared_failure_cases(failure: Callable[..., R]) -> list[tuple[R, str, int, bool, float | None]]:
    """``(reply, kind, status, retryable, retry_after_s)`` parameters for the failures every
    provider maps alike; ``failure`` is the fake's ``FakeReply.failure``."""
    return [
        (failure(status, **kw), kind, status, retryable, retry_after)
        for status, kw, kind, retryable, retry_after in _SHARED_FAILURES
    ]


def model_request(default_model: str, /, **kw: Any) -> ModelRequest:
    """One user message ("Hello") under a short system prompt, no tools; ``kw`` overrides any field
    (``model`` too)."""
    base: dict[str, Any] = {
        "model": default_model,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hello"}],
        "tools": [],
    }
    return ModelRequest(**{**base, **kw})


async def run_stream(
    p: ModelProvider, req: ModelRequest, *, thinks: bool
) -> tuple[list[TextDelta], ModelResponse]:
    """Stream ``req`` through ``p``: the text deltas and the final response.

    Checks the stream's shape: the response comes last, everything before it is a text delta or
    (only when the provider ``thinks``) one ``ThinkingStart`` per thinking block of the response.
    """
    items = [item async for item in p.stream(req)]
    response = items[-1]
    assert isinstance(response, ModelResponse)
    starts = sum(isinstance(i, ThinkingStart) for i in items)
    if thinks:
        thinking = sum(1 for b in response.content if b["type"] == "thinking")
        assert starts == thinking, "one ThinkingStart per thinking block"
    else:
        assert starts == 0, "this provider has no thinking"
    deltas = [i for i in items[:-1] if not isinstance(i, ThinkingStart)]
    assert all(isinstance(i, TextDelta) for i in deltas)
    return cast(list[TextDelta], deltas), response


async def stream_error(p: ModelProvider, req: ModelRequest) -> ModelError:
    """The :class:`ModelError` that streaming ``req`` through ``p`` raises (the test fails if none)."""
    with pytest.raises(ModelError) as info:
        async for _ in p.stream(req):
            pass
    return info.value


async def one_shot_error(p: ModelProvider, req: ModelRequest) -> ModelError:
    """Like :func:`stream_error`, for a provider made for this one request: ``p`` is closed after."""
    async with contextlib.aclosing(p):
        return await stream_error(p, req)


def assert_one_request_without_key(fake: FakeServer[Any], err: ModelError, key: str, why: str) -> None:
    """``err`` came from exactly one upstream request (``why``) and shows ``key`` nowhere."""
    assert len(fake.requests) == 1, why
    assert fake.pending == 0
    for text in (str(err), repr(err), err.message, str(err.__cause__)):
        assert key not in text


async def wait_for_disconnect(fake: FakeServer[Any], timeout: float = 3) -> None:
    """Wait until ``fake`` has seen a client go away in the middle of a stream."""
    deadline = time.monotonic() + timeout
    while fake.disconnects == 0:
        assert time.monotonic() < deadline, "the upstream stream was not closed"
        await asyncio.sleep(0.01)


async def cancel_once_streaming(fake: FakeServer[Any], consume: Coroutine[Any, Any, object]) -> None:
    """Run ``consume`` (which streams a stalled reply from ``fake``) as a task, cancel it once the
    stream is open, and wait until the fake sees the connection closed."""
    task = asyncio.create_task(consume)
    while not fake.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the stream is open and waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for_disconnect(fake)


# --------------------------------------------------------------------------- through a real server


def hangar_client(srv: ServerProcess) -> anthropic.Anthropic:
    """The official client on ``srv`` (no SDK retries); use it as a context manager."""
    return anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0)


def retried_turn(
    client: anthropic.Anthropic, session_id: str, fake: FakeServer[Any], text: str, answer: str
) -> list[Any]:
    """Send ``text`` as the session's second turn, with an overloaded upstream error and then
    ``answer`` enqueued on ``fake``: the loop retries once (shown as one ``session.error`` that is
    ``retrying``) and the turn ends with ``answer``. Returns all the session's events."""
    client.beta.sessions.events.send(session_id, events=[user_message(text)])
    events = wait_idle(client, session_id, turns=2)
    assert len(fake.requests) == 3
    errors = [e for e in events if e.type == "session.error"]
    assert [(e.error.type, e.error.retry_status.type) for e in errors] == [
        ("model_overloaded_error", "retrying")
    ]
    assert [e for e in events if e.type == "agent.message"][-1].content[0].text == answer
    return events


def assert_key_stays_inside(srv: ServerProcess, session_id: str, key: str) -> None:
    """The upstream ``key`` never leaves the server: not in the session's events, not in its log."""
    raw = httpx.get(f"{srv.base_url}/v1/sessions/{session_id}/events", headers={"x-api-key": API_KEY}).text
    assert key not in raw
    assert key not in srv.log()
