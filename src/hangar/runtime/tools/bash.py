"""The ``bash`` tool: one persistent ``/bin/bash`` per session.

The shell is started lazily in the workspace directory, in a session (and process group) of its
own, with ``ANTHROPIC_*`` and ``HANGAR_*`` variables removed from its environment; ``cd`` and
exported variables persist between calls.

Framing. Each command is written to a private file outside the workspace and run as
``{ . <file>\n} </dev/null 2>&1``, followed by a ``printf`` of a sentinel line holding a random
per-call token and ``$?``. Sourcing a file (rather than ``eval``) keeps a syntax error in the
command from corrupting the shell's own parser (bash 5.2 loses or crashes on an unterminated
quote inside ``eval``); ``</dev/null`` gives stdin-reading commands EOF; the token is passed
to ``printf`` as an argument so the sentinel never appears literally in what we write. The
shell's stdout is read with ``loop.add_reader`` on the raw pipe, so a call costs two small
writes and one wake-up (well under a millisecond).

Sandboxes hook in through :class:`ShellLaunch`: ``BashTool(..., launcher=f)`` calls
``f(private_dir)`` before each shell start and runs the argv it returns (e.g. ``bwrap ... --
/bin/bash``) instead of a plain ``/bin/bash``; the framing is the same.

Output keeps the last :data:`~hangar.runtime.tools.base.OUTPUT_LIMIT` bytes with an
``[output truncated]`` marker, ANSI escapes stripped. A timeout or an interrupt kills the whole
process tree (the process group plus any descendant that left it) with SIGKILL; the next call
starts a fresh shell in the workspace directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hangar.runtime.tools.base import OUTPUT_LIMIT, TRUNCATED, ToolError, ToolResult, text_result

log = logging.getLogger(__name__)

SCRUBBED_PREFIXES = ("ANTHROPIC_", "HANGAR_")
_ANSI = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC ... BEL | ST
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
)
_READ_CHUNK = 65536
_KEEP = OUTPUT_LIMIT + 1024  # bytes kept while reading: the limit plus room for the sentinel


def scrubbed_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of commands the agent runs: ours minus ``ANTHROPIC_*``/``HANGAR_*``."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not k.startswith(SCRUBBED_PREFIXES)}


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n")


def shell_quote(text: str) -> str:
    """``text`` as one single-quoted bash word."""
    return "'" + text.replace("'", "'\\''") + "'"


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant of it (Linux ``/proc``; just ``[root]`` elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return [root]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(b")")[2].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def kill_tree(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` and every descendant of ``pid``."""
    tree = process_tree(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for member in tree:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, signal.SIGKILL)


@dataclass(frozen=True)
class ShellLaunch:
    """How to start a shell somewhere else than directly on the host (a sandbox).

    ``argv`` must end up running ``bash --noprofile --norc`` reading commands from its stdin,
    with stdout/stderr passed through; ``command_path`` is where that shell sees the command
    file (the host path handed to the launcher, e.g. bind-mounted); ``setup`` is written to the
    shell before the first command (its output must be silent on success); ``pass_fds`` are
    descriptors the launched process inherits (the shell closes this process's copies once it
    started, or failed to); ``ready(pid)`` is awaited with the launched process's pid after it
    started and before the first command is written (e.g. to prepare something the sandbox
    needs from outside it); when it raises, the shell is killed and the call fails."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    command_path: str
    setup: str = ""
    pass_fds: Sequence[int] = ()
    ready: Callable[[int], Awaitable[None]] | None = None


ShellLauncher = Callable[[Path], ShellLaunch]
"""``launcher(private_dir) -> ShellLaunch``; the command file is ``private_dir / "command"``."""


class Shell:
    """One running ``/bin/bash`` and the reader of its merged stdout/stderr."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        command_file: Path,
        *,
        launch: ShellLaunch | None = None,
    ) -> None:
        self._command_file = command_file
        self._command_path = launch.command_path if launch is not None else str(command_file)
        # Kept open and rewritten in place: truncating a file to zero and closing it makes
        # ext4 flush it (auto_da_alloc), which costs milliseconds per call.
        self._command_fd = os.open(command_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._proc = subprocess.Popen(
                list(launch.argv) if launch is not None else ["/bin/bash", "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=launch.cwd if launch is not None else workdir,
                env=dict(launch.env if launch is not None else env),
                start_new_session=True,
                bufsize=0,
                pass_fds=tuple(launch.pass_fds) if launch is not None else (),
            )
        except BaseException:
            os.close(self._command_fd)
            raise
        finally:
            for fd in launch.pass_fds if launch is not None else ():
                with contextlib.suppress(OSError):
                    os.close(fd)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin = self._proc.stdin.fileno()
        self._stdout = self._proc.stdout.fileno()
        os.set_blocking(self._stdout, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._stdout, self._on_readable)
        self._buf = bytearray()
        self._dropped = False  # bytes were dropped from the front of _buf
        self._eof = False
        self._marker = b""
        self._scan_from = 0
        self._found: tuple[int, int] | None = None  # (index of the marker, end of its line)
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        self._ready = launch.ready if launch is not None else None
        if launch is not None and launch.setup:
            try:
                os.write(self._stdin, launch.setup.encode())
            except BrokenPipeError:
                self._eof = True

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def ready(self) -> None:
        """Await the launch's ``ready`` hook (once; before the first command)."""
        hook, self._ready = self._ready, None
        if hook is not None:
            await hook(self._proc.pid)

    @property
    def alive(self) -> bool:
        return not self._closed and not self._eof and self._proc.poll() is None

    def _on_readable(self) -> None:
        while True:
            try:
                chunk = os.read(self._stdout, _READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                self._loop.remove_reader(self._stdout)
                break
            self._buf += chunk
            if self._marker and self._found is None:
                self._scan()
            if self._found is None and len(self._buf) > 2 * _KEEP:
                cut = len(self._buf) - _KEEP
                del self._buf[:cut]
                self._scan_from = max(0, self._scan_from - cut)
                self._dropped = True
            if len(chunk) < _READ_CHUNK:
                break
        if (self._eof or self._found is not None) and self._wakeup and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _scan(self) -> None:
        at = self._buf.find(self._marker, self._scan_from)
        if at < 0:
            self._scan_from = max(0, len(self._buf) - len(self._marker))
            return
        end = self._buf.find(b"\n", at + len(self._marker))
        if end < 0:
            self._scan_from = at
            return
        self._found = (at, end)

    async def exec(self, command: str) -> tuple[str, int, bool]:
        """Run ``command``; returns (output, exit code, whether the shell itself exited, e.g.
        through ``exit`` in the command; it is then dead)."""
        token = secrets.token_hex(8)
        self._marker = f"__HANGAR_{token}__".encode()
        self._found = None
        self._scan_from = 0
        source = (command + "\n").encode("utf-8", errors="replace")
        os.pwrite(self._command_fd, source, 0)
        os.ftruncate(self._command_fd, len(source))
        script = (
            f"{{ . {shell_quote(self._command_path)}\n}} </dev/null 2>&1; "
            f"printf '\\n__HANGAR_%s__%d\\n' {token} \"$?\"\n"
        ).encode()
        if self._buf:
            self._scan()
        await self._write(script)
        while self._found is None and not self._eof:
            self._wakeup = self._loop.create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        if self._found is None:
            # The shell exited: everything it printed is the output.
            out, code = bytes(self._buf), await self.wait(1.0)
            self._buf.clear()
            return self._render(out), -1 if code is None else code, True
        at, end = self._found
        code_text = self._buf[at + len(self._marker) : end]
        out = bytes(self._buf[:at])
        del self._buf[: end + 1]
        self._marker = b""
        self._found = None
        return self._render(out), int(code_text) if code_text.isdigit() else -1, False

    def pending_output(self) -> str:
        """What the running command printed so far (for a timeout report)."""
        return self._render(bytes(self._buf))

    def _render(self, raw: bytes) -> str:
        truncated = self._dropped or len(raw) > OUTPUT_LIMIT
        self._dropped = False
        if len(raw) > OUTPUT_LIMIT:
            raw = raw[-OUTPUT_LIMIT:]
        text = strip_ansi(raw.decode("utf-8", errors="replace")).rstrip("\n")
        text = text.replace(f"{self._command_path}: ", "bash: ")
        return f"{TRUNCATED}\n{text}" if truncated else text

    async def _write(self, data: bytes) -> None:
        if len(data) <= 16384:
            try:
                os.write(self._stdin, data)  # a pipe takes 64 KiB without blocking
            except BrokenPipeError:
                self._eof = True
            return
        await asyncio.to_thread(self._write_all, data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._stdin, view) :]
        except BrokenPipeError:
            self._eof = True

    def kill(self) -> None:
        """SIGKILL the shell's whole process tree (synchronous, a few ms)."""
        if self._proc.poll() is None:
            kill_tree(self._proc.pid)

    async def wait(self, timeout_s: float) -> int | None:
        """Reap the shell; its exit status, or ``None`` if it is still running after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (code := self._proc.poll()) is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)  # a SIGKILLed process is gone within a few ms
        return code

    async def close(self) -> None:
        """Kill the shell and release its pipes. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._eof:
            self._loop.remove_reader(self._stdout)
        self.kill()
        if await self.wait(2.0) is None:
            await asyncio.to_thread(self._proc.wait)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(OSError):
            os.close(self._command_fd)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class BashTool:
    """The ``bash`` tool of one session: a lazily started :class:`Shell` behind a lock."""

    def __init__(
        self,
        workdir: Path,
        *,
        default_timeout_s: float,
        max_timeout_s: float,
        launcher: ShellLauncher | None = None,
    ) -> None:
        self._workdir = workdir
        self._launcher = launcher
        self._env = {**scrubbed_env(), "PS1": "", "PS2": "", "TERM": "dumb", "PAGER": "cat"}
        self._env.setdefault("GIT_PAGER", "cat")
        self._default_timeout_s = default_timeout_s
        self._max_timeout_s = max_timeout_s
        self._shell: Shell | None = None
        self._lock = asyncio.Lock()
        self._private: Path | None = None  # holds the command file; outside the workspace

    @property
    def busy(self) -> bool:
        """Whether a call is in progress."""
        return self._lock.locked()

    @property
    def shell_pid(self) -> int | None:
        """The host pid of the running shell (with a launcher: of what it started), if any."""
        return self._shell.pid if self._shell is not None and self._shell.alive else None

    async def run(self, tool_input: dict[str, Any]) -> ToolResult:
        command = tool_input.get("command")
        restart = tool_input.get("restart")
        timeout_ms = tool_input.get("timeout_ms")
        if command is not None and not isinstance(command, str):
            raise ToolError("bash: command must be a string")
        if restart is not None and not isinstance(restart, bool):
            raise ToolError("bash: restart must be a boolean")
        if timeout_ms is not None and (
            isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 0
        ):
            raise ToolError("bash: timeout_ms must be a non-negative integer")
        async with self._lock:
            if restart:
                await self._drop()
                self._shell = await self._start()
                return text_result("bash session restarted")
            if not command or not command.strip():
                raise ToolError("bash: command is required (or restart: true)")
            timeout = timeout_ms / 1000 if timeout_ms else self._default_timeout_s
            timeout = min(timeout, self._max_timeout_s)
            return await self._exec(command, timeout_s=timeout)

    async def _exec(self, command: str, *, timeout_s: float) -> ToolResult:
        if self._shell is None or not self._shell.alive:
            await self._drop()
            self._shell = await self._start()
        shell = self._shell
        try:
            async with asyncio.timeout(timeout_s):
                out, code, exited = await shell.exec(command)
        except TimeoutError:
            partial = shell.pending_output()
            await self._drop()
            raise ToolError(
                f"bash: command timed out after {timeout_s:g}s and was killed; the next command "
                "starts a new shell in the workspace directory" + (f"\n{partial}" if partial else "")
            ) from None
        except BaseException:
            # Interrupted (or the loop is shutting down): the shell is mid-command; kill it.
            await self._drop()
            raise
        if exited:
            await self._drop()
            return text_result(
                f"bash: the shell exited with code {code}; the next command starts a new one\n{out}".rstrip(
                    "\n"
                ),
                is_error=code != 0,
            )
        if code != 0:
            return text_result(f"bash: exit code {code}\n{out}".rstrip("\n"), is_error=True)
        return text_result(out)

    async def _start(self) -> Shell:
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="hangar-bash-"))
        try:
            launch = self._launcher(self._private) if self._launcher is not None else None
            shell = Shell(self._workdir, self._env, self._private / "command", launch=launch)
        except OSError as exc:
            raise ToolError(f"bash: cannot start the shell: {exc.strerror or exc}") from exc
        try:
            await shell.ready()
        except BaseException as exc:
            await shell.close()
            if isinstance(exc, OSError):
                raise ToolError(f"bash: cannot start the shell: {exc.strerror or exc}") from exc
            raise
        return shell

    def kill(self) -> None:
        """Kill the running command's process tree now (the shell included)."""
        if self._shell is not None:
            self._shell.kill()

    async def _drop(self) -> None:
        shell, self._shell = self._shell, None
        if shell is not None:
            await shell.close()

    async def close(self) -> None:
        await self._drop()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
