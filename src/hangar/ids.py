"""Prefixed identifiers, generated in one place.

IDs are ``<prefix>_<26 chars>``: a 48-bit millisecond timestamp and 80 random bits in
Crockford base32 (ULID layout), so they sort by creation time within a prefix.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Final, Literal

_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"

Kind = Literal[
    "agent",
    "environment",
    "session",
    "thread",
    "event",
    "file",
    "resource",
    "workspace",
    "api_key",
    "work",
    "outcome",
    "vault",
    "credential",
    "page",
    "tunnel",
    "tunnel_certificate",
    "tunnel_token",
]

PREFIXES: Final[dict[Kind, str]] = {
    "agent": "agent",
    "environment": "env",
    "session": "sesn",
    "thread": "sthr",
    "event": "sevt",
    "file": "file",
    "resource": "sesrsc",
    "workspace": "wrkspc",
    "api_key": "apikey",
    "work": "work",
    "outcome": "outc",
    "vault": "vlt",
    "credential": "vcrd",
    "page": "page",
    "tunnel": "tnl",
    "tunnel_certificate": "tcrt",
    "tunnel_token": "tnltok",
}


# RFC 4648 base32 → Crockford's alphabet (lowercase, no i l o u), character for character.
_TO_CROCKFORD: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET)


def _encode(value: int, length: int) -> str:
    """``value`` as ``length`` Crockford base32 digits, most significant first."""
    nbytes = (length * 5 + 7) // 8
    pad = nbytes * 8 - length * 5
    # base32 reads 5 bits per character from the left: left-align the value in whole bytes
    # and the first `length` characters are its digits (the C codec beats a Python loop).
    raw = (value << pad).to_bytes(nbytes, "big")
    return base64.b32encode(raw).decode()[:length].translate(_TO_CROCKFORD)


def new_id(kind: Kind) -> str:
    millis = time.time_ns() // 1_000_000
    body = _encode(millis, 10) + _encode(secrets.randbits(80), 16)
    return f"{PREFIXES[kind]}_{body}"


def has_prefix(value: str, kind: Kind) -> bool:
    prefix = PREFIXES[kind] + "_"
    return value.startswith(prefix) and len(value) > len(prefix)
