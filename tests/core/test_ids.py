"""Identifiers: prefixed, 26 Crockford base32 symbols, sorted by creation time, not guessable."""
from __future__ import annotations

import base64
import random
import re
import time

from app import ids

CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
SHAPE = re.compile(r"^usr_[0-9a-hjkmnp-tv-z]{26}$")


def _reference(ms: int, rand: int) -> str:
    """The same 130 bits through the standard library's base32, mapped to Crockford's symbols."""
    raw = ((ms << 80 | rand) << 6).to_bytes(17, "big")
    return base64.b32encode(raw)[:26].decode().translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                                                                       CROCKFORD))


def test_encoding_matches_base32_of_time_then_randomness():
    rng = random.Random(7)
    cases = [(0, 0), ((1 << 48) - 1, (1 << 80) - 1), (1, 0), (0, 1)]
    cases += [(rng.getrandbits(48), rng.getrandbits(80)) for _ in range(2000)]
    for ms, rand in cases:
        assert ids._encode(ms, rand) == _reference(ms, rand)


def test_ids_have_their_shape_sort_by_time_and_do_not_repeat():
    made = []
    for _ in range(3):
        made.append(ids.new_id("usr"))
        time.sleep(0.002)
    assert all(SHAPE.match(value) for value in made)
    assert made == sorted(made)
    assert len({ids.new_id("usr") for _ in range(5000)}) == 5000


def test_request_ids_share_the_format():
    value = ids.new_request_id()
    assert re.match(r"^req_[0-9a-hjkmnp-tv-z]{26}$", value)
    ms_now = int(time.time() * 1000)
    decoded = int("".join(f"{CROCKFORD.index(c):05b}" for c in value[4:]), 2) >> 80
    assert abs(decoded - ms_now) < 5000
