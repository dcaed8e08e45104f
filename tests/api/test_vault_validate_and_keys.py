"""Vault credentials: `mcp_oauth_validate` probes and refreshes against fake endpoints, and the
secret key (key file, HANGAR_SECRET_KEY, rotation)."""

from __future__ import annotations

import base64
import itertools
import json
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import anthropic
import pytest
import uvicorn
from anthropic.types.beta.vaults import (
    BetaManagedAgentsCredentialValidation,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hangar.config import Settings
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
from hangar.testing import ServerProcess
from tests.api.test_cli import db_args, hangar
from tests.conftest import API_KEY
from tests.helpers import strict
from tests.vault_helpers import (
    FUTURE,
    Recorder,
    bearer,
    cred_of,
    credential_rows,
    env_var,
    message_of,
    new_vault,
    oauth,
    refresh_cfg,
    secret,
    secret_of,
    set_secret_column,
)


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
