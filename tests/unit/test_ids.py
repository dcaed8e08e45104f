"""Prefixed ids: format, ordering by time, and the base32 encoding against a reference."""

from __future__ import annotations

import random
import time

from hangar.ids import PREFIXES, _encode, has_prefix, new_id

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def reference(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def test_encoding_matches_the_reference() -> None:
    rng = random.Random(7)
    for length in (1, 10, 16, 26):
        for _ in range(2000):
            value = rng.getrandbits(length * 5)
            assert _encode(value, length) == reference(value, length)


def test_ids_have_prefix_and_sort_by_time() -> None:
    first = new_id("session")
    time.sleep(0.002)
    second = new_id("session")
    assert first.startswith("sesn_") and len(first) == len("sesn_") + 26
    assert first < second
    assert has_prefix(first, "session") and not has_prefix(first, "environment")
    assert set(first[5:]) <= set(CROCKFORD)
    assert len({new_id("event") for _ in range(10_000)}) == 10_000
    assert PREFIXES["event"] == "sevt"
