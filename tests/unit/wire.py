"""Hand-made wire bytes for the unit tests, written from the protocol documentation
rather than with mysqlgate's own encoders (so a test does not check a codec against
itself)."""

from __future__ import annotations

import struct

FULL = 0xFFFFFF
AUTOCOMMIT = 0x0002
MORE_RESULTS = 0x0008
CURSOR_EXISTS = 0x0040
STATE_CHANGED = 0x4000


def lenenc(value: int) -> bytes:
    if value < 251:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + struct.pack("<H", value)
    if value < 1 << 24:
        return b"\xfd" + struct.pack("<I", value)[:3]
    return b"\xfe" + struct.pack("<Q", value)


def lstr(value: bytes) -> bytes:
    return lenenc(len(value)) + value


def frame(payload: bytes, seq: int) -> tuple[bytes, int]:
    """One logical payload as physical packets; returns (bytes, next seq)."""
    out = bytearray()
    pos = 0
    while True:
        part = payload[pos : pos + FULL]
        out += struct.pack("<I", len(part))[:3] + bytes((seq & 0xFF,)) + part
        seq = (seq + 1) & 0xFF
        pos += len(part)
        if len(part) < FULL:
            return bytes(out), seq


def stream(*payloads: bytes, seq: int = 1) -> bytes:
    """Consecutive packets with sequence ids counting up from `seq`."""
    out = bytearray()
    for payload in payloads:
        data, seq = frame(payload, seq)
        out += data
    return bytes(out)


def column_def(name: bytes, type_code: int = 0xFD) -> bytes:
    """Column Definition 41."""
    return (
        lstr(b"def") + lstr(b"db") + lstr(b"t") + lstr(b"t") + lstr(name) + lstr(name)
        + b"\x0c" + struct.pack("<HIBHB", 45, 1024, type_code, 0, 0) + b"\x00\x00"
    )


def text_row(*values: bytes | None) -> bytes:
    return b"".join(b"\xfb" if v is None else lstr(v) for v in values)


def eof(status: int = AUTOCOMMIT, warnings: int = 0) -> bytes:
    return struct.pack("<BHH", 0xFE, warnings, status)


def ok(status: int = AUTOCOMMIT, affected: int = 0, insert_id: int = 0, warnings: int = 0,
       tail: bytes = b"", header: int = 0x00) -> bytes:
    return (bytes((header,)) + lenenc(affected) + lenenc(insert_id)
            + struct.pack("<HH", status, warnings) + tail)


def err(code: int = 1146, message: bytes = b"Table 'db.nope' doesn't exist",
        sqlstate: bytes = b"42S02") -> bytes:
    return b"\xff" + struct.pack("<H", code) + b"#" + sqlstate + message


def prepare_ok(statement_id: int, columns: int, params: int, warnings: int = 0) -> bytes:
    """COM_STMT_PREPARE_OK."""
    return b"\x00" + struct.pack("<IHHBH", statement_id, columns, params, 0, warnings)


def boundaries(data: bytes) -> list[int]:
    """Offsets at which a physical packet starts, plus the end of the data."""
    out = [0]
    pos = 0
    while pos < len(data):
        pos += 4 + int.from_bytes(data[pos : pos + 3], "little")
        out.append(pos)
    assert pos == len(data), "test stream is not whole packets"
    return out
