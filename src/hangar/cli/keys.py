"""``hangar keys create | list | revoke`` and the keys ``hangar serve`` sets up at start.

Keys are managed directly in the database (the server need not run). Only a SHA-256 of a key
is stored; its plaintext is printed once, on stdout, so ``KEY=$(hangar keys create)`` works.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import sqlalchemy as sa
import typer

from hangar.cli.common import DatabaseUrl, DataDir, console, fail, load_settings
from hangar.cli.database import SchemaNotReady, display_url, prepare_database
from hangar.config import Settings
from hangar.ids import has_prefix
from hangar.store import Store, open_database
from hangar.store.keys import DEFAULT_WORKSPACE, ApiKey, RevokedKey

keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (directly in the database).")

T = TypeVar("T")


def api_key_setting(settings: Settings) -> str | None:
    """``HANGAR_API_KEY``, with an empty value meaning unset."""
    if settings.api_key is None:
        return None
    value = settings.api_key.get_secret_value().strip()
    return value or None


async def startup_keys(settings: Settings) -> str | None:
    """Keys at server start: register ``HANGAR_API_KEY``; on a database with no admin key yet
    (and none given), create one and return its plaintext (shown once by ``serve``)."""
    db = open_database(settings.resolved_database_url, settings.durability)
    try:
        keys = Store.open(db).keys
        await keys.ensure_workspace()
        given = api_key_setting(settings)
        if given is not None:
            try:
                await keys.register(given)
            except RevokedKey as exc:
                raise fail(f"HANGAR_API_KEY: {exc}") from exc
            return None
        if await keys.count_admin() > 0:
            return None
        plaintext, _ = await keys.create("admin (first start)")
        return plaintext
    finally:
        await db.close()


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``work`` against the settings' database (created if empty; refused if stale)."""
    try:
        prepare_database(settings)
    except SchemaNotReady as exc:
        raise fail(str(exc)) from exc
    except sa.exc.DBAPIError as exc:
        raise fail(f"cannot reach {display_url(settings.resolved_database_url)}: {exc.orig}") from exc

    async def run() -> T:
        db = open_database(settings.resolved_database_url, settings.durability)
        try:
            return await work(Store.open(db))
        finally:
            await db.close()

    return asyncio.run(run())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    workspace: Annotated[
        str | None,
        typer.Option(
            help="Workspace name (created if new). Objects in different workspaces are invisible "
            "to each other. Default: the default workspace.",
            show_default=False,
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            help="Make an environment key (for a self-hosted worker) bound to this env_… id.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it on stdout (the only time it is shown)."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    if environment is not None and not has_prefix(environment, "environment"):
        raise fail(f"--environment: {environment!r} is not an environment id (env_…)", code=2)

    async def create(store: Store) -> tuple[str, ApiKey, str]:
        keys = store.keys
        if environment is not None:
            env_workspace = await keys.environment_workspace(environment)
            if env_workspace is None:
                raise fail(f"no environment {environment}")
            if workspace is not None and await keys.find_workspace(workspace) != env_workspace:
                raise fail(f"environment {environment} is not in workspace {workspace!r}")
            plaintext, key = await keys.create(
                name, workspace_id=env_workspace, kind="environment", environment_id=environment
            )
        else:
            workspace_id = DEFAULT_WORKSPACE if workspace is None else await keys.workspace_named(workspace)
            plaintext, key = await keys.create(name, workspace_id=workspace_id)
        names = await keys.workspace_names()
        return plaintext, key, names.get(key.workspace_id, key.workspace_id)

    plaintext, key, workspace_name = _with_store(settings, create)
    bound = f" for {key.environment_id}" if key.environment_id else ""
    console.print(f"created {key.kind} key {key.id} ({key.name}){bound} in workspace {workspace_name}")
    print(plaintext, flush=True)


@keys_app.command("list")
def keys_list(
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List keys (never their values; only their last four characters)."""
    from hangar.wire.common import ts

    settings = load_settings(data_dir=data_dir, database_url=database_url)

    async def fetch(store: Store) -> tuple[list[ApiKey], dict[str, str]]:
        return await store.keys.list(include_revoked=include_revoked), await store.keys.workspace_names()

    keys, names = _with_store(settings, fetch)
    rows = [
        {
            "id": k.id,
            "name": k.name,
            "kind": k.kind,
            "workspace": names.get(k.workspace_id, k.workspace_id),
            "workspace_id": k.workspace_id,
            "environment_id": k.environment_id,
            "ends_with": k.hint,
            "created_at": ts(k.created_at),
            "revoked_at": ts(k.revoked_at),
        }
        for k in keys
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    columns = ["id", "name", "kind", "workspace", "environment_id", "ends_with", "created_at"]
    if include_revoked:
        columns.append("revoked_at")
    table = [columns] + [[str(row[c] or "-") for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (apikey_…), as `hangar keys list` shows.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: it stops authenticating at once, even on a running server."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)

    async def revoke(store: Store) -> bool:
        return await store.keys.revoke(key_id)

    if not _with_store(settings, revoke):
        raise fail(f"no active key {key_id}")
    console.print(f"revoked {key_id}")
