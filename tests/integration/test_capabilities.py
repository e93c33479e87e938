"""Capability flags that change results travel with the client (SPEC section 2): clients
with different flags, interleaved on a pool of one connection, each get what a direct
connection with their own flags would give."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from harness import Gate, ScratchDb
from pymysql.constants import CLIENT, ER

from mysqlgate.protocol import auth

ROUNDS = 20


def _affected(conn: pymysql.connections.Connection, sql: str) -> int:
    with conn.cursor() as cursor:
        return cursor.execute(sql)


def _close_all(*conns: pymysql.connections.Connection) -> None:
    for conn in conns:
        if conn.open:
            conn.close()


def _make_table(db: ScratchDb) -> None:
    with db.connect() as direct, direct.cursor() as cursor:
        cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB")
        cursor.execute("INSERT INTO t VALUES (1, 0), (2, 0)")


def test_found_rows_follows_the_client(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    _make_table(db)
    unchanged = "UPDATE t SET v = v WHERE id = 1"  # matches 1 row, changes none

    # What the server itself reports with and without the flag.
    direct_found = db.connect(client_flag=CLIENT.FOUND_ROWS)
    direct_plain = db.connect()
    try:
        assert _affected(direct_found, unchanged) == 1
        assert _affected(direct_plain, unchanged) == 0
    finally:
        _close_all(direct_found, direct_plain)

    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "5")
    found = gate.connect(client_flag=CLIENT.FOUND_ROWS)
    plain = gate.connect()
    try:
        assert found.client_flag & CLIENT.FOUND_ROWS and not plain.client_flag & CLIENT.FOUND_ROWS
        seen = []
        for round_ in range(ROUNDS):
            # Alternate which client goes first, so each follows the other in turn.
            order = [(found, 1), (plain, 0)] if round_ % 2 == 0 else [(plain, 0), (found, 1)]
            for conn, expected in order:
                name = "FOUND_ROWS" if conn is found else "plain"
                seen.append((round_, name, "unchanged", _affected(conn, unchanged), expected))
            for conn, _ in order:
                name = "FOUND_ROWS" if conn is found else "plain"
                changed = f"UPDATE t SET v = v + 1 WHERE id = {1 + round_ % 2}"
                seen.append((round_, name, "changed", _affected(conn, changed), 1))
        wrong = [entry for entry in seen if entry[3] != entry[4]]
        assert not wrong, f"(round, client, update, affected rows, expected): {wrong}"
    finally:
        _close_all(found, plain)

    with db.connect() as direct, direct.cursor() as cursor:
        cursor.execute("SELECT id, v FROM t ORDER BY id")
        assert cursor.fetchall() == ((1, ROUNDS), (2, ROUNDS))  # every UPDATE ran once


def _multi_error(conn: pymysql.connections.Connection) -> tuple[Any, ...]:
    with pytest.raises(pymysql.err.ProgrammingError) as excinfo, conn.cursor() as cursor:
        cursor.execute("SELECT 1; SELECT 2")
    return excinfo.value.args


def _multi_results(conn: pymysql.connections.Connection) -> list[Any]:
    results = []
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1; SELECT 2")
        results.append(cursor.fetchall())
        while cursor.nextset():
            results.append(cursor.fetchall())
    return results


def test_multi_statements_follow_the_client(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    direct_single = db.connect()
    direct_multi = db.connect(client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        assert not direct_single.client_flag & CLIENT.MULTI_STATEMENTS
        expected_error = _multi_error(direct_single)
        assert expected_error[0] == ER.PARSE_ERROR  # 1064
        assert _multi_results(direct_multi) == [((1,),), ((2,),)]
    finally:
        _close_all(direct_single, direct_multi)

    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "5")
    single = gate.connect()
    multi = gate.connect(client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        for round_ in range(ROUNDS):
            order = [single, multi] if round_ % 2 == 0 else [multi, single]
            for conn in order:
                if conn is single:
                    assert _multi_error(single) == expected_error, round_
                else:
                    assert _multi_results(multi) == [((1,),), ((2,),)], round_
            # Both still work for ordinary statements afterwards.
            for conn in order:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT %s", (round_,))
                    assert cursor.fetchall() == ((round_,),)
    finally:
        _close_all(single, multi)


def test_multi_statements_switched_with_com_set_option(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """mysqlclient (which logs in with CLIENT_MULTI_STATEMENTS) turns multi-statements off
    and on with COM_SET_OPTION; PyMySQL clients with and without the flag share the one
    upstream connection in between."""
    import MySQLdb as mysqldb
    multi_on, multi_off = 0, 1  # enum_mysql_set_option
    direct = db.connect()
    try:
        expected_error = _multi_error(direct)
    finally:
        direct.close()

    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "5")
    switcher = mysqldb.connect(
        host=gate.host,
        port=gate.port,
        user=db.user,
        password=db.password,
        database=db.database,
        autocommit=True,
    )
    single = gate.connect()
    multi = gate.connect(client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        for round_ in range(5):
            switcher.set_server_option(multi_off)
            assert _multi_results(multi) == [((1,),), ((2,),)], round_
            cursor = switcher.cursor()
            with pytest.raises(mysqldb.ProgrammingError) as excinfo:
                cursor.execute("SELECT 1; SELECT 2")
            assert excinfo.value.args == expected_error, round_
            cursor.close()

            switcher.set_server_option(multi_on)
            assert _multi_error(single) == expected_error, round_
            cursor = switcher.cursor()
            cursor.execute("SELECT 1; SELECT 2")
            assert cursor.fetchall() == ((1,),)
            assert cursor.nextset()
            assert cursor.fetchall() == ((2,),)
            assert cursor.nextset() is None
            cursor.close()
    finally:
        switcher.close()
        _close_all(single, multi)


def test_multi_statements_stay_off_after_a_reset(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """COM_RESET_CONNECTION keeps the connection's COM_SET_OPTION state (multi-statements
    stay on, measured on MariaDB 10.11). A client that turned them on and left pinned
    gets its connection reset; the next client, without CLIENT_MULTI_STATEMENTS, must
    still get the server's syntax error for two statements, as directly."""
    with contextlib.closing(db.connect()) as direct:
        expected_error = _multi_error(direct)
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "5")
    multi = gate.connect(client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        assert _multi_results(multi) == [((1,),), ((2,),)]
        with multi.cursor() as cursor:
            cursor.execute("SET @pin = 1")  # pinned: its connection is reset when it leaves
            cursor.execute("SELECT CONNECTION_ID()")
            (multi_id,) = cursor.fetchone()
    finally:
        multi.close()
    with contextlib.closing(gate.connect()) as single:
        with single.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID(), @pin")
            assert cursor.fetchone() == (multi_id, None), "not the same, reset connection"
        assert _multi_error(single) == expected_error


def test_ok_info_for_a_client_without_session_track(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """mysql-connector-python does not set CLIENT_SESSION_TRACK, so mysqlgate rewrites the
    server's OK packets for it; their info string must still read as on the server."""
    import mysql.connector as connector
    from mysql.connector.constants import ClientFlag

    _make_table(db)
    gate = gate_factory("--pool-size", "1")
    statements = (
        "UPDATE t SET v = v WHERE id = 1",
        "INSERT INTO t VALUES (3, 0), (4, 0)",
        "UPDATE t SET v = v + 1 WHERE id > 2",
        "DELETE FROM t WHERE id > 2",
    )
    results = {}
    for where, (host, port) in {
        "direct": (db.host, db.port),
        "gate": (gate.host, gate.port),
    }.items():
        conn = connector.connect(
            host=host,
            port=port,
            user=db.user,
            password=db.password,
            database=db.database,
            autocommit=True,
            use_pure=True,
            ssl_disabled=True,
        )
        try:
            assert not conn.client_flags & ClientFlag.SESSION_TRACK
            results[where] = [conn.cmd_query(sql) for sql in statements]
        finally:
            conn.close()
    assert results["direct"][0]["info_msg"] == "Rows matched: 1  Changed: 0  Warnings: 0"
    assert results["gate"] == results["direct"]


# -- CLIENT_DEPRECATE_EOF --------------------------------------------------------------------
#
# None of the client libraries at hand sets CLIENT_DEPRECATE_EOF (PyMySQL, mysqlclient's
# libmariadb and mysql-connector-python all expect classic EOF packets), so a minimal client
# speaks the protocol itself here. Its transcript through mysqlgate must equal its transcript
# on a direct connection with the same flags.

RAW_FLAGS = (
    CLIENT.LONG_PASSWORD
    | CLIENT.LONG_FLAG
    | CLIENT.CONNECT_WITH_DB
    | CLIENT.PROTOCOL_41
    | CLIENT.TRANSACTIONS
    | CLIENT.SECURE_CONNECTION
    | CLIENT.MULTI_STATEMENTS
    | CLIENT.MULTI_RESULTS
    | CLIENT.PLUGIN_AUTH
    | CLIENT.DEPRECATE_EOF
)
UTF8MB4_GENERAL_CI = 45
MORE_RESULTS_EXISTS = 0x0008


def _native_scramble(password: bytes, nonce: bytes) -> bytes:
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mask = hashlib.sha1(nonce + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0xFB:
        return first, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


class RawClient:
    """Just enough of the client protocol for text queries, with CLIENT_DEPRECATE_EOF."""

    def __init__(
        self, host: str, port: int, user: str, password: str, database: str, flags: int = RAW_FLAGS
    ) -> None:
        self.flags = flags
        self.sock = socket.create_connection((host, port), timeout=10)
        self.seq = 0
        try:
            self._login(user.encode(), password.encode(), database.encode())
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(b"\x01", seq=0)  # COM_QUIT
        self.sock.close()

    def _caching_sha2_more(self, password: bytes, nonce: bytes) -> bytes:
        """After a caching_sha2_password proof: the server's OK, through a full
        authentication (the password RSA-encrypted with its key) when it asks for one."""
        reply = self.read()
        if reply == bytes((1, auth.FAST_AUTH_OK)):  # the OK follows
            return self.read()
        if reply == bytes((1, auth.PERFORM_FULL_AUTH)):  # ask for the server's key
            self._send(auth.REQUEST_PUBLIC_KEY)
            key = self.read()[1:]
            self._send(auth.rsa_encrypt_password(password, nonce, key))
            return self.read()
        return reply

    # -- packets --------------------------------------------------------------------------

    def _recv_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            data += chunk
        return data

    def read(self) -> bytes:
        header = self._recv_exact(4)
        length = int.from_bytes(header[:3], "little")
        assert header[3] == self.seq, f"sequence id {header[3]}, expected {self.seq}"
        self.seq = (self.seq + 1) % 256
        assert length < 0xFFFFFF  # no large packets in these tests
        return self._recv_exact(length)

    def _send(self, payload: bytes, seq: int | None = None) -> None:
        if seq is not None:
            self.seq = seq
        self.sock.sendall(len(payload).to_bytes(3, "little") + bytes((self.seq,)) + payload)
        self.seq = (self.seq + 1) % 256

    # -- login ----------------------------------------------------------------------------

    def _login(self, user: bytes, password: bytes, database: bytes) -> None:
        greeting = self.read()
        assert greeting[0] == 10, greeting
        pos = greeting.index(b"\0", 1) + 1 + 4  # server version, thread id
        nonce = greeting[pos : pos + 8]
        pos += 8 + 1
        capabilities = int.from_bytes(greeting[pos : pos + 2], "little")
        pos += 2 + 1 + 2  # capabilities (low), charset, status
        capabilities |= int.from_bytes(greeting[pos : pos + 2], "little") << 16
        pos += 2
        nonce_length = greeting[pos]
        pos += 1 + 10
        rest = max(13, nonce_length - 8)
        nonce += greeting[pos : pos + rest].rstrip(b"\0")
        # The greeting's plugin name follows; we answer with mysql_native_password (the
        # gate is started with it; a server would switch us if it wanted another).
        assert capabilities & CLIENT.DEPRECATE_EOF, "the server does not offer DEPRECATE_EOF"
        self.flags &= capabilities
        proof = _native_scramble(password, nonce)
        response = (
            self.flags.to_bytes(4, "little")
            + (1 << 24).to_bytes(4, "little")
            + bytes((UTF8MB4_GENERAL_CI,))
            + bytes(23)
            + user
            + b"\0"
            + bytes((len(proof),))
            + proof
            + database
            + b"\0"
            + b"mysql_native_password\0"
        )
        self._send(response)
        reply = self.read()
        if reply[:1] == b"\xfe":  # auth switch request
            plugin, _, data = reply[1:].partition(b"\0")
            nonce = data.rstrip(b"\0")
            if plugin == b"caching_sha2_password":  # MySQL's accounts
                self._send(auth.scramble(auth.CACHING_SHA2_PASSWORD, password, nonce))
                reply = self._caching_sha2_more(password, nonce)
            else:
                assert plugin == b"mysql_native_password", reply
                self._send(_native_scramble(password, nonce))
                reply = self.read()
        if reply[:1] == b"\xff":
            raise ConnectionError(f"login refused: {reply!r}")
        assert reply[:1] == b"\x00", reply

    # -- queries --------------------------------------------------------------------------

    def query(self, sql: str) -> list[tuple[str, Any]]:
        """Send COM_QUERY; return the response as a list of (kind, parsed) items."""
        self._send(b"\x03" + sql.encode(), seq=0)
        items: list[tuple[str, Any]] = []
        while True:
            first = self.read()
            if first[0] == 0xFF:
                items.append(("ERR", self._err(first)))
                return items
            if first[0] == 0x00:
                ok = self._ok(first)
                items.append(("OK", ok))
            else:
                count, _ = _lenenc(first, 0)
                columns = [self._column_name(self.read()) for _ in range(count)]
                rows = []
                while True:
                    packet = self.read()
                    if packet[0] == 0xFE and len(packet) < 0xFFFFFF:
                        # With DEPRECATE_EOF the set ends with an OK packet, 0xFE header.
                        ok = self._ok(packet)
                        break
                    if packet[0] == 0xFF:
                        items.append(("ERR", self._err(packet)))
                        return items
                    rows.append(self._row(packet))
                items.append(("RESULT", (columns, rows, ok)))
            if not ok["status"] & MORE_RESULTS_EXISTS:
                return items

    @staticmethod
    def _ok(packet: bytes) -> dict[str, Any]:
        affected, pos = _lenenc(packet, 1)
        insert_id, pos = _lenenc(packet, pos)
        status = int.from_bytes(packet[pos : pos + 2], "little")
        warnings = int.from_bytes(packet[pos + 2 : pos + 4], "little")
        return {
            "header": packet[0],
            "affected": affected,
            "insert_id": insert_id,
            "status": status,
            "warnings": warnings,
            "info": packet[pos + 4 :],  # without CLIENT_SESSION_TRACK: string<EOF>
        }

    @staticmethod
    def _err(packet: bytes) -> tuple[int, str, str]:
        code = int.from_bytes(packet[1:3], "little")
        assert packet[3:4] == b"#"
        return code, packet[4:9].decode(), packet[9:].decode()

    @staticmethod
    def _column_name(packet: bytes) -> str:
        pos = 0
        for _ in range(4):  # catalog, schema, table, org_table
            size, pos = _lenenc(packet, pos)
            pos += size
        size, pos = _lenenc(packet, pos)
        return packet[pos : pos + size].decode()

    @staticmethod
    def _row(packet: bytes) -> tuple[str | None, ...]:
        values: list[str | None] = []
        pos = 0
        while pos < len(packet):
            if packet[pos] == 0xFB:
                values.append(None)
                pos += 1
                continue
            size, pos = _lenenc(packet, pos)
            values.append(packet[pos : pos + size].decode())
            pos += size
        return tuple(values)


DEPRECATE_EOF_SCRIPT = (
    "SELECT 1 AS a, 'x' AS b, NULL AS c",
    "SELECT id, v FROM t ORDER BY id",
    "SELECT 1; SELECT 2",
    "UPDATE t SET v = v WHERE id = 1",
    "SELECT * FROM no_such_table",
    "SET SESSION time_zone = '+01:00'",
    "SELECT @@session.time_zone",
    "DO 1; SELECT 3 AS x",
    "SELECT id FROM t WHERE id = 99",
    "SET SESSION time_zone = DEFAULT",
)


def test_deprecate_eof_client_interleaved_with_classic_client(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    _make_table(db)
    direct = RawClient(db.host, db.port, db.user, db.password, db.database)
    try:
        assert direct.flags & CLIENT.DEPRECATE_EOF
        expected = [direct.query(sql) for sql in DEPRECATE_EOF_SCRIPT]
    finally:
        direct.close()
    # The direct transcript is what DEPRECATE_EOF looks like (a sanity check of RawClient).
    assert expected[0] == [("RESULT", (["a", "b", "c"], [("1", "x", None)], expected[0][0][1][2]))]
    assert expected[0][0][1][2]["header"] == 0xFE

    gate = gate_factory(
        "--pool-size", "1", "--pool-queue-timeout", "5", "--auth-plugin", "mysql_native_password"
    )
    raw = RawClient(gate.host, gate.port, db.user, db.password, db.database)
    classic = gate.connect()
    try:
        assert raw.flags & CLIENT.DEPRECATE_EOF
        mismatches = []
        for round_ in range(5):
            for sql, want in zip(DEPRECATE_EOF_SCRIPT, expected, strict=True):
                got = raw.query(sql)
                if got != want:
                    mismatches.append(f"round {round_} {sql!r}:\n  got  {got}\n  want {want}")
                with classic.cursor() as cursor:
                    cursor.execute("SELECT %s, @@session.time_zone", (round_,))
                    assert cursor.fetchall() == ((round_, "SYSTEM"),)
        assert not mismatches, "\n".join(mismatches[: len(DEPRECATE_EOF_SCRIPT)])
    finally:
        raw.close()
        _close_all(classic)
