"""Canary: an ``environment_variable`` credential's value reaches the host it is meant for and
nothing else: not the sandbox, the events, the model's requests, the API's responses, the logs,
the database or the workspace. The model is the fake Messages API (its requests are recorded);
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
from tests.sessions_helpers import user_message, wait_idle
from tests.vault_helpers import sync_url

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
