"""Commands beyond plain queries: LOAD DATA LOCAL INFILE (only for clients that enabled
it), prepared statements (COM_STMT_*, pinned while open), COM_RESET_CONNECTION."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import MySQLdb
import pymysql
import pytest
from harness import Gate, ScratchDb
from pymysql.constants import ER

COM_RESET_CONNECTION = 0x1F


def _one(conn: Any, sql: str, args: Any = None) -> tuple[Any, ...]:
    """The single row `sql` returns, on any DB-API connection."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql, args)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    assert len(rows) == 1, f"{sql!r} returned {len(rows)} rows"
    return tuple(rows[0])


def _mysqldb_connect(gate: Gate, db: ScratchDb) -> Any:
    return MySQLdb.connect(host=gate.host, port=gate.port, user=db.user,
                           passwd=db.password, db=db.database, autocommit=True)


def _connector_connect(gate: Gate, db: ScratchDb) -> Any:
    import mysql.connector as connector
    return connector.connect(host=gate.host, port=gate.port, user=db.user,
                             password=db.password, database=db.database, autocommit=True)


def _reset_connection(conn: pymysql.connections.Connection) -> None:
    """Send COM_RESET_CONNECTION and read its OK (PyMySQL has no public API for it;
    an ERR answer raises)."""
    conn._execute_command(COM_RESET_CONNECTION, b"")
    conn._read_ok_packet()


def test_load_data_local_infile(
    gate_factory: Callable[..., Gate], db: ScratchDb, tmp_path: Path
) -> None:
    gate = gate_factory("--pool-size", "1")
    with contextlib.closing(db.connect()) as direct:
        direct.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))")
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},name{i}\n" for i in range(1, 5001)))
    sql = (f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t "
           "FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n'")
    with contextlib.closing(gate.connect(local_infile=True)) as loader, \
            contextlib.closing(gate.connect()) as bystander:
        with loader.cursor() as cursor:
            assert cursor.execute(sql) == 5000
        with bystander.cursor() as cursor:  # the one upstream connection is free again
            cursor.execute("SELECT COUNT(*), MAX(name) FROM t")
            assert cursor.fetchone() == (5000, "name999")
        with loader.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM t")
            assert cursor.fetchone() == (5000,)
    # A client that did not enable LOCAL_FILES is refused as on a direct connection.
    with contextlib.closing(db.connect()) as direct_plain:
        with pytest.raises(pymysql.err.MySQLError) as direct_error:
            direct_plain.cursor().execute(sql.replace("INTO TABLE t", "IGNORE INTO TABLE t"))
    with contextlib.closing(gate.connect()) as plain:
        with pytest.raises(pymysql.err.MySQLError) as gate_error:
            plain.cursor().execute(sql.replace("INTO TABLE t", "IGNORE INTO TABLE t"))
        assert gate_error.value.args == direct_error.value.args
        with plain.cursor() as cursor:  # and goes on
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)


def test_prepared_statements_pin_until_closed(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A statement prepared with SQL PREPARE lives only on its upstream connection, so
    it pins its client there. Between A's statements, B opens a transaction and holds
    a connection: unpinned, A's connection would be idle and B (same client library,
    same capability flags) would take it, so A's EXECUTE would run on the pool's other
    connection, where `s` does not exist. EXECUTE ... USING takes literals: no user
    variable, whose own pin would hide a missing one for the statement (MySQL's
    EXECUTE takes variables only: there the statement has no parameters)."""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "5")
    with contextlib.closing(db.connect()) as direct:
        direct.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    a = _mysqldb_connect(gate, db)
    b = _mysqldb_connect(gate, db)
    try:
        cursor = a.cursor()
        literals = db.server.is_mariadb
        cursor.execute("PREPARE s FROM 'INSERT INTO t VALUES (?, ?)'" if literals else
                       "PREPARE s FROM 'INSERT INTO t SELECT COUNT(*), CONCAT(''v'', "
                       "COUNT(*)) FROM t'")
        (a_id,) = _one(a, "SELECT CONNECTION_ID()")
        for i in range(5):
            b.begin()
            (b_id,) = _one(b, "SELECT CONNECTION_ID()")
            assert b_id != a_id, "B got A's connection while A's statement was prepared"
            cursor.execute(f"EXECUTE s USING {i}, 'v{i}'" if literals else "EXECUTE s")
            assert _one(a, "SELECT CONNECTION_ID()") == (a_id,)  # pinned to its statement
            b.commit()
        cursor.execute("DEALLOCATE PREPARE s")
        assert _one(a, "SELECT COUNT(*), MAX(v) FROM t") == (5, "v4")
        cursor.close()
    finally:
        b.close()
        a.close()


def test_binary_prepared_statement_follows_its_client(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A COM_STMT_PREPARE'd statement no longer ties its client to one upstream
    connection: B takes A's connection in a transaction between A's executions, and A's
    statement runs on the other one (prepared there as needed), with the right result."""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "5")
    a = _connector_connect(gate, db)
    b = _connector_connect(gate, db)
    try:
        prepared = a.cursor(prepared=True)
        sql = "SELECT CONNECTION_ID(), ? + 1"
        seen = set()
        for i in range(5):
            # The same SQL each time: the cursor prepares once and then only executes.
            prepared.execute(sql, (i,))
            rows = prepared.fetchall()
            assert len(rows) == 1 and rows[0][1] == i + 1
            seen.add(rows[0][0])
            b.start_transaction()
            _one(b, "SELECT CONNECTION_ID()")  # B takes the connection A used last
            prepared.execute(sql, (i + 10,))
            rows = prepared.fetchall()
            assert len(rows) == 1 and rows[0][1] == i + 11
            seen.add(rows[0][0])
            b.commit()
        assert len(seen) == 2, f"A ran on {seen}: it never moved, the test proves nothing"
        prepared.close()
    finally:
        b.close()
        a.close()


def test_binary_protocol_prepared_statements(gate: Gate, db: ScratchDb) -> None:
    """COM_STMT_PREPARE / EXECUTE / CLOSE through mysql-connector-python."""
    import mysql.connector as connector
    conn = connector.connect(host="127.0.0.1", port=gate.port, user=db.user,
                             password=db.password, database=db.database, autocommit=True)
    try:
        cursor = conn.cursor(prepared=True)
        cursor.execute("SELECT ? + 1, CONCAT(?, 'x')", (41, "a"))
        assert cursor.fetchall() == [(42, "ax")]
        cursor.execute("SELECT ? * 2", (21,))
        assert cursor.fetchall() == [(42,)]
        cursor.close()
        plain = conn.cursor()
        plain.execute("SELECT 7")
        assert plain.fetchall() == [(7,)]
        plain.close()
    finally:
        conn.close()


def test_reset_connection_forgets_session_state(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """After COM_RESET_CONNECTION, A's user variable, temporary table and named lock
    are gone: for A itself, for B on the same upstream connection, and for the server
    (the lock is free for a direct connection). A changes no movable setting, so no
    state replay resets the connection on its own: only the reset that
    COM_RESET_CONNECTION causes upstream clears it. A pool of 1 keeps everyone on the
    same connection (same CONNECTION_ID), or the test would prove nothing."""
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "5")
    lock = f"lock_{db.database}"
    with contextlib.closing(db.connect()) as direct, \
            contextlib.closing(gate.connect()) as a:
        with a.cursor() as cursor:
            cursor.execute("SET @x = 5")
            cursor.execute("CREATE TEMPORARY TABLE tmp_a (v INT)")
            cursor.execute("INSERT INTO tmp_a VALUES (42)")
        assert _one(a, "SELECT GET_LOCK(%s, 0)", (lock,)) == (1,)
        a_id, x, v = _one(a, "SELECT CONNECTION_ID(), @x, (SELECT v FROM tmp_a)")
        assert (x, v) == (5, 42)
        assert _one(direct, "SELECT IS_USED_LOCK(%s)", (lock,)) == (a_id,)

        _reset_connection(a)

        assert _one(a, "SELECT CONNECTION_ID(), @x") == (a_id, None)
        with pytest.raises(pymysql.err.ProgrammingError) as excinfo:
            _one(a, "SELECT v FROM tmp_a")
        assert excinfo.value.args[0] == ER.NO_SUCH_TABLE  # 1146
        assert _one(direct, "SELECT IS_FREE_LOCK(%s)", (lock,)) == (1,)

        with contextlib.closing(gate.connect()) as b:
            assert _one(b, "SELECT CONNECTION_ID(), @x") == (a_id, None)
            with pytest.raises(pymysql.err.ProgrammingError) as excinfo:
                _one(b, "SELECT v FROM tmp_a")
            assert excinfo.value.args[0] == ER.NO_SUCH_TABLE


def test_reset_connection_restores_session_variables(gate: Gate, db: ScratchDb) -> None:
    """COM_RESET_CONNECTION through a real client's API: settings go back to a fresh
    session's values."""
    conn = _connector_connect(gate, db)
    try:
        cursor = conn.cursor()
        cursor.execute("SET time_zone = '+04:00'")
        cursor.execute("SELECT @@session.time_zone")
        assert cursor.fetchall() == [("+04:00",)]
        assert conn.cmd_reset_connection(), "the reset was refused"
        cursor.execute("SELECT @@session.time_zone")
        assert cursor.fetchall() == [("SYSTEM",)]
        cursor.close()
    finally:
        conn.close()
