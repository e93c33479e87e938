"""The previous statement's diagnostics (SHOW WARNINGS, @@warning_count, ROW_COUNT(),
FOUND_ROWS()) answer about the client's own previous statement, as on a direct
connection, although its statements run on whichever upstream connection is free
(issue 6, item 3; shared/PROTOCOL-NOTES.md "The previous statement's diagnostics")."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from harness import Gate, ScratchDb, fetch_rows


def _columns(conn: pymysql.connections.Connection, sql: str) -> list[str]:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchall()
        return [d[0] for d in cursor.description]


def _connection_id(conn: pymysql.connections.Connection) -> int:
    return int(fetch_rows(conn, "SELECT CONNECTION_ID()")[0][0])


@pytest.fixture
def table(db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cursor:
        cursor.execute("CREATE TABLE h (v INT)")
        cursor.execute("INSERT INTO h VALUES (1), (2), (3)")


def test_row_count_and_found_rows_after_another_client_used_the_connection(
    gate_factory: Callable[..., Gate], db: ScratchDb, table: None
) -> None:
    """Pool of one: B's statements run between each of A's on the same connection, so
    the server's ROW_COUNT()/FOUND_ROWS() would be B's; A must get what the same
    statements give on a direct connection (with B's on another), column names too."""
    steps = [
        ("INSERT INTO h VALUES (4), (5)", "SELECT ROW_COUNT()"),
        ("UPDATE h SET v = v WHERE v > 100", "SELECT ROW_COUNT()"),
        ("SELECT v FROM h WHERE v <= 2", "SELECT ROW_COUNT(), FOUND_ROWS()"),
        ("DELETE FROM h WHERE v = 5", "SELECT ROW_COUNT(), FOUND_ROWS()"),
        ("SELECT v FROM h", "SELECT found_rows() AS n, ROW_COUNT()"),
        ("SELECT * FROM no_such_table", "SELECT ROW_COUNT()"),
        ("SET @@session.time_zone = '+01:00'", "SELECT ROW_COUNT() + 10, FOUND_ROWS()"),
        ("DO 1", "SELECT IF(ROW_COUNT() = 0, 'zero', 'other')"),
    ]
    b_statement = "SELECT 1 FROM h, (SELECT 1 UNION SELECT 2) x LIMIT 7"

    def run(a: pymysql.connections.Connection, b: pymysql.connections.Connection,
            a_id: int | None) -> list[Any]:
        seen: list[Any] = []
        for statement, read in steps:
            with contextlib.suppress(pymysql.err.ProgrammingError):
                fetch_rows(a, statement)
            assert fetch_rows(b, b_statement)
            if a_id is not None:
                assert _connection_id(b) == a_id, "B did not share A's connection"
                fetch_rows(b, b_statement)
            seen.append((statement, read, fetch_rows(a, read), _columns(a, read)))
        return seen

    with contextlib.closing(db.connect()) as a, contextlib.closing(db.connect()) as b:
        expected = run(a, b, None)
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cursor:
        cursor.execute("DELETE FROM h WHERE v > 3")
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "10")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        assert run(a, b, _connection_id(a)) == expected


def test_found_rows_after_calc_found_rows_survives_a_preemption(
    gate_factory: Callable[..., Gate], db: ScratchDb, table: None
) -> None:
    """Only the server knows SQL_CALC_FOUND_ROWS' count. A keeps its connection for its
    next statement; when B needs it, mysqlgate reads the count first."""
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "10")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        assert fetch_rows(a, "SELECT SQL_CALC_FOUND_ROWS v FROM h ORDER BY v LIMIT 1") == ((1,),)
        assert fetch_rows(b, "SELECT 2") == ((2,),)  # served: A's hold gave way
        assert fetch_rows(a, "SELECT FOUND_ROWS()") == ((3,),)
        # And without anyone in between, straight from the server.
        assert fetch_rows(a, "SELECT SQL_CALC_FOUND_ROWS v FROM h LIMIT 2") == ((1,), (2,))
        assert fetch_rows(a, "SELECT FOUND_ROWS()") == ((3,),)


def test_show_warnings_and_errors_of_the_clients_own_statement(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A's warnings and errors stay readable while B keeps the other connection busy in
    a transaction; B never sees A's."""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "10")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        for _ in range(3):
            fetch_rows(a, "SELECT 1/0")
            b.begin()
            assert fetch_rows(b, "SHOW WARNINGS") == ()
            warnings = fetch_rows(a, "SHOW WARNINGS")
            assert [w[:2] for w in warnings] == [("Warning", 1365)], warnings
            assert fetch_rows(a, "SELECT @@warning_count, @@error_count") == ((1, 0),)
            b.commit()
            with pytest.raises(pymysql.err.ProgrammingError):
                fetch_rows(a, "SELECT * FROM no_such_table")
            assert fetch_rows(b, "SELECT @@warning_count, @@error_count") == ((0, 0),)
            errors = fetch_rows(a, "SHOW ERRORS")
            assert [e[:2] for e in errors] == [("Error", 1146)], errors
            assert fetch_rows(a, "SHOW COUNT(*) ERRORS") == ((1,),)


def test_a_client_holding_warnings_does_not_block_the_pool(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A keeps its connection after a warning for its SHOW WARNINGS, but it is only a
    courtesy: B, waiting on a pool of one, gets it after a short grace, not after the
    queue timeout (directly, both would run at once)."""
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "20")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        fetch_rows(a, "SELECT 1/0")
        started = time.monotonic()
        assert fetch_rows(b, "SELECT 'b'") == (("b",),)
        assert time.monotonic() - started < 10, "B waited for A's next statement"
        # A goes on; its warning was given up with the connection, and B's not taken.
        assert fetch_rows(a, "SHOW WARNINGS") == ()


def test_many_clients_each_read_their_own_row_count(
    gate_factory: Callable[..., Gate], db: ScratchDb, table: None
) -> None:
    """Eight clients on a pool of two, each inserting its own number of rows and
    reading ROW_COUNT() right after: the pool is busy, so the two statements often run
    on different connections with others' statements between them."""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "30")
    errors: list[str] = []

    def client(n: int) -> None:
        try:
            with contextlib.closing(gate.connect()) as conn:
                for round_ in range(15):
                    count = 1 + (n + round_) % 4
                    values = ", ".join(f"({100 + n})" for _ in range(count))
                    fetch_rows(conn, f"INSERT INTO h VALUES {values}")
                    got = fetch_rows(conn, "SELECT ROW_COUNT()")
                    if got != ((count,),):
                        errors.append(f"client {n} round {round_}: {got} != {count}")
                    rows = fetch_rows(conn, f"SELECT v FROM h WHERE v = {100 + n} LIMIT {count}")
                    found = fetch_rows(conn, "SELECT FOUND_ROWS(), ROW_COUNT()")
                    if found != ((len(rows), -1),):
                        errors.append(f"client {n} round {round_}: {found} != {len(rows)}, -1")
        except Exception as exc:  # reported with the others
            errors.append(f"client {n}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, "\n".join(errors[:20])
