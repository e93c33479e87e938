"""The little of the MySQL client protocol the benchmarks speak on raw sockets.

Login with mysql_native_password (also after an auth switch), one COM_QUERY, and a
result-set reader that only walks packet headers, so that a Python reader is not the
bottleneck of a 200 MB result (large_result.py) and 10,000 idle clients cost one socket
each (idle_clients.py). No TLS, no compression, classic EOF packets (no DEPRECATE_EOF).
"""

from __future__ import annotations

import hashlib
import socket
import struct

CLIENT_LONG_PASSWORD = 0x1
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
CAPABILITIES = (CLIENT_LONG_PASSWORD | CLIENT_CONNECT_WITH_DB | CLIENT_PROTOCOL_41
                | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH)
UTF8MB4_GENERAL_CI = 45
NATIVE = b"mysql_native_password"


class WireError(Exception):
    pass


def packet(payload: bytes, seq: int) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def native_scramble(password: bytes, nonce: bytes) -> bytes:
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mix = hashlib.sha1(nonce[:20] + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


def greeting_nonce(payload: bytes) -> tuple[bytes, bytes]:
    """(nonce, auth plugin name) from a protocol-10 greeting."""
    if not payload or payload[0] != 10:
        if payload[:1] == b"\xff":
            raise WireError(error_text(payload))
        raise WireError(f"unexpected greeting {payload[:16]!r}")
    pos = payload.index(b"\0", 1) + 1 + 4  # server version, thread id
    part1 = payload[pos : pos + 8]
    pos += 8 + 1 + 2 + 1 + 2 + 2  # filler, capabilities low, charset, status, caps high
    auth_len = payload[pos]
    pos += 1 + 10
    part2_len = max(13, auth_len - 8)
    part2 = payload[pos : pos + part2_len].rstrip(b"\0")
    pos += part2_len
    plugin = payload[pos:].split(b"\0", 1)[0]
    return part1 + part2, plugin


def login_packet(nonce: bytes, plugin: bytes, user: str, password: str, database: str) -> bytes:
    if plugin not in (NATIVE, b""):
        raise WireError(f"server offers auth plugin {plugin!r}; only {NATIVE!r} is spoken here")
    auth = native_scramble(password.encode(), nonce)
    payload = (struct.pack("<IIB", CAPABILITIES, 1 << 24, UTF8MB4_GENERAL_CI) + bytes(23)
               + user.encode() + b"\0" + bytes([len(auth)]) + auth
               + database.encode() + b"\0" + NATIVE + b"\0")
    return packet(payload, 1)


def auth_reply(payload: bytes, seq: int, password: str) -> bytes | None:
    """None when `payload` (the answer to the login) is OK; the next packet to send on an
    auth switch to mysql_native_password; raises on ERR or anything else."""
    if payload[:1] == b"\x00":
        return None
    if payload[:1] == b"\xfe":
        plugin, _, data = payload[1:].partition(b"\0")
        if plugin != NATIVE:
            raise WireError(f"auth switch to {plugin!r}; only {NATIVE!r} is spoken here")
        return packet(native_scramble(password.encode(), data.rstrip(b"\0")), seq + 1)
    raise WireError(error_text(payload))


def error_text(payload: bytes) -> str:
    if payload[:1] != b"\xff":
        return f"unexpected packet {payload[:16]!r}"
    code = int.from_bytes(payload[1:3], "little")
    message = payload[3:]
    if message[:1] == b"#":
        message = message[6:]
    return f"ERROR {code}: {message.decode(errors='replace')}"


# --- blocking client (large_result.py's reader) -------------------------------------------


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    header = _read_exactly(sock, 4)
    length = header[0] | header[1] << 8 | header[2] << 16
    return header[3], _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise WireError("connection closed")
        data += chunk
    return bytes(data)


def connect(port: int, user: str, password: str, database: str,
            host: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _, greeting = read_packet(sock)
    nonce, plugin = greeting_nonce(greeting)
    sock.sendall(login_packet(nonce, plugin, user, password, database))
    while True:
        seq, answer = read_packet(sock)
        follow = auth_reply(answer, seq, password)
        if follow is None:
            return sock
        sock.sendall(follow)


def query_count(sock: socket.socket, sql: str, buffer_size: int = 1 << 20) -> tuple[int, int]:
    """Send COM_QUERY and read its result set to the end, looking only at packet headers
    and each packet's first byte. Returns (rows, bytes received)."""
    sock.sendall(packet(b"\x03" + sql.encode(), 0))
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    filled = 0
    pos = 0  # next packet header, relative to buf (may lie beyond what has been read)
    received = 0
    phase = 0  # 0: column count, 1: definitions (+ their EOF), 2: rows
    definitions = 0
    rows = 0
    while True:
        # Need the header and the first payload byte of the packet at pos.
        while pos + 5 > filled:
            if pos >= filled:
                pos -= filled
                filled = 0
            else:  # a partial header: move it to the front
                rest = filled - pos
                buf[:rest] = buf[pos:filled]
                pos, filled = 0, rest
            n = sock.recv_into(view[filled:])
            if not n:
                raise WireError("connection closed inside a result")
            filled += n
            received += n
        length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        first = buf[pos + 4]
        if phase == 2:
            if first == 0xFE and length < 9:
                break
            if first == 0xFF:
                raise WireError(error_text(bytes(buf[pos + 4 : min(filled, pos + 4 + length)])))
            rows += 1
        elif phase == 0:
            if first == 0xFF:
                raise WireError(error_text(bytes(buf[pos + 4 : min(filled, pos + 4 + length)])))
            if first == 0x00:
                return 0, received
            definitions = first  # fewer than 251 columns here
            phase = 1
        else:
            definitions -= 1
            if definitions < 0:  # that was the EOF after the definitions
                phase = 2
        pos += 4 + length
    # The final EOF packet may still be partly unread; read up to its end.
    end = pos + 4 + (buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16)
    if end > len(buf):
        rest = filled - pos
        buf[:rest] = buf[pos:filled]
        end, filled = end - pos, rest
    while end > filled:
        n = sock.recv_into(view[filled:])
        if not n:
            raise WireError("connection closed inside a result")
        filled += n
        received += n
    return rows, received
