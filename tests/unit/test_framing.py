"""framing.py: packet headers, sequence ids, the 16 MiB split and its reassembly."""

from __future__ import annotations

import random

import pytest

from mysqlgate.protocol.errors import ProtocolViolation
from mysqlgate.protocol.framing import (
    HEADER_SIZE,
    MAX_PACKET_PAYLOAD,
    Packet,
    PacketAssembler,
    encode_packet,
    header,
    join_payload,
)

from .wire import FULL


def big(size: int, lead: bytes = b"") -> bytes:
    """A payload of `size` bytes whose content shows where each byte came from."""
    body = lead + bytes(range(256)) * (size // 256 + 1)
    return body[:size]


@pytest.mark.parametrize(
    ("length", "seq", "expected"),
    [
        (0, 0, b"\x00\x00\x00\x00"),
        (1, 1, b"\x01\x00\x00\x01"),
        (0x123456, 7, b"\x56\x34\x12\x07"),
        (0xFFFFFF, 255, b"\xff\xff\xff\xff"),
        (5, 256, b"\x05\x00\x00\x00"),  # the sequence id is one byte
        (5, 257, b"\x05\x00\x00\x01"),
    ],
)
def test_header(length: int, seq: int, expected: bytes) -> None:
    assert header(length, seq) == expected
    assert MAX_PACKET_PAYLOAD == 0xFFFFFF and HEADER_SIZE == 4


@pytest.mark.parametrize(
    ("size", "parts"),
    [
        (0, [0]),
        (3, [3]),
        (FULL - 1, [FULL - 1]),
        (FULL, [FULL, 0]),  # a full packet must be followed by an empty one
        (FULL + 1, [FULL, 1]),
        (2 * FULL, [FULL, FULL, 0]),
        (2 * FULL + 5, [FULL, FULL, 5]),
    ],
)
@pytest.mark.parametrize("seq", [3, 255])
def test_encode_packet_splits_at_16_mib(size: int, parts: list[int], seq: int) -> None:
    payload = big(size)
    data, next_seq = encode_packet(payload, seq)
    assert next_seq == (seq + len(parts)) % 256
    expected = bytearray()
    pos = 0
    for i, length in enumerate(parts):
        expected += header(length, (seq + i) % 256) + payload[pos : pos + length]
        pos += length
    assert len(data) == size + HEADER_SIZE * len(parts)
    # Compare headers first so a failure names the packet, not a 16 MiB diff.
    offsets = [sum(parts[:i]) + HEADER_SIZE * i for i in range(len(parts))]
    assert [data[o : o + 4] for o in offsets] == [expected[o : o + 4] for o in offsets]
    assert data == expected


def test_encode_packet_of_exactly_16_mib_ends_with_an_empty_packet() -> None:
    data, next_seq = encode_packet(b"\xaa" * FULL, 9)
    assert data[:4] == b"\xff\xff\xff\x09"
    assert data[-4:] == b"\x00\x00\x00\x0a"
    assert len(data) == 4 + FULL + 4
    assert next_seq == 11


def test_sequence_ids_wrap_at_255() -> None:
    data, next_seq = encode_packet(b"x", 255)
    assert data == b"\x01\x00\x00\xffx"
    assert next_seq == 0
    data, next_seq = encode_packet(b"y" * (FULL + 2), 255)
    assert data[3] == 255 and data[4 + FULL + 3] == 0
    assert next_seq == 1


# -- PacketAssembler -----------------------------------------------------------


def drain(assembler: PacketAssembler) -> list[Packet]:
    out = []
    while (packet := assembler.next_packet()) is not None:
        out.append(packet)
    return out


SMALL_PAYLOADS = [b"", b"\x03SELECT 1", b"\x00" * 300, b"\x0e"]


def small_wire(first_seq: int = 0) -> tuple[bytes, list[bytes]]:
    pieces = []
    seq = first_seq
    for payload in SMALL_PAYLOADS:
        data, seq = encode_packet(payload, seq)
        pieces.append(data)
    return b"".join(pieces), pieces


def test_assembler_small_packets_one_byte_at_a_time() -> None:
    wire, pieces = small_wire(254)
    assembler = PacketAssembler()
    got: list[Packet] = []
    for i in range(len(wire)):
        assembler.feed(wire[i : i + 1])
        got += drain(assembler)
    assert [p.payload for p in got] == SMALL_PAYLOADS
    assert [p.raw for p in got] == pieces
    assert [p.seq for p in got] == [254, 255, 0, 1]
    assert [p.last_seq for p in got] == [254, 255, 0, 1]
    assert assembler.buffered == 0


def test_assembler_hands_over_what_follows_a_packet() -> None:
    """Bytes after a packet that are not MySQL protocol (a TLS hello after an SSLRequest)
    come back untouched, and the assembler starts afresh."""
    request, _ = encode_packet(b"\x00" * 32, 1)
    hello = b"\x16\x03\x01\x02\x00\x01" + bytes(range(256))
    assembler = PacketAssembler()
    assembler.feed(request + hello)
    packet = assembler.next_packet()
    assert packet is not None and packet.raw == request
    assert assembler.take_buffered() == hello
    assert assembler.buffered == 0 and assembler.next_packet() is None
    assert assembler.take_buffered() == b""


def test_assembler_small_packets_in_one_chunk() -> None:
    wire, pieces = small_wire()
    assembler = PacketAssembler()
    assembler.feed(wire + b"\x05\x00")  # plus the start of a header
    got = drain(assembler)
    assert [p.raw for p in got] == pieces
    assert assembler.buffered == 2
    assembler.feed(b"\x00\x04abc")
    assert assembler.next_packet() is None  # 3 of 5 payload bytes
    assembler.feed(b"de")
    packet = assembler.next_packet()
    assert packet is not None and packet.payload == b"abcde" and packet.seq == 4


def chunkings(wire: bytes) -> dict[str, list[int]]:
    """Cut points (offsets where a feed ends) for big wire data."""
    cuts_near_headers: set[int] = set()
    pos = 0
    while pos < len(wire):
        length = int.from_bytes(wire[pos : pos + 3], "little")
        # one byte at a time through each header and the first bytes of its payload
        cuts_near_headers.update(range(max(pos - 2, 1), min(pos + 8, len(wire))))
        cuts_near_headers.add(pos + 4 + length // 2)
        pos += 4 + length
    rng = random.Random(1234)
    random_cuts: list[int] = []
    pos = 0
    while pos < len(wire):
        pos += rng.randint(1, 3 << 20)
        random_cuts.append(min(pos, len(wire)))
    return {
        "whole": [len(wire)],
        "near-headers": sorted(cuts_near_headers | {len(wire)}),
        "random": random_cuts,
    }


@pytest.mark.parametrize(
    ("size", "parts"),
    [(FULL - 1, 1), (FULL, 2), (2 * FULL + 5, 3)],
)
@pytest.mark.parametrize("chunking", ["whole", "near-headers", "random"])
def test_assembler_joins_split_packets(size: int, parts: int, chunking: str) -> None:
    seq = 254  # the ids of a three-part packet wrap: 254, 255, 0
    payload = big(size, lead=b"\xfe")
    wire, next_seq = encode_packet(payload, seq)
    trailer, _ = encode_packet(b"\x00after", next_seq)
    stream = wire + trailer
    assembler = PacketAssembler()
    got: list[Packet] = []
    start = 0
    for cut in chunkings(stream)[chunking]:
        assembler.feed(stream[start:cut])
        start = cut
        got += drain(assembler)
        if not got:
            assert assembler.buffered == cut  # nothing consumed before the packet ends
    assert start == len(stream)
    assert len(got) == 2
    packet = got[0]
    assert packet.seq == seq
    assert packet.last_seq == (seq + parts - 1) % 256
    assert len(packet.payload) == size
    assert packet.payload == payload
    assert packet.raw == wire
    assert got[1].payload == b"\x00after" and got[1].seq == next_seq
    assert assembler.buffered == 0


@pytest.mark.parametrize(
    ("size", "seq", "last_seq"),
    [(0, 5, 5), (FULL - 1, 5, 5), (FULL, 5, 6), (2 * FULL, 255, 1), (2 * FULL + 5, 255, 1)],
)
def test_packet_last_seq(size: int, seq: int, last_seq: int) -> None:
    assert Packet(seq, b"\x00" * size, b"").last_seq == last_seq


def test_join_payload() -> None:
    payload = big(FULL + 10)
    assert join_payload(encode_packet(payload, 0)[0]) == payload
    assert join_payload(b"\x02\x00\x00\x00hi") == b"hi"


def test_assembler_refuses_an_oversized_packet_from_its_header() -> None:
    assembler = PacketAssembler(max_payload=100)
    assembler.feed(header(100, 0) + b"x" * 100)
    assert assembler.next_packet() is not None  # exactly the limit is fine
    assembler.feed(header(101, 1))  # refused before its payload arrives
    with pytest.raises(ProtocolViolation):
        assembler.next_packet()


def test_assembler_refuses_a_split_packet_over_the_limit() -> None:
    assembler = PacketAssembler(max_payload=FULL + 10)
    wire, _ = encode_packet(b"z" * (FULL + 11), 0)
    assembler.feed(wire)
    with pytest.raises(ProtocolViolation):
        assembler.next_packet()
    ok = PacketAssembler(max_payload=FULL + 10)
    ok.feed(encode_packet(b"z" * (FULL + 10), 0)[0])
    packet = ok.next_packet()
    assert packet is not None and len(packet.payload) == FULL + 10


@pytest.mark.parametrize(("first", "second"), [(0, 2), (0, 0), (255, 1), (7, 6)])
def test_assembler_refuses_a_broken_sequence_inside_a_split_packet(
    first: int, second: int
) -> None:
    assembler = PacketAssembler()
    assembler.feed(header(FULL, first) + b"a" * FULL + header(3, second) + b"end")
    with pytest.raises(ProtocolViolation, match="sequence"):
        assembler.next_packet()


def test_assembler_accepts_a_sequence_wrapping_inside_a_split_packet() -> None:
    assembler = PacketAssembler()
    assembler.feed(header(FULL, 255) + b"a" * FULL + header(3, 0) + b"end")
    packet = assembler.next_packet()
    assert packet is not None
    assert packet.seq == 255 and packet.last_seq == 0
    assert packet.payload == b"a" * FULL + b"end"


def test_assembler_does_not_check_sequence_between_packets() -> None:
    # Sequence ids across separate packets are the session's business, not framing's.
    assembler = PacketAssembler()
    assembler.feed(header(1, 0) + b"a" + header(1, 9) + b"b")
    assert [p.seq for p in drain(assembler)] == [0, 9]
