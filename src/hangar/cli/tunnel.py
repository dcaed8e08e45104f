"""``hangar tunnel``: run the MCP tunnel client inside a private network (see ``hangar.tunnel``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import typer

from hangar.cli.common import configure_logging, fail
from hangar.tunnel.client import Route, TunnelClient, TunnelRejected, parse_route


def tunnel(
    token: Annotated[
        str,
        typer.Option(
            envvar="HANGAR_TUNNEL_TOKEN",
            help="The tunnel's token (reveal_token / rotate_token). Prefer the environment variable: "
            "a flag is visible to other users of the machine.",
            show_default=False,
        ),
    ],
    server: Annotated[
        str,
        typer.Option(
            envvar="HANGAR_TUNNEL_SERVER",
            help="Hangar's base URL, e.g. https://hangar.example.com.",
            show_default=False,
        ),
    ],
    route: Annotated[
        list[str],
        typer.Option(
            "--route",
            help="<name>=<http://private-host:port>: requests for https://<name>.<tunnel domain>/… go "
            "there. Repeat for more servers.",
            show_default=False,
        ),
    ],
    max_backoff: Annotated[
        float, typer.Option(help="Longest wait between reconnection attempts, in seconds.", min=0.1)
    ] = 30.0,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Log every reconnection attempt in detail.")
    ] = False,
) -> None:
    """Relay Hangar's MCP traffic to MCP servers in this network. Dials out to Hangar only (no
    inbound port) and reconnects with backoff; exits when Hangar refuses the token."""
    configure_logging("debug" if verbose else "info")
    try:
        routes: list[Route] = [parse_route(spec) for spec in route]
        client = TunnelClient(server, token.strip(), routes, max_backoff_s=max_backoff)
    except ValueError as exc:
        raise fail(str(exc), code=2) from exc
    if not routes:
        raise fail("give at least one --route <name>=<http://host:port>", code=2)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(client.run())
    except TunnelRejected as exc:
        raise fail(str(exc), code=3) from exc
