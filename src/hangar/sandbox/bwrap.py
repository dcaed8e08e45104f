"""``BwrapExecutor``: the built-in tools of one session, with ``bash`` inside a bubblewrap sandbox.

One sandbox per session, started lazily by the first ``bash`` call and kept: a long-lived
``bash`` runs inside it (the framing of :mod:`hangar.runtime.tools.bash`), so ``cd`` and
variables persist between calls and a call costs no new sandbox. A timeout, an interrupt
(:meth:`cancel`) or ``restart`` kills the whole sandbox, every process in it included, and the
next call starts a fresh one on the same workspace.

The sandbox:

- ``/workspace``: the session's workspace (``workdir`` on the host), read-write, the cwd;
- the system read-only: ``/usr``, the ``/bin``, ``/lib*``, ``/sbin`` links or directories, and
  ``/etc`` (one bind mount: a curated copy costs a mount per entry, ~1 ms each) with ``passwd``,
  ``group`` and ``hosts`` of its own and :data:`ETC_MASKED` (the host's package-manager
  settings) empty;
- private, size-limited tmpfs ``/tmp``, ``/dev/shm`` and ``$HOME`` (``/home/agent``); a minimal
  ``/dev``; a ``/proc`` showing only the sandbox's processes;
- new pid, ipc, uts and cgroup namespaces, and a new network namespace holding only ``lo``
  unless networking is ``unrestricted``; under ``limited`` the only way out is the
  :class:`~hangar.sandbox.proxy.EgressProxy` at ``127.0.0.1:3128`` (``HTTP(S)_PROXY`` point
  there): when Hangar runs as root it listens there itself, on a socket it opens inside the
  sandbox's network namespace while the sandbox starts (``bwrap --info-fd`` names the namespace;
  nothing runs in the sandbox for it and the first command needs no wait); otherwise ``socat``,
  started by the sandbox's shell, forwards that port to the proxy's unix socket
  (``/run/hangar/egress.sock``);
- with ``environment_variable`` credentials (:mod:`hangar.sandbox.inject`): ``SECRET_NAME`` set to
  a placeholder, never the value; traffic through the egress proxy under ``unrestricted`` too
  (``HTTP(S)_PROXY`` name its loopback TCP port with a per-session token); the session CA trusted
  (:data:`CA_BUNDLE` bound over the system bundle, ``SSL_CERT_FILE`` and friends);
- ``--die-with-parent`` and ``--new-session``; no capabilities (permitted, effective, bounding,
  inheritable and ambient sets empty) and ``no_new_privs``;
- an unprivileged uid: when Hangar runs as root, ``setpriv`` drops to a uid of the session's own
  (:func:`sandbox_uid`, derived from the session id so the workspace's files keep their owner
  across sandboxes); otherwise bubblewrap maps the caller to uid 1000 in a user namespace of the
  sandbox's own;
- the resource limits of :mod:`hangar.sandbox.limits`.

The file tools (``read``/``write``/``edit``/``glob``/``grep``) and the web tools run on the host,
as in :class:`~hangar.runtime.tools.executor.WorkspaceExecutor` (that is what keeps them fast),
confined to ``workdir``; a path the model writes as ``/workspace/...`` is the same file, and the
paths these tools print are shown as ``/workspace/...``. As root, what they create is given to
the sandbox's uid. Known limit: they resolve a path and then open it, so a process left running in
the sandbox could race a symlink into a path between the two (the same as for
``WorkspaceExecutor``); serving them inside the sandbox, or with ``openat2(RESOLVE_BENEATH)``,
would close that.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hangar.config import Settings
from hangar.runtime.tools import files
from hangar.runtime.tools.base import ToolError, ToolResult
from hangar.runtime.tools.bash import BashTool, ShellLaunch
from hangar.runtime.tools.executor import Handler, WorkspaceExecutor
from hangar.sandbox.ca import system_bundle
from hangar.sandbox.inject import EnvCredential, Injector
from hangar.sandbox.limits import SandboxLimits
from hangar.sandbox.namespaces import pid_namespaces, sandbox_listener, wait_gone
from hangar.sandbox.proxy import EgressPolicy, EgressProxy

log = logging.getLogger(__name__)

WORKSPACE = "/workspace"
HOME = "/home/agent"
RUNTIME = "/run/hangar"
PROXY_SOCKET = f"{RUNTIME}/egress.sock"
PROXY_PORT = 3128
COMMAND_DIR = f"{RUNTIME}/cmd"
CA_BUNDLE = f"{RUNTIME}/ca-bundle.pem"
"""The system CA bundle plus the session CA (sessions with ``environment_variable`` credentials)."""
SESSION_CA = f"{RUNTIME}/session-ca.pem"
SANDBOX_TMP = "/tmp"  # noqa: S108 (inside the sandbox: a private tmpfs)
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INNER_UID = 1000
"""The uid inside a user-namespace sandbox (Hangar not running as root)."""
UID_BASE = 0x10000000
UID_SPAN = 0x40000000
ETC_MASKED = ("npmrc", "pip.conf", "gemrc", "netrc")
"""``/etc`` files the sandbox sees empty: the host's own package-manager settings and credentials
(world-readable, and they may hold registry tokens). Everything else of ``/etc`` is visible
read-only, as to any user of the host; what such a user may not read (``shadow``, private keys)
stays unreadable to the sandbox's uid."""
_FILE_TOOLS = {"read": "file_path", "write": "file_path", "edit": "file_path", "glob": "path", "grep": "path"}


@dataclass(frozen=True)
class SandboxMount:
    """A host directory mounted into the session's sandbox at ``target`` (an absolute path
    outside ``/workspace``'s own files, e.g. ``/mnt/session/uploads``)."""

    host: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class SessionMounts:
    """What provisioning adds to a session's sandbox (:mod:`hangar.runtime.provision`): mounts
    (package layer, uploads, outputs, repositories) and variables (``PATH``, ``PYTHONPATH`` …)."""

    mounts: tuple[SandboxMount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def find(self, path: str) -> SandboxMount | None:
        """The mount ``path`` (a sandbox path) lies in, if any (the deepest one)."""
        best = None
        for m in self.mounts:
            if (path == m.target or path.startswith(m.target + "/")) and (
                best is None or len(m.target) > len(best.target)
            ):
                best = m
        return best


@dataclass
class _MountContext:
    """The file tools' context for a path on a mount: the mount's host directory as root."""

    session_id: str
    workdir: Path


class SandboxUnavailable(RuntimeError):
    """Bubblewrap (or a tool the sandbox needs) is missing; the message names the package."""


def sandbox_problems(networking: Mapping[str, Any] | None = None) -> list[str]:
    """What is missing to run a sandbox (empty when nothing is), naming the package to install."""
    problems = []
    if shutil.which("bwrap") is None:
        problems.append("bwrap is not installed (install the bubblewrap package)")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        problems.append("setpriv is not installed (install util-linux)")
    if networking and networking.get("type") == "limited" and shutil.which("socat") is None:
        problems.append("socat is not installed (install the socat package); limited networking needs it")
    return problems


def sandbox_uid(session_id: str) -> int:
    """The uid a root-run Hangar gives a session's sandbox: stable for the session, in a range
    (2^28 to 2^28 + 2^30) no ordinary account or subordinate-id range uses."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return UID_BASE + int.from_bytes(digest[:8], "big") % UID_SPAN


class BwrapExecutor(WorkspaceExecutor):
    """The ``agent_toolset_20260401`` tools of one session, ``bash`` in a bubblewrap sandbox.

    ``networking`` is the environment's networking object (``None``: unrestricted);
    ``proxy`` an :class:`EgressProxy` to use under ``limited`` networking (the executor sets its
    policy and starts it if needed; the caller closes it); by default the executor starts and
    closes one of its own; ``mcp_servers`` the agent's
    MCP server URLs (reachable under ``allow_mcp_servers``); ``limits`` overrides the settings'
    ``sandbox_*`` limits. Raises :class:`SandboxUnavailable` when bubblewrap is missing.
    """

    def __init__(
        self,
        session_id: str,
        workdir: Path,
        settings: Settings,
        *,
        networking: dict[str, Any] | None = None,
        toolset: dict[str, Any] | None = None,
        proxy: EgressProxy | None = None,
        mcp_servers: Iterable[str] = (),
        limits: SandboxLimits | None = None,
        credentials: Sequence[EnvCredential] = (),
    ) -> None:
        problems = sandbox_problems(networking)
        if problems:
            raise SandboxUnavailable("cannot start a sandbox: " + "; ".join(problems))
        super().__init__(session_id, workdir, settings, toolset=toolset, networking=networking)
        self.limits = limits or SandboxLimits.from_settings(settings)
        self.privileged = os.geteuid() == 0
        """Hangar runs as root: the sandbox gets a uid of its own (else a user namespace)."""
        self.uid = sandbox_uid(session_id) if self.privileged else os.getuid()
        """The host uid the sandbox's processes (and the workspace's files) have."""
        self.gid = self.uid if self.privileged else os.getgid()
        self._bwrap = str(shutil.which("bwrap"))
        self._setpriv = os.path.realpath(shutil.which("setpriv") or "/usr/bin/setpriv")
        self._allow_private = settings.web_allow_private_addresses
        self._mcp_servers = tuple(mcp_servers)
        self._proxy = proxy
        self._owns_proxy = proxy is None
        self._upstream_ca = settings.egress_upstream_ca_file
        self._injector: Injector | None = None
        self._secret_env: dict[str, str] = {}
        self._proxy_token = secrets.token_urlsafe(24)
        self._set_credentials(credentials)
        if proxy is not None:
            proxy.policy = self._policy()
            proxy.injector = self._injector
        self._runtime: Path | None = None
        self._system_args: list[str] | None = None
        self._running_mode: tuple[Any, ...] | None = None  # what the running sandbox was built for
        self._extra = SessionMounts()
        self._running_extra: SessionMounts | None = None  # the mounts of the running sandbox
        self._prepared = False
        self._listener: asyncio.AbstractServer | None = None  # see _listen_in_sandbox
        self._info_fd: int | None = None
        self._bash = BashTool(
            self.workdir,
            default_timeout_s=settings.bash_timeout_s,
            max_timeout_s=settings.bash_max_timeout_s,
            launcher=self._launch,
        )
        self._handlers["bash"] = self._run_bash
        for name in _FILE_TOOLS:
            self._handlers[name] = partial(self._file_tool, name, self._handlers[name])

    # ------------------------------------------------------------------ configuration

    @property
    def network_mode(self) -> str:
        """``"limited"`` or ``"unrestricted"``: what the next sandbox gets."""
        return "limited" if (self._networking or {}).get("type") == "limited" else "unrestricted"

    @property
    def secret_environment(self) -> dict[str, str]:
        """The placeholders the sandbox's environment holds (secret name → placeholder)."""
        return dict(self._secret_env)

    def _set_credentials(self, credentials: Sequence[EnvCredential]) -> None:
        if credentials and self._injector is None:
            self._injector = Injector(self.session_id, upstream_ca_file=self._upstream_ca)
        if self._injector is not None:
            self._secret_env = self._injector.update(credentials)
        if self._proxy is not None:
            self._proxy.injector = self._injector if self._secret_env else None

    def take_session_errors(self) -> list[dict[str, Any]]:
        """``session.error`` ``error`` objects not reported yet (``credential_host_unreachable_error``:
        the sandbox tried a host a credential names and the environment's policy refused it)."""
        if self._injector is None:
            return []
        return [report.error() for report in self._injector.take_unreachable()]

    def _sandbox_key(self) -> tuple[Any, ...]:
        return (self.network_mode, tuple(sorted(self._secret_env.items())))

    @property
    def proxy(self) -> EgressProxy | None:
        return self._proxy

    def configure(
        self,
        *,
        toolset: dict[str, Any] | None = None,
        networking: dict[str, Any] | None = None,
        mcp_servers: Iterable[str] | None = None,
        credentials: Sequence[EnvCredential] | None = None,
    ) -> None:
        """Update the web tools' rules, the egress policy and the ``environment_variable``
        credentials (an argument left ``None`` keeps its value). A new value of a credential
        applies to the next request; a change between ``limited`` and ``unrestricted``, or a
        credential added or removed, takes effect with the next sandbox: the running one is
        replaced before the next ``bash`` call."""
        super().configure(toolset=toolset, networking=networking)
        if mcp_servers is not None:
            self._mcp_servers = tuple(mcp_servers)
        if credentials is not None:
            self._set_credentials(credentials)
        if self._proxy is not None:
            self._proxy.policy = self._policy()

    async def start(self) -> None:
        """Start the sandbox now rather than with the first ``bash`` call (e.g. while the first
        model request runs); a no-op when it runs. Raises :class:`SandboxUnavailable` when it
        cannot start."""
        if self._bash.shell_pid is not None:
            return
        result = await self.run("bash", {"command": "true"})
        if result.is_error:
            raise SandboxUnavailable(result.text)

    def set_mounts(self, mounts: SessionMounts) -> None:
        """Mounts and variables provisioning adds (packages, resources, outputs). A change takes
        effect with the next sandbox: the running one is replaced before the next ``bash``
        call (between calls only)."""
        self._extra = mounts

    @property
    def mounts(self) -> SessionMounts:
        return self._extra

    async def prepare(self) -> None:
        """Create the runtime directory and, as root, give the workspace to the sandbox's uid
        (what the first tool call does), e.g. before Hangar puts files into the workspace."""
        await self._prepare()

    def _policy(self) -> EgressPolicy | None:
        return EgressPolicy.from_networking(self._networking, mcp_servers=self._mcp_servers)

    # ------------------------------------------------------------------ tools

    async def _run_bash(self, tool_input: dict[str, Any]) -> ToolResult:
        await self._prepare()
        key = self._sandbox_key()
        changed = self._running_mode not in (None, key) or self._running_extra not in (None, self._extra)
        if changed and not self._bash.busy:
            await self._bash.close()  # networking, credentials or mounts changed: a new sandbox
            self._running_mode = None
            self._running_extra = None
        if key[0] == "limited" or self._secret_env:
            await self._ensure_proxy()
        return await self._bash.run(tool_input)

    async def _file_tool(self, name: str, handler: Handler, tool_input: dict[str, Any]) -> ToolResult:
        await self._prepare()
        key = _FILE_TOOLS[name]
        raw = tool_input.get(key)
        mount = self._extra.find(raw) if isinstance(raw, str) else None
        if mount is not None:
            return await self._mount_tool(name, mount, tool_input)
        mapped = dict(tool_input)
        if isinstance(raw, str):
            mapped[key] = self.host_path(raw)
        try:
            result = await handler(mapped)
        except ToolError as exc:
            raise ToolError(self.sandbox_text(str(exc))) from None
        if name in ("write", "edit") and self.privileged and isinstance(mapped[key], str):
            await asyncio.to_thread(self._give_to_sandbox, mapped[key])
        if name == "read":
            return result
        lines_only = name in ("glob", "grep")
        content = [
            {**b, "text": self._present(b["text"], lines_only)} if b.get("type") == "text" else b
            for b in result.content
        ]
        return ToolResult(content, is_error=result.is_error)

    async def _mount_tool(self, name: str, mount: SandboxMount, tool_input: dict[str, Any]) -> ToolResult:
        """A file tool on a path of a mount (``/mnt/session/outputs/…``): run on the host, confined
        to the mount's directory; writes refused on a read-only mount."""
        key = _FILE_TOOLS[name]
        raw = str(tool_input[key])
        if name in ("write", "edit") and mount.read_only:
            raise ToolError(f"{name}: {raw} is on a read-only mount ({mount.target})")
        root = Path(await asyncio.to_thread(os.path.realpath, mount.host))
        ctx = _MountContext(self.session_id, root)
        mapped = {**tool_input, key: str(root) + raw[len(mount.target) :]}
        handlers: dict[str, Handler] = {
            "read": partial(files.read, ctx),
            "write": partial(files.write, ctx),
            "edit": partial(files.edit, ctx),
            "glob": partial(files.glob, ctx),
            "grep": partial(files.grep, ctx, rg=self.rg),
        }
        try:
            result = await handlers[name](mapped)
        except ToolError as exc:
            raise ToolError(str(exc).replace(str(root), mount.target)) from None
        if name in ("write", "edit") and self.privileged:
            await asyncio.to_thread(_give_beneath, root, Path(mapped[key]), self.uid, self.gid)
        if name == "read":
            return result
        content = [
            {**b, "text": b["text"].replace(str(root), mount.target)} if b.get("type") == "text" else b
            for b in result.content
        ]
        return ToolResult(content, is_error=result.is_error)

    def host_path(self, path: str) -> str:
        """A path as the model wrote it, with ``/workspace`` mapped onto ``workdir``."""
        if path == WORKSPACE or path.startswith(WORKSPACE + "/"):
            return str(self.workdir) + path[len(WORKSPACE) :]
        return path

    def sandbox_text(self, text: str) -> str:
        """``text`` with the host's ``workdir`` shown as ``/workspace``."""
        return text.replace(str(self.workdir), WORKSPACE)

    def _present(self, text: str, lines_only: bool) -> str:
        if not lines_only:
            return self.sandbox_text(text)
        host = str(self.workdir)
        return "\n".join(
            WORKSPACE + line[len(host) :] if line == host or line.startswith(host + "/") else line
            for line in text.split("\n")
        )

    async def adopt(self, path: Path) -> None:
        """Give ``path`` (inside ``workdir``; recursively) to the sandbox's uid, e.g. after Hangar
        put files into the workspace itself (resources, clones), so the sandbox can change them.
        A no-op when Hangar does not run as root (the sandbox then has Hangar's own uid)."""
        await asyncio.to_thread(self._adopt, path)

    def _adopt(self, path: Path) -> None:
        target = Path(os.path.realpath(path))
        if not files.within(target, self.workdir):
            raise ValueError(f"{path} is outside the session's workspace")
        if self.privileged:
            _chown_tree(target, self.uid, self.gid)

    def _give_to_sandbox(self, path: str) -> None:
        """Give a file the host-side tools wrote (and any directory they created for it) to the
        sandbox's uid, so the sandbox can change it."""
        try:
            target = files.resolve_path(self.workdir, path, "write")
        except ToolError:
            return
        while target != self.workdir and files.within(target, self.workdir):
            with contextlib.suppress(FileNotFoundError):
                if target.lstat().st_uid != self.uid:
                    os.lchown(target, self.uid, self.gid)
            target = target.parent

    # ------------------------------------------------------------------ sandbox lifecycle

    async def _prepare(self) -> None:
        """Once: the runtime directory and, as root, the workspace's ownership."""
        if self._prepared:
            return
        if self._runtime is None:
            self._runtime = Path(tempfile.mkdtemp(prefix="hangar-sbx-"))
            self._write_etc(self._runtime)
        if self.privileged and self.workdir.stat().st_uid != self.uid:
            await asyncio.to_thread(_chown_tree, self.workdir, self.uid, self.gid)
        self._prepared = True

    def _write_etc(self, runtime: Path) -> None:
        inner = self.uid if self.privileged else INNER_UID
        (runtime / "passwd").write_text(
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"agent:x:{inner}:{inner}:agent:{HOME}:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        (runtime / "group").write_text(f"root:x:0:\nagent:x:{inner}:\nnogroup:x:65534:\n")
        (runtime / "empty").write_bytes(b"")
        (runtime / "hosts").write_text("127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n")
        if self.privileged:
            os.chown(runtime, self.uid, self.gid)
            os.chmod(runtime, 0o700)

    async def _ensure_proxy(self) -> None:
        assert self._runtime is not None
        if self._proxy is None:
            self._proxy = EgressProxy(
                self._runtime / "egress.sock",
                self._policy(),
                session_id=self.session_id,
                allow_private_addresses=self._allow_private,
            )
        self._proxy.injector = self._injector if self._secret_env else None
        if not self._proxy.running:
            await self._proxy.start()
        if self.network_mode != "limited" and self._secret_env:
            await self._proxy.start_tcp(self._proxy_token)  # the sandbox shares the host's network
        if self.privileged:
            os.chown(self._proxy.socket_path, self.uid, self.gid)
        runtime, injector = self._runtime, self._injector
        if injector is not None and runtime is not None and not (runtime / "session-ca.pem").exists():
            (runtime / "ca-bundle.pem").write_bytes(injector.ca.bundle())
            (runtime / "session-ca.pem").write_bytes(injector.ca.cert_pem)

    def _launch(self, private: Path) -> ShellLaunch:
        """BashTool's launcher: the bwrap command line of a new sandbox."""
        assert self._runtime is not None, "_prepare() runs before the first shell"
        mode = self.network_mode
        # Under `limited`, the sandbox reaches the egress proxy at 127.0.0.1:PROXY_PORT. As root,
        # Hangar opens that listener itself, inside the sandbox's network namespace, while the
        # sandbox starts (no process in the sandbox, nothing to wait for); otherwise a `socat`
        # forwarder started by the shell's setup does it.
        in_netns = mode == "limited" and self.privileged
        forwarder = mode == "limited" and not in_netns
        self._close_listener()
        if forwarder and not (private / "tick").exists():
            os.mkfifo(private / "tick", 0o600)  # lets the setup sleep without forking
        if self.privileged:
            os.chown(private, self.uid, self.gid)
            fd = os.open(private / "command", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.fchown(fd, self.uid, self.gid)
            finally:
                os.close(fd)
            if forwarder:
                os.chown(private / "tick", self.uid, self.gid)
        argv = [self._bwrap, *self._isolation_args(mode), *self._system(), *self._mounts(private, mode)]
        pass_fds: tuple[int, ...] = ()
        ready = None
        if in_netns:
            info_r, info_w = os.pipe()  # bwrap reports the sandbox's pid and namespaces here
            self._info_fd = info_r
            argv += ["--info-fd", str(info_w)]
            pass_fds = (info_w,)
            ready = self._listen_in_sandbox
        argv += ["--chdir", WORKSPACE, "--"]
        if self.privileged:
            argv += [
                self._setpriv,
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        argv += ["/bin/bash", "--noprofile", "--norc"]
        self._running_mode = self._sandbox_key()
        self._running_extra = self._extra
        return ShellLaunch(
            argv=argv,
            env=self._env(mode),
            cwd=self.workdir,
            command_path=f"{COMMAND_DIR}/command",
            setup=self.limits.ulimit_script() + (_FORWARDER if forwarder else ""),
            pass_fds=pass_fds,
            ready=ready,
        )

    async def _listen_in_sandbox(self, bwrap_pid: int) -> None:
        """``ShellLaunch.ready`` of a root-run ``limited`` sandbox: listen on
        ``127.0.0.1:PROXY_PORT`` inside its network namespace and serve the egress proxy there.
        Connections made before the proxy accepts wait in the listen backlog."""
        info_fd, self._info_fd = self._info_fd, None
        assert info_fd is not None and self._proxy is not None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[socket.socket] = loop.create_future()

        def settle(result: socket.socket | BaseException) -> None:
            if done.cancelled():
                if isinstance(result, socket.socket):
                    result.close()
            elif isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)

        def work() -> None:
            # A thread of its own: setns() moves only the calling thread, which then ends.
            try:
                result: socket.socket | BaseException = sandbox_listener(info_fd, PROXY_PORT)
            except BaseException as exc:  # handed to the awaiting coroutine
                result = exc
            finally:
                os.close(info_fd)
            loop.call_soon_threadsafe(settle, result)

        threading.Thread(target=work, name=f"hangar-netns-{bwrap_pid}", daemon=True).start()
        sock = await done
        try:
            self._listener = await self._proxy.serve_socket(sock)
        except BaseException:
            sock.close()
            raise

    def _close_listener(self) -> None:
        """Stop serving the previous sandbox's in-namespace listener (and drop an unused info pipe)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._info_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._info_fd)
            self._info_fd = None

    def _isolation_args(self, mode: str) -> list[str]:
        args = ["--new-session", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--hostname", "sandbox"]
        if mode == "limited":
            args.append("--unshare-net")
        if not self.privileged:
            uid = str(INNER_UID)
            args += ["--unshare-user", "--uid", uid, "--gid", uid, "--disable-userns", "--cap-drop", "ALL"]
        return args

    def _system(self) -> list[str]:
        """The read-only system mounts (computed once per executor)."""
        if self._system_args is None:
            args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
            args += ["--perms", "0755", "--dir", "/var", "--perms", "0755", "--dir", "/home"]
            for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
                path = Path("/", name)
                if path.is_symlink():
                    args += ["--symlink", os.readlink(path), str(path)]
                elif path.is_dir():
                    args += ["--ro-bind", str(path), str(path)]
            assert self._runtime is not None
            for name in ETC_MASKED:
                if os.path.isfile(f"/etc/{name}"):
                    args += ["--ro-bind", str(self._runtime / "empty"), f"/etc/{name}"]
            self._system_args = args
        return self._system_args

    def _mounts(self, private: Path, mode: str) -> list[str]:
        assert self._runtime is not None
        tmp_bytes = str(self.limits.tmp_mb * 1024 * 1024)
        args = []
        for name in ("passwd", "group", "hosts"):
            args += ["--ro-bind", str(self._runtime / name), f"/etc/{name}"]
        if mode == "limited" and os.path.lexists("/etc/resolv.conf"):  # no DNS: names go to the proxy
            args += ["--ro-bind", str(self._runtime / "empty"), "/etc/resolv.conf"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        for target in (SANDBOX_TMP, "/dev/shm", HOME):  # noqa: S108 (private tmpfs mounts)
            args += ["--perms", "1777", "--size", tmp_bytes, "--tmpfs", target]
        args += ["--symlink", "../tmp", "/var/tmp"]  # noqa: S108
        args += ["--perms", "0755", "--dir", "/run", "--perms", "0755", "--dir", RUNTIME]
        args += ["--ro-bind", str(private), COMMAND_DIR]
        if mode == "limited":
            assert self._proxy is not None
            args += ["--ro-bind", str(self._proxy.socket_path), PROXY_SOCKET]
        if self._secret_env:
            args += ["--ro-bind", str(self._runtime / "ca-bundle.pem"), CA_BUNDLE]
            args += ["--ro-bind", str(self._runtime / "session-ca.pem"), SESSION_CA]
            bundle = system_bundle()
            if bundle is not None:  # tools that ignore the variables below trust the CA too
                args += ["--ro-bind", str(self._runtime / "ca-bundle.pem"), str(bundle)]
        args += ["--bind", str(self.workdir), WORKSPACE]
        args += parent_dirs(
            [m.target for m in self._extra.mounts if not m.target.startswith(WORKSPACE + "/")]
        )
        for m in self._extra.mounts:  # after /workspace: a mount may lie inside it
            args += ["--ro-bind" if m.read_only else "--bind", str(m.host), m.target]
        return args

    def _env(self, mode: str) -> dict[str, str]:
        env = {
            "PATH": SANDBOX_PATH,
            "HOME": HOME,
            "USER": "agent",
            "LOGNAME": "agent",
            "SHELL": "/bin/bash",
            "HOSTNAME": "sandbox",
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "PAGER": "cat",
            "GIT_PAGER": "cat",
            "TMPDIR": SANDBOX_TMP,
            "PS1": "",
            "PS2": "",
        }
        if mode == "limited":
            url = f"http://127.0.0.1:{PROXY_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[name] = url
            env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
        env.update(self._extra.env)  # provisioning: PATH, PYTHONPATH, NODE_PATH …
        if self._secret_env:
            if mode != "limited":
                assert self._proxy is not None and self._proxy.tcp_port is not None
                url = f"http://sandbox:{self._proxy_token}@127.0.0.1:{self._proxy.tcp_port}"
                for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                    env[name] = url
            for name in (
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "CURL_CA_BUNDLE",
                "GIT_SSL_CAINFO",
                "PIP_CERT",
            ):
                env[name] = CA_BUNDLE
            env["NODE_EXTRA_CA_CERTS"] = SESSION_CA
            env = {**self._secret_env, **env}  # a secret named like one of these does not win
        return env

    async def close(self) -> None:
        """Kill the sandbox (every process in it: this returns once they are gone), stop the
        executor's own egress proxy and remove the runtime files. Idempotent."""
        if self._closed:
            return
        namespaces = pid_namespaces(self._bash.shell_pid)
        await super().close()
        await wait_gone(namespaces)
        self._close_listener()
        if self._owns_proxy and self._proxy is not None:
            await self._proxy.close()
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None


_FORWARDER = (
    f"(exec socat TCP-LISTEN:{PROXY_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{PROXY_SOCKET} "
    "</dev/null >/dev/null 2>&1 &)\n"
    # Wait until the forwarder listens, so the first command can use it: poll /proc/net/tcp every
    # 2 ms (a `read -t` on a FIFO nobody writes: a sleep without forking), for at most 5 s.
    f"exec 9<>{COMMAND_DIR}/tick; for ((_h = 0; _h < 2500; _h++)); do mapfile -t _l </proc/net/tcp; "
    f'[[ "${{_l[*]}}" == *"0100007F:{PROXY_PORT:04X} 00000000:0000 0A"* ]] && break; read -t 0.002 -u 9; '
    "done; exec 9<&-; unset _h _l\n"
)
"""Setup of a ``limited`` sandbox when Hangar does not run as root: the TCP → unix-socket
forwarder to the egress proxy (as root, :func:`_sandbox_listener` replaces it)."""


def parent_dirs(targets: Iterable[str]) -> list[str]:
    """bwrap arguments creating the parents of mount points as 0755 directories (bubblewrap
    would create them with its umask, which may leave them unreadable to the sandbox's uid)."""
    args: list[str] = []
    made: set[str] = {"/"}
    for target in targets:
        parts = target.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            path = "/" + "/".join(parts[:i])
            if path not in made:
                made.add(path)
                args += ["--perms", "0755", "--dir", path]
    return args


def _give_beneath(root: Path, path: Path, uid: int, gid: int) -> None:
    """Give ``path`` and its parents up to ``root`` (excluded) to ``uid``."""
    target = Path(os.path.realpath(path))
    while target != root and files.within(target, root):
        with contextlib.suppress(FileNotFoundError):
            if target.lstat().st_uid != uid:
                os.lchown(target, uid, gid)
        target = target.parent


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), uid, gid)
