"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from hangar.config import Settings

#: Human-facing messages go to stderr; stdout carries only what scripts capture (keys, reports).
console = Console(stderr=True, highlight=False, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default ./.hangar or $HANGAR_DATA_DIR).", show_default=False
    ),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Database URL (default SQLite in the data dir, or $HANGAR_DATABASE_URL).",
        show_default=False,
    ),
]


def load_settings(**overrides: Any) -> Settings:
    """Flags override ``HANGAR_*`` environment variables, which override defaults.

    A setting that does not validate ends the command with its message (exit 2), not a traceback.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            console.print(f"[red]invalid setting[/] {escape(where)}: {escape(err['msg'])}")
        raise typer.Exit(2) from exc


def configure_logging(level: str) -> None:
    """The only place logging is configured."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every connection at INFO; ``hangar.cli.database`` reports what changed.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    # The MCP SDK and its HTTP client narrate every request (URLs, MCP session ids) at INFO.
    for name in ("mcp", "httpx2", "httpcore2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` to stderr and return the ``typer.Exit`` to raise."""
    console.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)
