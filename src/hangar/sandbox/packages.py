"""Environment packages (``config.packages``): installed once into a cached, read-only layer.

A layer is keyed by a hash of the packages spec and the registry settings (:meth:`PackageSpec.key`),
so every session of an environment version (and of any environment with the same packages)
reuses it. It lives at ``<data_dir>/packages/<key>/`` and is mounted read-only into session
sandboxes at :data:`LAYER` (``/opt/hangar/packages``), one directory per manager, with the
variables of :func:`layer_env` pointing the tools at it.

Installing: the managers run in the order of BEHAVIOUR §4 (apt, cargo, gem, go, npm, pip), each
as a job sandbox (:mod:`.jobs`: unprivileged uid, the host's network, only the layer writable).
The layer is built in ``<data_dir>/packages/.tmp-<key>-…`` and renamed into place when every
manager succeeded (crash-safe: a half-built layer is never used; leftovers are removed by the
next build). Concurrent requests for one key wait for one build: an ``asyncio.Lock`` per key in
this process and an ``flock`` on ``<key>.lock`` across processes. A failed build is not cached:
the next turn tries again.

Per manager (``NAME`` is the spec entry, in the manager's own version syntax):

- **pip**: ``python3 -m pip install --target /opt/hangar/packages/pip NAME…`` (index:
  ``pip_index_url``); ``PYTHONPATH`` and ``PATH`` (``pip/bin``).
- **npm**: ``npm install --prefix /opt/hangar/packages/npm NAME…`` (registry: ``npm_registry``);
  ``NODE_PATH`` and ``PATH`` (``npm/node_modules/.bin``).
- **apt**: ``apt-get install --download-only`` of the packages and their missing dependencies
  (the host's sources and lists), each ``.deb`` unpacked with ``dpkg-deb -x`` into ``apt/``
  (no maintainer scripts run); ``PATH`` and ``LD_LIBRARY_PATH``.
- **cargo**: ``cargo install --root /opt/hangar/packages/cargo NAME``; ``PATH`` (``cargo/bin``).
- **gem**: ``gem install --install-dir /opt/hangar/packages/gem NAME`` (source: ``gem_source``);
  ``GEM_PATH`` and ``PATH`` (``gem/bin``).
- **go**: ``go install NAME`` (``@latest`` when unpinned; proxy: ``go_proxy``); ``PATH`` (``go/bin``).

A manager whose program is not installed on the host (the sandbox uses the host's ``/usr``) fails
the build with a message naming the package to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hangar.config import Settings
from hangar.sandbox.bwrap import SANDBOX_PATH, SANDBOX_TMP, sandbox_uid
from hangar.sandbox.jobs import Bind, available_in_sandbox, run_job

log = logging.getLogger(__name__)

MANAGERS: Final = ("apt", "cargo", "gem", "go", "npm", "pip")
"""Installation order (BEHAVIOUR §4)."""
LAYER: Final = "/opt/hangar/packages"
LAYER_FORMAT: Final = 1
INSTALLER_UID_NAME: Final = "hangar-package-installer"
TMP: Final = SANDBOX_TMP  # the job sandbox's private /tmp
_PROGRAMS: Final = {
    "apt": ("apt-get", "apt"),
    "cargo": ("cargo", "cargo"),
    "gem": ("gem", "ruby"),
    "go": ("go", "golang-go"),
    "npm": ("npm", "npm"),
    "pip": ("python3", "python3-pip"),
}


class PackageInstallError(RuntimeError):
    """A build failed; the message names the manager and ends with the installer's last lines."""


@dataclass(frozen=True)
class PackageSpec:
    """The non-empty package lists of an environment's ``config.packages``."""

    managers: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_config(cls, packages: Mapping[str, Any] | None) -> PackageSpec:
        if not packages:
            return cls()
        found = []
        for manager in MANAGERS:
            names = packages.get(manager) or []
            if names:
                found.append((manager, tuple(str(n) for n in names)))
        return cls(tuple(found))

    def __bool__(self) -> bool:
        return bool(self.managers)

    def key(self, settings: Settings) -> str:
        """The layer's cache key: the spec, the registries it is installed from, the format."""
        registries = {
            "pip": settings.pip_index_url,
            "npm": settings.npm_registry,
            "gem": settings.gem_source,
            "go": settings.go_proxy,
        }
        blob = json.dumps(
            {"format": LAYER_FORMAT, "packages": self.managers, "registries": registries}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def layer_env(layer: Path | None) -> dict[str, str]:
    """The session sandbox's variables for a mounted layer (``PATH`` includes the system's)."""
    if layer is None:
        return {}
    present = {p.name for p in layer.iterdir()} if layer.is_dir() else set()
    path: list[str] = []
    env: dict[str, str] = {}
    if "pip" in present:
        path.append(f"{LAYER}/pip/bin")
        env["PYTHONPATH"] = f"{LAYER}/pip"
    if "npm" in present:
        path.append(f"{LAYER}/npm/node_modules/.bin")
        env["NODE_PATH"] = f"{LAYER}/npm/node_modules"
    if "gem" in present:
        path.append(f"{LAYER}/gem/bin")
        env["GEM_PATH"] = f"{LAYER}/gem"
    for name in ("cargo", "go"):
        if name in present:
            path.append(f"{LAYER}/{name}/bin")
    if "apt" in present:
        path += [f"{LAYER}/apt/usr/local/bin", f"{LAYER}/apt/usr/bin", f"{LAYER}/apt/bin"]
        libs = ["usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib", "lib/x86_64-linux-gnu"]
        env["LD_LIBRARY_PATH"] = ":".join(f"{LAYER}/apt/{lib}" for lib in libs)
    if path:
        env["PATH"] = ":".join([*path, SANDBOX_PATH])
    return env


def _check_name(manager: str, name: str) -> None:
    if not name.strip() or name.startswith("-") or any(c in name for c in "\x00\n\r"):
        raise PackageInstallError(f"{manager}: invalid package name {name!r}")


def _command(manager: str, names: tuple[str, ...], settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The argv and environment installing ``names`` with ``manager`` into ``LAYER/<manager>``."""
    target = f"{LAYER}/{manager}"
    if manager == "pip":
        argv = ["python3", "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        argv += ["--no-warn-script-location", "--no-cache-dir", "--target", target]
        if settings.pip_index_url:
            argv += ["--index-url", settings.pip_index_url]
        return [*argv, *names], {"PIP_CONFIG_FILE": "/dev/null"}
    if manager == "npm":
        argv = ["npm", "install", "--no-audit", "--no-fund", "--no-update-notifier", "--prefix", target]
        if settings.npm_registry:
            argv += ["--registry", settings.npm_registry]
        env = {"npm_config_cache": f"{TMP}/npm-cache", "npm_config_userconfig": "/dev/null"}
        return [*argv, *names], env
    if manager == "gem":
        argv = ["gem", "install", "--no-document", "--install-dir", target, "--bindir", f"{target}/bin"]
        if settings.gem_source:
            argv += ["--clear-sources", "--source", settings.gem_source]
        return [*argv, *names], {}
    if manager == "cargo":
        return ["cargo", "install", "--root", target, *names], {"CARGO_HOME": f"{TMP}/cargo"}
    if manager == "go":
        pinned = [n if "@" in n else f"{n}@latest" for n in names]
        env = {"GOBIN": f"{target}/bin", "GOPATH": f"{TMP}/go", "GOCACHE": f"{TMP}/go-cache"}
        if settings.go_proxy:
            env["GOPROXY"] = settings.go_proxy
        return ["go", "install", *pinned], env
    if manager == "apt":
        quoted = " ".join("'" + n.replace("'", "'\\''") + "'" for n in names)
        script = (
            "set -eo pipefail; mkdir -p /tmp/apt/archives/partial "
            f"&& apt-get install --download-only -y --no-install-recommends -o Debug::NoLocking=1 "
            f"-o Dir::Cache::archives=/tmp/apt/archives -o APT::Sandbox::User=root "
            f"{quoted} && mkdir -p {target} "
            f'&& for deb in /tmp/apt/archives/*.deb; do [ -e "$deb" ] || continue; '
            f'echo "unpacking $(basename "$deb")"; dpkg-deb -x "$deb" {target}; done'
        )
        return ["bash", "-c", script], {}
    raise PackageInstallError(f"{manager}: unknown package manager")


@dataclass
class PackageCache:
    """The layers under ``<data_dir>/packages``; one per server (holds the per-key locks)."""

    settings: Settings
    on_line: Callable[[str, str], None] | None = None
    """Called with (manager, line) for each line of installer output (besides the server log)."""
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.settings.data_dir / "packages"

    def layer(self, spec: PackageSpec) -> Path:
        return self.root / spec.key(self.settings)

    def ready(self, spec: PackageSpec) -> Path | None:
        """The built layer of ``spec``, or ``None`` if it is not built (yet)."""
        layer = self.layer(spec)
        return layer if (layer / ".hangar-layer.json").is_file() else None

    async def ensure(self, spec: PackageSpec, *, context: str = "") -> Path:
        """The layer of ``spec``, built first if needed (waiting for a build under way).
        Raises :class:`PackageInstallError`."""
        found = self.ready(spec)
        if found is not None:
            return found
        key = spec.key(self.settings)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = await asyncio.to_thread(_flock, self.root / f"{key}.lock")
            try:
                found = self.ready(spec)
                if found is not None:
                    return found
                return await self._build(spec, key, context)
            finally:
                os.close(fd)  # releases the flock

    async def _build(self, spec: PackageSpec, key: str, context: str) -> Path:
        for stale in self.root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=self.root))
        uid = sandbox_uid(INSTALLER_UID_NAME)
        try:
            os.chmod(tmp, 0o755)  # noqa: S103 (a layer is readable by every sandbox)
            if os.geteuid() == 0:
                os.chown(tmp, uid, uid)
            for manager, names in spec.managers:
                await self._install(manager, names, tmp, uid, context)
            (tmp / ".hangar-layer.json").write_text(
                json.dumps({"format": LAYER_FORMAT, "packages": spec.managers}) + "\n"
            )
            os.rename(tmp, self.root / key)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("packages installed", extra={"layer": key, "context": context})
        return self.root / key

    async def _install(self, manager: str, names: tuple[str, ...], tmp: Path, uid: int, context: str) -> None:
        program, package = _PROGRAMS[manager]
        for name in names:
            _check_name(manager, name)
        if not available_in_sandbox(program):
            raise PackageInstallError(
                f"{manager}: {program} is not installed on this Hangar host (install the {package} "
                f"package), so the environment's {manager} packages cannot be installed"
            )
        argv, env = _command(manager, names, self.settings)
        log.info("installing packages", extra={"manager": manager, "packages": list(names), "ctx": context})

        def line(text: str) -> None:
            log.info("%s: %s", manager, text, extra={"context": context})
            if self.on_line is not None:
                self.on_line(manager, text)

        result = await run_job(
            argv,
            [Bind(tmp, LAYER)],
            uid=uid,
            env=env,
            timeout_s=self.settings.package_install_timeout_s,
            on_line=line,
        )
        if not result.ok:
            why = (
                f"timed out after {self.settings.package_install_timeout_s:g} s"
                if result.timed_out
                else f"exited with status {result.returncode}"
            )
            raise PackageInstallError(
                f"Installing the environment's {manager} packages ({', '.join(names)}) failed: "
                f"the installer {why}. Last output:\n{result.tail()}"
            )


def _flock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
