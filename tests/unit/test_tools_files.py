"""read / write / edit / glob / grep through WorkspaceExecutor, including escape attempts."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hangar.config import Settings
from hangar.runtime.tools import ToolResult, WorkspaceExecutor
from hangar.runtime.tools.base import OUTPUT_LIMIT, TRUNCATED

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[WorkspaceExecutor]:
    executor = WorkspaceExecutor("sesn_files", tmp_path / "ws", Settings(data_dir=tmp_path / "data"))
    yield executor
    await executor.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.txt").write_text("top secret\n")
    return secret


async def run(ex: WorkspaceExecutor, name: str, **tool_input: Any) -> ToolResult:
    result = await ex.run(name, tool_input)
    assert result.content, "content is never empty"
    for block in result.content:
        if block["type"] == "text":
            assert block["text"]
    return result


def ok(result: ToolResult) -> str:
    assert not result.is_error, result.text
    return result.text


def err(result: ToolResult) -> str:
    assert result.is_error, result.text
    return result.text


# --------------------------------------------------------------------------- read


async def test_read_whole_file_and_ranges(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "f.txt").write_text("one\ntwo\nthree\nfour\n")
    assert ok(await run(ex, "read", file_path="f.txt")) == "one\ntwo\nthree\nfour\n"
    assert ok(await run(ex, "read", file_path=str(ex.workdir / "f.txt"))) == "one\ntwo\nthree\nfour\n"
    assert ok(await run(ex, "read", file_path="f.txt", view_range=[2, 3])) == "two\nthree"
    assert ok(await run(ex, "read", file_path="f.txt", view_range=[3, 0])) == "three\nfour"
    assert ok(await run(ex, "read", file_path="f.txt", view_range=[3, -1])) == "three\nfour"
    assert ok(await run(ex, "read", file_path="f.txt", view_range=[0, 1])) == "one"
    assert ok(await run(ex, "read", file_path="f.txt", view_range=[9, 12])) == (
        "(no lines in range: f.txt has 4 lines)"
    )


async def test_read_errors(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "f.txt").write_text("x")
    (ex.workdir / "dir").mkdir()
    (ex.workdir / "bin.dat").write_bytes(b"\xff\xfe\x00\x01")
    os.mkfifo(ex.workdir / "fifo")
    assert (
        err(await run(ex, "read", file_path="missing.txt")) == "read: missing.txt: no such file or directory"
    )
    assert err(await run(ex, "read", file_path="dir")) == "read: dir: not a regular file"
    assert err(await run(ex, "read", file_path="fifo")) == "read: fifo: not a regular file"
    assert err(await run(ex, "read", file_path="bin.dat")).startswith("read: bin.dat: not valid UTF-8 text")
    assert err(await run(ex, "read")) == "read: file_path is required"
    assert err(await run(ex, "read", file_path=3)) == "read: file_path must be a string"
    for bad in ([1], [1, 2, 3], "1-2", [1, "2"], [True, 2]):
        assert err(await run(ex, "read", file_path="f.txt", view_range=bad)) == (
            "read: view_range must be [start_line, end_line]"
        )
    assert err(await run(ex, "read", file_path="f.txt", view_range=[5, 2])) == (
        "read: view_range [5, 2] is empty"
    )


async def test_read_empty_file(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "empty").write_bytes(b"")
    assert ok(await run(ex, "read", file_path="empty")) == "(empty file)"


async def test_read_is_capped_at_256_kib_without_a_range(ex: WorkspaceExecutor) -> None:
    lines = [f"line {i:06d}" for i in range(30_000)]  # 360,000 bytes
    (ex.workdir / "big.txt").write_text("\n".join(lines) + "\n")
    message = err(await run(ex, "read", file_path="big.txt"))
    assert message.startswith("read: big.txt is 360000 bytes, exceeds the 262144-byte limit; use view_range")
    assert ok(await run(ex, "read", file_path="big.txt", view_range=[29_999, 0])) == (
        "line 029998\nline 029999"
    )
    message = err(await run(ex, "read", file_path="big.txt", view_range=[1, 0]))
    assert message.startswith("read: view_range [1, 0] of big.txt exceeds the 262144-byte limit")
    (ex.workdir / "limit.txt").write_bytes(b"a" * 262_144)
    assert len(ok(await run(ex, "read", file_path="limit.txt"))) == 262_144


async def test_read_images_and_pdfs_as_base64_blocks(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "dot.PNG").write_bytes(PNG)
    result = await run(ex, "read", file_path="dot.PNG")
    assert result.content == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
        }
    ]
    pdf = b"%PDF-1.4\n%fake\n"
    (ex.workdir / "doc.pdf").write_bytes(pdf)
    result = await run(ex, "read", file_path="doc.pdf")
    assert result.content == [
        {
            "type": "document",
            "source": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": base64.b64encode(pdf).decode(),
            },
        }
    ]
    assert err(await run(ex, "read", file_path="doc.pdf", view_range=[1, 2])) == (
        "read: view_range is not supported for image/PDF files"
    )


async def test_read_image_cap(ex: WorkspaceExecutor) -> None:
    with open(ex.workdir / "huge.png", "wb") as f:
        f.truncate(5 * 1024 * 1024 // 4 * 3 + 1)
    assert err(await run(ex, "read", file_path="huge.png")).startswith(
        "read: huge.png is 3932161 bytes, exceeds the 3932160-byte limit"
    )


# --------------------------------------------------------------------------- write / edit


async def test_write_creates_parents_and_overwrites(ex: WorkspaceExecutor) -> None:
    assert ok(await run(ex, "write", file_path="a/b/c.txt", content="héllo")) == "wrote 6 bytes to a/b/c.txt"
    assert (ex.workdir / "a/b/c.txt").read_text() == "héllo"
    assert ok(await run(ex, "write", file_path="a/b/c.txt", content="hi")) == "wrote 2 bytes to a/b/c.txt"
    assert (ex.workdir / "a/b/c.txt").read_text() == "hi"
    assert ok(await run(ex, "write", file_path="a/b/c.txt", content="")) == "wrote 0 bytes to a/b/c.txt"
    assert (ex.workdir / "a/b/c.txt").read_bytes() == b""
    assert ok(await run(ex, "write", file_path=str(ex.workdir / "abs.txt"), content="x\r\n")) == (
        f"wrote 3 bytes to {ex.workdir / 'abs.txt'}"
    )
    assert (ex.workdir / "abs.txt").read_bytes() == b"x\r\n"


async def test_write_errors(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "dir").mkdir()
    (ex.workdir / "file").write_text("")
    assert err(await run(ex, "write", file_path="dir", content="x")) == "write: dir: not a regular file"
    assert err(await run(ex, "write", file_path="file/child", content="x")) == (
        "write: file/child: not a directory"
    )
    assert err(await run(ex, "write", file_path="x.txt")) == "write: content is required"
    assert err(await run(ex, "write", content="x")) == "write: file_path is required"


async def test_edit(ex: WorkspaceExecutor) -> None:
    target = ex.workdir / "code.py"
    target.write_text("a = 1\nb = 1\nc = 2\n")
    assert ok(await run(ex, "edit", file_path="code.py", old_string="c = 2", new_string="c = 3")) == (
        "edited code.py (1 replacement(s))"
    )
    assert target.read_text() == "a = 1\nb = 1\nc = 3\n"
    assert err(await run(ex, "edit", file_path="code.py", old_string="= 1", new_string="= 9")) == (
        "edit: old_string appears 2 times in code.py; make it unique or set replace_all"
    )
    assert target.read_text() == "a = 1\nb = 1\nc = 3\n"
    assert ok(
        await run(ex, "edit", file_path="code.py", old_string="= 1", new_string="= 9", replace_all=True)
    ) == ("edited code.py (2 replacement(s))")
    assert target.read_text() == "a = 9\nb = 9\nc = 3\n"
    assert err(await run(ex, "edit", file_path="code.py", old_string="zzz", new_string="y")) == (
        "edit: old_string not found in code.py"
    )
    assert err(await run(ex, "edit", file_path="code.py", old_string="", new_string="y")) == (
        "edit: old_string must not be empty"
    )
    assert err(await run(ex, "edit", file_path="nope.py", old_string="a", new_string="b")) == (
        "edit: nope.py: no such file or directory"
    )
    assert err(
        await run(ex, "edit", file_path="code.py", old_string="a", new_string="b", replace_all="yes")
    ) == ("edit: replace_all must be a boolean")


async def test_edit_is_capped_at_256_kib(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "big.txt").write_bytes(b"x" * (256 * 1024 + 1))
    assert err(await run(ex, "edit", file_path="big.txt", old_string="x", new_string="y")) == (
        "edit: big.txt is 262145 bytes, exceeds the 262144-byte limit"
    )


# --------------------------------------------------------------------------- confinement


@pytest.mark.parametrize("tool", ["read", "write", "edit"])
async def test_paths_cannot_escape_the_workspace(ex: WorkspaceExecutor, outside: Path, tool: str) -> None:
    (ex.workdir / "sub").mkdir()
    (ex.workdir / "link_dir").symlink_to(outside)
    (ex.workdir / "link_file").symlink_to(outside / "secret.txt")
    (ex.workdir / "dangling").symlink_to(outside / "new.txt")
    relative_out = os.path.relpath(outside / "secret.txt", ex.workdir)
    attempts = [
        relative_out,
        "sub/../../outside/secret.txt",
        str(outside / "secret.txt"),
        "/etc/passwd",
        "link_dir/secret.txt",
        "link_file",
        "dangling",
        "link_dir/../outside/secret.txt",
    ]
    extra: dict[str, Any] = {
        "read": {},
        "write": {"content": "pwned"},
        "edit": {"old_string": "top", "new_string": "pwned"},
    }[tool]
    for path in attempts:
        message = err(await run(ex, tool, file_path=path, **extra))
        assert message == f"{tool}: path {path!r} is outside the session's working directory"
    assert (outside / "secret.txt").read_text() == "top secret\n"
    assert not (outside / "new.txt").exists()


async def test_paths_inside_the_workspace_through_dots_and_links(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "sub").mkdir()
    (ex.workdir / "target.txt").write_text("inside")
    (ex.workdir / "sub" / "alias").symlink_to(ex.workdir / "target.txt")
    assert ok(await run(ex, "read", file_path="sub/../target.txt")) == "inside"
    assert ok(await run(ex, "read", file_path="./sub/alias")) == "inside"
    assert (
        ok(await run(ex, "write", file_path="sub/alias", content="via link")) == "wrote 8 bytes to sub/alias"
    )
    assert (ex.workdir / "target.txt").read_text() == "via link"
    assert err(await run(ex, "read", file_path="a\x00b")) == "read: path 'a\\x00b' contains a NUL byte"


async def test_symlink_loops_are_errors(ex: WorkspaceExecutor) -> None:
    (ex.workdir / "loop").symlink_to(ex.workdir / "loop")
    assert err(await run(ex, "read", file_path="loop")) == "read: loop: too many levels of symbolic links"


# --------------------------------------------------------------------------- glob


async def test_glob_returns_absolute_paths_newest_first(ex: WorkspaceExecutor, outside: Path) -> None:
    for i, name in enumerate(["a.py", "pkg/b.py", "pkg/deep/c.py", "notes.txt"]):
        path = ex.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    (ex.workdir / "out").symlink_to(outside)
    text = ok(await run(ex, "glob", pattern="**/*.py"))
    assert text.split("\n") == [str(ex.workdir / p) for p in ("pkg/deep/c.py", "pkg/b.py", "a.py")]
    assert ok(await run(ex, "glob", pattern="*.py", path="pkg")) == str(ex.workdir / "pkg/b.py")
    assert ok(await run(ex, "glob", pattern="**/*.txt")) == str(
        ex.workdir / "notes.txt"
    )  # not out/secret.txt
    assert ok(await run(ex, "glob", pattern="out/*")) == "No files found"
    assert ok(await run(ex, "glob", pattern="pkg")) == "No files found"  # directories are not listed
    assert ok(await run(ex, "glob", pattern="*.rs")) == "No files found"


async def test_glob_is_capped_at_100(ex: WorkspaceExecutor) -> None:
    for i in range(120):
        path = ex.workdir / f"f{i:03d}.txt"
        path.write_text("")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    lines = ok(await run(ex, "glob", pattern="*.txt")).split("\n")
    assert len(lines) == 101
    assert lines[0] == str(ex.workdir / "f119.txt")
    assert lines[99] == str(ex.workdir / "f020.txt")
    assert lines[100] == "(results truncated to the 100 newest of 120 files)"


async def test_glob_errors(ex: WorkspaceExecutor, outside: Path) -> None:
    (ex.workdir / "file").write_text("")
    assert err(await run(ex, "glob", pattern="/etc/*")).startswith(
        "glob: absolute patterns are not permitted"
    )
    assert err(await run(ex, "glob", pattern="../*")) == "glob: '..' is not permitted in the pattern"
    assert err(await run(ex, "glob", pattern="a/../../*")) == "glob: '..' is not permitted in the pattern"
    assert err(await run(ex, "glob", pattern="*", path=str(outside))) == (
        f"glob: path {str(outside)!r} is outside the session's working directory"
    )
    assert (
        err(await run(ex, "glob", pattern="*", path="file"))
        == f"glob: {ex.workdir / 'file'}: not a directory"
    )
    assert err(await run(ex, "glob")) == "glob: pattern is required"


# --------------------------------------------------------------------------- grep

BACKENDS = ["python", pytest.param("rg", marks=pytest.mark.skipif(not shutil.which("rg"), reason="no rg"))]


@pytest.fixture(params=BACKENDS)
def gx(request: pytest.FixtureRequest, ex: WorkspaceExecutor) -> WorkspaceExecutor:
    ex.rg = shutil.which("rg") if request.param == "rg" else None
    files = {
        "src/app.py": "import os\n\ndef main():\n    return os.getcwd()\n",
        "src/util.py": "def helper():\n    return 1\n",
        "src/view.tsx": "export const main = () => null\n",
        "README.md": "Run main to start.\n",
        ".git/config": "main = yes\n",
        "node_modules/lib/index.js": "function main() {}\n",
        "blob.bin": "main\x00\x01",
    }
    for i, (name, content) in enumerate(files.items()):
        path = ex.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    return ex


async def test_grep_returns_matching_files_newest_first(gx: WorkspaceExecutor) -> None:
    text = ok(await run(gx, "grep", pattern=r"\bmain\b"))
    expected = ["README.md", "src/view.tsx", "src/app.py"]  # not .git, node_modules, binaries
    assert text.split("\n") == [str(gx.workdir / p) for p in expected]
    assert ok(await run(gx, "grep", pattern="nothing-like-this")) == "No matches found"


async def test_grep_glob_path_and_head_limit(gx: WorkspaceExecutor) -> None:
    assert ok(await run(gx, "grep", pattern="main", glob="*.py")) == str(gx.workdir / "src/app.py")
    text = ok(await run(gx, "grep", pattern="main", glob="*.{py,tsx}"))
    assert text.split("\n") == [str(gx.workdir / "src/view.tsx"), str(gx.workdir / "src/app.py")]
    assert ok(await run(gx, "grep", pattern="return", path="src", head_limit=1)) == str(
        gx.workdir / "src/util.py"
    )
    assert ok(await run(gx, "grep", pattern="return", path="src/app.py")) == str(gx.workdir / "src/app.py")


async def test_grep_content_and_count_modes(gx: WorkspaceExecutor) -> None:
    app = gx.workdir / "src/app.py"
    assert (
        ok(await run(gx, "grep", pattern="getcwd", output_mode="content"))
        == f"{app}:4:    return os.getcwd()"
    )
    assert ok(await run(gx, "grep", pattern="getcwd", output_mode="content", context=1)) == (
        f"{app}-3-def main():\n{app}:4:    return os.getcwd()"
    )
    text = ok(await run(gx, "grep", pattern="return", path="src", output_mode="count"))
    assert sorted(text.split("\n")) == [f"{app}:1", f"{gx.workdir / 'src/util.py'}:1"]


async def test_grep_errors(gx: WorkspaceExecutor, outside: Path) -> None:
    assert err(await run(gx, "grep", pattern="(")).startswith("grep: ")
    assert err(await run(gx, "grep", pattern="x", path=str(outside))) == (
        f"grep: path {str(outside)!r} is outside the session's working directory"
    )
    assert (
        err(await run(gx, "grep", pattern="x", path="missing")) == "grep: missing: no such file or directory"
    )
    assert err(await run(gx, "grep", pattern="x", output_mode="lines")) == (
        "grep: output_mode must be one of files_with_matches, content, count"
    )
    assert err(await run(gx, "grep", pattern="x", head_limit=-1)) == "grep: head_limit must be an integer ≥ 0"


async def test_grep_does_not_follow_symlinks_out(gx: WorkspaceExecutor, outside: Path) -> None:
    (gx.workdir / "out").symlink_to(outside)
    (gx.workdir / "secret_link").symlink_to(outside / "secret.txt")
    assert ok(await run(gx, "grep", pattern="top secret")) == "No matches found"


async def test_grep_output_is_capped(gx: WorkspaceExecutor) -> None:
    (gx.workdir / "many.txt").write_text(
        "needle " + "x" * 90 + "\n" * 1 + ("needle " + "y" * 90 + "\n") * 3000
    )
    text = ok(await run(gx, "grep", pattern="needle", output_mode="content"))
    assert len(text.encode()) <= OUTPUT_LIMIT + len(TRUNCATED) + 1


async def test_grep_python_fallback_skips_long_lines(ex: WorkspaceExecutor) -> None:
    ex.rg = None
    (ex.workdir / "min.js").write_text("needle" + "x" * 3000 + "\nshort needle\n")
    assert ok(await run(ex, "grep", pattern="needle", output_mode="content")) == (
        f"{ex.workdir / 'min.js'}:2:short needle"
    )
