"""Envelope, authentication and gate order, over raw HTTP (the SDK hides some of these)."""

from __future__ import annotations

import httpx
import pytest

from hangar.testing import ServerProcess
from tests.conftest import API_KEY


def test_unknown_route_is_404_in_envelope(server: ServerProcess) -> None:
    r = httpx.get(server.base_url + "/v1/nope")
    assert r.status_code == 404
    body = r.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "not_found_error", "message": "Not found"}
    assert r.headers["request-id"].startswith("req_")
    assert body["request_id"] == r.headers["request-id"]


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"x-api-key": "wrong"}])
def test_known_route_requires_key(server: ServerProcess, headers: dict[str, str]) -> None:
    r = httpx.get(server.base_url + "/v1/agents", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == {"type": "authentication_error", "message": "Authentication failed"}


@pytest.mark.parametrize("headers", [{"authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}])
def test_both_auth_headers_accepted(server: ServerProcess, headers: dict[str, str]) -> None:
    r = httpx.get(server.base_url + "/v1/agents", headers=headers)
    assert r.status_code == 200, r.text
