"""One-off commands Hangar itself runs in a bubblewrap sandbox: package installers and ``git``
clones (:mod:`.packages`, :mod:`.resources`).

Unlike a session's sandbox, a job shares the host's network (installers and clones talk to
registries and git servers), and it sees only what it is given: the system read-only, private
``/tmp`` and ``$HOME``, and the directories in ``binds``. It runs as an unprivileged uid (as root:
the ``uid`` given, through ``setpriv``; otherwise bubblewrap's user namespace), with no
capabilities, in new pid/ipc/uts namespaces, and dies with Hangar. Its output (stdout and stderr
merged) is returned, and each line is passed to ``on_line`` as it comes (progress logging).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hangar.sandbox.bwrap import ETC_MASKED, HOME, SANDBOX_PATH, SANDBOX_TMP, parent_dirs

JOB_TAIL_LINES = 30


@dataclass(frozen=True)
class Bind:
    """``host`` mounted at ``target`` inside the job's sandbox (read-write unless ``read_only``)."""

    host: Path
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class JobResult:
    returncode: int
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, lines: int = JOB_TAIL_LINES) -> str:
        """The last ``lines`` non-empty lines of the output."""
        kept = [line for line in self.output.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])


def available_in_sandbox(program: str) -> bool:
    """``program`` is on the sandbox's ``PATH`` (the host's ``/usr`` and ``/bin``, which jobs and
    sessions see read-only)."""
    return shutil.which(program, path=SANDBOX_PATH) is not None


def job_argv(argv: Sequence[str], binds: Sequence[Bind], *, uid: int, cwd: str = SANDBOX_TMP) -> list[str]:
    """The bwrap command line of a job (see the module docstring)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError("bwrap is not installed (install the bubblewrap package)")
    privileged = os.geteuid() == 0
    args = [bwrap, "--new-session", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try"]
    if not privileged:
        args += ["--unshare-user", "--uid", "1000", "--gid", "1000", "--cap-drop", "ALL"]
    args += ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC_MASKED:
        if os.path.isfile(f"/etc/{name}"):
            args += ["--ro-bind", "/dev/null", f"/etc/{name}"]
    apt_state = [d for d in ("/var/lib/apt", "/var/lib/dpkg") if os.path.isdir(d)]
    args += parent_dirs(apt_state)
    for directory in apt_state:  # apt-get --download-only reads the host's package lists
        args += ["--ro-bind", directory, directory]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for target in (SANDBOX_TMP, HOME):
        args += ["--perms", "1777", "--tmpfs", target]
    args += parent_dirs([bind.target for bind in binds])
    for bind in binds:
        args += ["--ro-bind" if bind.read_only else "--bind", str(bind.host), bind.target]
    args += ["--chdir", cwd, "--"]
    if privileged:
        setpriv = os.path.realpath(shutil.which("setpriv") or "/usr/bin/setpriv")
        args += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return args + list(argv)


def job_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": SANDBOX_PATH,
        "HOME": HOME,
        "LANG": "C.UTF-8",
        "TMPDIR": SANDBOX_TMP,
        "TERM": "dumb",
    }
    env.update(extra or {})
    return env


async def run_job(
    argv: Sequence[str],
    binds: Sequence[Bind],
    *,
    uid: int,
    env: Mapping[str, str] | None = None,
    cwd: str = SANDBOX_TMP,
    timeout_s: float = 600.0,
    on_line: Callable[[str], None] | None = None,
    max_output_bytes: int = 1024 * 1024,
) -> JobResult:
    """Run ``argv`` in a job sandbox and wait for it (killing its process group on timeout)."""
    proc = await asyncio.create_subprocess_exec(
        *job_argv(argv, binds, uid=uid, cwd=cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=job_env(env),
        start_new_session=True,
    )
    assert proc.stdout is not None
    chunks: list[str] = []
    size = 0

    async def pump() -> None:
        nonlocal size
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if on_line is not None and line.strip():
                on_line(line)
            size += len(raw)
            chunks.append(line)
            while size > max_output_bytes and len(chunks) > 1:
                size -= len(chunks.pop(0)) + 1

    timed_out = False
    try:
        await asyncio.wait_for(pump(), timeout_s)
        await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
    return JobResult(-9 if timed_out else (proc.returncode or 0), "\n".join(chunks), timed_out)
