"""MCP tunnels on the wire (API §1.10, BEHAVIOUR §16): request parsing, certificate checks and
the response objects (``BetaTunnel``, ``BetaTunnelToken``, ``BetaTunnelCertificate``).

A certificate is accepted when the PEM text holds exactly one ``CERTIFICATE`` block (and no
other PEM block, in particular no private key), is at most 8 KB, parses as X.509 and says it
is a CA (``basicConstraints CA:TRUE``). Its fingerprint is the lowercase hex SHA-256 of its DER
encoding; ``expires_at`` is its ``notAfter`` (``null`` for the RFC 5280 "no well-defined
expiration" value ``99991231235959Z``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import Field

from hangar.errors import InvalidRequest
from hangar.wire.common import Strict, parse, ts

DISPLAY_NAME_MAX = 255
REASON_MAX = 1024
CERTIFICATE_MAX_BYTES = 8192
TUNNELS_PER_WORKSPACE = 10
CERTIFICATES_PER_TUNNEL = 2
LIST_LIMIT_MAX = 1000

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END ([A-Z0-9 ]+)-----", re.DOTALL)
_NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


class TunnelCreate(Strict):
    display_name: str | None = Field(default=None, min_length=1, max_length=DISPLAY_NAME_MAX)


class TokenRotate(Strict):
    reason: str | None = Field(default=None, max_length=REASON_MAX)


class CertificateCreate(Strict):
    ca_certificate_pem: str


def parse_tunnel_create(body: dict[str, Any]) -> TunnelCreate:
    return parse(TunnelCreate, body)


def parse_token_rotate(body: dict[str, Any]) -> TokenRotate:
    return parse(TokenRotate, body)


@dataclass(frozen=True)
class NewCertificate:
    pem: str
    """The certificate block alone, normalised (what the relay client trusts)."""
    fingerprint: str
    expires_at: int | None
    """Microseconds since the epoch, or ``None`` for a certificate without an expiry."""


def _bad_pem(message: str) -> InvalidRequest:
    return InvalidRequest(f"ca_certificate_pem: {message}")


def parse_certificate_create(body: dict[str, Any]) -> NewCertificate:
    text = parse(CertificateCreate, body).ca_certificate_pem
    if len(text.encode()) > CERTIFICATE_MAX_BYTES:
        raise _bad_pem(f"must be at most {CERTIFICATE_MAX_BYTES} bytes (8 KB)")
    if "PRIVATE KEY" in text:
        raise _bad_pem("must not contain private key material")
    blocks = _PEM_BLOCK.findall(text)
    if text.count("-----BEGIN ") != len(blocks) or any(begin != end for begin, _, end in blocks):
        raise _bad_pem("is not well-formed PEM")
    if not blocks:
        raise _bad_pem("must contain one PEM CERTIFICATE block")
    if len(blocks) > 1:
        raise _bad_pem(f"must contain exactly one PEM CERTIFICATE block, found {len(blocks)} PEM blocks")
    label, payload, _ = blocks[0]
    if label != "CERTIFICATE":
        raise _bad_pem(f'must contain a PEM CERTIFICATE block, found "{label}"')
    pem = f"-----BEGIN CERTIFICATE-----\n{payload}\n-----END CERTIFICATE-----\n"
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise _bad_pem("is not a valid X.509 certificate") from exc
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError as exc:  # a malformed extension
        raise _bad_pem(f"has an invalid extension: {exc}") from exc
    if constraints is None or not constraints.ca:
        raise _bad_pem("is not a CA certificate (basicConstraints CA:TRUE is required)")
    not_after = cert.not_valid_after_utc
    expires = None if not_after >= _NO_EXPIRY else int(not_after.timestamp()) * 1_000_000
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    return NewCertificate(cert.public_bytes(Encoding.PEM).decode(), fingerprint, expires)


# -- objects -----------------------------------------------------------------------------------


def tunnel_object(
    tunnel_id: str, display_name: str | None, domain: str, created_at: int, archived_at: int | None
) -> dict[str, Any]:
    return {
        "type": "tunnel",
        "id": tunnel_id,
        "display_name": display_name,
        "domain": domain,
        "created_at": ts(created_at),
        "archived_at": ts(archived_at),
    }


def token_object(token_id: str, token: str) -> dict[str, Any]:
    return {"type": "tunnel_token", "id": token_id, "tunnel_token": token}


def certificate_object(
    certificate_id: str,
    tunnel_id: str,
    fingerprint: str,
    expires_at: int | None,
    created_at: int,
    archived_at: int | None,
) -> dict[str, Any]:
    return {
        "type": "tunnel_certificate",
        "id": certificate_id,
        "tunnel_id": tunnel_id,
        "fingerprint": fingerprint,
        "expires_at": ts(expires_at),
        "created_at": ts(created_at),
        "archived_at": ts(archived_at),
    }
