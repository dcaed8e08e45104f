"""Files through the official client (API.md §1.12, BEHAVIOUR §13), plus the session helpers of
``FileStore`` (``copy_to_session``, ``create_output``) driven against the server's own database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import sqlalchemy as sa
from anthropic.types import FileExpiredError, FileNotDownloadableError
from anthropic.types.beta import BetaFileMetadata
from anthropic.types.beta.beta_deleted_file import BetaDeletedFile

from hangar.config import Settings
from hangar.errors import NotFound
from hangar.store import Store, open_database
from hangar.store.db import now_us
from hangar.store.files import FileStore
from hangar.store.keys import DEFAULT_WORKSPACE
from hangar.store.migrate import upgrade
from hangar.store.schema import files as files_table
from hangar.testing import ServerProcess
from tests.conftest import API_KEY
from tests.helpers import strict


def meta(obj: Any) -> dict[str, Any]:
    """Strictly validate file metadata and return its JSON dict."""
    strict(BetaFileMetadata, obj)
    data: dict[str, Any] = obj.model_dump(mode="json")
    return data


def error_of(exc: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    body = exc.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    err: dict[str, Any] = body["error"]
    return err


def files_dir(server: ServerProcess) -> Path:
    return server.data_dir / "files"


def blob(server: ServerProcess, file_id: str) -> Path:
    return FileStore.path(file_id, files_dir(server))


@pytest.fixture
async def store(server: ServerProcess) -> AsyncIterator[Store]:
    """The server's own database, for the session-side helpers and for test set-up."""
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    db = open_database(settings.resolved_database_url)
    try:
        yield Store.open(db)
    finally:
        await db.close()


def session_id() -> str:
    return "sesn_" + uuid.uuid4().hex


# -- upload --------------------------------------------------------------------------------


def test_upload_echo(client: anthropic.Anthropic, server: ServerProcess) -> None:
    out = meta(client.beta.files.upload(file=("notes.txt", b"hello world", "text/plain")))
    assert out["type"] == "file" and out["id"].startswith("file_")
    assert out["filename"] == "notes.txt"
    assert out["mime_type"] == "text/plain"
    assert out["size_bytes"] == 11
    assert out["downloadable"] is False
    assert out["scope"] is None and out["expires_at"] is None
    assert meta(client.beta.files.retrieve_metadata(out["id"])) == out
    assert blob(server, out["id"]).read_bytes() == b"hello world"
    raw = client.beta.files.with_raw_response.retrieve_metadata(out["id"]).json()
    assert set(raw) == {
        "type",
        "id",
        "filename",
        "mime_type",
        "size_bytes",
        "created_at",
        "downloadable",
        "expires_at",
        "scope",
    }


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("dir/sub/report.csv", "report.csv"),
        ("C:\\Users\\me\\data.json", "data.json"),
        ("/etc/passwd", "passwd"),
    ],
)
def test_upload_keeps_only_the_basename(client: anthropic.Anthropic, sent: str, kept: str) -> None:
    assert meta(client.beta.files.upload(file=(sent, b"x")))["filename"] == kept


def test_upload_from_a_real_file(client: anthropic.Anthropic, tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(b"a,b\n1,2\n")
    with path.open("rb") as fh:
        out = meta(client.beta.files.upload(file=fh))
    assert (out["filename"], out["mime_type"], out["size_bytes"]) == ("table.csv", "text/csv", 8)


def test_mime_type_from_part_or_name(client: anthropic.Anthropic) -> None:
    assert meta(client.beta.files.upload(file=("a.bin", b"{}", "application/json")))["mime_type"] == (
        "application/json"
    )
    # A generic content type falls back to a guess from the name, then to octet-stream.
    assert meta(client.beta.files.upload(file=("a.json", b"{}", "application/octet-stream")))[
        "mime_type"
    ] == ("application/json")
    assert meta(client.beta.files.upload(file=("a.zzzz", b"?", "application/octet-stream")))["mime_type"] == (
        "application/octet-stream"
    )
    # Parameters are dropped.
    assert meta(client.beta.files.upload(file=("t", b"x", "text/plain; charset=utf-8")))["mime_type"] == (
        "text/plain"
    )


def test_empty_or_absent_filename_becomes_unnamed(client: anthropic.Anthropic, server: ServerProcess) -> None:
    # The SDK drops an empty filename from the part (no filename attribute at all).
    out = meta(client.beta.files.upload(file=("", b"{}", "application/json")))
    assert out["filename"] == "unnamed.json"
    assert (
        meta(client.beta.files.upload(file=("", b"??", "application/octet-stream")))["filename"] == "unnamed"
    )
    # An explicit filename="" and a bare directory name are empty too.
    for disposition in ('name="file"; filename=""', 'name="file"; filename="dir/"'):
        body = (
            b"--XyZ\r\nContent-Disposition: form-data; " + disposition.encode() + b"\r\n"
            b"Content-Type: text/plain\r\n\r\nhi\r\n--XyZ--\r\n"
        )
        r = httpx.post(
            server.base_url + "/v1/files",
            content=body,
            headers={
                "authorization": f"Bearer {API_KEY}",
                "content-type": "multipart/form-data; boundary=XyZ",
            },
        )
        assert r.status_code == 200, r.text
        got = strict(BetaFileMetadata, r.json())
        assert (got.filename, got.size_bytes) == ("unnamed.txt", 2)


def test_upload_binary_exact_bytes(client: anthropic.Anthropic, server: ServerProcess) -> None:
    data = bytes(range(256)) * 4096 + b"\r\n--boundary-lookalike--\r\n"  # > 1 MB, spills to disk
    out = meta(client.beta.files.upload(file=("", data, "application/octet-stream")))
    assert out["size_bytes"] == len(data)
    assert blob(server, out["id"]).read_bytes() == data


def test_expires_in_seconds(client: anthropic.Anthropic) -> None:
    for seconds in (3600, 7_776_000):
        out = client.beta.files.upload(file=("e.txt", b"x"), expires_in_seconds=seconds)
        meta(out)
        assert out.expires_at is not None
        assert (out.expires_at - out.created_at).total_seconds() == seconds
    for bad in (3599, 7_776_001, 0, -5):
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.beta.files.upload(file=("e.txt", b"x"), expires_in_seconds=bad)
        assert error_of(exc)["message"].startswith("expires_in_seconds: must be between 3600 and 7776000")
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.files.upload(file=("e.txt", b"x"), expires_in_seconds="soon")  # type: ignore[arg-type]
    assert error_of(exc)["message"].startswith("expires_in_seconds:")


def test_filename_length_limit(client: anthropic.Anthropic) -> None:
    assert meta(client.beta.files.upload(file=("n" * 251 + ".txt", b"x")))["filename"] == "n" * 251 + ".txt"
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.files.upload(file=("n" * 256, b"x"))
    assert error_of(exc)["message"].startswith("file: the filename must be at most 255")


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b'{"file": "x"}', "Request body must be multipart/form-data"),
        ("multipart/form-data", b"", "Request body must be multipart/form-data"),  # no boundary
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="expires_in_seconds"\r\n\r\n3600\r\n--B--\r\n',
            "file: field required",
        ),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nx\r\n--B--\r\n',
            "purpose: unknown field",
        ),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n1\r\n'
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\n2\r\n--B--\r\n',
            "file: only one file",
        ),
        ("multipart/form-data; boundary=B", b"garbage without parts", "Invalid multipart body"),
    ],
)
def test_upload_bad_forms(server: ServerProcess, content_type: str, body: bytes, message: str) -> None:
    r = httpx.post(
        server.base_url + "/v1/files",
        content=body,
        headers={"authorization": f"Bearer {API_KEY}", "content-type": content_type},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"].startswith(message), r.json()


# -- download ------------------------------------------------------------------------------


def test_uploads_are_not_downloadable(client: anthropic.Anthropic) -> None:
    up = client.beta.files.upload(file=("secret.txt", b"s"))
    with pytest.raises(FileNotDownloadableError) as exc:
        client.beta.files.download(up.id)
    assert exc.value.status_code == 400
    err = error_of(exc)
    assert err["message"] == f"File '{up.id}' is not downloadable"
    assert err["details"] == {"error_code": "file_not_downloadable"}


async def test_output_round_trip_1mb(
    client: anthropic.Anthropic, server: ServerProcess, store: Store
) -> None:
    sid = session_id()
    data = os.urandom(1024 * 1024)
    out = await store.files.create_output(
        DEFAULT_WORKSPACE,
        sid,
        "nested/dir/report.bin",
        data,
        files_dir(server),
        mime_type="application/x-demo",
    )
    strict(BetaFileMetadata, out)
    assert out["filename"] == "report.bin"
    assert out["downloadable"] is True
    assert out["scope"] == {"type": "session", "id": sid}
    assert out["size_bytes"] == len(data) and out["mime_type"] == "application/x-demo"
    assert meta(client.beta.files.retrieve_metadata(out["id"])) == out

    resp = client.beta.files.download(out["id"])
    assert resp.read() == data
    assert resp.http_response.headers["content-type"].startswith("application/x-demo")
    assert resp.http_response.headers["content-length"] == str(len(data))
    assert "report.bin" in resp.http_response.headers["content-disposition"]


async def test_output_mime_guessed_and_name_cleaned(server: ServerProcess, store: Store) -> None:
    out = await store.files.create_output(
        DEFAULT_WORKSPACE, session_id(), "a/b/chart.png", b"\x89PNG", files_dir(server)
    )
    assert (out["filename"], out["mime_type"]) == ("chart.png", "image/png")
    long = await store.files.create_output(
        DEFAULT_WORKSPACE, session_id(), "x" * 400 + ".md", b"#", files_dir(server)
    )
    assert len(long["filename"]) == 255 and long["filename"].endswith(".md")


async def test_expired_file_is_404(client: anthropic.Anthropic, server: ServerProcess, store: Store) -> None:
    out = await store.files.create_output(
        DEFAULT_WORKSPACE, session_id(), "old.txt", b"old", files_dir(server)
    )
    up = client.beta.files.upload(file=("old.txt", b"old"), expires_in_seconds=3600)
    async with store.db.write() as conn:
        await conn.execute(
            files_table.update()
            .where(files_table.c.id.in_([out["id"], up.id]))
            .values(expires_at=now_us() - 1_000_000)
        )
    for file_id in (out["id"], up.id):
        with pytest.raises(FileExpiredError) as exc:
            client.beta.files.download(file_id)
        assert exc.value.status_code == 404
        err = error_of(exc)
        assert err["type"] == "not_found_error"
        assert err["details"] == {"error_code": "file_expired"}
        # The metadata stays readable, with the past expiry.
        got = client.beta.files.retrieve_metadata(file_id)
        meta(got)
        assert got.expires_at is not None and got.expires_at < datetime.now(UTC)
    with pytest.raises(NotFound) as nf:
        await store.files.copy_to_session(DEFAULT_WORKSPACE, up.id, session_id(), files_dir(server))
    assert nf.value.details == {"error_code": "file_expired"}


# -- session copies --------------------------------------------------------------------------


async def test_copy_to_session(client: anthropic.Anthropic, server: ServerProcess, store: Store) -> None:
    up = client.beta.files.upload(file=("input.csv", b"a,b\n", "text/csv"))
    sid = session_id()
    copy = await store.files.copy_to_session(DEFAULT_WORKSPACE, up.id, sid, files_dir(server))
    strict(BetaFileMetadata, copy)
    assert copy["id"] != up.id and copy["id"].startswith("file_")
    assert copy["scope"] == {"type": "session", "id": sid}
    assert copy["downloadable"] is False
    assert (copy["filename"], copy["mime_type"], copy["size_bytes"]) == ("input.csv", "text/csv", 4)
    assert await store.files.get(DEFAULT_WORKSPACE, copy["id"]) == copy
    scoped = client.beta.files.list(scope_id=sid)
    assert [meta(f)["id"] for f in scoped.data] == [copy["id"]] and scoped.next_page is None
    with pytest.raises(FileNotDownloadableError):
        client.beta.files.download(copy["id"])
    # The copy's bytes outlive the original.
    client.beta.files.delete(up.id)
    assert blob(server, copy["id"]).read_bytes() == b"a,b\n"
    assert meta(client.beta.files.retrieve_metadata(copy["id"]))["size_bytes"] == 4
    with pytest.raises(NotFound):
        await store.files.copy_to_session(DEFAULT_WORKSPACE, up.id, sid, files_dir(server))
    with pytest.raises(NotFound):
        await store.files.copy_to_session("wrkspc_elsewhere", copy["id"], sid, files_dir(server))


# -- delete ----------------------------------------------------------------------------------


def test_delete_removes_row_and_blob(client: anthropic.Anthropic, server: ServerProcess) -> None:
    up = client.beta.files.upload(file=("gone.txt", b"bye"))
    assert blob(server, up.id).exists()
    out = client.beta.files.delete(up.id)
    strict(BetaDeletedFile, out)
    assert out.model_dump() == {"id": up.id, "type": "file_deleted"}
    assert not blob(server, up.id).exists()
    for call in (
        lambda: client.beta.files.retrieve_metadata(up.id),
        lambda: client.beta.files.download(up.id),
        lambda: client.beta.files.delete(up.id),
    ):
        with pytest.raises(anthropic.NotFoundError) as exc:
            call()
        assert error_of(exc)["message"] == f"File '{up.id}' not found"
    assert client.beta.files.list(ids=[up.id]).data == []


def test_unknown_and_malformed_ids(client: anthropic.Anthropic) -> None:
    for file_id in ("file_nope", "file_../../etc", "not a file id"):
        with pytest.raises(anthropic.NotFoundError):
            client.beta.files.retrieve_metadata(file_id)
        with pytest.raises(anthropic.NotFoundError):
            client.beta.files.delete(file_id)


def test_path_refuses_unsafe_ids(tmp_path: Path) -> None:
    good = FileStore.path("file_01m80jyzvqrkej3xcwhadkh161", tmp_path)
    assert good.is_relative_to(tmp_path)
    for bad in ("../x", "file_../../etc/passwd", "file_", "sesn_abc", "file_ABC/def"):
        with pytest.raises(ValueError):
            FileStore.path(bad, tmp_path)


# -- list ------------------------------------------------------------------------------------


async def test_list_pages_by_scope(client: anthropic.Anthropic, server: ServerProcess, store: Store) -> None:
    sid = session_id()
    made = [
        (await store.files.create_output(DEFAULT_WORKSPACE, sid, f"out{i}.txt", b"x" * i, files_dir(server)))[
            "id"
        ]
        for i in range(7)
    ]
    seen: list[str] = []
    page = client.beta.files.list(scope_id=sid, limit=3)
    raw = client.beta.files.with_raw_response.list(scope_id=sid, limit=3).json()
    assert set(raw) == {"data", "next_page"}
    sizes = []
    while True:
        sizes.append(len(page.data))
        seen.extend(meta(f)["id"] for f in page.data)
        if not page.next_page:
            break
        assert page.next_page.startswith("page_")
        page = client.beta.files.list(scope_id=sid, limit=3, page=page.next_page)
    assert sizes == [3, 3, 1]
    assert seen == list(reversed(made))  # newest first, no duplicates, nothing missing
    assert [f.id for f in client.beta.files.list(scope_id=sid, limit=2)] == seen  # SDK auto-paging


def test_list_unscoped_includes_uploads(client: anthropic.Anthropic) -> None:
    ups = [client.beta.files.upload(file=(f"u{i}.txt", b"u")).id for i in range(3)]
    first = client.beta.files.list(limit=3)
    assert [meta(f)["id"] for f in first.data] == list(reversed(ups))
    assert len(client.beta.files.list(limit=1000).data) >= 3


def test_list_limits(client: anthropic.Anthropic) -> None:
    for _ in range(21):
        client.beta.files.upload(file=("d.txt", b"d"))
    assert len(client.beta.files.list().data) == 20
    for bad in (0, 1001):
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.beta.files.list(limit=bad)
        assert error_of(exc)["message"].startswith("limit:")
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.files.list(page="page_garbage")
    assert error_of(exc)["message"] == "invalid page cursor"


def test_list_by_ids(client: anthropic.Anthropic) -> None:
    a = client.beta.files.upload(file=("a.txt", b"a")).id
    b = client.beta.files.upload(file=("b.txt", b"b")).id
    got = client.beta.files.list(ids=[a, "file_unknown", b, a])
    assert [meta(f)["id"] for f in got.data] == [b, a]  # unknown dropped, duplicates once, newest first
    assert got.next_page is None
    hundred = [a] + [f"file_x{i}" for i in range(99)]
    assert [f.id for f in client.beta.files.list(ids=hundred).data] == [a]
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.files.list(ids=[*hundred, "file_one_more"])
    assert error_of(exc)["message"].startswith("ids: at most 100")
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.files.list(ids=[a], limit=5)
    assert error_of(exc)["message"].startswith("ids: cannot be combined")
    # A scope filter applies to ids too.
    assert client.beta.files.list(ids=[a], scope_id="sesn_other").data == []


# -- workspaces ------------------------------------------------------------------------------


async def test_other_workspace_sees_nothing(
    client: anthropic.Anthropic, server: ServerProcess, store: Store
) -> None:
    workspace_id = await store.keys.ensure_workspace("wrkspc_" + uuid.uuid4().hex, "other")
    plaintext, _ = await store.keys.create("other", workspace_id=workspace_id)
    up = client.beta.files.upload(file=("mine.txt", b"m"))
    out = await store.files.create_output(DEFAULT_WORKSPACE, session_id(), "o.txt", b"o", files_dir(server))
    with anthropic.Anthropic(base_url=server.base_url, api_key=plaintext, max_retries=0) as other:
        for file_id in (up.id, out["id"]):
            with pytest.raises(anthropic.NotFoundError):
                other.beta.files.retrieve_metadata(file_id)
            with pytest.raises(anthropic.NotFoundError):
                other.beta.files.download(file_id)
            with pytest.raises(anthropic.NotFoundError):
                other.beta.files.delete(file_id)
        assert other.beta.files.list(ids=[up.id, out["id"]]).data == []
        assert up.id not in {f.id for f in other.beta.files.list(limit=1000).data}
    assert blob(server, up.id).exists()
    assert client.beta.files.download(out["id"]).read() == b"o"


# -- store durability (unit, temporary SQLite) ------------------------------------------------


async def test_failed_insert_leaves_no_blob(tmp_path: Path) -> None:
    """A database failure after the blob is written removes the blob: no orphan, no broken row."""
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no tables at all
    try:
        with pytest.raises(sa.exc.OperationalError):
            await FileStore(db).create_output(
                DEFAULT_WORKSPACE, session_id(), "x.txt", b"x", tmp_path / "files"
            )
    finally:
        await db.close()
    assert [p for p in (tmp_path / "files").rglob("*") if p.is_file()] == []


async def test_store_round_trip_on_fresh_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    upgrade(url)  # the real migrations, as `hangar serve` applies them
    db = open_database(url)
    try:
        fs = FileStore(db)
        data = os.urandom(1024 * 1024)
        out = await fs.create_output("wrkspc_t", "sesn_t", "big.bin", data, tmp_path / "files")
        assert FileStore.path(out["id"], tmp_path / "files").read_bytes() == data
        assert await fs.get("wrkspc_t", out["id"]) == out
        assert await fs.get("wrkspc_other", out["id"]) is None
        assert await fs.delete("wrkspc_t", out["id"], tmp_path / "files")
        assert not FileStore.path(out["id"], tmp_path / "files").exists()
        assert await fs.get("wrkspc_t", out["id"]) is None
        assert not await fs.delete("wrkspc_t", out["id"], tmp_path / "files")
    finally:
        await db.close()
