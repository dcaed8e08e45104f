"""The wire protocol between Hangar's :class:`~hangar.tunnel.hub.TunnelHub` and ``hangar tunnel``.

One WebSocket, dialled by the client to ``/v1/tunnels/connect`` with
``Authorization: Bearer <tunnel token>``, carries any number of HTTP exchanges at once.

**Control messages** are JSON text frames:

- hub → client ``{"type": "hello", "tunnel_id", "domain", "ca_certificates": [pem, …]}`` once
  the token is accepted, and ``{"type": "certificates", "ca_certificates": […]}`` whenever the
  tunnel's certificates change (the client verifies ``https://`` upstreams against them).

**Stream frames** are binary: a 5-byte header (stream id, ``uint32`` big-endian; kind, ``uint8``)
and a payload. Stream ids are chosen by the hub.

======== ============= ==================================================================
kind     direction     payload
======== ============= ==================================================================
HEAD     hub → client  JSON ``{"route", "method", "target", "headers": [[k, v], …], "body"}``
DATA     both          request (hub → client) or response (client → hub) body bytes
END      both          the body is complete
RESPONSE client → hub  JSON ``{"status", "headers": [[k, v], …]}``
ERROR    client → hub  JSON ``{"message", "reached"}``: the exchange failed; ``reached`` says
                       whether the request may have got to the upstream server
CANCEL   hub → client  the caller went away: abort the upstream request
======== ============= ==================================================================

**Close codes** the hub uses: ``4401`` unknown or rotated-out token, ``4410`` tunnel archived
(neither is worth reconnecting for), ``1001`` Hangar shutting down.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any

CONNECT_PATH = "/v1/tunnels/connect"
CHUNK_BYTES = 64 * 1024
"""Largest DATA payload; bigger bodies are split."""

CLOSE_BAD_TOKEN = 4401
CLOSE_ARCHIVED = 4410
CLOSE_GOING_AWAY = 1001
FATAL_CLOSE_CODES = frozenset({CLOSE_BAD_TOKEN, CLOSE_ARCHIVED})

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
"""Headers that describe one hop, not the message: never relayed."""

_HEADER = struct.Struct("!IB")


class Kind(enum.IntEnum):
    HEAD = 1
    DATA = 2
    END = 3
    RESPONSE = 4
    ERROR = 5
    CANCEL = 6


class ProtocolError(Exception):
    """A frame that does not follow this protocol."""


def frame(stream_id: int, kind: Kind, payload: bytes = b"") -> bytes:
    return _HEADER.pack(stream_id, kind) + payload


def json_frame(stream_id: int, kind: Kind, value: Any) -> bytes:
    return frame(stream_id, kind, json.dumps(value, separators=(",", ":")).encode())


def parse_frame(data: bytes) -> tuple[int, Kind, bytes]:
    if len(data) < _HEADER.size:
        raise ProtocolError("frame shorter than its header")
    stream_id, kind = _HEADER.unpack_from(data)
    try:
        return stream_id, Kind(kind), data[_HEADER.size :]
    except ValueError as exc:
        raise ProtocolError(f"unknown frame kind {kind}") from exc


def load_json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError("a JSON payload does not parse") from exc
    if not isinstance(value, dict):
        raise ProtocolError("a JSON payload is not an object")
    return value


def end_to_end(headers: list[tuple[bytes, bytes]]) -> list[list[str]]:
    """``headers`` without the hop-by-hop ones, as JSON-friendly pairs (latin-1, as HTTP/1.1)."""
    return [
        [k.decode("latin-1"), v.decode("latin-1")]
        for k, v in headers
        if k.decode("latin-1").lower() not in HOP_BY_HOP
    ]


def header_pairs(value: Any) -> list[tuple[str, str]]:
    """The ``headers`` of a HEAD / RESPONSE payload, checked."""
    if not isinstance(value, list):
        raise ProtocolError("headers must be a list")
    out: list[tuple[str, str]] = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ProtocolError("a header must be a [name, value] pair of strings")
        out.append((pair[0], pair[1]))
    return out
