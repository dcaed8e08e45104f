"""The file tools: ``read``, ``write``, ``edit``, ``glob`` and ``grep``.

Every path resolves against the session's workspace directory and must stay inside it:
symlinks (the last component included, even a dangling one) are resolved before the check, and
the resolved path is what the tool then operates on. Blocking work runs in a thread.

Result texts (errors start with the tool name):

- ``read``: the file's text (UTF-8; capped at 256 KiB without ``view_range``), a base64
  ``image`` block for png/jpg/jpeg/gif/webp (≤5 MiB encoded) or a base64 ``document`` block for
  pdf (≤20 MiB).
- ``write``: ``wrote N bytes to P``; ``edit``: ``edited P (N replacement(s))``.
- ``glob``: absolute paths of matching files, newest first, at most 100, or ``No files found``.
- ``grep``: by default the absolute paths of matching files (newest first), or ``No matches
  found``; ``output_mode: "content"`` gives ``path:line:text`` lines, ``"count"`` gives
  ``path:count``. Both backends skip ``.git`` and ``node_modules``, binary files and symlinks,
  and include hidden files. ``rg`` is used when installed (it also honours ignore files inside
  git repositories); otherwise a Python walk (skipping lines over 2000 characters and files
  over 32 MiB, with a 30 s deadline). ``head_limit`` counts entries: files, lines or counts.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import fnmatch
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path, PurePosixPath
from stat import S_ISREG
from typing import Any

from hangar.runtime.tools.base import (
    OUTPUT_LIMIT,
    TRUNCATED,
    ToolContext,
    ToolError,
    ToolResult,
    text_result,
)
from hangar.runtime.tools.bash import scrubbed_env

MAX_TEXT_BYTES = 256 * 1024
MAX_IMAGE_BASE64_BYTES = 5 * 1024 * 1024
MAX_PDF_BYTES = 20 * 1024 * 1024
GLOB_LIMIT = 100
WALK_MAX_ENTRIES = 50_000
GREP_MAX_LINE = 2000
GREP_DEADLINE_S = 30.0
GREP_MAX_FILE_BYTES = 32 * 1024 * 1024  # the Python fallback skips larger files (rg does not)
BINARY_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".pdf": "application/pdf",
}
GREP_MODES = ("files_with_matches", "content", "count")
_SKIP_DIRS = frozenset({".git", "node_modules"})


# --------------------------------------------------------------------------- inputs and paths


def req_str(tool_input: dict[str, Any], key: str, tool: str, *, allow_empty: bool = False) -> str:
    value = tool_input.get(key)
    if value is None:
        raise ToolError(f"{tool}: {key} is required")
    if not isinstance(value, str):
        raise ToolError(f"{tool}: {key} must be a string")
    if not value and not allow_empty:
        raise ToolError(f"{tool}: {key} must not be empty")
    return value


def opt_str(tool_input: dict[str, Any], key: str, tool: str) -> str | None:
    value = tool_input.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ToolError(f"{tool}: {key} must be a string")
    return value


def opt_int(tool_input: dict[str, Any], key: str, tool: str, *, minimum: int = 0) -> int | None:
    value = tool_input.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ToolError(f"{tool}: {key} must be an integer ≥ {minimum}")
    return value


def fs_reason(exc: OSError) -> str:
    """A host-independent phrase for a filesystem error (never the host's absolute paths)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file or directory"
    if isinstance(exc, NotADirectoryError):
        return "not a directory"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    return (exc.strerror or "i/o error").lower()


def within(path: Path, root: Path) -> bool:
    return path.parts[: len(root.parts)] == root.parts


def resolve_path(workdir: Path, raw: str, tool: str) -> Path:
    """``raw`` (relative to ``workdir``, or absolute) with every symlink resolved; a
    :class:`ToolError` when it lands outside ``workdir`` (which must itself be resolved)."""
    if "\x00" in raw:
        raise ToolError(f"{tool}: path {raw!r} contains a NUL byte")
    candidate = Path(raw)
    full = Path(os.path.realpath(candidate if candidate.is_absolute() else workdir / candidate))
    if not within(full, workdir):
        raise ToolError(f"{tool}: path {raw!r} is outside the session's working directory")
    return full


# --------------------------------------------------------------------------- read / write / edit


async def read(ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
    file_path = req_str(tool_input, "file_path", "read")
    view_range = tool_input.get("view_range")
    if view_range is not None and (
        not isinstance(view_range, list)
        or len(view_range) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in view_range)
    ):
        raise ToolError("read: view_range must be [start_line, end_line]")
    target = resolve_path(ctx.workdir, file_path, "read")
    return await asyncio.to_thread(_read, target, file_path, view_range)


def _read(target: Path, file_path: str, view_range: list[int] | None) -> ToolResult:
    try:
        st = target.stat()  # before open(): a FIFO would block, a huge file would not fit
        if not S_ISREG(st.st_mode):
            raise ToolError(f"read: {file_path}: not a regular file")
        media_type = BINARY_MEDIA_TYPES.get(target.suffix.lower())
        if media_type is not None:
            if view_range:
                raise ToolError("read: view_range is not supported for image/PDF files")
            return ToolResult([_binary_block(target, file_path, st.st_size, media_type)])
        if view_range:
            text = _read_range(target, file_path, view_range[0], view_range[1])
            return text_result(text, empty="(empty lines)")
        if st.st_size > MAX_TEXT_BYTES:
            raise ToolError(
                f"read: {file_path} is {st.st_size} bytes, exceeds the {MAX_TEXT_BYTES}-byte limit; "
                "use view_range to read part of it, e.g. view_range: [1, 500]"
            )
        return text_result(target.read_bytes().decode("utf-8"), empty="(empty file)")
    except UnicodeDecodeError:
        raise ToolError(
            f"read: {file_path}: not valid UTF-8 text (binary files are readable only as "
            "png/jpg/jpeg/gif/webp images or pdf documents)"
        ) from None
    except OSError as exc:
        raise ToolError(f"read: {file_path}: {fs_reason(exc)}") from None


def _read_range(target: Path, file_path: str, start_line: int, end_line: int) -> str:
    start = max(1, start_line)
    end = end_line if end_line > 0 else None
    if end is not None and end < start:
        raise ToolError(f"read: view_range [{start_line}, {end_line}] is empty")
    picked: list[bytes] = []
    size = 0
    count = 0
    with target.open("rb") as f:
        for count, line in enumerate(f, 1):
            if count < start:
                continue
            if end is not None and count > end:
                break
            size += len(line)
            if size > MAX_TEXT_BYTES:
                raise ToolError(
                    f"read: view_range [{start_line}, {end_line}] of {file_path} exceeds the "
                    f"{MAX_TEXT_BYTES}-byte limit; narrow the range"
                )
            picked.append(line)
    if not picked:
        return f"(no lines in range: {file_path} has {count} lines)"
    text = b"".join(picked).decode("utf-8")
    return text[:-1] if text.endswith("\n") else text


def _binary_block(target: Path, file_path: str, size: int, media_type: str) -> dict[str, Any]:
    pdf = media_type == "application/pdf"
    limit = MAX_PDF_BYTES if pdf else MAX_IMAGE_BASE64_BYTES // 4 * 3
    if size > limit:
        raise ToolError(f"read: {file_path} is {size} bytes, exceeds the {limit}-byte limit for this type")
    data = base64.standard_b64encode(target.read_bytes()).decode("ascii")
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "document" if pdf else "image", "source": source}


def overwrite(target: Path, data: bytes) -> None:
    """Replace a file's content in place (mode and inode kept). Written first and then cut to
    length, not truncated to zero first: ext4 flushes a file truncated to zero on close
    (auto_da_alloc), which would cost milliseconds per call."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


async def write(ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
    file_path = req_str(tool_input, "file_path", "write")
    content = req_str(tool_input, "content", "write", allow_empty=True)
    target = resolve_path(ctx.workdir, file_path, "write")
    data = content.encode("utf-8", errors="replace")
    await asyncio.to_thread(_write, target, file_path, data)
    return text_result(f"wrote {len(data)} bytes to {file_path}")


def _write(target: Path, file_path: str, data: bytes) -> None:
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ToolError(f"write: {file_path}: not a directory") from None
        if target.exists() and not target.is_file():
            raise ToolError(f"write: {file_path}: not a regular file")
        overwrite(target, data)
    except OSError as exc:
        raise ToolError(f"write: {file_path}: {fs_reason(exc)}") from None


async def edit(ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
    file_path = req_str(tool_input, "file_path", "edit")
    old = req_str(tool_input, "old_string", "edit")
    new = req_str(tool_input, "new_string", "edit", allow_empty=True)
    replace_all = tool_input.get("replace_all")
    if replace_all is not None and not isinstance(replace_all, bool):
        raise ToolError("edit: replace_all must be a boolean")
    target = resolve_path(ctx.workdir, file_path, "edit")
    count = await asyncio.to_thread(_edit, target, file_path, old, new, bool(replace_all))
    return text_result(f"edited {file_path} ({count} replacement(s))")


def _edit(target: Path, file_path: str, old: str, new: str, replace_all: bool) -> int:
    try:
        st = target.stat()
        if not S_ISREG(st.st_mode):
            raise ToolError(f"edit: {file_path}: not a regular file")
        if st.st_size > MAX_TEXT_BYTES:
            raise ToolError(
                f"edit: {file_path} is {st.st_size} bytes, exceeds the {MAX_TEXT_BYTES}-byte limit"
            )
        text = target.read_bytes().decode("utf-8")
        count = text.count(old)
        if count == 0:
            raise ToolError(f"edit: old_string not found in {file_path}")
        if count > 1 and not replace_all:
            raise ToolError(
                f"edit: old_string appears {count} times in {file_path}; make it unique or set replace_all"
            )
        updated = text.replace(old, new) if replace_all else text.replace(old, new, 1)
        overwrite(target, updated.encode("utf-8"))
    except UnicodeDecodeError:
        raise ToolError(f"edit: {file_path}: not valid UTF-8 text") from None
    except OSError as exc:
        raise ToolError(f"edit: {file_path}: {fs_reason(exc)}") from None
    return count if replace_all else 1


# --------------------------------------------------------------------------- glob


async def glob(ctx: ToolContext, tool_input: dict[str, Any]) -> ToolResult:
    pattern = req_str(tool_input, "pattern", "glob")
    if pattern.startswith("/"):
        raise ToolError("glob: absolute patterns are not permitted; pass a relative pattern and a path")
    if ".." in PurePosixPath(pattern).parts:
        raise ToolError("glob: '..' is not permitted in the pattern")
    raw_root = opt_str(tool_input, "path", "glob")
    root = resolve_path(ctx.workdir, raw_root, "glob") if raw_root else ctx.workdir
    return await asyncio.to_thread(_glob, ctx.workdir, root, pattern)


def _glob(workdir: Path, root: Path, pattern: str) -> ToolResult:
    if not root.is_dir():
        raise ToolError(f"glob: {root}: not a directory")
    files: list[tuple[float, str]] = []
    try:
        for match in islice(root.glob(pattern), WALK_MAX_ENTRIES):
            try:
                if not within(Path(os.path.realpath(match)), workdir):
                    continue
                st = match.stat()
            except OSError:
                continue
            if S_ISREG(st.st_mode):
                files.append((-st.st_mtime, str(match)))
    except (ValueError, OSError) as exc:
        raise ToolError(f"glob: {exc}") from None
    if not files:
        return text_result("No files found")
    files.sort()
    lines = [path for _, path in files[:GLOB_LIMIT]]
    if len(files) > GLOB_LIMIT:
        lines.append(f"(results truncated to the {GLOB_LIMIT} newest of {len(files)} files)")
    return text_result("\n".join(lines))


# --------------------------------------------------------------------------- grep


def find_rg(workdir: Path) -> str | None:
    """The first ``rg`` on ``PATH`` outside ``workdir`` (a planted one must not run)."""
    for entry in os.get_exec_path():
        if not os.path.isabs(entry):
            continue
        found = shutil.which(os.path.join(entry, "rg"))
        if found and not within(Path(os.path.realpath(found)), workdir):
            return found
    return None


async def grep(ctx: ToolContext, tool_input: dict[str, Any], *, rg: str | None) -> ToolResult:
    pattern = req_str(tool_input, "pattern", "grep")
    raw_path = opt_str(tool_input, "path", "grep")
    file_glob = opt_str(tool_input, "glob", "grep")
    mode = tool_input.get("output_mode") or "files_with_matches"
    if mode not in GREP_MODES:
        raise ToolError(f"grep: output_mode must be one of {', '.join(GREP_MODES)}")
    context = opt_int(tool_input, "context", "grep") or 0
    head_limit = opt_int(tool_input, "head_limit", "grep") or 0
    search = resolve_path(ctx.workdir, raw_path, "grep") if raw_path else ctx.workdir
    if not search.exists():
        raise ToolError(f"grep: {raw_path}: no such file or directory")
    if rg is not None:
        entries = await _rg(rg, pattern, search, file_glob, mode, context)
    else:
        try:
            rx = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"grep: invalid regex: {exc}") from None
        entries = await asyncio.to_thread(_walk_grep, rx, search, file_glob, mode, context)
    if not entries:
        return text_result("No matches found")
    if mode == "files_with_matches":
        entries = _newest_first(entries)
    if head_limit:
        entries = entries[:head_limit]
    return text_result(_cap("\n".join(entries)))


def _newest_first(paths: list[str]) -> list[str]:
    def key(path: str) -> tuple[float, str]:
        try:
            return (-os.stat(path).st_mtime, path)
        except OSError:
            return (0.0, path)

    return sorted(paths, key=key)


def _cap(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= OUTPUT_LIMIT:
        return text
    return data[:OUTPUT_LIMIT].decode("utf-8", errors="ignore").rsplit("\n", 1)[0] + f"\n{TRUNCATED}"


async def _rg(
    rg: str, pattern: str, search: Path, file_glob: str | None, mode: str, context: int
) -> list[str]:
    args = [rg, "--no-config", "--color=never", "--hidden", "--no-messages"]
    args += ["--glob=!.git", "--glob=!node_modules"]
    if mode == "files_with_matches":
        args.append("--files-with-matches")
    elif mode == "count":
        args += ["--count", "--with-filename"]
    else:
        args += ["--line-number", "--no-heading", "--with-filename", f"--max-columns={GREP_MAX_LINE}"]
        if context:
            args.append(f"--context={context}")
    if file_glob:
        args.append(f"--glob={file_glob}")
    args += ["--regexp", pattern, "--", str(search)]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=scrubbed_env(),
    )
    try:
        async with asyncio.timeout(GREP_DEADLINE_S):
            out, err = await proc.communicate()
    except TimeoutError:
        await _reap(proc)
        raise ToolError(f"grep: timed out after {GREP_DEADLINE_S:g}s") from None
    except asyncio.CancelledError:  # interrupted: don't leave rg running
        await _reap(proc)
        raise
    if proc.returncode == 1:
        return []
    if proc.returncode != 0 and not out:
        raise ToolError(f"grep: {err.decode('utf-8', errors='replace').strip()}")
    return out.decode("utf-8", errors="replace").splitlines()


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await asyncio.shield(proc.wait())


def _expand_braces(pattern: str) -> list[str]:
    """``*.{ts,tsx}`` → ``[*.ts, *.tsx]`` (one level per brace group, recursively)."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out += _expand_braces(pattern[: m.start()] + alt + pattern[m.end() :])
    return out


def _glob_filter(file_glob: str | None, search: Path) -> Callable[[Path], bool]:
    if not file_glob:
        return lambda _path: True
    negate = file_glob.startswith("!")
    patterns = _expand_braces(file_glob[1:] if negate else file_glob)

    def match(path: Path) -> bool:
        rel = path.relative_to(search).as_posix() if path != search else path.name
        hit = any(
            fnmatch.fnmatchcase(rel if "/" in p else path.name, p.removeprefix("**/")) for p in patterns
        )
        return hit != negate

    return match


def _walk_files(search: Path, deadline: float) -> Iterator[Path]:
    if search.is_file():
        yield search
        return
    seen = 0
    for dirpath, dirnames, filenames in os.walk(search):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not os.path.islink(os.path.join(dirpath, d))
        )
        for name in sorted(filenames):
            full = Path(dirpath) / name
            try:
                st = full.lstat()
            except OSError:
                continue
            # Not a symlink (it could lead out), a FIFO or a device (a read could block).
            if not S_ISREG(st.st_mode) or st.st_size > GREP_MAX_FILE_BYTES:
                continue
            seen += 1
            if seen > WALK_MAX_ENTRIES or time.monotonic() > deadline:
                return
            yield full


def _walk_grep(
    rx: re.Pattern[str], search: Path, file_glob: str | None, mode: str, context: int
) -> list[str]:
    deadline = time.monotonic() + GREP_DEADLINE_S
    wanted = _glob_filter(file_glob if not search.is_file() else None, search)
    out: list[str] = []
    budget = OUTPUT_LIMIT
    for path in _walk_files(search, deadline):
        if not wanted(path):
            continue
        try:
            with path.open("rb") as f:
                head = f.read(8192)
                if b"\x00" in head:
                    continue
                raw_lines = (head + f.read()).split(b"\n")
        except OSError:
            continue
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()
        lines = [r.decode("utf-8", errors="replace").rstrip("\r") for r in raw_lines]
        hits = [
            i for i, line in enumerate(lines) if len(line) <= GREP_MAX_LINE and rx.search(line) is not None
        ]
        if time.monotonic() > deadline:
            raise ToolError(f"grep: timed out after {GREP_DEADLINE_S:g}s")
        if not hits:
            continue
        if mode == "files_with_matches":
            out.append(str(path))
        elif mode == "count":
            out.append(f"{path}:{len(hits)}")
        else:
            for text in _content_lines(path, lines, hits, context):
                budget -= len(text) + 1
                if budget < 0:
                    return out
                out.append(text)
    return out


def _content_lines(path: Path, lines: list[str], hits: list[int], context: int) -> Iterator[str]:
    """``path:N:text`` for matches and ``path-N-text`` for context, ``--`` between groups (rg's format)."""
    hit_set = set(hits)
    shown: list[int] = []
    for i in hits:
        shown.extend(range(max(0, i - context), min(len(lines), i + context + 1)))
    last = -2
    for i in sorted(set(shown)):
        if context and last >= 0 and i != last + 1:
            yield "--"
        last = i
        sep = ":" if i in hit_set else "-"
        line = lines[i] if len(lines[i]) <= GREP_MAX_LINE else lines[i][:GREP_MAX_LINE] + " [...]"
        yield f"{path}{sep}{i + 1}{sep}{line}"
