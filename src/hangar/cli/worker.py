"""``hangar worker``: serve a self-hosted environment's sessions in bubblewrap sandboxes on this
machine, over the work-queue protocol (see :mod:`hangar.worker`)."""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hangar.cli.common import DataDir, configure_logging, fail, load_settings
from hangar.sandbox import SandboxUnavailable

if TYPE_CHECKING:
    from hangar.worker import SandboxWorker

log = logging.getLogger(__name__)


class Network(enum.StrEnum):
    unrestricted = "unrestricted"
    limited = "limited"


def worker(
    environment: Annotated[
        str, typer.Option("--environment", help="The self-hosted environment to serve (env_...).")
    ],
    server: Annotated[
        str, typer.Option("--server", help="Base URL of the Hangar server, e.g. http://hangar.internal:8400.")
    ],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            envvar="HANGAR_WORKER_KEY",
            help="The environment key (`hangar keys create --environment ENV_ID`). Prefer the "
            "variable: a flag is visible to other users in the process list.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    max_sessions: Annotated[
        int, typer.Option("--max-sessions", min=1, help="Sessions served at the same time, one sandbox each.")
    ] = 1,
    network: Annotated[
        Network,
        typer.Option(
            "--network",
            help="The sandboxes' networking: `unrestricted`, or `limited` (egress only through "
            "Hangar's proxy to --allowed-host, package registries and MCP servers as allowed).",
        ),
    ] = Network.unrestricted,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host", help="A host `limited` networking allows (repeatable).", show_default=False
        ),
    ] = None,
    allow_package_managers: Annotated[
        bool, typer.Option("--allow-package-managers", help="`limited`: allow the package registries.")
    ] = False,
    allow_mcp_servers: Annotated[
        bool, typer.Option("--allow-mcp-servers", help="`limited`: allow the agent's MCP servers.")
    ] = False,
    max_idle: Annotated[
        float,
        typer.Option("--max-idle", min=0, help="Seconds a session stays served after it went idle."),
    ] = 60.0,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0,
            help="On SIGTERM/SIGINT: seconds running tool calls get to finish before they are "
            "interrupted (a second signal interrupts them at once).",
        ),
    ] = 30.0,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--worker-id", help="Worker id sent with each poll (default: HOST-RANDOM).", show_default=False
        ),
    ] = None,
) -> None:
    """Serve a self-hosted environment's sessions in bubblewrap sandboxes on this machine."""
    settings = load_settings(data_dir=data_dir)
    configure_logging(settings.log_level)
    # One line per request (polls, heartbeats) would bury what the worker itself says.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not key or not key.strip():
        raise fail(
            "no environment key: pass --key or set HANGAR_WORKER_KEY "
            f"(create one with `hangar keys create --environment {environment}`)"
        )
    if not server.startswith(("http://", "https://")):
        raise fail(f"--server must be an http:// or https:// URL, not {server!r}")
    hosts = [h.strip() for h in allowed_host or () if h.strip()]
    if network is Network.unrestricted and (hosts or allow_package_managers or allow_mcp_servers):
        raise fail("--allowed-host, --allow-package-managers and --allow-mcp-servers need --network limited")
    networking: dict[str, Any] = {"type": network.value}
    if network is Network.limited:
        networking |= {
            "allowed_hosts": hosts,
            "allow_package_managers": allow_package_managers,
            "allow_mcp_servers": allow_mcp_servers,
        }
    # Imported here: the SDK takes more than a second to import, and every other command
    # (and `hangar serve`) would pay for it at startup.
    import anthropic

    from hangar.worker import SandboxWorker, WorkerOptions

    options = WorkerOptions(
        environment_id=environment,
        server_url=server.rstrip("/"),
        key=key.strip(),
        max_sessions=max_sessions,
        networking=networking,
        max_idle=max_idle,
        drain_timeout_s=drain_timeout,
        worker_id=worker_id,
    )
    try:
        asyncio.run(_run(SandboxWorker(settings, options)))
    except SandboxUnavailable as exc:
        raise fail(f"refusing to start: {exc}") from exc
    except anthropic.APIStatusError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        raise fail(f"the server refused the worker ({exc.status_code}): {detail or exc.message}") from exc


async def _run(worker: SandboxWorker) -> None:
    """Run ``worker``; the first SIGTERM/SIGINT drains it, a second interrupts running calls."""
    loop = asyncio.get_running_loop()
    signals = 0

    def stop(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: stopping (no new sessions; running tool calls finish)", sig.name)
            worker.drain()
        else:
            log.warning("%s again: interrupting running tool calls", sig.name)
            worker.abort()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    try:
        await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
