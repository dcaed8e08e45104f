"""The ``hangar`` Typer application: serve | worker | migrate | keys | doctor | config-reference.

Logging is configured here (``common.configure_logging``) and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Annotated

import sqlalchemy as sa
import typer
import uvicorn

from hangar.cli.common import DatabaseUrl, DataDir, configure_logging, console, fail, load_settings
from hangar.cli.database import SchemaNotReady, display_url, prepare_database, schema_status
from hangar.cli.doctor import doctor
from hangar.cli.keys import keys_app, startup_keys
from hangar.cli.reference import config_reference
from hangar.cli.secrets import check_secret_key, secrets_app
from hangar.cli.tunnel import tunnel
from hangar.cli.worker import worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Hangar: self-hosted Managed Agents.")
app.add_typer(keys_app, name="keys")
app.add_typer(secrets_app, name="secrets")
app.command()(doctor)
app.command()(worker)
app.command()(tunnel)

#: Seconds open connections (event streams) get to finish after SIGTERM/SIGINT.
GRACEFUL_SHUTDOWN_S = 5


class _Server(uvicorn.Server):
    """uvicorn's server, but a handled SIGTERM/SIGINT ends the process with status 0.

    uvicorn re-raises the signal after its graceful shutdown (so the process dies *by* it);
    for a service manager a clean, requested stop is a successful exit.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Tell open event streams to end now; uvicorn then waits only for ordinary requests.
        from hangar.http.middleware import draining_event  # imported by `serve` already

        draining_event(self.config.app).set()
        await super().shutdown(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    console.print(f"Hangar listening on http://{host}:{port}")


def _stop_during_startup(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8400).")] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Apply pending migrations first (default: refuse to start).")
    ] = False,
    unsafe_no_sandbox: Annotated[
        bool,
        typer.Option(
            "--unsafe-no-sandbox",
            help="Run cloud sessions' tools without a sandbox (no isolation; for development only).",
        ),
    ] = False,
) -> None:
    """Serve the API. An empty database gets the schema and, on first start, an admin key."""
    from hangar.http import create_app

    # A stop requested while starting up (migrating, creating keys) is honoured at once, with
    # status 0; once uvicorn runs, it owns the signals and shuts down gracefully.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_during_startup)
    settings = load_settings(
        host=host,
        port=port,
        data_dir=data_dir,
        database_url=database_url,
        unsafe_no_sandbox=unsafe_no_sandbox or None,
    )
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_secret_key(settings)
    try:
        prepare_database(settings, migrate=migrate)
    except SchemaNotReady as exc:
        raise fail(f"refusing to start: {exc}") from exc
    except sa.exc.DBAPIError as exc:
        raise fail(f"cannot reach {display_url(settings.resolved_database_url)}: {exc.orig}") from exc
    created = asyncio.run(startup_keys(settings))
    if created is not None:
        console.print("[bold green]Created an admin API key.[/] It is shown only this once; store it now.")
        print(f"Admin API key: {created}", flush=True)
        base_url = f"http://{settings.host}:{settings.port}"
        console.print(f'Use it as: anthropic.Anthropic(base_url="{base_url}", api_key=<the key above>)')
    console.print(
        f"data: {settings.data_dir.resolve()}  database: {display_url(settings.resolved_database_url)}"
    )
    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            lifespan="on",
        )
    )
    server.run()
    if not server.started:
        raise fail("server failed to start (see the log above)", code=3)
    console.print("Hangar stopped.")


@app.command()
def migrate(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only report; exit 1 when the schema is not current.")
    ] = False,
) -> None:
    """Bring the database schema to this Hangar's newest revision."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    url = settings.resolved_database_url
    try:
        before = schema_status(url)
        if check:
            print(before.describe())
            if before.state != "current":
                raise fail(before.fix() or "schema is not current")
            return
        if before.state in ("unknown", "unversioned"):
            raise fail(f"{before.describe()}: {before.fix()}")
        after = prepare_database(settings, migrate=True)
    except sa.exc.DBAPIError as exc:
        raise fail(f"cannot reach {display_url(url)}: {exc.orig}") from exc
    was = before.revision or "empty"
    print(f"database at revision {after.revision}" + ("" if was == after.revision else f" (was {was})"))


@app.command("config-reference")
def config_reference_cmd() -> None:
    """Print the Markdown configuration reference (docs/configuration.md is generated from it)."""
    print(config_reference(app), end="")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
