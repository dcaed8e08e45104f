"""Vaults and credentials through the official client (API.md §1.8; BEHAVIOUR §1, §12): every
endpoint, every rule, secrets that never leave (responses, logs, database), the key file and key
rotation, and ``mcp_oauth_validate`` against a fake MCP server and token endpoint started here."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import (
    BetaManagedAgentsDeletedVault,
    BetaManagedAgentsSession,
)
from anthropic.types.beta.vaults import (
    BetaManagedAgentsDeletedCredential,
)

from hangar.errors import InternalError
from hangar.store.keys import DEFAULT_WORKSPACE
from hangar.testing import ServerProcess
from tests.api.test_cli import create_key
from tests.helpers import strict
from tests.sessions_helpers import make_agent_env
from tests.vault_helpers import (
    Recorder,
    bearer,
    cred_of,
    credential_rows,
    env_var,
    error_of,
    message_of,
    new_vault,
    oauth,
    refresh_cfg,
    secret,
    secret_of,
    set_secret_column,
    vault_of,
    with_store,
)


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
