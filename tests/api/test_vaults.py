"""Vaults and credentials through the official client (API.md §1.8; BEHAVIOUR §1, §12): every
endpoint, every rule, secrets that never leave (responses, logs, database), the key file and key
rotation, and ``mcp_oauth_validate`` against a fake MCP server and token endpoint started here."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import stat
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote_plus

import anthropic
import httpx2
import pytest
import sqlalchemy as sa
import uvicorn
from anthropic.types.beta import (
    BetaManagedAgentsDeletedVault,
    BetaManagedAgentsSession,
    BetaManagedAgentsVault,
)
from anthropic.types.beta.vaults import (
    BetaManagedAgentsCredential,
    BetaManagedAgentsCredentialValidation,
    BetaManagedAgentsDeletedCredential,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hangar.config import Settings, to_async_url
from hangar.crypto import (
    KEY_FILE_NAME,
    Keyring,
    SecretBox,
    UnsealError,
    decode_key,
    encode_key,
    generate_key,
    key_id,
)
from hangar.errors import InternalError
from hangar.store import Store, open_database
from hangar.store.keys import DEFAULT_WORKSPACE
from hangar.testing import ServerProcess
from tests.api.test_cli import create_key, db_args, hangar
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.sessions_helpers import make_agent_env

T = TypeVar("T")
FUTURE = "2099-01-01T00:00:00Z"


def secret(label: str) -> str:
    return f"SECRET-{label}-{uuid.uuid4().hex}"


def cred_of(obj: Any) -> dict[str, Any]:
    strict(BetaManagedAgentsCredential, obj)
    data: dict[str, Any] = obj.model_dump(mode="json")
    return data


def vault_of(obj: Any) -> dict[str, Any]:
    strict(BetaManagedAgentsVault, obj)
    data: dict[str, Any] = obj.model_dump(mode="json")
    return data


def error_of(exc: pytest.ExceptionInfo[anthropic.APIStatusError]) -> dict[str, Any]:
    body = exc.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    err: dict[str, Any] = body["error"]
    return err


def message_of(exc: pytest.ExceptionInfo[anthropic.APIStatusError]) -> str:
    return str(error_of(exc)["message"])


# -- recording every raw response --------------------------------------------------------------


@dataclass
class Recorder:
    client: anthropic.Anthropic
    bodies: list[str] = field(default_factory=list)

    def assert_clean(self, *secrets: str) -> None:
        assert self.bodies, "nothing was recorded"
        for body in self.bodies:
            for value in secrets:
                assert value not in body, f"a secret came back in a response: {body[:300]}"


@pytest.fixture
def rec(server: ServerProcess) -> Iterator[Recorder]:
    """A client whose every raw response body is kept, to scan for secrets."""
    bodies: list[str] = []

    def keep(response: httpx2.Response) -> None:
        response.read()
        bodies.append(response.text)

    http = httpx2.Client(event_hooks={"response": [keep]})
    with anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, http_client=http) as c:
        yield Recorder(c, bodies)


# -- direct access to the server's database and store ------------------------------------------


def sync_url(server: ServerProcess) -> str:
    if server.database_url:
        return to_async_url(server.database_url)  # psycopg 3 drives sync engines too
    return f"sqlite:///{server.data_dir / 'hangar.db'}"


def credential_rows(server: ServerProcess) -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(sync_url(server), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM vault_credentials")).mappings().all()
    finally:
        engine.dispose()
    return {r["id"]: dict(r) for r in rows}


def set_secret_column(server: ServerProcess, credential_id: str, value: str | None) -> None:
    engine = sa.create_engine(sync_url(server), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE vault_credentials SET secret = :s WHERE id = :i"),
                {"s": value, "i": credential_id},
            )
    finally:
        engine.dispose()


def with_store(
    server: ServerProcess, work: Callable[[Store], Awaitable[T]], env: dict[str, str] | None = None
) -> T:
    """Run ``work`` on a Store over the server's database with the server's secret key."""
    fields: dict[str, Any] = {
        "data_dir": server.data_dir,
        "database_url": server.database_url,
        "secret_key": None,
    }
    if env and "HANGAR_SECRET_KEY" in env:
        fields["secret_key"] = env["HANGAR_SECRET_KEY"]

    async def run() -> T:
        settings = Settings(**fields)
        db = open_database(settings.resolved_database_url)
        try:
            return await work(Store.open(db, SecretBox.from_settings(settings)))
        finally:
            await db.close()

    return asyncio.run(run())


def secret_of(server: ServerProcess, credential_id: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return with_store(server, lambda s: s.vaults.credential_secret(DEFAULT_WORKSPACE, credential_id), env)


# -- builders --------------------------------------------------------------------------------------


def new_vault(client: anthropic.Anthropic, name: str = "Alice") -> str:
    return str(vault_of(client.beta.vaults.create(display_name=name))["id"])


def bearer(url: str, token: str) -> dict[str, Any]:
    return {"type": "static_bearer", "mcp_server_url": url, "token": token}


def oauth(url: str, access: str, **more: Any) -> dict[str, Any]:
    return {"type": "mcp_oauth", "mcp_server_url": url, "access_token": access, **more}


def refresh_cfg(
    endpoint: str, refresh_token: str, kind: str = "none", client_secret: str | None = None
) -> dict[str, Any]:
    auth: dict[str, Any] = {"type": kind}
    if client_secret is not None:
        auth["client_secret"] = client_secret
    return {
        "client_id": "client-1",
        "refresh_token": refresh_token,
        "token_endpoint": endpoint,
        "token_endpoint_auth": auth,
    }


def env_var(name: str, value: str, **more: Any) -> dict[str, Any]:
    return {
        "type": "environment_variable",
        "secret_name": name,
        "secret_value": value,
        "networking": {"type": "unrestricted"},
        **more,
    }


# ================================================================================== vaults


def test_vault_lifecycle(client: anthropic.Anthropic) -> None:
    made = vault_of(client.beta.vaults.create(display_name="Alice", metadata={"user": "u1", "team": "t"}))
    assert made["id"].startswith("vlt_") and made["type"] == "vault"
    assert made["display_name"] == "Alice" and made["metadata"] == {"user": "u1", "team": "t"}
    assert made["archived_at"] is None and made["created_at"] == made["updated_at"]
    vid = made["id"]
    assert vault_of(client.beta.vaults.retrieve(vid)) == made

    updated = vault_of(
        client.beta.vaults.update(vid, display_name="Alice B", metadata={"team": None, "x": "1"})
    )
    assert updated["display_name"] == "Alice B" and updated["metadata"] == {"user": "u1", "x": "1"}
    assert updated["updated_at"] > made["updated_at"]
    kept = vault_of(client.beta.vaults.update(vid, metadata={"y": "2"}))
    assert kept["display_name"] == "Alice B" and kept["metadata"] == {"user": "u1", "x": "1", "y": "2"}

    listed = [vault_of(v)["id"] for v in client.beta.vaults.list(limit=100)]
    assert vid in listed
    archived = vault_of(client.beta.vaults.archive(vid))
    assert archived["archived_at"] is not None
    again = vault_of(client.beta.vaults.archive(vid))
    assert again["archived_at"] == archived["archived_at"], "archive is idempotent"
    assert vid not in [v.id for v in client.beta.vaults.list(limit=100)]
    assert vid in [v.id for v in client.beta.vaults.list(limit=100, include_archived=True)]
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.update(vid, display_name="nope")
    assert "archived" in message_of(exc)

    gone = strict(BetaManagedAgentsDeletedVault, client.beta.vaults.delete(vid))
    assert gone.id == vid and gone.type == "vault_deleted"
    for call in (
        lambda: client.beta.vaults.retrieve(vid),
        lambda: client.beta.vaults.delete(vid),
        lambda: client.beta.vaults.archive(vid),
        lambda: client.beta.vaults.update(vid, display_name="x"),
    ):
        with pytest.raises(anthropic.NotFoundError) as nf:
            call()
        assert message_of(nf) == f"Vault {vid} not found."


def test_vault_list_pages_newest_first(client: anthropic.Anthropic) -> None:
    ids = [new_vault(client, f"page-{i}") for i in range(5)]
    first = client.beta.vaults.list(limit=2)
    assert len(first.data) == 2 and first.next_page
    seen = [v.id for v in client.beta.vaults.list(limit=2)]  # the SDK follows next_page
    assert len(seen) == len(set(seen))
    mine = [i for i in seen if i in ids]
    assert mine == list(reversed(ids))
    last = client.beta.vaults.list(limit=100)
    assert last.next_page is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Failed to parse request body: display_name: field required"),
        ({"display_name": ""}, "Failed to parse request body: display_name: must not be empty"),
        (
            {"display_name": "x" * 256},
            "Failed to parse request body: display_name: must be at most 255 characters",
        ),
        ({"display_name": 3}, "Failed to parse request body: display_name: expected a string"),
        ({"display_name": "a", "colour": "red"}, 'Failed to parse request body: unknown field "colour"'),
    ],
)
def test_vault_create_validation(client: anthropic.Anthropic, body: dict[str, Any], message: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.post("/v1/vaults", body=body, cast_to=object)
    assert message_of(exc) == message


def test_vault_metadata_limits(client: anthropic.Anthropic) -> None:
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.beta.vaults.create(display_name="m", metadata=metadata)
        assert error_of(exc)["details"]["error_code"] == "invalid_metadata"
    vid = new_vault(client)
    client.beta.vaults.update(vid, metadata={f"k{i}": "v" for i in range(16)})
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.update(vid, metadata={"one-more": "v"})
    assert error_of(exc)["details"]["error_code"] == "invalid_metadata"


def test_other_workspace_sees_nothing(server: ServerProcess, client: anthropic.Anthropic) -> None:
    vid = new_vault(client)
    cid = client.beta.vaults.credentials.create(vid, auth=bearer("https://ws.example/mcp", secret("ws"))).id
    other_key = create_key(server, "--workspace", "vault-isolation", "--name", "vault b")
    with anthropic.Anthropic(base_url=server.base_url, api_key=other_key, max_retries=0) as other:
        for call in (
            lambda: other.beta.vaults.retrieve(vid),
            lambda: other.beta.vaults.update(vid, display_name="x"),
            lambda: other.beta.vaults.archive(vid),
            lambda: other.beta.vaults.delete(vid),
            lambda: other.beta.vaults.credentials.list(vid),
            lambda: other.beta.vaults.credentials.create(vid, auth=bearer("https://b.example/mcp", "t")),
            lambda: other.beta.vaults.credentials.retrieve(cid, vault_id=vid),
            lambda: other.beta.vaults.credentials.update(cid, vault_id=vid, display_name="x"),
            lambda: other.beta.vaults.credentials.archive(cid, vault_id=vid),
            lambda: other.beta.vaults.credentials.delete(cid, vault_id=vid),
            lambda: other.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid),
        ):
            with pytest.raises(anthropic.NotFoundError):
                call()
        assert vid not in [v.id for v in other.beta.vaults.list(include_archived=True)]
    assert client.beta.vaults.credentials.retrieve(cid, vault_id=vid).archived_at is None


# ============================================================================= credentials


def test_static_bearer_lifecycle(server: ServerProcess, rec: Recorder) -> None:
    client = rec.client
    vid = new_vault(client)
    token, token2 = secret("bearer"), secret("bearer2")
    url = "https://mcp.example.com/sse?tenant=1"
    made = cred_of(
        client.beta.vaults.credentials.create(
            vid, auth=bearer(url, token), display_name="GitHub", metadata={"k": "v"}
        )
    )
    cid = made["id"]
    assert cid.startswith("vcrd_") and made["type"] == "vault_credential" and made["vault_id"] == vid
    assert made["auth"] == {"type": "static_bearer", "mcp_server_url": url}
    assert made["display_name"] == "GitHub" and made["metadata"] == {"k": "v"} and made["archived_at"] is None
    assert cred_of(client.beta.vaults.credentials.retrieve(cid, vault_id=vid)) == made
    assert secret_of(server, cid) == {"type": "static_bearer", "mcp_server_url": url, "token": token}

    rotated = cred_of(
        client.beta.vaults.credentials.update(
            cid, vault_id=vid, auth={"type": "static_bearer", "token": token2}, metadata={"k": None, "n": "1"}
        )
    )
    assert rotated["id"] == cid and rotated["auth"] == made["auth"] and rotated["display_name"] == "GitHub"
    assert rotated["metadata"] == {"n": "1"} and rotated["updated_at"] > made["updated_at"]
    assert secret_of(server, cid)["token"] == token2, "rotation keeps the id and stores the new token"
    renamed = cred_of(client.beta.vaults.credentials.update(cid, vault_id=vid, display_name="GH"))
    assert renamed["display_name"] == "GH" and secret_of(server, cid)["token"] == token2

    assert [c.id for c in client.beta.vaults.credentials.list(vid)] == [cid]
    archived = cred_of(client.beta.vaults.credentials.archive(cid, vault_id=vid))
    assert archived["archived_at"] is not None and archived["auth"] == made["auth"]
    assert (
        cred_of(client.beta.vaults.credentials.archive(cid, vault_id=vid))["archived_at"]
        == archived["archived_at"]
    )
    assert credential_rows(server)[cid]["secret"] is None, "archiving purges the secret"
    assert client.beta.vaults.credentials.list(vid).data == []
    assert [c.id for c in client.beta.vaults.credentials.list(vid, include_archived=True)] == [cid]
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.update(cid, vault_id=vid, auth={"type": "static_bearer", "token": "t"})
    assert message_of(exc) == "Credential is archived."
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.retrieve("vcrd_nope", vault_id=vid)

    # The key is free again: a new credential for the same URL.
    again = cred_of(client.beta.vaults.credentials.create(vid, auth=bearer(url, token2)))
    assert again["id"] != cid
    gone = strict(
        BetaManagedAgentsDeletedCredential, client.beta.vaults.credentials.delete(cid, vault_id=vid)
    )
    assert gone.id == cid and gone.type == "vault_credential_deleted"
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.beta.vaults.credentials.retrieve(cid, vault_id=vid)
    assert message_of(nf) == f"Credential {cid} not found."
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.delete(cid, vault_id=vid)
    rec.assert_clean(token, token2)
    assert token not in server.log() and token2 not in server.log()


def test_mcp_oauth_echo_and_update_rules(server: ServerProcess, rec: Recorder) -> None:
    client = rec.client
    vid = new_vault(client)
    access, access2, refresh_token, refresh2, csecret, csecret2 = (secret(x) for x in "abcdef")
    url = "https://oauth.example.com/mcp"
    auth = oauth(
        url,
        access,
        expires_at="2098-05-06T07:08:09Z",
        refresh={
            **refresh_cfg("https://auth.example.com/token", refresh_token, "client_secret_basic", csecret),
            "scope": "repo read",
            "resource": "https://oauth.example.com/",
        },
    )
    made = cred_of(client.beta.vaults.credentials.create(vid, auth=auth))
    cid = made["id"]
    assert made["auth"] == {
        "type": "mcp_oauth",
        "mcp_server_url": url,
        "expires_at": "2098-05-06T07:08:09Z",
        "refresh": {
            "client_id": "client-1",
            "token_endpoint": "https://auth.example.com/token",
            "token_endpoint_auth": {"type": "client_secret_basic"},
            "scope": "repo read",
            "resource": "https://oauth.example.com/",
        },
    }
    # A new token keeps the old expiry unless expires_at is sent too.
    updated = cred_of(
        client.beta.vaults.credentials.update(
            cid, vault_id=vid, auth={"type": "mcp_oauth", "access_token": access2}
        )
    )
    assert updated["auth"] == made["auth"]
    assert secret_of(server, cid)["access_token"] == access2
    later = cred_of(
        client.beta.vaults.credentials.update(
            cid, vault_id=vid, auth={"type": "mcp_oauth", "expires_at": "2097-01-02T03:04:05Z"}
        )
    )
    assert later["auth"]["expires_at"] == "2097-01-02T03:04:05Z"
    # Refresh: new refresh token, scope cleared with "", a new client secret; the stored
    # endpoint-auth type is kept even when the other secret type is sent.
    cleared = cred_of(
        client.beta.vaults.credentials.update(
            cid,
            vault_id=vid,
            auth={
                "type": "mcp_oauth",
                "refresh": {
                    "refresh_token": refresh2,
                    "scope": "",
                    "token_endpoint_auth": {"type": "client_secret_post", "client_secret": csecret2},
                },
            },
        )
    )
    assert cleared["auth"]["refresh"]["scope"] is None
    assert cleared["auth"]["refresh"]["token_endpoint_auth"] == {"type": "client_secret_basic"}
    full = secret_of(server, cid)
    assert full["refresh"]["refresh_token"] == refresh2
    assert full["refresh"]["token_endpoint_auth"] == {
        "type": "client_secret_basic",
        "client_secret": csecret2,
    }
    assert full["access_token"] == access2 and full["expires_at"] == "2097-01-02T03:04:05.000000Z"
    rec.assert_clean(access, access2, refresh_token, refresh2, csecret, csecret2)
    log = server.log()
    assert all(s not in log for s in (access, access2, refresh_token, refresh2, csecret, csecret2))


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            {"type": "mcp_oauth", "mcp_server_url": "https://other.example/mcp"},
            'Failed to parse request body: unknown field "mcp_server_url"',
        ),
        (
            {"type": "mcp_oauth", "refresh": {"client_id": "x"}},
            'Failed to parse request body: unknown field "client_id"',
        ),
        (
            {"type": "mcp_oauth", "refresh": {"token_endpoint": "https://x.example/t"}},
            'Failed to parse request body: unknown field "token_endpoint"',
        ),
        (
            {"type": "mcp_oauth", "refresh": {"resource": "https://x.example/"}},
            'Failed to parse request body: unknown field "resource"',
        ),
        (
            {"type": "mcp_oauth", "expires_at": "2001-01-01T00:00:00Z"},
            "auth.expires_at must be in the future.",
        ),
        (
            {"type": "mcp_oauth", "expires_at": "soon"},
            "Failed to parse request body: auth.expires_at: 'soon' is not a valid RFC 3339 timestamp",
        ),
        (
            {"type": "static_bearer", "token": "t"},
            'auth.type: "static_bearer" does not match the credential\'s type "mcp_oauth"; '
            "the type of a credential cannot change",
        ),
        (
            {"type": "mcp_oauth", "refresh": {"token_endpoint_auth": {"type": "none"}}},
            'Failed to parse request body: auth.refresh.token_endpoint_auth.type: "none" is not a valid value; '
            "expected one of client_secret_basic, client_secret_post",
        ),
    ],
)
def test_mcp_oauth_update_refusals(
    server: ServerProcess, client: anthropic.Anthropic, auth: dict[str, Any], message: str
) -> None:
    vid = new_vault(client)
    access = secret("keep")
    cid = client.beta.vaults.credentials.create(
        vid, auth=oauth("https://keep.example/mcp", access, refresh=refresh_cfg("https://t.example/t", "rt"))
    ).id
    before = cred_of(client.beta.vaults.credentials.retrieve(cid, vault_id=vid))
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.post(
            f"/v1/vaults/{vid}/credentials/{cid}",
            body={"auth": auth, "display_name": "changed"},
            cast_to=object,
        )
    assert message_of(exc) == message
    assert cred_of(client.beta.vaults.credentials.retrieve(cid, vault_id=vid)) == before, "nothing changed"
    assert secret_of(server, cid)["access_token"] == access


def test_mcp_oauth_refresh_update_needs_a_refresh_config_with_a_secret(client: anthropic.Anthropic) -> None:
    vid = new_vault(client)
    plain = client.beta.vaults.credentials.create(vid, auth=oauth("https://plain.example/mcp", "a")).id
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.update(
            plain, vault_id=vid, auth={"type": "mcp_oauth", "refresh": {"refresh_token": "r"}}
        )
    assert "no refresh configuration" in message_of(exc)
    public = client.beta.vaults.credentials.create(
        vid, auth=oauth("https://public.example/mcp", "a", refresh=refresh_cfg("https://t.example/t", "r"))
    ).id
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.update(
            public,
            vault_id=vid,
            auth={
                "type": "mcp_oauth",
                "refresh": {"token_endpoint_auth": {"type": "client_secret_basic", "client_secret": "s"}},
            },
        )
    assert "no client secret to replace" in message_of(exc)


def _sb(**kw: Any) -> dict[str, Any]:
    return {**bearer("https://x.example", "t"), **kw}


def _oa(**kw: Any) -> dict[str, Any]:
    return {**oauth("https://x.example", "a"), **kw}


def _ref(**kw: Any) -> dict[str, Any]:
    base = {"client_id": "c", "refresh_token": "r", "token_endpoint": "https://t.example"}
    return {**base, "token_endpoint_auth": {"type": "none"}, **kw}


P = "Failed to parse request body: "


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, f"{P}auth: field required"),
        (
            {"type": "basic"},
            f'{P}auth.type: "basic" is not a valid value; expected one of mcp_oauth, static_bearer, '
            "environment_variable",
        ),
        ({"mcp_server_url": "https://x.example"}, f"{P}auth.type: field required"),
        ({"type": "static_bearer", "mcp_server_url": "https://x.example"}, f"{P}auth.token: field required"),
        (_sb(token=5), f"{P}auth.token: expected a string"),
        (_sb(token=""), f"{P}auth.token: must not be empty"),
        (_sb(access_token="a"), f'{P}unknown field "access_token"'),
        (
            _sb(mcp_server_url="ftp://x.example"),
            'auth.mcp_server_url: "ftp://x.example" is not a valid URL; expected an http or https URL',
        ),
        (
            _sb(mcp_server_url="https://" + "x" * 2050),
            f"{P}auth.mcp_server_url: must be at most 2048 characters",
        ),
        (_oa(expires_at="2001-01-01T00:00:00Z"), "auth.expires_at must be in the future."),
        (_oa(expires_at=1234), f"{P}auth.expires_at: expected an RFC 3339 timestamp string"),
        (
            _oa(refresh={"client_id": "c", "refresh_token": "r", "token_endpoint": "https://t.example"}),
            f"{P}auth.refresh.token_endpoint_auth: field required",
        ),
        (_oa(refresh=_ref(client_id=None)), f"{P}auth.refresh.client_id: field required"),
        (
            _oa(refresh=_ref(token_endpoint_auth={"type": "client_secret_post"})),
            f"{P}auth.refresh.token_endpoint_auth.client_secret: field required",
        ),
        (
            _oa(refresh=_ref(token_endpoint_auth={"type": "none", "client_secret": "s"})),
            f'{P}unknown field "client_secret"',
        ),
        (
            _oa(refresh=_ref(token_endpoint="not a url")),
            'auth.refresh.token_endpoint: "not a url" is not a valid URL; expected an http or https URL',
        ),
    ],
)
def test_credential_create_validation(client: anthropic.Anthropic, auth: Any, message: str) -> None:
    vid = new_vault(client)
    body = {} if auth is None else {"auth": auth}
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.post(f"/v1/vaults/{vid}/credentials", body=body, cast_to=object)
    assert message_of(exc) == message
    assert client.beta.vaults.credentials.list(vid, include_archived=True).data == []


def test_credential_display_name_and_metadata_rules(client: anthropic.Anthropic) -> None:
    vid = new_vault(client)
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.create(
            vid, auth=bearer("https://d.example", "t"), display_name="x" * 256
        )
    assert message_of(exc) == "Failed to parse request body: display_name: must be at most 255 characters"
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.create(
            vid, auth=bearer("https://d.example", "t"), metadata={f"k{i}": "v" for i in range(17)}
        )
    assert error_of(exc)["details"]["error_code"] == "invalid_metadata"
    cid = client.beta.vaults.credentials.create(vid, auth=bearer("https://d.example", "t")).id
    assert cred_of(client.beta.vaults.credentials.retrieve(cid, vault_id=vid))["display_name"] is None
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.update(cid, vault_id=vid, display_name="")
    assert message_of(exc) == "Failed to parse request body: display_name: must not be empty"
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.update(cid, vault_id=vid, metadata={"k" * 65: "v"})
    assert error_of(exc)["details"]["error_code"] == "invalid_metadata"


def test_environment_variable_rules(server: ServerProcess, rec: Recorder) -> None:
    client = rec.client
    vid = new_vault(client)
    value, value2 = secret("env"), secret("env2")
    made = cred_of(client.beta.vaults.credentials.create(vid, auth=env_var("GITHUB_TOKEN", value)))
    cid = made["id"]
    assert made["auth"] == {
        "type": "environment_variable",
        "secret_name": "GITHUB_TOKEN",
        "networking": {"type": "unrestricted"},
        "injection_location": {"header": True, "body": True},
    }, "omitted injection_location: both on"
    hosts = ["api.github.com", "192.0.2.1", "*.example.com"]
    limited = cred_of(
        client.beta.vaults.credentials.create(
            vid,
            auth=env_var(
                "OTHER",
                value,
                networking={"type": "limited", "allowed_hosts": hosts},
                injection_location={"header": True},
            ),
        )
    )
    assert limited["auth"]["networking"] == {"type": "limited", "allowed_hosts": hosts}
    assert limited["auth"]["injection_location"] == {"header": True, "body": False}, (
        "supplied: missing is false"
    )

    # Update: locations merge per field; networking is replaced whole; the secret is write-only.
    upd = cred_of(
        client.beta.vaults.credentials.update(
            limited["id"],
            vault_id=vid,
            auth={
                "type": "environment_variable",
                "injection_location": {"body": True},
                "secret_value": value2,
            },
        )
    )
    assert upd["auth"]["injection_location"] == {"header": True, "body": True}
    assert upd["auth"]["networking"] == limited["auth"]["networking"]
    upd = cred_of(
        client.beta.vaults.credentials.update(
            limited["id"],
            vault_id=vid,
            auth={
                "type": "environment_variable",
                "networking": {"type": "unrestricted"},
                "injection_location": {"header": False},
            },
        )
    )
    assert upd["auth"]["networking"] == {"type": "unrestricted"}
    assert upd["auth"]["injection_location"] == {"header": False, "body": True}
    assert secret_of(server, limited["id"])["secret_value"] == value2
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.update(
            limited["id"],
            vault_id=vid,
            auth={"type": "environment_variable", "injection_location": {"body": False}},
        )
    assert message_of(exc) == "auth.injection_location: at least one of `header` and `body` must be true"
    for bad in (None, {"header": None}):
        with pytest.raises(anthropic.BadRequestError):
            client.post(
                f"/v1/vaults/{vid}/credentials/{cid}",
                body={"auth": {"type": "environment_variable", "injection_location": bad}},
                cast_to=object,
            )
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.post(
            f"/v1/vaults/{vid}/credentials/{cid}",
            body={"auth": {"type": "environment_variable", "secret_name": "RENAMED"}},
            cast_to=object,
        )
    assert message_of(exc) == 'Failed to parse request body: unknown field "secret_name"'
    assert cred_of(client.beta.vaults.credentials.retrieve(cid, vault_id=vid)) == made
    rec.assert_clean(value, value2)


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            {"injection_location": {"header": False, "body": False}},
            "auth.injection_location: at least one of `header` and `body` must be true",
        ),
        (
            {"injection_location": None},
            "auth.injection_location: expected an object with `header` and/or `body` booleans",
        ),
        ({"injection_location": {"header": None}}, "auth.injection_location.header: expected a boolean"),
        ({"networking": None}, "Failed to parse request body: auth.networking: field required"),
        (
            {"secret_name": "1BAD"},
            'auth.secret_name: "1BAD" is not a valid environment variable name (letters, digits and underscores, not starting with a digit)',
        ),
        (
            {"secret_name": "BAD-NAME"},
            'auth.secret_name: "BAD-NAME" is not a valid environment variable name (letters, digits and underscores, not starting with a digit)',
        ),
        (
            {"networking": {"type": "limited", "allowed_hosts": ["example.com:443"]}},
            '`allowed_hosts` entry "example.com:443" contains a port. Entries must be bare hostnames without ports.',
        ),
        (
            {"networking": {"type": "limited", "allowed_hosts": ["https://example.com"]}},
            '`allowed_hosts` entry "https://example.com" contains a URL scheme. Entries must be bare hostnames like "google.com".',
        ),
        (
            {"networking": {"type": "limited", "allowed_hosts": ["example.com/path"]}},
            '`allowed_hosts` entry "example.com/path" is not a valid host. Entries must be bare hostnames, IPv4 addresses or wildcards like "*.example.com".',
        ),
        (
            {"networking": {"type": "limited", "allowed_hosts": ["::1"]}},
            '`allowed_hosts` entry "::1" is not a valid host. Entries must be bare hostnames, IPv4 addresses or wildcards like "*.example.com".',
        ),
        (
            {"networking": {"type": "limited", "allowed_hosts": ["[2001:db8::1]"]}},
            '`allowed_hosts` entry "[2001:db8::1]" is not a valid host. Entries must be bare hostnames, IPv4 addresses or wildcards like "*.example.com".',
        ),
        (
            {"networking": {"type": "limited", "allowed_hosts": [f"h{i}.example.com" for i in range(17)]}},
            "auth.networking.allowed_hosts: at most 16 entries are allowed, got 17",
        ),
        (
            {"networking": {"type": "limited", "allowed_hosts": []}},
            "auth.networking.allowed_hosts: at least one host is required",
        ),
        (
            {"networking": {"type": "limited"}},
            "Failed to parse request body: auth.networking.allowed_hosts: field required",
        ),
        (
            {"networking": {"type": "unrestricted", "allowed_hosts": ["a.com"]}},
            'Failed to parse request body: unknown field "allowed_hosts"',
        ),
        (
            {"networking": {"type": "open"}},
            'Failed to parse request body: auth.networking.type: "open" is not a valid value; expected one of unrestricted, limited',
        ),
    ],
)
def test_environment_variable_validation(
    client: anthropic.Anthropic, auth: dict[str, Any], message: str
) -> None:
    vid = new_vault(client)
    body = {"auth": {**env_var("NAME", "v"), **auth}}
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.post(f"/v1/vaults/{vid}/credentials", body=body, cast_to=object)
    assert message_of(exc) == message


def test_sixteen_allowed_hosts_are_accepted(client: anthropic.Anthropic) -> None:
    vid = new_vault(client)
    hosts = [f"h{i}.example.com" for i in range(16)]
    made = client.beta.vaults.credentials.create(
        vid, auth=env_var("MANY", "v", networking={"type": "limited", "allowed_hosts": hosts})
    )
    assert cred_of(made)["auth"]["networking"]["allowed_hosts"] == hosts


def test_keys_are_unique_among_active_credentials(client: anthropic.Anthropic) -> None:
    vid, other = new_vault(client), new_vault(client)
    url = "https://unique.example/mcp"
    first = client.beta.vaults.credentials.create(vid, auth=bearer(url, "t1")).id
    with pytest.raises(anthropic.ConflictError) as exc:
        client.beta.vaults.credentials.create(vid, auth=oauth(url, "a"))
    assert exc.value.status_code == 409 and exc.value.response.headers["x-should-retry"] == "false"
    assert error_of(exc)["type"] == "invalid_request_error" and url in message_of(exc)
    client.beta.vaults.credentials.create(
        vid, auth=bearer(url + "?team=2", "t")
    )  # another query, another key
    client.beta.vaults.credentials.create(other, auth=bearer(url, "t"))  # another vault
    client.beta.vaults.credentials.create(vid, auth=env_var("TOKEN", "v"))
    with pytest.raises(anthropic.ConflictError) as exc:
        client.beta.vaults.credentials.create(vid, auth=env_var("TOKEN", "w"))
    assert exc.value.response.headers["x-should-retry"] == "false" and '"TOKEN"' in message_of(exc)
    client.beta.vaults.credentials.archive(first, vault_id=vid)
    client.beta.vaults.credentials.create(vid, auth=oauth(url, "a"))  # archiving freed the URL


def test_at_most_twenty_active_credentials_per_vault(client: anthropic.Anthropic) -> None:
    vid = new_vault(client)
    ids = [client.beta.vaults.credentials.create(vid, auth=env_var(f"V{i}", "v")).id for i in range(20)]
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.create(vid, auth=env_var("V20", "v"))
    assert "20 active credentials" in message_of(exc)
    client.beta.vaults.credentials.archive(ids[0], vault_id=vid)
    client.beta.vaults.credentials.create(vid, auth=env_var("V20", "v"))
    page = client.beta.vaults.credentials.list(vid, limit=7)
    assert len(page.data) == 7 and page.next_page
    assert len({c.id for c in client.beta.vaults.credentials.list(vid, limit=7)}) == 20
    assert len(list(client.beta.vaults.credentials.list(vid, include_archived=True, limit=100))) == 21


def test_vault_paths_and_archived_vaults(client: anthropic.Anthropic) -> None:
    vid, other = new_vault(client), new_vault(client)
    cid = client.beta.vaults.credentials.create(vid, auth=bearer("https://p.example", "t")).id
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.retrieve(cid, vault_id=other)  # not in that vault
    for call in (
        lambda: client.beta.vaults.credentials.list("vlt_missing"),
        lambda: client.beta.vaults.credentials.create("vlt_missing", auth=bearer("https://p.example", "t")),
    ):
        with pytest.raises(anthropic.NotFoundError) as exc:
            call()
        assert message_of(exc) == "Vault vlt_missing not found."
    client.beta.vaults.archive(vid)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.vaults.credentials.create(vid, auth=bearer("https://q.example", "t"))
    assert message_of(bad) == f"Vault {vid} is archived."
    assert cred_of(client.beta.vaults.credentials.retrieve(cid, vault_id=vid))["archived_at"] is None
    client.beta.vaults.delete(vid)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.retrieve(cid, vault_id=vid)


# ====================================================================== secrets at rest


def test_no_plaintext_secret_in_the_database(server: ServerProcess, rec: Recorder) -> None:
    client = rec.client
    vid = new_vault(client)
    values = {k: secret(k) for k in ("token", "access", "refresh", "client", "env")}
    made = [
        client.beta.vaults.credentials.create(vid, auth=bearer("https://db1.example", values["token"])).id,
        client.beta.vaults.credentials.create(
            vid,
            auth=oauth(
                "https://db2.example",
                values["access"],
                refresh=refresh_cfg(
                    "https://t.example", values["refresh"], "client_secret_post", values["client"]
                ),
            ),
        ).id,
        client.beta.vaults.credentials.create(vid, auth=env_var("DB_SECRET", values["env"])).id,
    ]
    rows = credential_rows(server)
    for cid in made:
        row = rows[cid]
        assert row["secret"].startswith("hgs1."), "sealed, with its format and key id"
        flat = json.dumps({k: v for k, v in row.items()}, default=str)
        assert not any(v in flat for v in values.values())
    assert not any(v in json.dumps(list(rows.values()), default=str) for v in values.values())
    if not server.database_url:  # SQLite: the file itself (and its WAL) hold no plaintext
        for path in server.data_dir.glob("hangar.db*"):
            raw = path.read_bytes()
            assert not any(v.encode() in raw for v in values.values()), path
    for cid in made:
        client.beta.vaults.credentials.retrieve(cid, vault_id=vid)
    list(client.beta.vaults.credentials.list(vid))
    rec.assert_clean(*values.values())
    assert not any(v in server.log() for v in values.values())


def test_a_ciphertext_moved_to_another_row_does_not_open(
    server: ServerProcess, client: anthropic.Anthropic
) -> None:
    vid = new_vault(client)
    a = client.beta.vaults.credentials.create(vid, auth=bearer("https://swap-a.example", secret("a"))).id
    b = client.beta.vaults.credentials.create(vid, auth=bearer("https://swap-b.example", secret("b"))).id
    rows = credential_rows(server)
    set_secret_column(server, b, rows[a]["secret"])
    with pytest.raises(InternalError, match="does not open"):
        secret_of(server, b)
    with pytest.raises(anthropic.InternalServerError):
        client.beta.vaults.credentials.update(b, vault_id=vid, auth={"type": "static_bearer", "token": "new"})
    set_secret_column(server, b, rows[b]["secret"])
    assert secret_of(server, b)["mcp_server_url"] == "https://swap-b.example"


# ================================================================================ sessions


def test_sessions_take_vaults_in_request_order(server: ServerProcess, client: anthropic.Anthropic) -> None:
    agent_id, env_id = make_agent_env(client)
    v1, v2 = new_vault(client, "one"), new_vault(client, "two")
    s = strict(
        BetaManagedAgentsSession,
        client.beta.sessions.create(agent=agent_id, environment_id=env_id, vault_ids=[v2, v1]),
    )
    assert s.vault_ids == [v2, v1]
    assert client.beta.sessions.retrieve(s.id).vault_ids == [v2, v1]
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.beta.sessions.create(agent=agent_id, environment_id=env_id, vault_ids=[v1, "vlt_nope"])
    assert message_of(exc) == "Vault vlt_nope not found."
    client.beta.vaults.archive(v1)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.beta.sessions.create(agent=agent_id, environment_id=env_id, vault_ids=[v1])
    assert message_of(bad) == f"Vault {v1} is archived."
    other_key = create_key(server, "--workspace", "vault-sessions", "--name", "sessions b")
    with anthropic.Anthropic(base_url=server.base_url, api_key=other_key, max_retries=0) as other:
        agent_b, env_b = make_agent_env(other)
        with pytest.raises(anthropic.NotFoundError):
            other.beta.sessions.create(agent=agent_b, environment_id=env_b, vault_ids=[v2])


def test_credentials_for_vaults_and_secrets_for_the_runtime(
    server: ServerProcess, client: anthropic.Anthropic
) -> None:
    v1, v2 = new_vault(client), new_vault(client)
    url = "https://runtime.example/mcp"
    c1 = client.beta.vaults.credentials.create(v1, auth=bearer(url, "in-v1")).id
    c2 = client.beta.vaults.credentials.create(v2, auth=bearer(url, "in-v2")).id
    c3 = client.beta.vaults.credentials.create(v2, auth=env_var("RT", "env-v2")).id
    gone = client.beta.vaults.credentials.create(v2, auth=bearer("https://gone.example", "x")).id
    client.beta.vaults.credentials.archive(gone, vault_id=v2)
    refs = with_store(server, lambda s: s.vaults.credentials_for_vaults(DEFAULT_WORKSPACE, [v2, v1]))
    assert [r.id for r in refs] == [c2, c3, c1]
    assert refs[0].mcp_server_url == url and refs[0].type == "static_bearer" and refs[0].secret_name is None
    assert refs[1].secret_name == "RT" and refs[1].mcp_server_url is None
    assert all("token" not in r.auth and "secret_value" not in r.auth for r in refs)
    assert secret_of(server, c3)["secret_value"] == "env-v2"
    with pytest.raises(Exception, match="not found"):
        secret_of(server, gone)
    assert with_store(server, lambda s: s.vaults.credentials_for_vaults("wrkspc_other", [v1])) == []


# ================================================================== mcp_oauth_validate


@dataclass
class OAuthClient:
    kind: str  # none | client_secret_basic | client_secret_post
    secret: str | None


class FakeOAuthMcp:
    """An MCP endpoint (``POST /mcp``: ``initialize`` with a bearer token) and an OAuth token
    endpoint (``POST /token``: the refresh grant with each client authentication), on loopback."""

    def __init__(self) -> None:
        self.valid: set[str] = set()
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> client id
        self.clients: dict[str, OAuthClient] = {}
        self.token_requests: list[dict[str, Any]] = []
        self.mcp_requests: list[dict[str, Any]] = []
        self.deleted_sessions: list[str] = []
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/mcp", self._mcp, methods=["POST", "DELETE"]),
                Route("/token", self._token, methods=["POST"]),
            ]
        )
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None

    @property
    def base_url(self) -> str:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOAuthMcp:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", ws="none", access_log=False)
        self._server = uvicorn.Server(config)
        thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake OAuth server did not start"
            time.sleep(0.01)
        self._thread = thread
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._sock is not None
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    async def _mcp(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        if request.method == "DELETE":
            self.deleted_sessions.append(request.headers.get("mcp-session-id", ""))
            return Response(status_code=200)
        body = json.loads(await request.body())
        self.mcp_requests.append({"token": token, "body": body})
        if token not in self.valid:
            return JSONResponse(
                {"error": "invalid_token", "error_description": f"token {token} is not valid"},
                status_code=401,
                headers={"www-authenticate": 'Bearer error="invalid_token"'},
            )
        result = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "serverInfo": {"name": "fake", "version": "1"},
        }
        return JSONResponse(
            {"jsonrpc": "2.0", "id": body.get("id"), "result": result}, headers={"mcp-session-id": "sess-1"}
        )

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        header = request.headers.get("authorization", "")
        record: dict[str, Any] = {"form": dict(form), "authorization": header}
        self.token_requests.append(record)
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            client_id, presented, method = unquote_plus(user), unquote_plus(password), "client_secret_basic"
        else:
            client_id = form.get("client_id", "")
            presented = form.get("client_secret")
            method = "client_secret_post" if presented is not None else "none"
        record["method"] = method
        client = self.clients.get(client_id)
        if (
            client is None
            or client.kind != method
            or (client.secret is not None and client.secret != presented)
        ):
            return JSONResponse(
                {"error": "invalid_client", "error_description": f"client secret {presented} was refused"},
                status_code=401,
            )
        rt = form.get("refresh_token", "")
        if form.get("grant_type") != "refresh_token" or self.refresh_tokens.get(rt) != client_id:
            return JSONResponse({"error": "invalid_grant", "refresh_token": rt}, status_code=400)
        n = next(self._ids)
        access, rotated = f"access-{n}-{uuid.uuid4().hex}", f"refresh-{n}-{uuid.uuid4().hex}"
        del self.refresh_tokens[rt]
        self.refresh_tokens[rotated] = client_id
        self.valid.add(access)
        return JSONResponse(
            {"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": rotated}
        )


@pytest.fixture(scope="module")
def fake_oauth() -> Iterator[FakeOAuthMcp]:
    with FakeOAuthMcp() as fake:
        yield fake


def validation_of(obj: Any) -> dict[str, Any]:
    strict(BetaManagedAgentsCredentialValidation, obj)
    data: dict[str, Any] = obj.model_dump(mode="json")
    return data


def test_validate_valid_token(rec: Recorder, fake_oauth: FakeOAuthMcp) -> None:
    client = rec.client
    vid = new_vault(client)
    access = secret("valid")
    fake_oauth.valid.add(access)
    cid = client.beta.vaults.credentials.create(vid, auth=oauth(fake_oauth.base_url + "/mcp", access)).id
    report = validation_of(client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid))
    assert report["type"] == "vault_credential_validation"
    assert report["credential_id"] == cid and report["vault_id"] == vid
    assert report["status"] == "valid" and report["has_refresh_token"] is False
    assert report["mcp_probe"] is None and report["refresh"] is None and report["validated_at"]
    probe = fake_oauth.mcp_requests[-1]
    assert probe["token"] == access and probe["body"]["method"] == "initialize"
    assert "sess-1" in fake_oauth.deleted_sessions, "the probe's MCP session is closed"
    rec.assert_clean(access)


def test_validate_rejected_token_without_refresh(rec: Recorder, fake_oauth: FakeOAuthMcp) -> None:
    client = rec.client
    vid = new_vault(client)
    access = secret("rejected")
    cid = client.beta.vaults.credentials.create(vid, auth=oauth(fake_oauth.base_url + "/mcp", access)).id
    report = validation_of(client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid))
    assert report["status"] == "invalid" and report["has_refresh_token"] is False
    assert report["refresh"] == {"status": "no_refresh_token", "http_response": None}
    probe = report["mcp_probe"]
    assert probe["method"] == "initialize"
    assert probe["http_response"]["status_code"] == 401
    assert probe["http_response"]["content_type"].startswith("application/json")
    assert probe["http_response"]["body_truncated"] is False
    assert "is not valid" in probe["http_response"]["body"], "the body is reported"
    rec.assert_clean(access)  # ... scrubbed: the fake echoed the token


@pytest.mark.parametrize("kind", ["none", "client_secret_basic", "client_secret_post"])
def test_validate_refreshes_and_stores_the_new_tokens(
    server: ServerProcess, rec: Recorder, fake_oauth: FakeOAuthMcp, kind: str
) -> None:
    client = rec.client
    vid = new_vault(client)
    access, refresh_token = secret("stale"), secret("refresh")
    client_id = f"client-{uuid.uuid4().hex[:8]}"
    client_secret = None if kind == "none" else secret("client")
    fake_oauth.clients[client_id] = OAuthClient(kind, client_secret)
    fake_oauth.refresh_tokens[refresh_token] = client_id
    cfg = refresh_cfg(fake_oauth.base_url + "/token", refresh_token, kind, client_secret)
    cfg.update(client_id=client_id, scope="mcp:read")
    cid = client.beta.vaults.credentials.create(
        vid, auth=oauth(fake_oauth.base_url + "/mcp", access, expires_at=FUTURE, refresh=cfg)
    ).id
    before = len(fake_oauth.token_requests)
    report = validation_of(client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid))
    assert report["status"] == "valid" and report["has_refresh_token"] is True
    assert report["refresh"] == {"status": "succeeded", "http_response": None}
    assert report["mcp_probe"] is None
    request = fake_oauth.token_requests[before]
    assert request["method"] == kind
    assert request["form"]["grant_type"] == "refresh_token" and request["form"]["scope"] == "mcp:read"
    if kind == "client_secret_basic":
        assert "client_secret" not in request["form"] and "client_id" not in request["form"]
    if kind == "none":
        assert request["form"]["client_id"] == client_id and request["authorization"] == ""

    # The refreshed tokens were stored (sealed): the new access token passes at once, the
    # rotated refresh token is the one the next refresh sends, the expiry moved.
    full = secret_of(server, cid)
    assert full["access_token"] in fake_oauth.valid and full["access_token"] != access
    assert full["refresh"]["refresh_token"] in fake_oauth.refresh_tokens
    expires = datetime.fromisoformat(full["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=55) < expires - datetime.now(UTC) < timedelta(minutes=65)
    echoed = cred_of(client.beta.vaults.credentials.retrieve(cid, vault_id=vid))
    assert echoed["auth"]["expires_at"] != FUTURE
    assert credential_rows(server)[cid]["secret"].startswith("hgs1.")
    again = validation_of(client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid))
    assert again["status"] == "valid" and again["refresh"] is None
    assert len(fake_oauth.token_requests) == before + 1, "no second refresh"
    rec.assert_clean(
        access,
        refresh_token,
        full["access_token"],
        full["refresh"]["refresh_token"],
        *([client_secret] if client_secret else []),
    )


@pytest.mark.parametrize("kind", ["none", "client_secret_basic", "client_secret_post"])
def test_validate_refresh_failure(
    server: ServerProcess, rec: Recorder, fake_oauth: FakeOAuthMcp, kind: str
) -> None:
    client = rec.client
    vid = new_vault(client)
    access, refresh_token = secret("stale"), secret("refresh")
    client_id = f"client-{uuid.uuid4().hex[:8]}"
    client_secret = None if kind == "none" else secret("client")
    fake_oauth.clients[client_id] = OAuthClient(kind, client_secret)
    # none: the refresh token is unknown (invalid_grant, 400); else: a wrong client secret (401).
    if kind != "none":
        fake_oauth.refresh_tokens[refresh_token] = client_id
    wrong = None if client_secret is None else secret("wrong")
    cfg = refresh_cfg(fake_oauth.base_url + "/token", refresh_token, kind, wrong)
    cfg["client_id"] = client_id
    cid = client.beta.vaults.credentials.create(
        vid, auth=oauth(fake_oauth.base_url + "/mcp", access, refresh=cfg)
    ).id
    report = validation_of(client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid))
    assert report["status"] == "unknown" and report["has_refresh_token"] is True
    assert report["refresh"]["status"] == "failed"
    http = report["refresh"]["http_response"]
    assert http["status_code"] == (400 if kind == "none" else 401)
    assert ("invalid_grant" if kind == "none" else "invalid_client") in http["body"]
    assert report["mcp_probe"]["method"] == "initialize"
    assert report["mcp_probe"]["http_response"]["status_code"] == 401
    assert secret_of(server, cid)["access_token"] == access, "nothing stored on failure"
    rec.assert_clean(access, refresh_token, *([wrong] if wrong else []))


def test_validate_unreachable_endpoints(rec: Recorder, fake_oauth: FakeOAuthMcp) -> None:
    client = rec.client
    vid = new_vault(client)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    cid = client.beta.vaults.credentials.create(vid, auth=oauth(dead + "/mcp", "a")).id
    report = validation_of(client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid))
    assert report["status"] == "unknown"
    assert (
        report["mcp_probe"] == {"method": "initialize", "http_response": None} and report["refresh"] is None
    )
    cid = client.beta.vaults.credentials.create(
        vid,
        auth=oauth(
            fake_oauth.base_url + "/mcp?dead-token-endpoint", "a", refresh=refresh_cfg(dead + "/token", "r")
        ),
    ).id
    report = validation_of(client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid))
    assert report["status"] == "unknown"
    assert report["refresh"] == {"status": "connect_error", "http_response": None}


def test_validate_refusals(client: anthropic.Anthropic) -> None:
    vid = new_vault(client)
    for auth in (bearer("https://v.example", "t"), env_var("V", "v")):
        cid = client.beta.vaults.credentials.create(vid, auth=auth).id
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid)
        assert message_of(exc) == "The request was invalid"
    cid = client.beta.vaults.credentials.create(vid, auth=oauth("https://w.example", "a")).id
    client.beta.vaults.credentials.archive(cid, vault_id=vid)
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.vaults.credentials.mcp_oauth_validate(cid, vault_id=vid)
    assert message_of(exc) == "Credential is archived."
    with pytest.raises(anthropic.NotFoundError):
        client.beta.vaults.credentials.mcp_oauth_validate("vcrd_nope", vault_id=vid)


# ======================================================================== the key itself


def make(make_server: Any, env: dict[str, str] | None = None, data_dir: Path | None = None) -> ServerProcess:
    proc: ServerProcess = make_server(env=env, data_dir=data_dir)
    return proc


def file_ring(server: ServerProcess) -> Keyring:
    """The keys in the server's key file."""
    settings = Settings(data_dir=server.data_dir, secret_key=None)
    return SecretBox.from_settings(settings).keyring(create=False)


def client_for(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0)


def test_key_file_is_made_at_first_use_with_mode_0600(make_server: Any) -> None:
    srv = make(make_server)
    key_file = srv.data_dir / KEY_FILE_NAME
    assert not key_file.exists(), "no key until a secret is stored"
    with client_for(srv) as c:
        vid = new_vault(c)
        cid = c.beta.vaults.credentials.create(vid, auth=bearer("https://k.example", "t")).id
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    ring = file_ring(srv)
    assert credential_rows(srv)[cid]["secret"].startswith(f"hgs1.{ring.current_id}.")


def test_a_key_file_others_can_read_is_refused(make_server: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "loose"
    data_dir.mkdir()
    key_file = data_dir / KEY_FILE_NAME
    key_file.write_text(json.dumps({"version": 1, "current": encode_key(b"k" * 32), "retired": []}))
    key_file.chmod(0o644)
    with pytest.raises(RuntimeError) as exc:
        make(make_server, data_dir=data_dir)
    assert f"run `chmod 600 {key_file}`" in str(exc.value)
    key_file.chmod(0o600)
    srv = make(make_server, data_dir=data_dir)
    with client_for(srv) as c:
        new_vault(c)


def test_environment_key(make_server: Any, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as exc:
        make(make_server, env={"HANGAR_SECRET_KEY": "too-short"}, data_dir=tmp_path / "bad")
    assert "HANGAR_SECRET_KEY" in str(exc.value) and "hangar secrets generate-key" in str(exc.value)
    key = generate_key()
    env = {"HANGAR_SECRET_KEY": encode_key(key)}
    srv = make(make_server, env=env)
    with client_for(srv) as c:
        vid = new_vault(c)
        cid = c.beta.vaults.credentials.create(vid, auth=bearer("https://e.example", "env-token")).id
    assert not (srv.data_dir / KEY_FILE_NAME).exists()
    assert credential_rows(srv)[cid]["secret"].startswith(f"hgs1.{key_id(key)}.")
    assert secret_of(srv, cid, env)["token"] == "env-token"


def test_rotate_key_file(make_server: Any) -> None:
    srv = make(make_server)
    with client_for(srv) as c:
        vid = new_vault(c)
        ids = [
            c.beta.vaults.credentials.create(vid, auth=bearer(f"https://r{i}.example", f"tok-{i}")).id
            for i in range(3)
        ]
        env_id = c.beta.vaults.credentials.create(vid, auth=env_var("ROT", "rot-value")).id
        archived = c.beta.vaults.credentials.create(vid, auth=bearer("https://archived.example", "x")).id
        c.beta.vaults.credentials.archive(archived, vault_id=vid)
    key_file = srv.data_dir / KEY_FILE_NAME
    old = file_ring(srv)
    before = credential_rows(srv)
    assert all(before[i]["secret"].startswith(f"hgs1.{old.current_id}.") for i in [*ids, env_id])

    done = hangar("secrets", "rotate-key", *db_args(srv))  # while the server runs
    assert done.returncode == 0, done.stderr
    new = file_ring(srv)
    assert new.current_id != old.current_id and new.retired == (), "the old key was dropped"
    assert f"new key {new.current_id}" in done.stdout and "re-encrypted 4 secret(s)" in done.stdout
    assert f"dropped old key(s) {old.current_id}" in done.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    after = credential_rows(srv)
    for cid in [*ids, env_id]:
        assert after[cid]["secret"].startswith(f"hgs1.{new.current_id}.")
        assert after[cid]["secret"] != before[cid]["secret"]
    assert after[archived]["secret"] is None
    assert (
        secret_of(srv, ids[1])["token"] == "tok-1" and secret_of(srv, env_id)["secret_value"] == "rot-value"
    )

    # An old ciphertext names the old key: it opens only with that key recorded.
    stale = before[ids[0]]["secret"]
    aad = f"vault_credential:{ids[0]}".encode()
    with pytest.raises(UnsealError, match=old.current_id):
        new.open_json(stale, aad)
    assert Keyring(new.current, (old.current,)).open_json(stale, aad) == {"token": "tok-0"}

    # The running server followed the rotation: it opens the new ciphertexts and seals new ones.
    with client_for(srv) as c:
        c.beta.vaults.credentials.update(
            ids[2], vault_id=vid, auth={"type": "static_bearer", "token": "tok-2b"}
        )
        added = c.beta.vaults.credentials.create(vid, auth=bearer("https://after.example", "after")).id
    assert credential_rows(srv)[added]["secret"].startswith(f"hgs1.{new.current_id}.")
    assert secret_of(srv, ids[2])["token"] == "tok-2b"

    kept = hangar("secrets", "rotate-key", "--keep-old-key", *db_args(srv))
    assert kept.returncode == 0, kept.stderr
    third = file_ring(srv)
    assert [key_id(k) for k in third.retired] == [new.current_id]
    assert f"kept old key {new.current_id} (decrypt-only): --keep-old-key" in kept.stdout


def test_rotate_environment_key(make_server: Any) -> None:
    first = encode_key(b"1" * 32)
    second = encode_key(b"2" * 32)
    srv = make(make_server, env={"HANGAR_SECRET_KEY": first})
    with client_for(srv) as c:
        vid = new_vault(c)
        cid = c.beta.vaults.credentials.create(vid, auth=bearer("https://env-rot.example", "env-rot")).id
    env = {"HANGAR_SECRET_KEY": second, "HANGAR_SECRET_KEY_RETIRED": first}
    done = hangar("secrets", "rotate-key", *db_args(srv), env=env)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 secret(s)" in done.stdout
    assert f"retired key(s) {key_id(b'1' * 32)}" in done.stdout and "HANGAR_SECRET_KEY_RETIRED" in done.stdout
    assert credential_rows(srv)[cid]["secret"].startswith(f"hgs1.{key_id(b'2' * 32)}.")
    assert secret_of(srv, cid, {"HANGAR_SECRET_KEY": second})["token"] == "env-rot"
    # Without the retired key, a secret under the old key cannot be re-encrypted: say so.
    set_secret_column(
        srv, cid, Keyring(b"1" * 32).seal_json({"token": "x"}, f"vault_credential:{cid}".encode())
    )
    failed = hangar("secrets", "rotate-key", *db_args(srv), env={"HANGAR_SECRET_KEY": second})
    assert failed.returncode == 1 and key_id(b"1" * 32) in failed.stderr


def test_generate_key_and_rotation_help() -> None:
    done = hangar("secrets", "generate-key")
    assert done.returncode == 0 and len(decode_key(done.stdout.strip(), "generated")) == 32
    done = hangar("secrets", "rotate-key", "--help")
    assert done.returncode == 0
    assert "HANGAR_SECRET_KEY_RETIRED" in done.stdout and "secret.key" in done.stdout
