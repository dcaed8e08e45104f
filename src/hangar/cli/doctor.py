"""``hangar doctor``: is this machine ready to run Hangar? One line per check, with the fix.

Each line reads ``OK|WARN|FAIL  <check>: <finding>[ (fix: <what to do>)]``. The command exits
non-zero only when a check FAILs: WARN marks something that limits Hangar without stopping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
import typer
from pydantic import ValidationError

from hangar.cli.common import DatabaseUrl, DataDir
from hangar.cli.database import display_url, schema_status
from hangar.config import Settings
from hangar.runtime.models.router import PROVIDER_NAMES

Level = Literal["OK", "WARN", "FAIL"]

DEFAULT_UPSTREAM = "https://api.anthropic.com"
#: What the sandbox needs from bubblewrap: new namespaces, a read-only root, /proc and /dev.
BWRAP_PROBE = ("--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc",
               "--dev", "/dev", "--", "true")  # fmt: skip


@dataclass(frozen=True)
class Check:
    level: Level
    name: str
    finding: str
    fix: str | None = None

    def line(self) -> str:
        fix = f" (fix: {self.fix})" if self.fix else ""
        return f"{self.level:<4}  {self.name}: {self.finding}{fix}"


def check_data_dir(settings: Settings) -> Check:
    path = settings.data_dir.resolve()
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        return Check(
            "FAIL", "data dir", f"{path} is not writable", "choose another --data-dir or fix permissions"
        )
    return Check("OK", "data dir", f"{path}" + ("" if path.exists() else " (created on first start)"))


def check_database(settings: Settings) -> Check:
    url = settings.resolved_database_url
    where = display_url(url)
    try:
        status = schema_status(url)
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        return Check(
            "FAIL",
            "database",
            f"cannot reach {where}: {first}",
            "check --database-url and that the server runs",
        )
    match status.state:
        case "current":
            return Check("OK", "database", f"{where} reachable, {status.describe()}")
        case "empty":
            return Check("WARN", "database", f"{where}: {status.describe()}", status.fix())
        case _:
            return Check("FAIL", "database", f"{where}: {status.describe()}", status.fix())


def _probe(cmd: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    detail = (done.stderr or done.stdout).strip().splitlines()
    return done.returncode == 0, detail[0] if detail else f"exit status {done.returncode}"


def check_bwrap() -> Check:
    path = shutil.which("bwrap")
    if path is None:
        return Check(
            "FAIL",
            "sandbox bwrap",
            "bubblewrap not found: environments cannot run agent tools",
            "apt-get install bubblewrap",
        )
    ok, detail = _probe([path, *BWRAP_PROBE])
    if not ok:
        return Check(
            "FAIL",
            "sandbox bwrap",
            f"{path} cannot create a sandbox: {detail}",
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
            "user.max_user_namespaces>0), or run the container with a seccomp profile allowing unshare",
        )
    return Check("OK", "sandbox bwrap", f"{path} creates sandboxes")


def check_tool(name: str, package: str, without: str) -> Check:
    path = shutil.which(name)
    if path is None:
        return Check("WARN", f"sandbox {name}", f"{name} not found: {without}", f"apt-get install {package}")
    return Check("OK", f"sandbox {name}", path)


def check_models(settings: Settings) -> Iterator[Check]:
    providers = set(settings.model_routes.values()) | {settings.default_provider}
    unknown = sorted(providers - set(PROVIDER_NAMES))
    routes = ", ".join(f"{pattern} -> {provider}" for pattern, provider in settings.model_routes.items())
    summary = f"{routes or 'none'}; otherwise -> {settings.default_provider}"
    if unknown:
        yield Check(
            "FAIL",
            "model routes",
            f"{summary}; unknown provider(s): {', '.join(unknown)}",
            f"use one of: {', '.join(PROVIDER_NAMES)} (HANGAR_MODEL_ROUTES, HANGAR_DEFAULT_PROVIDER)",
        )
    else:
        yield Check("OK", "model routes", summary)

    uses_anthropic = "anthropic" in providers
    key = settings.anthropic_api_key
    if key is not None and key.get_secret_value().strip():
        yield Check("OK", "anthropic key", "set")
    elif uses_anthropic:
        routed = [p for p, v in settings.model_routes.items() if v == "anthropic"]
        which = ", ".join(routed) if routed else "unrouted models"
        yield Check(
            "WARN",
            "anthropic key",
            f"not set: models routed to `anthropic` ({which}) will fail; `scripted` models work offline",
            "export HANGAR_ANTHROPIC_API_KEY=sk-ant-...",
        )
    else:
        yield Check("OK", "anthropic key", "not needed (no route uses `anthropic`)")

    if settings.anthropic_base_url is None:
        yield Check("OK", "upstream", f"{DEFAULT_UPSTREAM} (default)")
    else:
        yield _upstream("upstream", settings.anthropic_base_url, "HANGAR_ANTHROPIC_BASE_URL")

    if "openai" in providers:
        routed = [p for p, v in settings.model_routes.items() if v == "openai"] or ["unrouted models"]
        if settings.openai_base_url is None:
            yield Check(
                "FAIL",
                "openai upstream",
                f"not set: models routed to `openai` ({', '.join(routed)}) have nowhere to go",
                "set HANGAR_OPENAI_BASE_URL, e.g. http://127.0.0.1:11434/v1",
            )
        else:
            yield _upstream("openai upstream", settings.openai_base_url, "HANGAR_OPENAI_BASE_URL")

    script = settings.scripted_script
    if script is not None and not Path(script).is_file():
        yield Check("FAIL", "scripted script", f"{script} does not exist", "fix HANGAR_SCRIPTED_SCRIPT")


def _upstream(name: str, url: str, variable: str) -> Check:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Check("FAIL", name, f"{url!r} is not an http(s) URL", f"set {variable} to an http(s) URL")
    return Check("OK", name, url)


def run_checks(settings: Settings) -> list[Check]:
    return [
        check_data_dir(settings),
        check_database(settings),
        check_bwrap(),
        check_tool("socat", "socat", "sandboxes with networking cannot reach the network"),
        check_tool("prlimit", "util-linux", "sandboxed commands run without resource limits"),
        *check_models(settings),
    ]


def doctor(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Check the database, sandbox tooling and model providers; exit 1 if anything FAILs."""
    overrides: dict[str, Any] = {"data_dir": data_dir, "database_url": database_url}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            print(
                Check("FAIL", "config", f"{where}: {err['msg']}", "fix the HANGAR_* variable or flag").line()
            )
        raise typer.Exit(1) from exc
    checks = run_checks(settings)
    for check in checks:
        print(check.line(), flush=True)
    counts = {level: sum(c.level == level for c in checks) for level in ("OK", "WARN", "FAIL")}
    print(f"{counts['OK']} ok, {counts['WARN']} warning(s), {counts['FAIL']} failure(s)")
    if counts["FAIL"]:
        raise typer.Exit(1)
