"""Shared helpers of the vault tests (clients, recorders, direct database access)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anthropic
import httpx2
import pytest
import sqlalchemy as sa
from anthropic.types.beta import (
    BetaManagedAgentsVault,
)
from anthropic.types.beta.vaults import (
    BetaManagedAgentsCredential,
)

from hangar.config import Settings, to_async_url
from hangar.crypto import (
    SecretBox,
)
from hangar.store import Store, open_database
from hangar.store.keys import DEFAULT_WORKSPACE
from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict

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
