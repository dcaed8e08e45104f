"""Routes: /v1/files (``client.beta.files``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from tempfile import SpooledTemporaryFile
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

import anyio
from fastapi import Depends, Request
from fastapi.responses import StreamingResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from hangar.errors import InvalidRequest
from hangar.http.auth import Principal, principal
from hangar.http.deps import page_envelope, query_int, query_list, services
from hangar.http.routing import api_router
from hangar.store.files import CHUNK, expired, not_found
from hangar.wire import files as wire

router = api_router()

Caller = Annotated[Principal, Depends(principal)]
FORM_FIELDS = ("file", "expires_in_seconds")
FIELD_MAX = 1024  # bytes of a non-file form field
SPOOL_MAX = 1024 * 1024  # larger uploads spill from memory to a temporary file


class _Upload:
    """The parts of an upload form: one ``file`` part and the optional ``expires_in_seconds``.

    Parsed here rather than with ``Request.form()`` because Starlette treats a part without a
    ``filename`` as a text field (decoded, capped at 1 MB), while the API accepts a ``file``
    part with an absent filename and names it ``unnamed``.
    """

    def __init__(self) -> None:
        self.file: SpooledTemporaryFile[bytes] | None = None
        self.filename: str | None = None
        self.content_type: str | None = None
        self.fields: dict[str, bytearray] = {}
        self._name = ""
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = b""
        self._value = b""
        self._sink: SpooledTemporaryFile[bytes] | bytearray | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def parse(self, body: bytes, boundary: bytes) -> None:
        def on_header_field(data: bytes, start: int, end: int) -> None:
            self._field += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            self._value += data[start:end]

        def on_header_end() -> None:
            self._headers.append((self._field.strip().lower(), self._value.strip()))
            self._field = self._value = b""

        def on_part_data(data: bytes, start: int, end: int) -> None:
            if isinstance(self._sink, bytearray):
                if len(self._sink) + end - start > FIELD_MAX:
                    raise InvalidRequest(f"{self._name}: value too long")
                self._sink.extend(data[start:end])
            elif self._sink is not None:
                self._sink.write(data[start:end])

        def on_part_end() -> None:
            self._headers, self._sink = [], None

        parser = MultipartParser(
            boundary,
            {
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": self._part_started,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        try:
            parser.write(body)
            parser.finalize()
        except FormParserError as exc:
            raise InvalidRequest(f"Invalid multipart body: {exc}") from exc
        if self.file is not None:
            self.file.seek(0)

    def _part_started(self) -> None:
        headers = dict(self._headers)
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = _decode(options.get(b"name", b""))
        if name not in FORM_FIELDS:
            raise InvalidRequest(f"{name or 'multipart part'}: unknown field")
        if name == "file":
            if self.file is not None:
                raise InvalidRequest("file: only one file may be uploaded per request")
            self.file = SpooledTemporaryFile(max_size=SPOOL_MAX)  # noqa: SIM115 (closed by close())
            self.filename = _decode(options[b"filename"]) if b"filename" in options else None
            ctype = headers.get(b"content-type")
            self.content_type = _decode(ctype) if ctype else None
            self._sink = self.file
        else:
            if name in self.fields:
                raise InvalidRequest(f"{name}: given more than once")
            self.fields[name] = self._sink = bytearray()
        self._name = name


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@router.post("/v1/files")
async def upload_file(request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype.lower() != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidRequest("Request body must be multipart/form-data with a `file` part")
    body = await request.body()
    form = _Upload()
    try:
        await anyio.to_thread.run_sync(form.parse, body, params[b"boundary"])
        if form.file is None:
            raise InvalidRequest("file: field required")
        raw_expires = form.fields.get("expires_in_seconds")
        expires_in = wire.parse_expires_in(_decode(bytes(raw_expires)) if raw_expires is not None else None)
        mime = wire.resolve_mime(form.content_type, form.filename or "")
        return await svc.store.files.create(
            caller.workspace_id,
            filename=wire.clean_filename(form.filename, mime),
            mime_type=mime,
            source=form.file,
            files_dir=svc.settings.files_dir,
            expires_in_s=expires_in,
        )
    finally:
        form.close()


@router.get("/v1/files")
async def list_files(request: Request, caller: Caller) -> dict[str, Any]:
    store = services(request).store.files
    scope_id = request.query_params.get("scope_id") or None
    ids = list(dict.fromkeys(query_list(request, "ids")))
    if ids:
        if "page" in request.query_params or "limit" in request.query_params:
            raise InvalidRequest("ids: cannot be combined with page or limit")
        if len(ids) > wire.IDS_MAX:
            raise InvalidRequest(f"ids: at most {wire.IDS_MAX} ids are allowed, got {len(ids)}")
        return page_envelope(await store.by_ids(caller.workspace_id, ids, scope_id=scope_id), None)
    data, next_page = await store.page(
        caller.workspace_id,
        scope_id=scope_id,
        limit=query_int(request, "limit", wire.LIMIT_DEFAULT, 1, wire.LIMIT_MAX),
        page=request.query_params.get("page") or None,
    )
    return page_envelope(data, next_page)


@router.get("/v1/files/{file_id}")
async def retrieve_file_metadata(file_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    found = await services(request).store.files.get(caller.workspace_id, file_id)
    if found is None:
        raise not_found(file_id)
    return found


async def _stream(fh: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await anyio.to_thread.run_sync(fh.read, CHUNK):
            yield chunk
    finally:
        fh.close()


@router.get("/v1/files/{file_id}/content")
async def download_file(file_id: str, request: Request, caller: Caller) -> StreamingResponse:
    svc = services(request)
    record = await svc.store.files.record(caller.workspace_id, file_id)
    if record is None:
        raise not_found(file_id)
    if record.expired():
        raise expired(file_id)
    if not record.downloadable:
        raise InvalidRequest(f"File '{file_id}' is not downloadable", error_code="file_not_downloadable")
    fh = await svc.store.files.open(record, svc.settings.files_dir)
    disposition = f"attachment; filename*=UTF-8''{quote(record.filename, safe='')}"
    return StreamingResponse(
        _stream(fh),
        media_type=record.mime_type,
        headers={"content-length": str(record.size_bytes), "content-disposition": disposition},
    )


@router.delete("/v1/files/{file_id}")
async def delete_file(file_id: str, request: Request, caller: Caller) -> dict[str, Any]:
    svc = services(request)
    if not await svc.store.files.delete(caller.workspace_id, file_id, svc.settings.files_dir):
        raise not_found(file_id)
    return wire.deleted_object(file_id)
