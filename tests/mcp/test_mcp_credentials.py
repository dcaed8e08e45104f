"""Vault credentials for MCP servers: static bearer tokens, OAuth tokens refreshed before expiry
and on a 401 through a real token endpoint, authentication failures, and secrets that never
show up in events, API responses or the server log."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic

from hangar.testing import ServerProcess
from tests.mcp.conftest import ALLOW_ALL, Recording, last_turn, of_type, session_for, tool, turn
from tests.mcp.oauth_server import TokenEndpoint
from tests.mcp_servers import McpTestServer
from tests.vault_helpers import FUTURE, bearer, new_vault, oauth, refresh_cfg, secret, secret_of


def credential(client: anthropic.Anthropic, vault_id: str, auth: dict[str, Any]) -> str:
    return client.beta.vaults.credentials.create(vault_id, auth=auth).id  # type: ignore[arg-type]


def assert_nowhere(hangar: ServerProcess, recording: Recording, *values: str) -> None:
    log = hangar.log()
    for value in values:
        assert value not in log, f"{value} in the server log"
        for body in recording.bodies:
            assert value not in body, f"{value} in a response: {body[:300]}"


def test_static_bearer_and_auth_failures(
    client: anthropic.Anthropic, hangar: ServerProcess, recording: Recording
) -> None:
    token, wrong = secret("mcp-bearer"), secret("mcp-wrong")
    with McpTestServer(name="guarded", tokens={token}) as srv:
        servers = [{"name": "g", "url": srv.url}]
        good = new_vault(client, "good")
        credential(client, good, bearer(srv.url, token))
        sid = session_for(client, servers, {"g": ALLOW_ALL}, vault_ids=[good])
        events = turn(client, sid, tool("mcp__g__echo", text="authorised"), 1)
        assert of_type(events, "agent.mcp_tool_result")[0].content[0].text == "authorised"
        assert not of_type(events, "session.error")
        assert token in srv.tokens_seen and srv.calls_of("echo") == 1

        # A wrong token, and no credential at all: mcp_authentication_failed, the turn goes on.
        bad = new_vault(client, "bad")
        credential(client, bad, bearer(srv.url, wrong))
        for vaults in ([bad], None):
            sid = session_for(client, servers, {"g": ALLOW_ALL}, vault_ids=vaults)
            events = turn(client, sid, "hello", 1)
            errors = of_type(events, "session.error")
            assert [(e.error.type, e.error.mcp_server_name) for e in errors] == [
                ("mcp_authentication_failed_error", "g")
            ]
            assert "401" in errors[0].error.message
            assert events[-1].stop_reason.type == "end_turn"
            assert of_type(events, "agent.message")[0].content[0].text == "Hello! You said: hello"
        assert wrong in srv.tokens_seen and srv.calls_of("echo") == 1
    assert_nowhere(hangar, recording, token, wrong)


def test_oauth_refreshed_before_expiry_and_on_401(
    client: anthropic.Anthropic, hangar: ServerProcess, recording: Recording
) -> None:
    initial, stale = secret("oauth-initial"), secret("oauth-stale")
    with McpTestServer(name="oauth", tokens={initial}) as srv, TokenEndpoint(srv) as endpoint:
        servers = [{"name": "o", "url": srv.url}]
        # Expires in 30 s (within the refresh margin): refreshed before the first request.
        soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
        v1 = new_vault(client, "expiring")
        first_refresh = endpoint.refresh_token
        c1 = credential(
            client,
            v1,
            oauth(srv.url, initial, expires_at=soon, refresh=refresh_cfg(endpoint.url, first_refresh)),
        )
        sid = session_for(client, servers, {"o": ALLOW_ALL}, vault_ids=[v1])
        events = turn(client, sid, tool("mcp__o__add", a=20, b=22), 1)
        assert of_type(events, "agent.mcp_tool_result")[0].content[0].text == "42"
        assert not of_type(events, "session.error")
        assert endpoint.issued == [f"{endpoint.prefix}-1"]
        assert initial not in srv.tokens_seen and f"{endpoint.prefix}-1" in srv.tokens_seen
        stored = secret_of(hangar, c1)
        assert stored["access_token"] == f"{endpoint.prefix}-1"
        assert stored["refresh"]["refresh_token"] == endpoint.refresh_token  # the rotated one
        assert datetime.fromisoformat(stored["expires_at"].replace("Z", "+00:00")) > datetime.now(
            UTC
        ) + timedelta(minutes=30)

        # Not expiring, but the server no longer accepts it: 401 → refresh → the request again.
        v2 = new_vault(client, "revoked")
        second_refresh = endpoint.refresh_token
        c2 = credential(
            client,
            v2,
            oauth(srv.url, stale, expires_at=FUTURE, refresh=refresh_cfg(endpoint.url, second_refresh)),
        )
        sid = session_for(client, servers, {"o": ALLOW_ALL}, vault_ids=[v2])
        started = time.monotonic()
        events = turn(client, sid, tool("mcp__o__add", a=1, b=2), 1)
        assert time.monotonic() - started < 20
        assert of_type(events, "agent.mcp_tool_result")[0].content[0].text == "3"
        assert not of_type(last_turn(events), "session.error")
        assert endpoint.issued == [f"{endpoint.prefix}-1", f"{endpoint.prefix}-2"]
        assert stale in srv.tokens_seen
        assert secret_of(hangar, c2)["access_token"] == f"{endpoint.prefix}-2"
        assert [r["refresh_token"] for r in endpoint.requests] == [first_refresh, second_refresh]
        secrets = [initial, stale, first_refresh, second_refresh, endpoint.refresh_token, *endpoint.issued]
    assert_nowhere(hangar, recording, *secrets)
