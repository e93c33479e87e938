"""Message codecs: handshake, handshake response, auth switch, OK, ERR, EOF.

Each parse function takes one logical payload (no header) and each build function
returns one; framing.py adds headers and sequence ids.
Reference: the MySQL client/server protocol, "Connection Phase" and "Generic
Response Packets" (protocol 41).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import (
    CLIENT,
    COMMAND,
    SERVER_SESSION_STATE_CHANGED,
    TRACK_SCHEMA,
    TRACK_STATE_CHANGE,
    TRACK_SYSTEM_VARIABLES,
    TRACK_TRANSACTION_STATE,
)
from .errors import ProtocolViolation

OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_MORE_DATA_HEADER = 0x01
AUTH_SWITCH_HEADER = 0xFE


# -- length-encoded values -------------------------------------------------


def lenenc_int(value: int) -> bytes:
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def lenenc_str(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


class Reader:
    """A cursor over one payload; every read checks bounds."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise ProtocolViolation("packet ends early")

    def u8(self) -> int:
        self._need(1)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self, n: int) -> int:
        self._need(n)
        value = int.from_bytes(self.data[self.pos : self.pos + n], "little")
        self.pos += n
        return value

    def take(self, n: int) -> bytes:
        self._need(n)
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(value)

    def lenenc_int(self) -> int:
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.uint(2)
        if first == 0xFD:
            return self.uint(3)
        if first == 0xFE:
            return self.uint(8)
        raise ProtocolViolation(f"invalid length-encoded integer prefix 0x{first:02x}")

    def lenenc_str(self) -> bytes:
        return self.take(self.lenenc_int())

    def nul_str(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise ProtocolViolation("string not NUL-terminated")
        value = self.data[self.pos : end]
        self.pos = end + 1
        return bytes(value)

    def rest(self) -> bytes:
        value = self.data[self.pos :]
        self.pos = len(self.data)
        return bytes(value)


# -- connection phase -------------------------------------------------------


@dataclass(slots=True)
class Handshake:
    """Initial handshake packet, protocol version 10."""

    server_version: bytes
    connection_id: int
    auth_data: bytes  # the 20-byte nonce ("scramble"), without trailing NUL
    capabilities: int
    charset: int
    status: int
    auth_plugin: str
    mariadb_capabilities: int = 0

    def build(self) -> bytes:
        caps = self.capabilities
        data = self.auth_data
        out = bytearray(b"\x0a")
        out += self.server_version + b"\x00"
        out += struct.pack("<I", self.connection_id)
        out += data[:8] + b"\x00"
        out += struct.pack("<HBHH", caps & 0xFFFF, self.charset, self.status, caps >> 16)
        out.append(len(data) + 1 if caps & CLIENT.PLUGIN_AUTH else 0)
        out += b"\x00" * 6 + struct.pack("<I", self.mariadb_capabilities)
        if caps & CLIENT.SECURE_CONNECTION:
            part2 = data[8:] + b"\x00"
            out += part2 + b"\x00" * max(0, 13 - len(part2))
        if caps & CLIENT.PLUGIN_AUTH:
            out += self.auth_plugin.encode() + b"\x00"
        return bytes(out)

    @classmethod
    def parse(cls, payload: bytes) -> Handshake:
        r = Reader(payload)
        version = r.u8()
        if version != 10:
            raise ProtocolViolation(f"unsupported handshake protocol version {version}")
        server_version = r.nul_str()
        connection_id = r.uint(4)
        data = r.take(8)
        r.u8()
        caps = r.uint(2)
        charset = status = 0
        auth_len = 0
        mariadb_caps = 0
        plugin = ""
        if r.remaining():
            charset = r.u8()
            status = r.uint(2)
            caps |= r.uint(2) << 16
            auth_len = r.u8()
            r.take(6)
            mariadb_caps = r.uint(4)
            if caps & CLIENT.SECURE_CONNECTION:
                # auth_len counts part 1 (8), part 2 and part 2's trailing NUL.
                part2 = r.take(max(13, auth_len - 8))
                data += part2[: max(12, auth_len - 9)]
            if caps & CLIENT.PLUGIN_AUTH:
                plugin = r.nul_str().decode() if b"\x00" in payload[r.pos :] else r.rest().decode()
        return cls(server_version, connection_id, data[:20], caps, charset, status, plugin,
                   mariadb_caps)


@dataclass(slots=True)
class HandshakeResponse:
    """HandshakeResponse41 (or its SSLRequest prefix when `ssl_request`)."""

    capabilities: int
    max_packet: int
    charset: int
    user: bytes = b""
    auth_response: bytes = b""
    database: bytes | None = None
    auth_plugin: str = ""
    attributes: dict[bytes, bytes] = field(default_factory=dict)
    ssl_request: bool = False

    def build(self) -> bytes:
        caps = self.capabilities
        out = bytearray(struct.pack("<IIB", caps, self.max_packet, self.charset))
        out += b"\x00" * 23
        if self.ssl_request:
            return bytes(out)
        out += self.user + b"\x00"
        if caps & CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            out += lenenc_str(self.auth_response)
        elif caps & CLIENT.SECURE_CONNECTION:
            out += bytes((len(self.auth_response),)) + self.auth_response
        else:
            out += self.auth_response + b"\x00"
        if caps & CLIENT.CONNECT_WITH_DB:
            out += (self.database or b"") + b"\x00"
        if caps & CLIENT.PLUGIN_AUTH:
            out += self.auth_plugin.encode() + b"\x00"
        if caps & CLIENT.CONNECT_ATTRS:
            attrs = b"".join(lenenc_str(k) + lenenc_str(v) for k, v in self.attributes.items())
            out += lenenc_str(attrs)
        return bytes(out)

    @classmethod
    def parse(cls, payload: bytes) -> HandshakeResponse:
        r = Reader(payload)
        caps = r.uint(4)
        if not caps & CLIENT.PROTOCOL_41:
            raise ProtocolViolation("client does not speak protocol 4.1")
        max_packet = r.uint(4)
        charset = r.u8()
        r.take(23)
        if not r.remaining():
            return cls(caps, max_packet, charset, ssl_request=True)
        user = r.nul_str()
        if caps & CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.lenenc_str()
        elif caps & CLIENT.SECURE_CONNECTION:
            auth = r.take(r.u8())
        else:
            auth = r.nul_str()
        database = None
        if caps & CLIENT.CONNECT_WITH_DB and r.remaining():
            database = r.nul_str() or None
        plugin = ""
        if caps & CLIENT.PLUGIN_AUTH and r.remaining():
            plugin = (r.nul_str() if b"\x00" in payload[r.pos :] else r.rest()).decode()
        attrs: dict[bytes, bytes] = {}
        if caps & CLIENT.CONNECT_ATTRS and r.remaining():
            block = Reader(r.lenenc_str())
            while block.remaining():
                key = block.lenenc_str()
                attrs[key] = block.lenenc_str()
        return cls(caps, max_packet, charset, user, auth, database, plugin, attrs)


@dataclass(slots=True)
class ChangeUser:
    """COM_CHANGE_USER: a new login on an open connection."""

    user: bytes
    auth_response: bytes
    database: bytes | None
    charset: int  # 0: not given
    auth_plugin: str

    def build(self, capabilities: int, attributes: dict[bytes, bytes] | None = None) -> bytes:
        out = bytearray((COMMAND.COM_CHANGE_USER,))
        out += self.user + b"\x00"
        if capabilities & CLIENT.SECURE_CONNECTION:
            out += bytes((len(self.auth_response),)) + self.auth_response
        else:
            out += self.auth_response + b"\x00"
        out += (self.database or b"") + b"\x00" + struct.pack("<H", self.charset)
        if capabilities & CLIENT.PLUGIN_AUTH:
            out += self.auth_plugin.encode() + b"\x00"
        if capabilities & CLIENT.CONNECT_ATTRS:
            out += lenenc_str(b"".join(lenenc_str(k) + lenenc_str(v)
                                       for k, v in (attributes or {}).items()))
        return bytes(out)

    @classmethod
    def parse(cls, payload: bytes, capabilities: int) -> ChangeUser:
        r = Reader(payload, 1)
        user = r.nul_str()
        if capabilities & CLIENT.SECURE_CONNECTION:
            auth = r.take(r.u8())
        else:
            auth = r.nul_str()
        database = r.nul_str() if r.remaining() else b""
        charset = r.uint(2) if r.remaining() >= 2 else 0
        plugin = ""
        if capabilities & CLIENT.PLUGIN_AUTH and r.remaining():
            plugin = (r.nul_str() if b"\x00" in payload[r.pos:] else r.rest()).decode()
        return cls(user, auth, database or None, charset, plugin)


@dataclass(slots=True)
class AuthSwitchRequest:
    plugin: str
    data: bytes

    def build(self) -> bytes:
        return b"\xfe" + self.plugin.encode() + b"\x00" + self.data + b"\x00"

    @classmethod
    def parse(cls, payload: bytes) -> AuthSwitchRequest:
        r = Reader(payload, 1)
        plugin = r.nul_str().decode()
        data = r.rest()
        if data.endswith(b"\x00"):
            data = data[:-1]
        return cls(plugin, data)


# -- generic responses -----------------------------------------------------


@dataclass(slots=True)
class SessionState:
    """What the session-state trackers of one OK packet reported."""

    variables: list[tuple[str, str]] = field(default_factory=list)
    schema: str | None = None
    state_changed: bool = False
    transaction_state: str | None = None
    other: bool = False  # entries of a kind we do not interpret (GTIDs, characteristics)

    @classmethod
    def parse(cls, block: bytes) -> SessionState:
        state = cls()
        r = Reader(block)
        while r.remaining():
            kind = r.u8()
            entry = Reader(r.lenenc_str())
            if kind == TRACK_SYSTEM_VARIABLES:
                name = entry.lenenc_str().decode("utf-8", "replace")
                value = entry.lenenc_str().decode("utf-8", "replace")
                state.variables.append((name, value))
            elif kind == TRACK_SCHEMA:
                state.schema = entry.lenenc_str().decode("utf-8", "replace")
            elif kind == TRACK_STATE_CHANGE:
                # The entry holds "1" itself, not a length-encoded string.
                state.state_changed = entry.rest() == b"1"
            elif kind == TRACK_TRANSACTION_STATE:
                state.transaction_state = entry.lenenc_str().decode("ascii", "replace")
            else:
                state.other = True
        return state

    def build(self) -> bytes:
        out = bytearray()
        for name, value in self.variables:
            out += b"\x00" + lenenc_str(lenenc_str(name.encode()) + lenenc_str(value.encode()))
        if self.schema is not None:
            out += b"\x01" + lenenc_str(lenenc_str(self.schema.encode()))
        if self.state_changed:
            out += b"\x02" + lenenc_str(b"1")
        if self.transaction_state is not None:
            out += b"\x05" + lenenc_str(lenenc_str(self.transaction_state.encode()))
        return bytes(out)


@dataclass(slots=True)
class OK:
    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = 0
    warnings: int = 0
    info: bytes = b""
    session_state: SessionState | None = None
    header: int = OK_HEADER

    def build(self, capabilities: int) -> bytes:
        out = bytearray((self.header,))
        out += lenenc_int(self.affected_rows) + lenenc_int(self.last_insert_id)
        status = self.status
        track = bool(capabilities & CLIENT.SESSION_TRACK)
        if not (track and self.session_state is not None):
            status &= ~SERVER_SESSION_STATE_CHANGED
        out += struct.pack("<HH", status, self.warnings)
        if track:
            if self.info or status & SERVER_SESSION_STATE_CHANGED:
                out += lenenc_str(self.info)
            if status & SERVER_SESSION_STATE_CHANGED and self.session_state is not None:
                out += lenenc_str(self.session_state.build())
        elif self.info:
            # Servers send info length-encoded with or without CLIENT_SESSION_TRACK,
            # and libmysqlclient, libmariadb and mysql-connector-python read it so.
            out += lenenc_str(self.info)
        return bytes(out)

    @classmethod
    def parse(cls, payload: bytes, capabilities: int) -> OK:
        r = Reader(payload)
        header = r.u8()
        affected = r.lenenc_int()
        insert_id = r.lenenc_int()
        status = r.uint(2)
        warnings = r.uint(2)
        info = b""
        state = None
        if capabilities & CLIENT.SESSION_TRACK:
            if r.remaining():
                info = r.lenenc_str()
            if status & SERVER_SESSION_STATE_CHANGED and r.remaining():
                state = SessionState.parse(r.lenenc_str())
        elif r.remaining():
            info = r.lenenc_str()
        return cls(affected, insert_id, status, warnings, info, state, header)


def is_ok(payload: bytes) -> bool:
    return bool(payload) and payload[0] == OK_HEADER


def is_err(payload: bytes) -> bool:
    return bool(payload) and payload[0] == ERR_HEADER


def is_eof(payload: bytes) -> bool:
    """A classic EOF packet (a 0xFE-led row is at least 9 bytes long)."""
    return bool(payload) and payload[0] == EOF_HEADER and len(payload) < 9


@dataclass(slots=True)
class ERR:
    code: int
    message: str
    sqlstate: str = "HY000"

    def build(self) -> bytes:
        return (
            b"\xff"
            + struct.pack("<H", self.code)
            + b"#"
            + self.sqlstate.encode()[:5].ljust(5, b"0")
            + self.message.encode("utf-8", "replace")
        )

    @classmethod
    def parse(cls, payload: bytes) -> ERR:
        r = Reader(payload, 1)
        code = r.uint(2)
        sqlstate = "HY000"
        if r.remaining() and payload[r.pos] == 0x23:  # '#'
            r.pos += 1
            sqlstate = r.take(5).decode("ascii", "replace")
        return cls(code, r.rest().decode("utf-8", "replace"), sqlstate)


@dataclass(slots=True)
class EOF:
    warnings: int = 0
    status: int = 0

    def build(self) -> bytes:
        return struct.pack("<BHH", EOF_HEADER, self.warnings, self.status)

    @classmethod
    def parse(cls, payload: bytes) -> EOF:
        if len(payload) < 5:
            return cls()
        _, warnings, status = struct.unpack_from("<BHH", payload)
        return cls(warnings, status)


def ok_without_tracking(payload: bytes) -> bytes:
    """Rewrite a server OK packet (sent with CLIENT_SESSION_TRACK) for a client that
    did not ask for session tracking: info becomes a plain trailing string and the
    tracker block goes."""
    ok = OK.parse(payload, CLIENT.SESSION_TRACK)
    return ok.build(0)


def column_count(payload: bytes) -> int:
    """The column count that starts a result set."""
    return Reader(payload).lenenc_int()
