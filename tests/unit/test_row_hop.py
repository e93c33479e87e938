"""The compiled row stepping (mysqlgate/protocol/_scan.c) against its pure-Python
reference (results.py_hop_rows): the same answers on the same buffers, whatever the
rows, the cut and the kind of buffer. test_results.py runs the whole scanner with each.

The extension must be built here (scripts/test.sh installs a compiler): a missing one
fails these tests rather than skipping them."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mysqlgate.protocol import _scan
from mysqlgate.protocol.framing import MAX_PACKET_PAYLOAD
from mysqlgate.protocol.results import py_hop_rows


def packet(payload_len: int, lead: int, seq: int) -> bytes:
    body = bytes((lead,)) + b"r" * (payload_len - 1) if payload_len else b""
    return payload_len.to_bytes(3, "little") + bytes((seq % 256,)) + body


def random_stream(rng: random.Random) -> bytes:
    """Rows of assorted sizes, now and then a packet that stops the stepping: empty,
    0xFE or 0xFF first, or a header claiming 16 MiB (its payload cut off by the end)."""
    parts = []
    for seq in range(rng.randint(0, 40)):
        roll = rng.random()
        if roll < 0.04:
            parts.append(packet(0, 0, seq))
        elif roll < 0.10:
            parts.append(packet(rng.choice((1, 5, 7, 9, 100)), rng.choice((0xFE, 0xFF)), seq))
        elif roll < 0.13:
            parts.append(MAX_PACKET_PAYLOAD.to_bytes(3, "little") + bytes((seq,))
                         + bytes((rng.choice((0, 0xFE, 0xFF)),)) + b"r" * rng.randint(0, 300))
            break
        else:
            lead = rng.choice((0x00, 0x01, 0xFB, 0xFC, 0xFD, 0x41))
            parts.append(packet(rng.choice((1, 2, 3, 4, 5, 250, 1003, rng.randint(1, 5000))),
                                lead, seq))
    return b"".join(parts)


def test_compiled_and_python_step_alike_over_random_streams() -> None:
    rng = random.Random(20261126)
    stopped_early = cut_rows = 0
    for _ in range(4000):
        data = random_stream(rng)
        start = rng.randint(0, min(len(data), 8))
        size = rng.randint(start, len(data))
        buf = rng.choice((bytes, bytearray, memoryview))(data)
        expected = py_hop_rows(data, start, size)
        assert _scan.hop_rows(buf, start, size) == expected, (data[:40], start, size)
        stopped_early += expected[0] < size
        cut_rows += expected[4] > 0
    # The streams reach every way out of the loop, or the comparison proves little.
    assert stopped_early > 500 and cut_rows > 500, (stopped_early, cut_rows)


@pytest.mark.parametrize("hop", [py_hop_rows, _scan.hop_rows], ids=["python", "compiled"])
def test_each_way_out_of_the_rows(hop: Callable[..., tuple[int, int, int, bool, int]]) -> None:
    rows = packet(10, 0x41, 1) + packet(3, 0xFB, 2)
    # Two rows, then the closing EOF: stop before it, with the last row's header known.
    eof = packet(5, 0xFE, 3)
    assert hop(rows + eof, 0, len(rows + eof)) == (len(rows), 2, 14, False, 0)
    # ERR, or an empty packet: the same.
    assert hop(rows + packet(9, 0xFF, 3), 0, len(rows) + 13)[:2] == (len(rows), 2)
    assert hop(rows + packet(0, 0, 3), 0, len(rows) + 4) == (len(rows), 2, 14, False, 0)
    # A header not all here: stop before it.
    assert hop(rows + eof[:3], 0, len(rows) + 3) == (len(rows), 2, 14, False, 0)
    # A header and one payload byte: the row is stepped over, 9 of its bytes owed.
    assert hop(rows + packet(10, 0x41, 3), 0, len(rows) + 5) == (len(rows) + 5, 3, len(rows),
                                                                  False, 9)
    # A row starting 0xFE with 16 MiB of payload is a row; its continuation is the caller's.
    big = packet(MAX_PACKET_PAYLOAD, 0xFE, 3) + packet(2, 0x41, 4)
    data = rows + big
    assert hop(data, 0, len(data)) == (len(rows) + 4 + MAX_PACKET_PAYLOAD, 3, len(rows),
                                       True, 0)
    # Cut inside it: stepped over as far as it goes, the rest owed.
    assert hop(data, 0, len(rows) + 1000) == (len(rows) + 1000, 3, len(rows), True,
                                              4 + MAX_PACKET_PAYLOAD - 1000)
    # From an offset, and with nothing to do.
    assert hop(data, len(packet(10, 0x41, 1)), len(rows)) == (len(rows), 1, 14, False, 0)
    assert hop(b"", 0, 0) == (0, 0, -1, False, 0)


def test_compiled_refuses_positions_outside_the_buffer() -> None:
    data = packet(10, 0x41, 1) * 3
    for pos, size in ((-1, 10), (5, 4), (0, len(data) + 1)):
        with pytest.raises(ValueError):
            _scan.hop_rows(data, pos, size)
    with pytest.raises(TypeError):
        _scan.hop_rows("not bytes", 0, 0)
    with pytest.raises(TypeError):
        _scan.hop_rows(data, 0)
