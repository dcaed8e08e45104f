"""Typer application. Logging is configured here and nowhere else."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hangar.config import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Hangar: self-hosted Managed Agents.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys.")
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default ./.hangar or $HANGAR_DATA_DIR).")
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Database URL (default SQLite in the data dir).")
]


def load_settings(**overrides: Any) -> Settings:
    """Flags override ``HANGAR_*`` environment variables, which override defaults."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8400).")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Migrate the database and serve the API."""
    import uvicorn

    from hangar.http import create_app
    from hangar.store.migrate import upgrade

    settings = load_settings(host=host, port=port, data_dir=data_dir, database_url=database_url)
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    created = asyncio.run(_first_start_key(settings))
    if created:
        console.print(
            "[bold green]Created an admin API key.[/] It is shown only this once; store it now:\n"
            f"  [bold]{created}[/]\n"
            f"  export ANTHROPIC_API_KEY={created}"
        )
        print(created, flush=True)
    console.print(f"Hangar listening on http://{settings.host}:{settings.port}  (data: {settings.data_dir})")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )


async def _first_start_key(settings: Settings) -> str | None:
    """On a fresh database (no admin key yet, none given by HANGAR_API_KEY), create one."""
    from hangar.store import Store, open_database

    db = open_database(settings.resolved_database_url)
    try:
        store = Store.open(db)
        await store.keys.ensure_workspace()
        if settings.api_key is not None:
            await store.keys.register(settings.api_key.get_secret_value())
            return None
        if await store.keys.count_admin() > 0:
            return None
        plaintext, _ = await store.keys.create("admin (first start)")
        return plaintext
    finally:
        await db.close()


@app.command()
def migrate(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Apply database migrations and exit."""
    from hangar.store.migrate import current_revision, upgrade

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    console.print(f"database at revision {current_revision(settings.resolved_database_url)}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key and print it (once)."""
    from hangar.store import Store, open_database
    from hangar.store.migrate import upgrade

    settings = load_settings(data_dir=data_dir, database_url=database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)

    async def run() -> str:
        db = open_database(settings.resolved_database_url)
        try:
            plaintext, key = await Store.open(db).keys.create(name)
            console.print(f"created {key.id} ({key.name})")
            return plaintext
        finally:
            await db.close()

    print(asyncio.run(run()))


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List active keys (never their values)."""
    from rich.table import Table

    from hangar.store import Store, open_database
    from hangar.wire.common import ts

    settings = load_settings(data_dir=data_dir, database_url=database_url)

    async def run() -> None:
        db = open_database(settings.resolved_database_url)
        try:
            keys = await Store.open(db).keys.list()
        finally:
            await db.close()
        table = Table("id", "name", "kind", "ends with", "created")
        for k in keys:
            table.add_row(
                k.id,
                k.name,
                k.kind + (f" ({k.environment_id})" if k.environment_id else ""),
                "…" + k.hint,
                ts(k.created_at) or "",
            )
        Console().print(table)

    asyncio.run(run())


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (apikey_…).")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: it stops authenticating at once."""
    from hangar.store import Store, open_database

    settings = load_settings(data_dir=data_dir, database_url=database_url)

    async def run() -> bool:
        db = open_database(settings.resolved_database_url)
        try:
            return await Store.open(db).keys.revoke(key_id)
        finally:
            await db.close()

    if not asyncio.run(run()):
        console.print(f"[red]no active key {key_id}[/]")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
