"""``environment_variable`` credentials: placeholders in the sandbox, real values at the egress proxy.

The sandbox never holds a credential's value. Its environment gets ``SECRET_NAME=<placeholder>``,
an opaque random string (``hangar-ph-`` and 32 hex digits) made per session and credential
(:meth:`Injector.update`). The :class:`~hangar.sandbox.proxy.EgressProxy` swaps the placeholder
for the value in the requests it *intercepts*:

- which requests: plain ``http://`` requests and ``CONNECT`` tunnels to a host the credential
  covers (:meth:`EnvCredential.covers`: its ``networking.allowed_hosts``, or any host the
  environment permits when the credential's networking is ``unrestricted``). A tunnel is then
  not a tunnel: the proxy answers the TLS handshake itself with a leaf certificate from the
  session's CA (:mod:`hangar.sandbox.ca`, trusted inside the sandbox) and talks TLS to the real
  host, verifying its certificate. Any other host gets an untouched tunnel, and the placeholder
  travels as is;
- where: in header values when ``injection_location.header`` (a ``Basic`` credential is decoded,
  substituted and encoded again), in the body when ``injection_location.body`` (the body is read
  whole, up to :data:`MAX_BODY_BYTES`, and sent with a fixed ``Content-Length``; a chunked body
  is de-chunked). Not in the request line (URL) and not in a compressed body.

An intercepted connection carries one request: the proxy sends it upstream with
``Connection: close`` and copies the response back byte for byte until the host closes, then
closes the client connection (clients reconnect). ``Expect: 100-continue`` is answered by the
proxy itself. Responses are never changed. Nothing here logs a value or a request's content.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangar.errors import NotFound
from hangar.sandbox.ca import SessionCA, upstream_context
from hangar.sandbox.proxy import ProxyError, host_matches

if TYPE_CHECKING:
    from hangar.store.vaults import VaultStore

PLACEHOLDER_PREFIX = "hangar-ph-"
MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest request body an intercepted request may have (413 beyond)."""
BODY_TIMEOUT_S = 60.0
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"transfer-encoding",
        b"content-length",
    }
)


@dataclass(frozen=True)
class EnvCredential:
    """An active ``environment_variable`` credential of a session's vaults, value decrypted (in
    memory only; ``repr`` leaves it out)."""

    id: str
    vault_id: str
    secret_name: str
    secret_value: str = field(repr=False)
    allowed_hosts: tuple[str, ...] | None
    """``networking.allowed_hosts``; ``None`` when the credential's networking is unrestricted."""
    header: bool = True
    body: bool = True

    @classmethod
    def from_auth(cls, credential_id: str, vault_id: str, auth: dict[str, Any]) -> EnvCredential:
        """From a credential's full ``auth`` (``VaultStore.credential_secret``)."""
        networking = auth.get("networking") or {}
        hosts = networking.get("allowed_hosts") if networking.get("type") == "limited" else None
        location = auth.get("injection_location") or {}
        return cls(
            id=credential_id,
            vault_id=vault_id,
            secret_name=str(auth["secret_name"]),
            secret_value=str(auth["secret_value"]),
            allowed_hosts=tuple(str(h) for h in hosts) if hosts is not None else None,
            header=bool(location.get("header", True)),
            body=bool(location.get("body", True)),
        )

    def covers(self, host: str) -> bool:
        """The value may be sent to ``host`` (the environment's policy permitting)."""
        if self.allowed_hosts is None:
            return True
        return any(host_matches(host, entry) for entry in self.allowed_hosts)


async def load_env_credentials(
    vaults: VaultStore, workspace_id: str, vault_ids: Sequence[str]
) -> list[EnvCredential]:
    """The active ``environment_variable`` credentials of ``vault_ids``, values decrypted (one
    per secret name: the first vault listed wins). Keep them in memory only."""
    if not vault_ids:
        return []
    out: list[EnvCredential] = []
    names: set[str] = set()
    for ref in await vaults.credentials_for_vaults(workspace_id, list(vault_ids)):
        if ref.type != "environment_variable" or ref.secret_name is None or ref.secret_name in names:
            continue
        try:
            auth = await vaults.credential_secret(workspace_id, ref.id)
        except NotFound:
            continue  # archived meanwhile
        names.add(ref.secret_name)
        out.append(EnvCredential.from_auth(ref.id, ref.vault_id, auth))
    return out


@dataclass(frozen=True)
class Binding:
    """A credential with its session's placeholder."""

    credential: EnvCredential
    placeholder: str


@dataclass(frozen=True)
class HostUnreachable:
    """A credential's allowed host that the environment's policy refused (reported once per
    credential as ``credential_host_unreachable_error``)."""

    credential_id: str
    vault_id: str
    secret_name: str
    host: str

    def error(self) -> dict[str, Any]:
        """The ``session.error`` ``error`` object."""
        return {
            "type": "credential_host_unreachable_error",
            "message": (
                f"The environment's network policy does not allow {self.host}, an allowed host of "
                f"credential {self.credential_id} ({self.secret_name}); the secret cannot be used there."
            ),
            "credential_id": self.credential_id,
            "vault_id": self.vault_id,
            "retry_status": {"type": "exhausted"},
        }


class Injector:
    """A session's credentials, placeholders, CA and upstream TLS settings, as the proxy uses them.

    ``update`` may be called any time (a rotated value applies to the next request); a
    credential keeps its placeholder for the injector's life."""

    def __init__(self, session_id: str, *, upstream_ca_file: Path | None = None) -> None:
        self.session_id = session_id
        self.ca = SessionCA(session_id)
        self.upstream: ssl.SSLContext = upstream_context(upstream_ca_file)
        self._placeholders: dict[str, str] = {}
        self._bindings: tuple[Binding, ...] = ()
        self._reported: set[str] = set()
        self._unreachable: list[HostUnreachable] = []

    def update(self, credentials: Iterable[EnvCredential]) -> dict[str, str]:
        """Set the credentials; returns the sandbox's environment entries (name → placeholder)."""
        bindings = []
        for cred in credentials:
            placeholder = self._placeholders.get(cred.id)
            if placeholder is None:
                placeholder = PLACEHOLDER_PREFIX + secrets.token_hex(16)
                self._placeholders[cred.id] = placeholder
            bindings.append(Binding(cred, placeholder))
        self._bindings = tuple(bindings)
        return self.environment()

    def environment(self) -> dict[str, str]:
        return {b.credential.secret_name: b.placeholder for b in self._bindings}

    @property
    def bindings(self) -> tuple[Binding, ...]:
        return self._bindings

    def for_host(self, host: str) -> list[Binding]:
        """The credentials whose value may go to ``host``: requests there are intercepted."""
        return [b for b in self._bindings if b.credential.covers(host)]

    def note_denied(self, host: str) -> None:
        """The environment's policy refused ``host``: a credential limited to it is unusable."""
        for b in self._bindings:
            cred = b.credential
            if cred.allowed_hosts is not None and cred.covers(host) and cred.id not in self._reported:
                self._reported.add(cred.id)
                self._unreachable.append(HostUnreachable(cred.id, cred.vault_id, cred.secret_name, host))

    def take_unreachable(self) -> list[HostUnreachable]:
        """The unreachable-host reports not taken yet."""
        out, self._unreachable = self._unreachable, []
        return out

    async def relay(
        self,
        head: bytes,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        up_writer: asyncio.StreamWriter,
        bindings: Sequence[Binding],
    ) -> None:
        """:func:`relay_request` (what the proxy calls)."""
        await relay_request(head, client_reader, client_writer, up_writer, bindings)


# ---------------------------------------------------------------------- one intercepted request


def substitute_header(value: bytes, bindings: Sequence[Binding]) -> bytes:
    """A header value with every placeholder replaced (inside ``Basic`` credentials too)."""
    for b in bindings:
        value = value.replace(b.placeholder.encode(), b.credential.secret_value.encode())
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() == b"basic" and token:
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return value
        replaced = substitute_body(decoded, bindings, force=True)
        if replaced != decoded:
            return scheme + b" " + base64.b64encode(replaced)
    return value


def substitute_body(body: bytes, bindings: Sequence[Binding], *, force: bool = False) -> bytes:
    for b in bindings:
        if force or b.credential.body:
            body = body.replace(b.placeholder.encode(), b.credential.secret_value.encode())
    return body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProxyError(400, "Bad Request", "hangar egress proxy: malformed chunked body") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers: dropped
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise _too_large()
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _too_large() -> ProxyError:
    return ProxyError(
        413,
        "Content Too Large",
        f"hangar egress proxy: a request carrying a credential may have at most {MAX_BODY_BYTES} body bytes",
    )


async def relay_request(
    head: bytes,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_writer: asyncio.StreamWriter,
    bindings: Sequence[Binding],
) -> None:
    """Read one request (``head`` already read, in origin form) and its body from the client,
    substitute placeholders and send it upstream with ``Connection: close``. The caller then
    copies the response back. Raises :class:`ProxyError` for a request it cannot relay."""
    lines = head.split(b"\r\n")
    request_line, headers = lines[0], [line for line in lines[1:] if line]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise ProxyError(400, "Bad Request", "hangar egress proxy: malformed request line")
    kept: list[bytes] = []
    length: int | None = None
    chunked = expect = False
    header_bindings = [b for b in bindings if b.credential.header]
    for line in headers:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProxyError(400, "Bad Request", "hangar egress proxy: malformed header line")
        key = name.strip().lower()
        if key == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise ProxyError(400, "Bad Request", "hangar egress proxy: bad Content-Length") from None
            if length < 0:
                raise ProxyError(400, "Bad Request", "hangar egress proxy: bad Content-Length")
        elif key == b"transfer-encoding":
            chunked = chunked or b"chunked" in value.lower()
        elif key == b"expect":
            expect = b"100-continue" in value.lower()
        if key in _HOP_BY_HOP:
            continue
        kept.append(name + b":" + substitute_header(value, header_bindings) if header_bindings else line)
    if length is not None and length > MAX_BODY_BYTES:
        raise _too_large()  # before `100 Continue`, so the client never starts sending the body
    if expect and (chunked or length):
        client_writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await client_writer.drain()
    async with asyncio.timeout(BODY_TIMEOUT_S):
        if chunked:
            body = await _read_chunked(client_reader)
        elif length:
            body = await client_reader.readexactly(length)
        else:
            body = b""
    body = substitute_body(body, bindings)
    method = parts[0].upper()
    if body or chunked or length is not None or method in (b"POST", b"PUT", b"PATCH"):
        kept.append(b"Content-Length: " + str(len(body)).encode())
    up_writer.write(b"\r\n".join([request_line, *kept, b"Connection: close", b"", b""]) + body)
    await up_writer.drain()
