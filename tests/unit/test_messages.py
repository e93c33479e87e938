"""messages.py: length-encoded values, connection-phase messages, OK / ERR / EOF."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from mysqlgate.protocol.constants import (
    CLIENT,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
)
from mysqlgate.protocol.errors import ProtocolViolation
from mysqlgate.protocol.messages import (
    EOF,
    ERR,
    OK,
    AuthSwitchRequest,
    ChangeUser,
    Handshake,
    HandshakeResponse,
    Reader,
    SessionState,
    column_count,
    is_eof,
    is_err,
    is_ok,
    lenenc_int,
    lenenc_str,
    ok_without_tracking,
)

from .wire import lenenc, lstr

# -- length-encoded values ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfc\xfb\x00"),
        (0xFFFF, b"\xfc\xff\xff"),
        (0x10000, b"\xfd\x00\x00\x01"),
        (0xFFFFFF, b"\xfd\xff\xff\xff"),
        (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**64 - 1, b"\xfe" + b"\xff" * 8),
    ],
)
def test_lenenc_int_round_trip(value: int, encoded: bytes) -> None:
    assert lenenc_int(value) == encoded
    reader = Reader(encoded + b"tail")
    assert reader.lenenc_int() == value
    assert reader.rest() == b"tail"


@pytest.mark.parametrize("size", [0, 1, 250, 251, 0xFFFF, 0x10000])
def test_lenenc_str_round_trip(size: int) -> None:
    value = bytes(i % 251 for i in range(size))
    encoded = lenenc_str(value)
    assert encoded == lenenc(size) + value
    reader = Reader(encoded + b"!")
    assert reader.lenenc_str() == value
    assert reader.remaining() == 1


@pytest.mark.parametrize("size", [0xFFFFFF, 0x1000000])
def test_lenenc_str_round_trip_large(size: int) -> None:
    value = b"\x01" * size
    encoded = lenenc_str(value)
    assert encoded[: len(lenenc(size))] == lenenc(size)
    assert Reader(encoded).lenenc_str() == value


@pytest.mark.parametrize("prefix", [b"\xfb", b"\xff"])
def test_reader_rejects_invalid_lenenc_prefix(prefix: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        Reader(prefix + b"\x00" * 8).lenenc_int()


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"", lambda r: r.u8()),
        (b"\x01", lambda r: r.uint(2)),
        (b"\xfc\x01", lambda r: r.lenenc_int()),
        (b"\x05abc", lambda r: r.lenenc_str()),
        (b"no terminator", lambda r: r.nul_str()),
    ],
)
def test_reader_refuses_to_read_past_the_end(
    data: bytes, read: Callable[[Reader], object]
) -> None:
    with pytest.raises(ProtocolViolation):
        read(Reader(data))


def test_column_count() -> None:
    assert column_count(b"\x03") == 3
    assert column_count(b"\xfc\x00\x01") == 256


# -- handshake ------------------------------------------------------------------------

NONCE = b"abcdefgh" + b"ijklmnopqrst"  # 8 + 12

SERVER_CAPS = (
    CLIENT.LONG_FLAG | CLIENT.CONNECT_WITH_DB | CLIENT.PROTOCOL_41 | CLIENT.TRANSACTIONS
    | CLIENT.SECURE_CONNECTION | CLIENT.MULTI_STATEMENTS | CLIENT.MULTI_RESULTS
    | CLIENT.PLUGIN_AUTH | CLIENT.CONNECT_ATTRS | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT.SESSION_TRACK | CLIENT.DEPRECATE_EOF | (1 << 31)
)


@pytest.mark.parametrize("plugin", ["mysql_native_password", "caching_sha2_password"])
@pytest.mark.parametrize("caps", [SERVER_CAPS, SERVER_CAPS | 0x7FFF0000, 0xFFFFFFFF])
def test_handshake_round_trip(plugin: str, caps: int) -> None:
    hs = Handshake(
        server_version=b"5.5.5-10.11.19-MariaDB-0+deb12u1",
        connection_id=0xDEADBEEF,
        auth_data=NONCE,
        capabilities=caps,
        charset=45,
        status=SERVER_STATUS_AUTOCOMMIT,
        auth_plugin=plugin,
        mariadb_capabilities=0x1D,
    )
    payload = hs.build()
    assert payload[0] == 10
    parsed = Handshake.parse(payload)
    assert parsed == hs
    assert parsed.capabilities >> 16 == caps >> 16


# A greeting as MariaDB 10.11 sends it, written out field by field from the protocol
# documentation ("Connection Phase: Initial Handshake Packet", protocol version 10).
MARIADB_CAPS_LOW = 0xF7FE  # no CLIENT_MYSQL (bit 0): MariaDB's marker; no CLIENT_SSL
MARIADB_CAPS_HIGH = 0x81FF  # MULTI_STATEMENTS .. DEPRECATE_EOF, REMEMBER_OPTIONS
MARIADB_GREETING = (
    b"\x0a"  # protocol version
    + b"5.5.5-10.11.19-MariaDB-0+deb12u1\x00"
    + struct.pack("<I", 31)  # connection id
    + b"Y;v_x0>Q"  # auth-plugin-data part 1 (8 bytes)
    + b"\x00"  # filler
    + struct.pack("<H", MARIADB_CAPS_LOW)
    + b"\x2d"  # collation utf8mb4_general_ci
    + struct.pack("<H", SERVER_STATUS_AUTOCOMMIT)
    + struct.pack("<H", MARIADB_CAPS_HIGH)
    + b"\x15"  # length of auth-plugin-data: 21
    + b"\x00" * 6  # filler
    + struct.pack("<I", 0x1D)  # MariaDB extended capabilities
    + b"Ri@V3)UHy_Ke" + b"\x00"  # auth-plugin-data part 2 (12 bytes) and its NUL
    + b"mysql_native_password\x00"
)


def test_parse_a_mariadb_greeting() -> None:
    hs = Handshake.parse(MARIADB_GREETING)
    assert hs.server_version == b"5.5.5-10.11.19-MariaDB-0+deb12u1"
    assert hs.connection_id == 31
    assert hs.auth_data == b"Y;v_x0>Q" + b"Ri@V3)UHy_Ke"
    assert len(hs.auth_data) == 20
    assert hs.capabilities == (MARIADB_CAPS_HIGH << 16) | MARIADB_CAPS_LOW
    assert hs.capabilities & CLIENT.PLUGIN_AUTH
    assert hs.capabilities & CLIENT.SESSION_TRACK
    assert hs.capabilities & CLIENT.DEPRECATE_EOF
    assert not hs.capabilities & CLIENT.SSL
    assert hs.charset == 45
    assert hs.status == SERVER_STATUS_AUTOCOMMIT
    assert hs.auth_plugin == "mysql_native_password"
    assert hs.mariadb_capabilities == 0x1D
    assert hs.build() == MARIADB_GREETING


def test_parse_a_greeting_whose_plugin_name_lacks_its_nul() -> None:
    # MySQL 5.5.7-5.5.9 left out the NUL after the plugin name.
    hs = Handshake.parse(MARIADB_GREETING[:-1])
    assert hs.auth_plugin == "mysql_native_password"


def test_handshake_rejects_other_protocol_versions() -> None:
    with pytest.raises(ProtocolViolation):
        Handshake.parse(b"\x09" + MARIADB_GREETING[1:])


# -- handshake response -------------------------------------------------------------

BASE = CLIENT.PROTOCOL_41 | CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH | CLIENT.LONG_PASSWORD


@pytest.mark.parametrize("with_db", [False, True])
@pytest.mark.parametrize("lenenc_data", [False, True])
@pytest.mark.parametrize("attrs", [False, True])
@pytest.mark.parametrize("auth_size", [0, 20, 32])
def test_handshake_response_round_trip(
    with_db: bool, lenenc_data: bool, attrs: bool, auth_size: int
) -> None:
    caps = BASE
    if with_db:
        caps |= CLIENT.CONNECT_WITH_DB
    if lenenc_data:
        caps |= CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA
    if attrs:
        caps |= CLIENT.CONNECT_ATTRS
    response = HandshakeResponse(
        capabilities=caps,
        max_packet=1 << 24,
        charset=45,
        user=b"app_user",
        auth_response=bytes(range(1, auth_size + 1)),
        database=b"app_db" if with_db else None,
        auth_plugin="caching_sha2_password",
        attributes={b"_client_name": b"libmariadb", b"_pid": b"4242"} if attrs else {},
    )
    parsed = HandshakeResponse.parse(response.build())
    assert parsed == response


def test_handshake_response_wire_layout() -> None:
    # HandshakeResponse41 written out field by field.
    caps = (
        BASE | CLIENT.CONNECT_WITH_DB | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT.CONNECT_ATTRS
    )
    scramble = bytes(range(1, 21))
    attrs = lstr(b"_client_name") + lstr(b"pymysql")
    wire = (
        struct.pack("<IIB", caps, 0xFFFFFF, 45) + b"\x00" * 23
        + b"root\x00"
        + b"\x14" + scramble
        + b"shop\x00"
        + b"mysql_native_password\x00"
        + lstr(attrs)
    )
    parsed = HandshakeResponse.parse(wire)
    assert parsed.user == b"root"
    assert parsed.auth_response == scramble
    assert parsed.database == b"shop"
    assert parsed.auth_plugin == "mysql_native_password"
    assert parsed.attributes == {b"_client_name": b"pymysql"}
    assert parsed.max_packet == 0xFFFFFF
    assert not parsed.ssl_request
    assert parsed.build() == wire


def test_handshake_response_without_secure_connection_has_nul_terminated_auth() -> None:
    caps = CLIENT.PROTOCOL_41
    wire = struct.pack("<IIB", caps, 1 << 24, 8) + b"\x00" * 23 + b"bob\x00" + b"secret\x00"
    parsed = HandshakeResponse.parse(wire)
    assert (parsed.user, parsed.auth_response) == (b"bob", b"secret")
    assert parsed.build() == wire


def test_ssl_request_is_32_bytes() -> None:
    caps = BASE | CLIENT.SSL
    request = HandshakeResponse(caps, 1 << 24, 45, ssl_request=True)
    payload = request.build()
    assert len(payload) == 32
    assert payload == struct.pack("<IIB", caps, 1 << 24, 45) + b"\x00" * 23
    parsed = HandshakeResponse.parse(payload)
    assert parsed.ssl_request
    assert (parsed.capabilities, parsed.max_packet, parsed.charset) == (caps, 1 << 24, 45)


def test_handshake_response_requires_protocol_41() -> None:
    payload = struct.pack("<IIB", CLIENT.SECURE_CONNECTION, 1 << 24, 8) + b"\x00" * 23
    with pytest.raises(ProtocolViolation):
        HandshakeResponse.parse(payload + b"u\x00\x00")


def test_auth_switch_request() -> None:
    request = AuthSwitchRequest("mysql_native_password", NONCE)
    payload = request.build()
    assert payload == b"\xfemysql_native_password\x00" + NONCE + b"\x00"
    assert AuthSwitchRequest.parse(payload) == request
    # A switch whose data has no trailing NUL parses the same.
    assert AuthSwitchRequest.parse(payload[:-1]) == request


# -- OK, ERR, EOF -----------------------------------------------------------------

# An OK packet captured from MariaDB 10.11.19 after `SET autocommit=0`, sent with
# CLIENT_SESSION_TRACK: empty info, then a 0x14-byte tracker block holding a
# system-variable entry (autocommit=OFF) and a state-change entry ("1").
CAPTURED_TRACKER_BLOCK = b"\x00\x0f\nautocommit\x03OFF\x02\x011"
CAPTURED_OK = (
    b"\x00\x00\x00" + struct.pack("<HH", SERVER_SESSION_STATE_CHANGED, 0)
    + b"\x00" + b"\x14" + CAPTURED_TRACKER_BLOCK
)


def test_parse_captured_ok_with_session_state() -> None:
    ok = OK.parse(CAPTURED_OK, CLIENT.SESSION_TRACK)
    assert (ok.affected_rows, ok.last_insert_id, ok.warnings) == (0, 0, 0)
    assert ok.status == SERVER_SESSION_STATE_CHANGED
    assert ok.info == b""
    assert ok.session_state == SessionState(
        variables=[("autocommit", "OFF")], state_changed=True
    )
    assert ok.build(CLIENT.SESSION_TRACK) == CAPTURED_OK


def test_ok_without_tracking_on_captured_ok() -> None:
    assert ok_without_tracking(CAPTURED_OK) == b"\x00\x00\x00\x00\x00\x00\x00"


def test_ok_without_tracking_keeps_info_and_flags() -> None:
    info = b"Rows matched: 1  Changed: 1  Warnings: 0"
    status = SERVER_STATUS_IN_TRANS | SERVER_SESSION_STATE_CHANGED
    block = b"\x05" + lstr(lstr(b"T___W___"))
    tracked = b"\x00\x01\x00" + struct.pack("<HH", status, 0) + lstr(info) + lstr(block)
    assert ok_without_tracking(tracked) == (
        b"\x00\x01\x00" + struct.pack("<HH", SERVER_STATUS_IN_TRANS, 0) + lstr(info)
    )


def test_ok_without_tracking_keeps_a_0xfe_header() -> None:
    # The OK that ends a result set under CLIENT_DEPRECATE_EOF.
    tracked = b"\xfe\x00\x00" + struct.pack("<HH", SERVER_STATUS_AUTOCOMMIT, 0)
    assert ok_without_tracking(tracked) == tracked


# Tracker blocks as PROTOCOL-NOTES.md lists them for MariaDB 10.11.
@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (  # USE t1
            b"\x01" + lstr(lstr(b"t1")) + b"\x02\x011",
            SessionState(schema="t1", state_changed=True),
        ),
        (  # SET @x=1
            b"\x02\x011",
            SessionState(state_changed=True),
        ),
        (  # SET SESSION sql_mode='ANSI'
            b"\x00" + lstr(lstr(b"sql_mode") + lstr(
                b"REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI")) + b"\x02\x011",
            SessionState(
                variables=[("sql_mode",
                            "REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI")],
                state_changed=True,
            ),
        ),
        (  # SET NAMES latin1
            b"".join(
                b"\x00" + lstr(lstr(name) + lstr(value))
                for name, value in [
                    (b"character_set_results", b"latin1"),
                    (b"character_set_client", b"latin1"),
                    (b"character_set_connection", b"latin1"),
                    (b"collation_connection", b"latin1_swedish_ci"),
                ]
            ) + b"\x02\x011",
            SessionState(
                variables=[
                    ("character_set_results", "latin1"),
                    ("character_set_client", "latin1"),
                    ("character_set_connection", "latin1"),
                    ("collation_connection", "latin1_swedish_ci"),
                ],
                state_changed=True,
            ),
        ),
        (  # LOCK TABLES t READ
            b"\x05" + lstr(lstr(b"_______L")) + b"\x02\x011",
            SessionState(transaction_state="_______L", state_changed=True),
        ),
        (  # a GTID entry (type 3): not interpreted
            b"\x03" + lstr(b"\x00" + lstr(b"0-1-42")),
            SessionState(other=True),
        ),
        (  # a variable whose value is empty
            b"\x00" + lstr(lstr(b"character_set_results") + lstr(b"")),
            SessionState(variables=[("character_set_results", "")]),
        ),
    ],
)
def test_session_state_blocks(block: bytes, expected: SessionState) -> None:
    assert SessionState.parse(block) == expected
    status = SERVER_SESSION_STATE_CHANGED | SERVER_STATUS_AUTOCOMMIT
    payload = b"\x00\x00\x00" + struct.pack("<HH", status, 0) + b"\x00" + lstr(block)
    assert OK.parse(payload, CLIENT.SESSION_TRACK).session_state == expected


def test_session_state_build_parse_round_trip() -> None:
    state = SessionState(
        variables=[("time_zone", "+02:00"), ("sql_mode", "")],
        schema="db1",
        state_changed=True,
        transaction_state="T___W___",
    )
    assert SessionState.parse(state.build()) == state


@pytest.mark.parametrize(
    "ok",
    [
        OK(),
        OK(affected_rows=3, last_insert_id=251, status=SERVER_STATUS_AUTOCOMMIT, warnings=2),
        OK(affected_rows=0x1000000, last_insert_id=0xFFFF, info=b"Records: 3  Duplicates: 0"),
        OK(status=SERVER_STATUS_IN_TRANS, header=0xFE),
    ],
)
@pytest.mark.parametrize("caps", [0, CLIENT.SESSION_TRACK])
def test_ok_round_trip(ok: OK, caps: int) -> None:
    assert OK.parse(ok.build(caps), caps) == ok


def test_ok_wire_layout_without_and_with_session_track() -> None:
    ok = OK(affected_rows=1, last_insert_id=300, status=SERVER_STATUS_AUTOCOMMIT,
            info=b"hello")
    fixed = b"\x00\x01\xfc\x2c\x01" + struct.pack("<HH", SERVER_STATUS_AUTOCOMMIT, 0)
    # MariaDB length-encodes info whether or not the client tracks sessions.
    assert ok.build(0) == fixed + b"\x05hello"
    assert ok.build(CLIENT.SESSION_TRACK) == fixed + b"\x05hello"


def test_ok_with_session_state_round_trip() -> None:
    state = SessionState(variables=[("autocommit", "OFF")], state_changed=True)
    ok = OK(status=SERVER_SESSION_STATE_CHANGED, session_state=state)
    parsed = OK.parse(ok.build(CLIENT.SESSION_TRACK), CLIENT.SESSION_TRACK)
    assert parsed.session_state == state
    assert parsed.status & SERVER_SESSION_STATE_CHANGED
    # Built for a client without session tracking: the flag and the block go.
    plain = OK.parse(ok.build(0), 0)
    assert plain.session_state is None
    assert not plain.status & SERVER_SESSION_STATE_CHANGED
    assert plain.info == b""


def test_ok_without_session_state_clears_the_changed_flag() -> None:
    ok = OK(status=SERVER_SESSION_STATE_CHANGED | SERVER_STATUS_AUTOCOMMIT)
    assert OK.parse(ok.build(CLIENT.SESSION_TRACK), CLIENT.SESSION_TRACK).status == (
        SERVER_STATUS_AUTOCOMMIT
    )


@pytest.mark.parametrize(
    ("err", "wire"),
    [
        (ERR(1045, "Access denied for user 'x'@'localhost'", "28000"),
         b"\xff\x15\x04#28000Access denied for user 'x'@'localhost'"),
        (ERR(1158, "mysqlgate: lost connection", "08S01"),
         b"\xff\x86\x04#08S01mysqlgate: lost connection"),
        (ERR(1146, "Table 't.x' doesn't exist \u2013 ok", "42S02"),
         b"\xff\x7a\x04#42S02Table 't.x' doesn't exist \xe2\x80\x93 ok"),
    ],
)
def test_err_build_and_parse(err: ERR, wire: bytes) -> None:
    assert err.build() == wire
    assert ERR.parse(wire) == err
    assert is_err(wire) and not is_ok(wire) and not is_eof(wire)


def test_err_without_sqlstate_marker() -> None:
    # Before the client's capabilities are known (e.g. 1040 Too many connections).
    parsed = ERR.parse(b"\xff\x10\x04Too many connections")
    assert parsed == ERR(1040, "Too many connections", "HY000")


def test_eof_build_and_parse() -> None:
    eof = EOF(warnings=1, status=SERVER_STATUS_AUTOCOMMIT | SERVER_STATUS_IN_TRANS)
    wire = eof.build()
    assert wire == b"\xfe\x01\x00\x03\x00"
    assert EOF.parse(wire) == eof
    assert is_eof(wire)
    assert EOF.parse(b"\xfe") == EOF()  # pre-4.1 EOF: a single byte


@pytest.mark.parametrize(
    ("payload", "eof"),
    [
        (b"\xfe", True),
        (b"\xfe\x00\x00\x02\x00", True),
        (b"\xfe" + b"\x00" * 7, True),
        (b"\xfe" + b"\x00" * 8, False),  # 9 bytes: a row with an 8-byte length prefix
        (b"\xfe" + b"\x10\x00\x00\x01\x00\x00\x00\x00" + b"x" * 20, False),
        (b"\x00\x00\x00\x02\x00\x00\x00", False),
        (b"", False),
    ],
)
def test_is_eof(payload: bytes, eof: bool) -> None:
    assert is_eof(payload) is eof


def test_change_user_round_trip() -> None:
    caps = CLIENT.SECURE_CONNECTION | CLIENT.PLUGIN_AUTH | CLIENT.CONNECT_ATTRS
    request = ChangeUser(b"app", b"\x01" * 20, None, 45, "mysql_native_password")
    payload = request.build(caps, {b"program_name": b"mysqlgate"})
    assert payload[0] == 0x11
    assert ChangeUser.parse(payload, caps) == request
