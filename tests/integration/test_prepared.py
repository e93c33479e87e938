"""Prepared statements through the binary protocol without pinning (issue 6): what a
driver that binds parameter types once and then executes with the new-params-bound flag
off gets, across upstream connections; and the answers for ids that do not exist,
compared with the server's own. Spoken raw, with PyMySQL's packet layer, because the
drivers at hand always send the types."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
from harness import Gate, ScratchDb
from pymysql.constants import COMMAND

VAR_STRING = 0xFD


class RawStatements:
    """COM_STMT_* over a PyMySQL connection (classic EOF packets: PyMySQL does not ask
    for CLIENT_DEPRECATE_EOF)."""

    def __init__(self, conn: pymysql.connections.Connection) -> None:
        self.conn = conn

    def _packets_until_eof(self) -> list[bytes]:
        out = []
        while True:
            data = self.conn._read_packet().get_all_data()
            if data[0] == 0xFE and len(data) < 9:
                return out
            out.append(data)

    def prepare(self, sql: str) -> tuple[int, int]:
        """Statement id and parameter count."""
        self.conn._execute_command(COMMAND.COM_STMT_PREPARE, sql)
        first = self.conn._read_packet().get_all_data()
        statement_id, columns, params = struct.unpack_from("<IHH", first, 1)
        if params:
            self._packets_until_eof()
        if columns:
            self._packets_until_eof()
        return statement_id, params

    def execute(self, statement_id: int, values: list[str], bind_types: bool) -> Any:
        """Run it; the rows' single string column, or ('error', code, message)."""
        payload = struct.pack("<IBI", statement_id, 0, 1)
        if values:
            payload += bytes((len(values) + 7) // 8)  # no NULLs
            payload += b"\x01" if bind_types else b"\x00"
            if bind_types:
                payload += bytes((VAR_STRING, 0)) * len(values)
            for value in values:
                raw = value.encode()
                payload += bytes((len(raw),)) + raw
        return self._result(COMMAND.COM_STMT_EXECUTE, payload)

    def command(self, command: int, payload: bytes) -> Any:
        return self._result(command, payload)

    def _result(self, command: int, payload: bytes) -> Any:
        self.conn._execute_command(command, payload)
        try:
            first = self.conn._read_packet()
        except pymysql.err.MySQLError as exc:
            return ("error", exc.args[0], exc.args[1])
        data = first.get_all_data()
        if data[0] == 0x00:
            return "ok"
        self._packets_until_eof()  # column definitions
        rows = []
        for row in self._packets_until_eof():
            # 0x00, a NULL bitmap of (1 + 7 + 2) // 8 = 1 byte, one length-coded string
            rows.append(row[3:3 + row[2]].decode())
        return rows


def _renamed(part: Any, names: dict[str, str]) -> Any:
    if isinstance(part, str):
        for old, new in names.items():
            part = part.replace(old, new)
    return part


@contextlib.contextmanager
def _raw(connect: Callable[[], pymysql.connections.Connection]) -> Iterator[RawStatements]:
    conn = connect()
    try:
        yield RawStatements(conn)
    finally:
        conn.close()


def test_types_bound_once_follow_the_statement_to_another_connection(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A binds the parameter types with its first execute only; B then takes A's
    connection, so A's next execute runs on the other one, where mysqlgate prepares the
    statement and must send A's types along (the server would reject an execute without
    them: 1210)."""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "5")
    with _raw(lambda: gate.connect(ssl_disabled=True)) as a, \
            contextlib.closing(gate.connect(ssl_disabled=True)) as b:
        statement, params = a.prepare("SELECT CONCAT(?, '/', ?, '/', CONNECTION_ID())")
        assert params == 2
        ids = set()
        for round_ in range(4):
            rows = a.execute(statement, [f"x{round_}", "y"], bind_types=round_ == 0)
            assert isinstance(rows, list) and len(rows) == 1, rows
            value, other, connection_id = rows[0].split("/")
            assert (value, other) == (f"x{round_}", "y")
            ids.add(connection_id)
            b.begin()
            with b.cursor() as cursor:
                cursor.execute("SELECT 1")  # B takes the connection A used last
            rows = a.execute(statement, [f"z{round_}", "w"], bind_types=False)
            assert isinstance(rows, list) and rows[0].startswith(f"z{round_}/w/"), rows
            ids.add(rows[0].split("/")[2])
            b.commit()
        assert len(ids) == 2, "A never moved to the other connection"


def test_unknown_statement_ids_get_the_servers_answers(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """An id the client never got, or closed, and a fetch without a cursor: the same
    errors, codes and texts as a direct connection."""
    gate = gate_factory("--pool-size", "1")

    def answers(raw: RawStatements) -> list[Any]:
        statement, _ = raw.prepare("SELECT CONCAT('a', ?)")
        out = [
            raw.execute(statement, ["b"], bind_types=True),
            raw.command(COMMAND.COM_STMT_FETCH, struct.pack("<II", statement, 1)),
            raw.command(COMMAND.COM_STMT_RESET, struct.pack("<I", statement)),
            raw.execute(statement + 1000, ["b"], bind_types=True),
        ]
        raw.conn._execute_command(COMMAND.COM_STMT_CLOSE, struct.pack("<I", statement))
        out += [
            raw.execute(statement, ["b"], bind_types=True),
            raw.command(COMMAND.COM_STMT_RESET, struct.pack("<I", statement)),
        ]
        with raw.conn.cursor() as cursor:  # the connection still works after all that
            cursor.execute("SELECT 'still fine'")
            out.append(cursor.fetchall())
        # The ids are the server's there and mysqlgate's here: compare messages by them.
        names = {f"({statement})": "(id)", f"({statement + 1000})": "(id+1000)"}
        return [tuple(_renamed(part, names) for part in answer) if isinstance(answer, tuple)
                else answer for answer in out]

    with _raw(lambda: db.connect(ssl_disabled=True)) as direct:
        expected = answers(direct)
    assert expected[0] == ["ab"] and expected[3][:2] == ("error", 1243)
    with _raw(lambda: gate.connect(ssl_disabled=True)) as through:
        assert answers(through) == expected
