"""Canary: every credential type's secret reaches the host it is meant for and nothing else: not
the sandbox, the events, the model's requests, the API's responses, the logs, the database or the
workspace. ``environment_variable`` values go only to the allowed host through the egress proxy;
``static_bearer`` and ``mcp_oauth`` tokens only to their MCP server and OAuth token endpoint. The model is the fake Messages API (its requests are recorded);
every server is the test's own, on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
import sqlalchemy as sa
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from hangar.testing import ServerProcess
from hangar.testing.fake_anthropic import FakeAnthropic
from tests.canary import CanaryScan, RecordingServer, TestCA, new_canary
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.mcp.oauth_server import TokenEndpoint
from tests.mcp_servers import McpTestServer
from tests.sessions_helpers import user_message, wait_idle
from tests.vault_helpers import FUTURE, bearer, oauth, refresh_cfg, sync_url

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
MODEL = "claude-sonnet-4-6"
TOOLSET = {"type": "agent_toolset_20260401"}


def dump_database(server: ServerProcess) -> str:
    """Every row of every table, as text."""
    engine = sa.create_engine(sync_url(server), poolclass=sa.pool.NullPool)
    out: list[str] = []
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                    out.append(f"{table}: {tuple(row)!r}")
    finally:
        engine.dispose()
    return "\n".join(out)


@pytest.fixture
def test_ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def srv(make_server: Any, fake: FakeAnthropic, test_ca: TestCA) -> ServerProcess:
    return make_server(  # type: ignore[no-any-return]
        env={
            "HANGAR_ANTHROPIC_BASE_URL": fake.base_url,
            "HANGAR_ANTHROPIC_API_KEY": "sk-upstream-" + "u" * 24,
            "HANGAR_EGRESS_UPSTREAM_CA_FILE": str(test_ca.cert_file),
            "HANGAR_LOG_LEVEL": "debug",
        }
    )


@pytest.fixture
def responses() -> list[str]:
    return []


@pytest.fixture
def client(srv: ServerProcess, responses: list[str]) -> Iterator[anthropic.Anthropic]:
    """The official client; every raw response body is kept for the scan."""

    def keep(response: httpx2.Response) -> None:
        response.read()
        responses.append(response.text)

    http = httpx2.Client(event_hooks={"response": [keep]})
    with anthropic.Anthropic(base_url=srv.base_url, api_key=API_KEY, max_retries=0, http_client=http) as c:
        yield c


def session_with_credential(
    client: anthropic.Anthropic, allowed_hosts: list[str], cred_hosts: list[str], value: str
) -> tuple[str, str, str]:
    """(session id, vault id, credential id): an agent on the fake model, a limited environment
    and a vault holding ``API_TOKEN``."""
    vault = client.beta.vaults.create(display_name="canary")
    cred = client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "environment_variable",
            "secret_name": "API_TOKEN",
            "secret_value": value,
            "networking": {"type": "limited", "allowed_hosts": cred_hosts},
        },
    )
    env = client.beta.environments.create(
        name="canary",
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": allowed_hosts}},
    )
    agent = client.beta.agents.create(name="canary", model=MODEL, tools=[TOOLSET])
    session = client.beta.sessions.create(agent=agent.id, environment_id=env.id, vault_ids=[vault.id])
    return session.id, vault.id, cred.id


def run_turn(
    client: anthropic.Anthropic, fake: FakeAnthropic, session_id: str, commands: list[str]
) -> list[Any]:
    """One turn in which the model runs ``commands`` with bash, one after another."""
    for command in commands:
        fake.enqueue_tool_use("bash", {"command": command})
    fake.enqueue_text("done")
    client.beta.sessions.events.send(session_id, events=[user_message("go")])
    return wait_idle(client, session_id, timeout=60)


def tool_texts(events: list[Any]) -> list[str]:
    return [e.content[0].text for e in events if e.type == "agent.tool_result"]


def test_the_canary_reaches_only_the_allowed_host(
    srv: ServerProcess,
    client: anthropic.Anthropic,
    fake: FakeAnthropic,
    test_ca: TestCA,
    responses: list[str],
) -> None:
    canary = new_canary("envvar")
    with (
        RecordingServer(tls=test_ca.server_context("127.0.0.1")) as allowed,
        RecordingServer(tls=test_ca.server_context("localhost")) as other,
    ):
        sid, _, _ = session_with_credential(client, ["127.0.0.1", "localhost"], ["127.0.0.1"], canary)
        a, b = allowed.port, other.port
        hidden = base64.b64encode(canary.encode()).decode()  # the grep below must not name it
        events = run_turn(
            client,
            fake,
            sid,
            [
                # The test's hosts are loopback ones, which NO_PROXY would keep off the proxy.
                "unset NO_PROXY no_proxy; env; tr '\\0' '\\n' </proc/self/environ",
                f'curl -sS -H "Authorization: Bearer $API_TOKEN" -d "token=$API_TOKEN" https://127.0.0.1:{a}/curl',
                'python3 -c "import os, urllib.request as u; print(u.urlopen(u.Request('
                f"'https://127.0.0.1:{a}/py', data=os.environ['API_TOKEN'].encode())).read().decode())\"",
                f'curl -sSk -H "Authorization: Bearer $API_TOKEN" -d "token=$API_TOKEN" https://localhost:{b}/x',
                'echo "$API_TOKEN" > /workspace/token.txt; cp /proc/self/environ /tmp/environ',
                f'grep -rlaF "$(echo {hidden} | base64 -d)" /workspace /tmp /home /run /etc/ssl /dev/shm 2>/dev/null; echo done',
            ],
        )
        texts = tool_texts(events)
        assert len(texts) == 6, texts
        placeholder = next(
            line.split("=", 1)[1] for line in texts[0].splitlines() if line.startswith("API_TOKEN=")
        )
        assert placeholder.startswith("hangar-ph-")
        assert texts[1:4] == ["ok", "ok", "ok"], texts
        assert texts[5] == "done", texts[5]

    by_path = {r.path: r for r in allowed.requests}
    assert by_path["/curl"].headers["authorization"] == f"Bearer {canary}"
    assert by_path["/curl"].body == f"token={canary}".encode()
    assert by_path["/py"].body == canary.encode()
    assert other.requests[0].headers["authorization"] == f"Bearer {placeholder}"

    scan = CanaryScan(canary)
    raw_events = httpx2.get(
        f"{srv.base_url}/v1/sessions/{sid}/events?limit=1000", headers={"x-api-key": API_KEY}
    )
    assert raw_events.status_code == 200 and placeholder in raw_events.text
    scan.add("stored events", raw_events.text)
    scan.add("API responses", "\n".join(responses))
    scan.add("model requests", "\n".join(json.dumps(r.body) for r in fake.requests))
    scan.add("database", dump_database(srv))
    scan.add_dir("data dir (log, workspaces, database files)", srv.data_dir)
    scan.add("server log", srv.log())
    scan.add("other host", other.raw())
    scan.add("allowed host", allowed.raw(), expected=True)
    scan.check()
    assert (srv.data_dir / "workspaces" / sid / "token.txt").read_text().strip() == placeholder


def test_a_credential_host_blocked_by_the_environment_is_a_session_error(
    client: anthropic.Anthropic, fake: FakeAnthropic
) -> None:
    canary = new_canary("blocked")
    sid, vault_id, cred_id = session_with_credential(client, ["127.0.0.1"], ["api.blocked.example"], canary)
    events = run_turn(
        client,
        fake,
        sid,
        [
            "curl -sS -o /dev/null -w '%{http_code}' https://api.blocked.example/",
            "curl -sS -o /dev/null -w '%{http_code}' https://api.blocked.example/again",
        ],
    )
    texts = tool_texts(events)
    assert len(texts) == 2 and all("403" in t for t in texts), texts
    errors = [e for e in events if e.type == "session.error"]
    assert len(errors) == 1, errors  # once per credential
    error = strict(BetaManagedAgentsSessionEvent, errors[0]).error
    assert error.type == "credential_host_unreachable_error"
    assert (error.credential_id, error.vault_id) == (cred_id, vault_id)
    assert error.retry_status.type == "exhausted"
    assert "api.blocked.example" in error.message
    # The turn went on: the model saw both results and answered.
    assert [e.type for e in events if e.type == "agent.message"] == ["agent.message"]
    assert canary not in json.dumps([e.model_dump(mode="json") for e in events])


def test_mcp_credentials_reach_only_their_mcp_server_and_token_endpoint(
    srv: ServerProcess, client: anthropic.Anthropic, fake: FakeAnthropic, responses: list[str]
) -> None:
    """A ``static_bearer`` token and an ``mcp_oauth`` credential (an access token the server no
    longer accepts, a refresh token and a ``client_secret_post`` secret, refreshed through a real
    token endpoint that issues a canary access token) are used by one session, alongside bash in
    the sandbox. Each canary is only in what its MCP server or the token endpoint received."""
    bearer_token, stale_access = new_canary("bearer"), new_canary("oauthaccess")
    refresh_token, client_secret = new_canary("refresh"), new_canary("clientsecret")
    with (
        McpTestServer(name="bear", tokens={bearer_token}) as bear,
        McpTestServer(name="oauth", tokens=set()) as guarded,
        TokenEndpoint(guarded) as endpoint,
    ):
        endpoint.refresh_token = refresh_token
        endpoint.prefix = new_canary("issued")
        vault = client.beta.vaults.create(display_name="mcp canary")
        client.beta.vaults.credentials.create(vault.id, auth=bearer(bear.url, bearer_token))  # type: ignore[arg-type]
        refresh = refresh_cfg(endpoint.url, refresh_token, "client_secret_post", client_secret)
        client.beta.vaults.credentials.create(
            vault.id,
            auth=oauth(guarded.url, stale_access, expires_at=FUTURE, refresh=refresh),  # type: ignore[arg-type]
        )
        allow = {"default_config": {"permission_policy": {"type": "always_allow"}}}
        agent = client.beta.agents.create(
            name="mcp canary",
            model=MODEL,
            mcp_servers=[
                {"type": "url", "name": "bear", "url": bear.url},
                {"type": "url", "name": "oauth", "url": guarded.url},
            ],
            tools=[
                TOOLSET,  # type: ignore[list-item]
                {"type": "mcp_toolset", "mcp_server_name": "bear", **allow},  # type: ignore[list-item]
                {"type": "mcp_toolset", "mcp_server_name": "oauth", **allow},  # type: ignore[list-item]
            ],
        )
        env = client.beta.environments.create(name="mcp canary")
        sid = client.beta.sessions.create(agent=agent.id, environment_id=env.id, vault_ids=[vault.id]).id

        # The sandbox greps for every canary, and for a probe it planted (to show the grep works).
        secrets = [bearer_token, stale_access, refresh_token, client_secret, endpoint.prefix, "grepprobe"]
        hidden = base64.b64encode("\n".join(secrets).encode()).decode()
        fake.enqueue_tool_use("mcp__bear__echo", {"text": "via bearer"})
        fake.enqueue_tool_use("mcp__oauth__add", {"a": 40, "b": 2})
        fake.enqueue_tool_use("bash", {"command": "env; tr '\\0' '\\n' </proc/self/environ"})
        grep = f"echo grepprobe > /tmp/probe; echo {hidden} | base64 -d | grep -rlaF -f - /workspace /tmp /home /run /etc /dev/shm"
        fake.enqueue_tool_use("bash", {"command": f"{grep} 2>/dev/null; echo done"})
        fake.enqueue_text("done")
        client.beta.sessions.events.send(sid, events=[user_message("go")])  # type: ignore[list-item]
        events = wait_idle(client, sid, timeout=60)
        results = [e for e in events if e.type == "agent.mcp_tool_result"]
        assert [(r.is_error, r.content[0].text) for r in results] == [(False, "via bearer"), (False, "42")]
        assert not [e for e in events if e.type == "session.error"]
        texts = tool_texts(events)
        assert len(texts) == 2 and "PATH=" in texts[0], texts
        # Found: the probe, and the command itself (it names the probe); no file with a canary.
        assert sorted(texts[1].splitlines()) == ["/run/hangar/cmd/command", "/tmp/probe", "done"], texts
        issued = f"{endpoint.prefix}-1"
        assert endpoint.issued == [issued]
        assert guarded.tokens_seen[0] == stale_access and set(guarded.tokens_seen[1:]) == {issued}
        assert bear.tokens_seen and set(bear.tokens_seen) == {bearer_token}
        assert endpoint.requests[0]["client_secret"] == client_secret
        rotated = endpoint.refresh_token
        client.beta.vaults.credentials.list(vault.id)  # scanned with every other response
        raw_events = httpx2.get(
            f"{srv.base_url}/v1/sessions/{sid}/events?limit=1000", headers={"x-api-key": API_KEY}
        )
        assert raw_events.status_code == 200
        scan = CanaryScan(bearer_token)
        scan.add("stored events", raw_events.text)
        scan.add("API responses", "\n".join(responses))
        scan.add("model requests", "\n".join(json.dumps(r.body) for r in fake.requests))
        scan.add("database", dump_database(srv))
        scan.add_dir("data dir (log, workspaces, database files)", srv.data_dir)
        scan.add("server log", srv.log())
        scan.add("bearer MCP server (tokens presented)", "\n".join(bear.tokens_seen), expected=True)
        scan.add("oauth MCP server (tokens presented)", "\n".join(guarded.tokens_seen))
        scan.add("token endpoint (requests)", json.dumps(endpoint.requests))
    scan.check()
    scan.expecting(stale_access, "oauth MCP server (tokens presented)").check()
    scan.expecting(endpoint.prefix, "oauth MCP server (tokens presented)").check()
    scan.expecting(refresh_token, "token endpoint (requests)").check()
    scan.expecting(client_secret, "token endpoint (requests)").check()
    scan.expecting(rotated).check()  # issued by the endpoint, stored sealed, never sent
