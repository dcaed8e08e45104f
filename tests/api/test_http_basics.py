"""Envelope, authentication and gate order, over raw HTTP (the SDK hides some of these)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from hangar.testing import ServerProcess
from tests.conftest import API_KEY

AUTH = {"authorization": f"Bearer {API_KEY}"}
JSON = {**AUTH, "content-type": "application/json"}


def envelope(r: httpx.Response, status: int, error_type: str) -> str:
    """Assert the exact error envelope and its request id; return the message."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"type", "error", "request_id"}, body
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == error_type
    assert r.headers["request-id"].startswith("req_")
    assert body["request_id"] == r.headers["request-id"]
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


def test_unknown_route_is_404_in_envelope(server: ServerProcess) -> None:
    r = httpx.get(server.base_url + "/v1/nope")
    assert envelope(r, 404, "not_found_error") == "Not found"
    # Known prefix, unknown sub-path: still a route-level 404, key or not.
    r = httpx.get(server.base_url + "/v1/agents/agent_x/nope", headers=AUTH)
    assert envelope(r, 404, "not_found_error") == "Not found"


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}])
def test_known_route_requires_key(server: ServerProcess, headers: dict[str, str]) -> None:
    r = httpx.get(server.base_url + "/v1/agents", headers=headers)
    assert envelope(r, 401, "authentication_error") == "Authentication failed"


@pytest.mark.parametrize("path", ["/v1/agents", "/v1/environments", "/v1/sessions", "/v1/files"])
def test_gate_order_unauthenticated_known_is_401_unknown_is_404(server: ServerProcess, path: str) -> None:
    assert httpx.get(server.base_url + path).status_code == 401
    assert httpx.post(server.base_url + path, content=b"{").status_code == 401  # auth before body
    assert httpx.get(server.base_url + path + "-nope").status_code == 404


@pytest.mark.parametrize("headers", [{"authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}])
def test_both_auth_headers_accepted(server: ServerProcess, headers: dict[str, str]) -> None:
    r = httpx.get(server.base_url + "/v1/agents", headers=headers)
    assert r.status_code == 200, r.text


def test_every_response_gets_a_fresh_request_id(server: ServerProcess) -> None:
    ids = {httpx.get(server.base_url + "/v1/agents", headers=AUTH).headers["request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(i.startswith("req_") for i in ids)


@pytest.mark.parametrize("body", [b"{", b'{"name": "a",}', b"\xff\xfe", b"{'name': 'a'}"])
def test_malformed_json_is_400(server: ServerProcess, body: bytes) -> None:
    before = httpx.get(server.base_url + "/v1/agents", headers=AUTH).json()["data"]
    r = httpx.post(server.base_url + "/v1/agents", content=body, headers=JSON)
    assert envelope(r, 400, "invalid_request_error").startswith("Invalid JSON in request body")
    assert httpx.get(server.base_url + "/v1/agents", headers=AUTH).json()["data"] == before


@pytest.mark.parametrize("body", [b"[]", b'[{"name": "a"}]', b'"agent"', b"42", b"null", b"true"])
def test_non_object_json_is_400(server: ServerProcess, body: bytes) -> None:
    r = httpx.post(server.base_url + "/v1/agents", content=body, headers=JSON)
    assert envelope(r, 400, "invalid_request_error") == "Request body must be a JSON object"


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/agents"), ("PUT", "/v1/agents"), ("PATCH", "/v1/agents/agent_x"), ("POST", "/healthz")],
)
def test_wrong_method_is_405(server: ServerProcess, method: str, path: str) -> None:
    r = httpx.request(method, server.base_url + path, headers=JSON, content=b"{}")
    assert envelope(r, 405, "invalid_request_error") == f"Method {method} not allowed"
    assert r.headers.get("allow")


@pytest.fixture
def small_server(make_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    yield make_server(env={"HANGAR_MAX_BODY_BYTES": "2048"})


def agent_body(size: int) -> bytes:
    """A valid agent-create body of exactly ``size`` bytes (padding in the description)."""
    base: dict[str, Any] = {"name": "big", "model": "scripted", "description": ""}
    empty = len(httpx.Request("POST", "/", json=base).content)
    base["description"] = "x" * (size - empty)
    content = httpx.Request("POST", "/", json=base).content
    assert len(content) == size
    return content


def test_oversized_body_is_413(small_server: ServerProcess) -> None:
    url = small_server.base_url + "/v1/agents"
    r = httpx.post(url, content=agent_body(4096), headers=JSON)
    message = envelope(r, 413, "request_too_large")
    assert message == "Request body exceeds the limit of 2048 bytes."

    # Without a content-length (chunked), the limit holds while the body streams in.
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "big", "model": "scripted", "description": "'
        for _ in range(8):
            yield b"y" * 512
        yield b'"}'

    r = httpx.post(url, content=chunks(), headers=JSON)
    assert "content-length" not in r.request.headers
    envelope(r, 413, "request_too_large")

    # Nothing was stored, and a body at the limit is accepted.
    assert httpx.get(url, headers=AUTH).json()["data"] == []
    r = httpx.post(url, content=agent_body(2048), headers=JSON)
    assert r.status_code == 200, r.text
