"""Packet framing: 4-byte headers, sequence ids, the 16 MiB split and join.

Every packet is `length(3, little-endian) seq(1) payload`. A payload of 2^24-1
bytes or more is sent as several packets, each full one followed by the next and
the last shorter than 2^24-1 (possibly empty); together they form one logical packet.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtocolViolation

MAX_PACKET_PAYLOAD = 0xFFFFFF
HEADER_SIZE = 4


def header(length: int, seq: int) -> bytes:
    return bytes((length & 0xFF, (length >> 8) & 0xFF, length >> 16, seq & 0xFF))


def encode_packet(payload: bytes, seq: int) -> tuple[bytes, int]:
    """Frame one logical payload; returns the bytes and the next sequence id."""
    size = len(payload)
    if size < MAX_PACKET_PAYLOAD:
        return header(size, seq) + payload, (seq + 1) & 0xFF
    parts = []
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_PACKET_PAYLOAD]
        parts.append(header(len(chunk), seq))
        parts.append(chunk)
        seq = (seq + 1) & 0xFF
        pos += len(chunk)
        if len(chunk) < MAX_PACKET_PAYLOAD:
            return b"".join(parts), seq


@dataclass(slots=True)
class Packet:
    """One logical packet: `seq` of its first part, the joined payload, and the
    wire bytes exactly as received (so it can be forwarded without re-framing)."""

    seq: int
    payload: bytes
    raw: bytes

    @property
    def last_seq(self) -> int:
        """Sequence id of the last physical part (a reply continues after it)."""
        parts = len(self.payload) // MAX_PACKET_PAYLOAD + 1
        return (self.seq + parts - 1) & 0xFF


class PacketAssembler:
    """Turns a byte stream into logical packets; refuses packets over `max_payload`."""

    def __init__(self, max_payload: int = 1 << 30) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffered(self) -> bytes:
        """The bytes fed and not yet returned as packets; the assembler is left empty."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def next_packet(self) -> Packet | None:
        buf = self._buf
        pos = 0
        total = 0
        first_seq = -1
        expected_seq = 0
        while True:
            if len(buf) - pos < HEADER_SIZE:
                return None
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            seq = buf[pos + 3]
            if first_seq < 0:
                first_seq = seq
            elif seq != expected_seq:
                raise ProtocolViolation(
                    f"packet sequence broken inside a split packet: got {seq}, "
                    f"expected {expected_seq}"
                )
            total += length
            if total > self.max_payload:
                raise ProtocolViolation(
                    f"packet of more than {self.max_payload} bytes refused"
                )
            end = pos + HEADER_SIZE + length
            if len(buf) < end:
                return None
            expected_seq = (seq + 1) & 0xFF
            pos = end
            if length < MAX_PACKET_PAYLOAD:
                break
        raw = bytes(buf[:pos])
        del buf[:pos]
        if pos == HEADER_SIZE + total:
            payload = raw[HEADER_SIZE:]
        else:
            payload = join_payload(raw)
        return Packet(first_seq, payload, raw)


def join_payload(raw: bytes) -> bytes:
    """The payload of a logical packet given its complete wire bytes."""
    parts = []
    pos = 0
    while pos < len(raw):
        length = raw[pos] | (raw[pos + 1] << 8) | (raw[pos + 2] << 16)
        parts.append(raw[pos + HEADER_SIZE : pos + HEADER_SIZE + length])
        pos += HEADER_SIZE + length
    return b"".join(parts)
