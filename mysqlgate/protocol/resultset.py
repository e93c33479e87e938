"""Text result sets built from Python values: what the admin console answers with.

Classic framing (column count, column definitions, EOF, rows, EOF): the console does not
offer CLIENT_DEPRECATE_EOF, and every client reads this form. Each column has a type that
drivers convert by (integers, floats, strings), so `SHOW POOLS` comes back as numbers,
not text. Reference: the MySQL protocol, "Text Resultset" and "Column Definition".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .messages import EOF, lenenc_int, lenenc_str

TYPE_DOUBLE = 0x05
TYPE_LONGLONG = 0x08
TYPE_VAR_STRING = 0xFD

BINARY_FLAG = 0x0080
NUM_FLAG = 0x8000

CHARSET_UTF8MB4 = 45  # utf8mb4_general_ci
CHARSET_BINARY = 63
NULL_VALUE = b"\xfb"

Value = int | float | str | None


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: type  # int, float or str

    def definition(self) -> bytes:
        name = self.name.encode()
        if self.kind is int:
            charset, length, kind, flags, decimals = (
                CHARSET_BINARY, 21, TYPE_LONGLONG, BINARY_FLAG | NUM_FLAG, 0)
        elif self.kind is float:
            # 31 decimals: "not fixed", as the server says for a DOUBLE expression.
            charset, length, kind, flags, decimals = (
                CHARSET_BINARY, 22, TYPE_DOUBLE, BINARY_FLAG | NUM_FLAG, 31)
        elif self.kind is str:
            charset, length, kind, flags, decimals = (
                CHARSET_UTF8MB4, 1024, TYPE_VAR_STRING, 0, 0)
        else:
            raise TypeError(f"column {self.name}: unsupported type {self.kind!r}")
        return (lenenc_str(b"def") + lenenc_str(b"") + lenenc_str(b"") + lenenc_str(b"")
                + lenenc_str(name) + lenenc_str(name) + b"\x0c"
                + struct.pack("<HIBHB", charset, length, kind, flags, decimals) + b"\x00\x00")


def encode_value(value: Value, kind: type) -> bytes:
    if value is None:
        return NULL_VALUE
    if kind is float:
        text = repr(round(float(value), 6))
    elif kind is int:
        text = str(int(value))
    else:
        text = str(value)
    return lenenc_str(text.encode())


def text_result(columns: Sequence[Column], rows: Sequence[Sequence[Value]],
                status: int = 0) -> list[bytes]:
    """The payloads of one result set, in order."""
    payloads = [lenenc_int(len(columns))]
    payloads += [column.definition() for column in columns]
    payloads.append(EOF(status=status).build())
    kinds = [column.kind for column in columns]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row of {len(row)} values for {len(columns)} columns")
        payloads.append(b"".join(encode_value(v, k) for v, k in zip(row, kinds, strict=True)))
    payloads.append(EOF(status=status).build())
    return payloads
