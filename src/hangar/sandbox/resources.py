"""Session resources on disk: mounted uploads, the outputs directory, cloned repositories.

Host layout, per session, under ``<data_dir>/session-mounts/<session_id>/`` (never visible to
the sandbox as a whole):

- ``uploads/``: the session's ``file`` resources, each at its mount path relative to
  ``/mnt/session/uploads`` (a hard link to the session copy's blob, mode 0444, else a copy);
  mounted read-only at ``/mnt/session/uploads``. :func:`sync_uploads` makes it match the
  session's resources (added and deleted ones) in place, so a running sandbox sees the change.
- ``outputs/``: mounted read-write at ``/mnt/session/outputs``, owned by the sandbox's uid;
  :func:`scan_outputs` lists what is new or changed since the last scan (``outputs.json``).
- ``repos/<resource id>/``: a ``github_repository`` whose mount path is outside ``/workspace``
  (one under ``/workspace`` is cloned into the workspace itself); ``repos.done/<id>`` marks a
  finished clone, so a repository is cloned once per session.

Clones (:func:`clone_repository`) run ``git`` in a job sandbox (:mod:`.jobs`) as the session
sandbox's uid; the token goes to ``git`` as an ``http.extraHeader`` through ``GIT_CONFIG_*``
variables of that one process, so it is never written to disk: ``.git/config`` holds the plain
URL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import posixpath
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hangar.config import Settings
from hangar.sandbox.jobs import Bind, run_job

UPLOADS: Final = "/mnt/session/uploads"
OUTPUTS: Final = "/mnt/session/outputs"
WORKSPACE: Final = "/workspace"
CLONE_DIR: Final = "/mnt/clone"


def session_dir(settings: Settings, session_id: str) -> Path:
    return settings.data_dir / "session-mounts" / session_id


# ---------------------------------------------------------------------------- uploads


def sync_uploads(root: Path, wanted: dict[str, Path]) -> None:
    """Make ``root`` hold exactly ``wanted`` (path relative to the uploads mount → blob)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # noqa: S103 (the sandbox reads it)
    for rel, blob in wanted.items():
        target = root / rel
        if target.is_file() and not target.is_symlink():
            with contextlib.suppress(OSError):
                if os.path.samefile(target, blob):
                    continue
        _make_dirs(root, target.parent)
        tmp = target.with_name(f".{target.name}.hangar-tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            os.link(blob, tmp)
        except OSError:
            shutil.copyfile(blob, tmp)
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    keep = {root / rel for rel in wanted}
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath, name)
            if path not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.rmdir(Path(dirpath, name))  # only empty ones go


def _make_dirs(root: Path, directory: Path) -> None:
    missing = []
    while directory != root and not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        d.mkdir(mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)  # noqa: S103 (the sandbox reads it)


# ---------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class OutputFile:
    rel: str
    path: Path
    size: int
    mtime_ns: int


def prepare_outputs(directory: Path, uid: int | None) -> None:
    """Create the outputs directory, owned by the sandbox's uid (``None``: ours)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)  # noqa: S103 (the sandbox's own directory)
    if uid is not None and directory.stat().st_uid != uid:
        os.chown(directory, uid, uid)


def load_index(path: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_index(path: Path, index: dict[str, list[Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(index, sort_keys=True))
    os.replace(tmp, path)


def scan_outputs(
    directory: Path, index: dict[str, list[Any]], *, uid: int | None, max_bytes: int
) -> tuple[list[OutputFile], list[str]]:
    """Regular files under ``directory`` that are new or changed (size or mtime) since ``index``,
    and the paths skipped (too large). Symlinks are never followed; as root, only files owned by
    the sandbox's ``uid`` count (what the agent wrote)."""
    found: list[OutputFile] = []
    skipped: list[str] = []
    if not directory.is_dir():
        return found, skipped
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or (uid is not None and st.st_uid != uid):
                continue
            rel = path.relative_to(directory).as_posix()
            known = index.get(rel)
            if known is not None and known[:2] == [st.st_size, st.st_mtime_ns]:
                continue
            if st.st_size > max_bytes:
                skipped.append(rel)
                continue
            found.append(OutputFile(rel, path, st.st_size, st.st_mtime_ns))
    return found, skipped


def open_output(path: Path) -> Any:
    """Open an output file for reading without following a symlink or blocking on a FIFO; a
    ``ValueError`` when it is not (or no longer) a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file")
    return os.fdopen(fd, "rb")


# ---------------------------------------------------------------------------- repositories


def default_repo_mount(url: str) -> str:
    """``/workspace/<repo>``: the last path segment of the URL without ``.git``."""
    name = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if name.endswith(".git"):
        name = name[:-4]
    return posixpath.join(WORKSPACE, name or "repository")


@dataclass(frozen=True)
class CloneFailure:
    """A ``repository_*_error`` (API §3.3): ``type`` and the message shown to the client."""

    type: str
    message: str


def _classify(output: str, *, checkout: bool) -> str:
    text = output.lower()
    if checkout or ("remote branch" in text and "not found" in text) or "did not match any" in text:
        return "repository_checkout_error"
    if "authentication failed" in text or "could not read username" in text or " 401" in text:
        return "repository_authentication_error"
    if " 403" in text:
        return "repository_forbidden_error"
    if "not found" in text or " 404" in text or "does not appear to be a git repository" in text:
        return "repository_not_found_error"
    return "repository_clone_error"


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def clone_repository(
    url: str,
    dest: Path,
    *,
    token: str | None,
    checkout: dict[str, Any] | None,
    uid: int,
    timeout_s: float,
) -> CloneFailure | None:
    """Clone ``url`` into ``dest`` (a host path that must not exist yet; its parent is created)
    and check out ``checkout``. ``None`` on success; on failure ``dest`` does not exist."""
    staging = await asyncio.to_thread(_stage, dest, uid)
    parent = dest.parent
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ASKPASS": "/bin/false",
    }
    secrets: list[str] = []
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        secrets = [token, basic]
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    inner = f"{CLONE_DIR}/{staging.name}"
    argv = ["git", "clone", "--quiet", "--no-hardlinks"]
    if checkout and checkout.get("type") == "branch":
        argv += ["--branch", str(checkout["name"])]
    argv += ["--", url, inner]
    binds = [Bind(parent, CLONE_DIR)]
    result = await run_job(argv, binds, uid=uid, env=env, timeout_s=timeout_s)
    if not result.ok:
        shutil.rmtree(staging, ignore_errors=True)
        why = "timed out" if result.timed_out else _scrub(result.tail(8), secrets)
        return CloneFailure(_classify(result.output, checkout=False), f"Cloning {url} failed: {why}")
    if checkout and checkout.get("type") == "commit":
        sha = str(checkout["sha"])
        result = await run_job(
            ["git", "-C", inner, "checkout", "--quiet", "--detach", sha, "--"],
            binds,
            uid=uid,
            env={k: v for k, v in env.items() if k not in _TOKEN_VARS},
            timeout_s=timeout_s,
        )
        if not result.ok:
            shutil.rmtree(staging, ignore_errors=True)
            return CloneFailure(
                "repository_checkout_error", f"Checking out {sha} of {url} failed: {result.tail(8)}"
            )
    return await asyncio.to_thread(_finish, staging, dest, url)


_TOKEN_VARS: Final = ("GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0")


def _stage(dest: Path, uid: int) -> Path:
    """Create ``dest``'s missing parents (given to ``uid``); the staging path, emptied."""
    parent = dest.parent
    missing = []
    while not parent.is_dir():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o755)
        if os.geteuid() == 0:
            os.chown(directory, uid, uid)  # the agent may change what Hangar created for it
    staging = dest.parent / f".{dest.name}.hangar-clone"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def _finish(staging: Path, dest: Path, url: str) -> CloneFailure | None:
    if dest.exists() or dest.is_symlink():
        shutil.rmtree(staging, ignore_errors=True)
        return CloneFailure(
            "repository_clone_error", f"Cloning {url} failed: {dest.name} already exists at the mount path"
        )
    os.rename(staging, dest)
    return None
