"""mysql-connector-python's server-side prepared statements (binary protocol, COM_STMT_*)
through mysqlgate with a pool smaller than the number of clients (issue 6, "Prepared
statements without pinning" and "Tests" item 2; SPEC sections 2 and 7).

Written as mysqlgate should behave: clients that keep prepared statements open (as app
servers with persistent connections, sysbench --db-ps-mode=auto, Go's database/sql, PHP
mysqli do) share the upstream connections like any other client; COM_STMT_SEND_LONG_DATA,
COM_STMT_RESET, COM_STMT_CLOSE and COM_STMT_FETCH (a cursor, which may pin while it is
open) work as on a direct connection. Each scenario also runs directly, as the reference.

mysql-connector's C extension does not load here, so the pure-Python protocol is used
explicitly (use_pure=True): the low-level cmd_stmt_* calls are its API."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mysql.connector
import pytest
from harness import Gate, ScratchDb
from mysql.connector import errors as connector_errors
from pool_load import DEADLINE, ConnectionSampler, PoolLoad

MiB = 1024 * 1024
THREADS = 6
POOL = "2"
# A correct proxy never makes a client wait long; 5 s keeps a failing run short.
QUEUE_TIMEOUT = "5"
CURSOR_TYPE_READ_ONLY = 1
SERVER_STATUS_CURSOR_EXISTS = 0x40
SERVER_STATUS_LAST_ROW_SENT = 0x80
ER_UNKNOWN_STMT_HANDLER = 1243
ER_WRONG_ARGUMENTS = 1210


def _connect(host: str, port: int, db: ScratchDb) -> Any:
    return mysql.connector.connect(
        host=host,
        port=port,
        user=db.user,
        password=db.password,
        database=db.database,
        autocommit=True,
        use_pure=True,
        connection_timeout=DEADLINE,
    )


def _direct(db: ScratchDb) -> Callable[[], Any]:
    return lambda: _connect(db.host, db.port, db)


def _through(gate: Gate) -> Callable[[], Any]:
    return lambda: _connect(gate.host, gate.port, gate.db)


@contextlib.contextmanager
def _closing(conn: Any) -> Iterator[Any]:
    try:
        yield conn
    finally:
        with contextlib.suppress(connector_errors.Error):
            conn.close()


@pytest.fixture
def table(db: ScratchDb) -> str:
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE pt (id INT AUTO_INCREMENT PRIMARY KEY, owner INT NOT NULL,"
            " n INT NOT NULL, note VARCHAR(100), b LONGBLOB, KEY (owner)) ENGINE=InnoDB"
        )
    return "pt"


def _run_threads(count: int, fn: Callable[[int], Any]) -> tuple[list[Any], list[str]]:
    """fn(0..count-1) in threads at once: (results, 'thread i: error' for each failure)."""
    results: list[Any] = [None] * count
    failures: list[str] = []
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(fn, index) for index in range(count)]
        for index, future in enumerate(futures):
            try:
                results[index] = future.result(timeout=DEADLINE * 2)
            except Exception as exc:
                failures.append(f"thread {index}: {type(exc).__name__}: {exc}")
    return results, failures


def _clear(db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM pt")


# -- many clients with open prepared statements ---------------------------------------------------


def _prepared_client(
    connect: Callable[[], Any], index: int, barrier: threading.Barrier, rounds: int,
    sum_by_value: bool = False,
) -> list[Any]:
    """Prepare four statements, wait until every client has prepared its own (all hold
    open statements at once), then execute them over and over; returns what it saw.
    `sum_by_value`: `? + ?` is compared by its value, not its type (MySQL: below)."""
    insert_sql = "INSERT INTO pt (owner, n, note) VALUES (?, ?, ?)"
    update_sql = "UPDATE pt SET n = n + ? WHERE id = ?"
    select_sql = "SELECT n, note FROM pt WHERE owner = ? ORDER BY id"
    types_sql = "SELECT ? + ?, CONCAT(?, ?), CAST(? AS DECIMAL(10, 2)), ? IS NULL"
    seen: list[Any] = []
    try:
        conn = connect()
    except Exception:
        barrier.abort()
        raise
    with _closing(conn):
        try:
            insert = conn.cursor(prepared=True)
            update = conn.cursor(prepared=True)
            select = conn.cursor(prepared=True)
            types = conn.cursor(prepared=True)
            select.execute(select_sql, (index,))
            seen.append(select.fetchall())
            insert.execute(insert_sql, (index, 0, f"client {index} ü"))
            types.execute(types_sql, (1, 1, "a", "b", "1.5", None))
            seen.append(types.fetchall())
        except Exception:
            barrier.abort()
            raise
        barrier.wait()  # everyone holds prepared statements now
        for r in range(1, rounds):
            insert.execute(insert_sql, (index, r, f"client {index} row {r}"))
            row_id = insert.lastrowid
            assert row_id, f"client {index}: no insert id"
            update.execute(update_sql, (1000, row_id))
            assert update.rowcount == 1
            select.execute(select_sql, (index,))
            rows = select.fetchall()
            assert [n for n, _ in rows] == [0, *range(1001, 1000 + r + 1)], f"client {index}"
            types.execute(types_sql, (r, 1, "x", str(r), f"{r}.25", None if r % 2 else r))
            answer = types.fetchall()
            seen.append([(float(row[0]), *row[1:]) for row in answer] if sum_by_value
                        else answer)
        seen.append(rows)
        for cursor in (insert, update, select, types):
            cursor.close()
    return [_normalised(part, index) for part in seen]


def _normalised(rows: Any, index: int) -> Any:
    """What a client saw, with its own index taken out (to compare clients)."""
    return repr(rows).replace(f"client {index}", "client I")


def test_prepared_cursors_more_threads_than_pool(
    gate_factory: Callable[..., Gate], db: ScratchDb, table: str, flavour: str
) -> None:
    # The last parameter goes from NULL to a number and back. On MySQL that fixes the
    # statement's types to numbers from the first number on, and `? + ?` answers BIGINT
    # instead of DOUBLE: a statement that moves to another connection is prepared afresh
    # there and answers DOUBLE again (docs/PROTOCOL-NOTES-MYSQL.md, "Prepared statements'
    # parameter types"). Its value is compared there; that one client's binds never
    # change another's types is test_one_clients_parameter_types_do_not_reach_another.
    by_value = flavour == "mysql"
    rounds = 25
    barrier = threading.Barrier(3, timeout=DEADLINE)
    reference, failures = _run_threads(
        3, lambda index: _prepared_client(_direct(db), index, barrier, rounds, by_value)
    )
    assert not failures, failures
    assert reference[0] == reference[1] == reference[2]
    _clear(db)

    gate = gate_factory("--pool-size", POOL, "--pool-queue-timeout", QUEUE_TIMEOUT)
    barrier = threading.Barrier(THREADS, timeout=DEADLINE)
    with ConnectionSampler(db) as sampler:
        seen, failures = _run_threads(
            THREADS,
            lambda index: _prepared_client(_through(gate), index, barrier, rounds, by_value)
        )
    assert not failures, (
        f"{len(failures)} of {THREADS} clients with open prepared statements failed through "
        f"a pool of {POOL}:\n" + "\n".join(failures)
    )
    for index in range(THREADS):
        assert seen[index] == reference[0], f"client {index}"
    assert sampler.peak <= int(POOL)
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT owner, COUNT(*), MIN(n), MAX(n) FROM pt GROUP BY owner")
        assert sorted(cur.fetchall()) == [
            (index, rounds, 0, 1000 + rounds - 1) for index in range(THREADS)
        ]


# -- COM_STMT_SEND_LONG_DATA and COM_STMT_RESET -------------------------------------------------


def _long_data(connect: Callable[[], Any], blobs: list[bytes]) -> list[Any]:
    seen: list[Any] = []
    with _closing(connect()) as conn:
        cursor = conn.cursor(prepared=True)
        insert_sql = "INSERT INTO pt (owner, n, b) VALUES (?, ?, ?)"
        for n, blob in enumerate(blobs):
            # A file-like parameter goes as COM_STMT_SEND_LONG_DATA packets (128 KiB each)
            # before COM_STMT_EXECUTE; the cursor sends COM_STMT_RESET before each execute.
            # An empty one sends no long data at all: the server refuses the execute.
            try:
                cursor.execute(insert_sql, (500, n, io.BytesIO(blob)))
            except connector_errors.Error as exc:
                seen.append((exc.errno, exc.sqlstate))
            else:
                seen.append(cursor.rowcount)
        cursor.close()

        # Low level: long data sent, then COM_STMT_RESET discards it, then an execute
        # with an ordinary value stores that value.
        stmt = conn.cmd_stmt_prepare(b"INSERT INTO pt (owner, n, b) VALUES (501, ?, ?)")
        stmt_id = stmt["statement_id"]
        conn.cmd_stmt_send_long_data(stmt_id, 1, io.BytesIO(b"discarded" * 50000))
        conn.cmd_stmt_reset(stmt_id)
        result = conn.cmd_stmt_execute(
            stmt_id, data=(1, b"kept"), parameters=stmt["parameters"]
        )
        seen.append(result["affected_rows"])
        # Long data for a statement, then an execute: the long data is the value.
        conn.cmd_stmt_send_long_data(stmt_id, 1, io.BytesIO(b"first part "))
        conn.cmd_stmt_send_long_data(stmt_id, 1, io.BytesIO(b"second part"))
        result = conn.cmd_stmt_execute(
            stmt_id, data=(2, io.BytesIO(b"")), parameters=stmt["parameters"]
        )
        seen.append(result["affected_rows"])
        conn.cmd_stmt_close(stmt_id)

        check = conn.cursor(prepared=True)
        check.execute(
            "SELECT owner, n, LENGTH(b), SHA2(b, 256) FROM pt WHERE owner >= ? ORDER BY owner, n",
            (500,),
        )
        seen.append(check.fetchall())
        check.execute("SELECT b FROM pt WHERE owner = ? ORDER BY n", (501,))
        seen.append(check.fetchall())
        check.close()
    return seen


def test_one_clients_parameter_types_do_not_reach_another(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """MySQL (8.0.22 on) fixes a statement's parameter types by the executions it has
    run: bound once with a number where NULL went before, `SELECT ? + ?` answers BIGINT
    from then on instead of DOUBLE (MariaDB derives them at each execute). Two clients
    through one upstream connection prepare the same text; the one that binds a number
    must not change what the other's statement answers. Each client's sequence is run
    directly too, on statements of their own: the reference."""
    sql = "SELECT ? + ?, ? IS NULL"
    number_first = [(1, 1, 2), (1, 1, None)]
    null_only = [(1, 1, None), (2, 1, None)]

    def run(conn: Any, sequence: list[tuple[Any, ...]]) -> list[str]:
        cursor = conn.cursor(prepared=True)
        seen = []
        for params in sequence:
            cursor.execute(sql, params)
            seen.append(repr(cursor.fetchall()))
        cursor.close()
        return seen

    with _closing(_direct(db)()) as first, _closing(_direct(db)()) as second:
        reference = run(first, number_first), run(second, null_only)
    gate = gate_factory("--pool-size", "1")
    with _closing(_through(gate)()) as first, _closing(_through(gate)()) as second:
        # Prepared by both before either runs: one text, one upstream connection.
        cursors = [conn.cursor(prepared=True) for conn in (first, second)]
        for cursor in cursors:
            cursor.execute(sql, (0, 0, None))
            cursor.fetchall()
        for cursor in cursors:
            cursor.close()
        seen = run(first, number_first), run(second, null_only)
    assert seen == reference


def test_send_long_data_and_reset(
    gate_factory: Callable[..., Gate], db: ScratchDb, table: str
) -> None:
    blobs = [os.urandom(3 * MiB + 17), b"", os.urandom(200 * 1024)]
    reference = _long_data(_direct(db), blobs)
    # The execute without its long data: MariaDB refuses its arguments, MySQL the packet
    # (ER_MALFORMED_PACKET).
    refused = ER_WRONG_ARGUMENTS if db.server.is_mariadb else 1835
    assert reference[:3] == [1, (refused, "HY000"), 1]
    assert reference[3:5] == [1, 1]
    stored = [(n, blob) for n, blob in enumerate(blobs) if blob]
    assert [tuple(row[:3]) for row in reference[5][:2]] == [
        (500, n, len(blob)) for n, blob in stored
    ]
    assert [row[3] for row in reference[5][:2]] == [
        hashlib.sha256(blob).hexdigest() for _, blob in stored
    ]
    assert [row[0] for row in reference[6]] == [b"kept", b"first part second part"]
    _clear(db)

    gate = gate_factory("--pool-size", POOL, "--pool-queue-timeout", QUEUE_TIMEOUT)
    with PoolLoad(gate, clients=3):
        assert _long_data(_through(gate), blobs) == reference


# -- COM_STMT_CLOSE ---------------------------------------------------------------------------


def _prepared_count(db: ScratchDb) -> int:
    return int(db.server.query("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'")[0][1])


def _execute_rows(conn: Any, stmt: Any, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """COM_STMT_EXECUTE of a statement from cmd_stmt_prepare, and its rows (the
    connector's prepared cursor does the same, marking the result unread first)."""
    _, columns, _ = conn.cmd_stmt_execute(
        stmt["statement_id"], data=params, parameters=stmt["parameters"]
    )
    conn.unread_result = True
    rows, _ = conn.get_rows(binary=True, columns=columns)
    return [tuple(row) for row in rows]


def _closing_client(
    connect: Callable[[], Any], index: int, barrier: threading.Barrier, rounds: int
) -> list[Any]:
    """Keep five statements open, prepare-execute-close a sixth again and again, and
    check that a closed statement is gone."""
    seen: list[Any] = []
    try:
        conn = connect()
    except Exception:
        barrier.abort()
        raise
    with _closing(conn):
        try:
            kept = [
                conn.cmd_stmt_prepare(f"SELECT {index} * 100 + {k} + ?".encode())
                for k in range(5)
            ]
        except Exception:
            barrier.abort()
            raise
        barrier.wait()
        for r in range(rounds):
            for k, stmt in enumerate(kept):
                rows = _execute_rows(conn, stmt, (r,))
                assert rows == [(index * 100 + k + r,)], f"client {index} statement {k}"
            # A prepared cursor prepares at its first execute and closes at close().
            temporary = conn.cursor(prepared=True)
            temporary.execute(f"SELECT {index}, ? * 2 /* round {r} */", (r,))
            assert temporary.fetchall() == [(index, 2 * r)]
            temporary.close()
        # A closed statement is unknown afterwards (the server's error).
        closed = kept.pop()
        conn.cmd_stmt_close(closed["statement_id"])
        try:
            _execute_rows(conn, closed, (1,))
        except connector_errors.Error as exc:
            seen.append(("after close", exc.errno, exc.sqlstate))
        else:
            seen.append(("after close", "no error"))
        # The others still work.
        for k, stmt in enumerate(kept):
            seen.append(_execute_rows(conn, stmt, (7,)) == [(index * 100 + k + 7,)])
        for stmt in kept:
            conn.cmd_stmt_close(stmt["statement_id"])
        cursor = conn.cursor()
        cursor.execute("SELECT 'still fine'")
        seen.append(cursor.fetchall())
        cursor.close()
    return seen


# The server refuses more prepared statements than this (error 1461): six clients with
# six statements each fit on direct connections; through two upstream connections a
# proxy that prepares each statement on every connection that runs it must close the
# least recently used ones in time.
@pytest.mark.server_options(max_prepared_stmt_count=40)
def test_closing_statements_and_the_server_limit(
    gate_factory: Callable[..., Gate], db: ScratchDb, table: str
) -> None:
    rounds = 15
    before = _prepared_count(db)
    barrier = threading.Barrier(THREADS, timeout=DEADLINE)
    reference, failures = _run_threads(
        THREADS, lambda index: _closing_client(_direct(db), index, barrier, rounds)
    )
    assert not failures, failures
    expected = [("after close", ER_UNKNOWN_STMT_HANDLER, "HY000"), True, True, True, True,
                [("still fine",)]]
    assert reference == [expected] * THREADS
    assert _prepared_count(db) == before

    gate = gate_factory("--pool-size", POOL, "--pool-queue-timeout", QUEUE_TIMEOUT)
    barrier = threading.Barrier(THREADS, timeout=DEADLINE)
    seen, failures = _run_threads(
        THREADS, lambda index: _closing_client(_through(gate), index, barrier, rounds)
    )
    assert not failures, (
        f"{len(failures)} of {THREADS} clients failed through a pool of {POOL}:\n"
        + "\n".join(failures)
    )
    assert seen == reference
    # Every client closed all its statements and left: none is left on the upstream
    # connections the gate keeps open.
    deadline = time.monotonic() + DEADLINE
    while _prepared_count(db) != before:
        assert time.monotonic() < deadline, (
            f"prepared statements left on the server: {_prepared_count(db)} (before: {before})"
        )
        time.sleep(0.05)


# -- COM_STMT_FETCH (a server-side cursor) ------------------------------------------------------


def _cursor_fetch(connect: Callable[[], Any], rows: int, chunk: int) -> list[Any]:
    """Execute with CURSOR_TYPE_READ_ONLY and read the result in COM_STMT_FETCH chunks;
    then execute the statement again (the cursor is closed by that) and fetch again."""
    seen: list[Any] = []
    with _closing(connect()) as conn:
        stmt = conn.cmd_stmt_prepare(b"SELECT n, note FROM pt WHERE owner = ? ORDER BY n")
        stmt_id = stmt["statement_id"]
        for attempt in range(2):
            result = conn.cmd_stmt_execute(
                stmt_id, data=(600,), parameters=stmt["parameters"], flags=CURSOR_TYPE_READ_ONLY
            )
            _, columns, eof = result
            seen.append(("cursor opened", bool(eof["status_flag"] & SERVER_STATUS_CURSOR_EXISTS)))
            fetched: list[Any] = []
            for _ in range(rows // chunk + 2):
                conn.cmd_stmt_fetch(stmt_id, chunk)
                part, eof = conn.get_rows(binary=True, columns=columns)
                fetched += [tuple(row) for row in part]
                if eof["status_flag"] & SERVER_STATUS_LAST_ROW_SENT:
                    break
                if attempt == 1 and len(fetched) >= chunk * 2:
                    break  # leave the rest unread: the next COM_STMT_RESET closes it
            seen.append((attempt, len(fetched), fetched[:3], fetched[-1:]))
            conn.cmd_stmt_reset(stmt_id)
        conn.cmd_stmt_close(stmt_id)
        cursor = conn.cursor()
        cursor.execute("SELECT COUNT(*) FROM pt WHERE owner = 600")
        seen.append(cursor.fetchall())
        cursor.close()
    return seen


def test_cursor_fetch(gate_factory: Callable[..., Gate], db: ScratchDb, table: str) -> None:
    rows, chunk = 1000, 64
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pt (owner, n, note) VALUES (600, %s, %s)",
            [(n, f"row {n}") for n in range(rows)],
        )
    reference = _cursor_fetch(_direct(db), rows, chunk)
    assert reference[0] == ("cursor opened", True)
    assert reference[1] == (0, rows, [(0, "row 0"), (1, "row 1"), (2, "row 2")],
                            [(rows - 1, f"row {rows - 1}")])
    assert reference[3][1] == chunk * 2
    assert reference[4] == [(rows,)]

    gate = gate_factory("--pool-size", POOL, "--pool-queue-timeout", QUEUE_TIMEOUT)
    # Three clients at a time read with cursors (each may hold a connection while its
    # cursor is open), with other clients busy on the pool.
    with PoolLoad(gate, clients=2):
        seen, failures = _run_threads(3, lambda _: _cursor_fetch(_through(gate), rows, chunk))
    assert not failures, "\n".join(failures)
    assert seen == [reference] * 3
