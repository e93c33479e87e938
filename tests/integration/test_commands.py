"""Commands beyond plain queries: LOAD DATA LOCAL INFILE (only for clients that enabled
it), prepared statements (COM_STMT_*, pinned while open), COM_RESET_CONNECTION."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import MySQLdb
import pymysql
import pytest
from harness import Gate, ScratchDb


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
    gate = gate_factory("--pool-size", "2")
    with contextlib.closing(db.connect()) as direct:
        direct.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
    conn = MySQLdb.connect(host="127.0.0.1", port=gate.port, user=db.user,
                           passwd=db.password, db=db.database, autocommit=True)
    try:
        cursor = conn.cursor()
        # mysqlclient has no server-side prepare; drive COM_STMT_* through SQL PREPARE
        # too, which the trackers report as unmovable state (a pin).
        cursor.execute("PREPARE s FROM 'INSERT INTO t VALUES (?, ?)'")
        cursor.execute("SELECT CONNECTION_ID()")
        first = cursor.fetchone()
        for i in range(10):
            cursor.execute(f"SET @i = {i}, @v = 'v{i}'")
            cursor.execute("EXECUTE s USING @i, @v")
            cursor.execute("SELECT CONNECTION_ID()")
            assert cursor.fetchone() == first  # pinned to the statement's connection
        cursor.execute("DEALLOCATE PREPARE s")
        cursor.execute("SELECT COUNT(*) FROM t")
        assert cursor.fetchone() == (10,)
    finally:
        conn.close()


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


def test_reset_connection_forgets_session_state(gate: Gate, db: ScratchDb) -> None:
    import mysql.connector as connector
    conn = connector.connect(host="127.0.0.1", port=gate.port, user=db.user,
                             password=db.password, database=db.database, autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.execute("SET @x = 5, time_zone = '+04:00'")
        cursor.execute("SELECT @x, @@session.time_zone")
        assert cursor.fetchall() == [(5, "+04:00")]
        conn.cmd_reset_connection()
        cursor.execute("SELECT @x, @@session.time_zone")
        assert cursor.fetchall() == [(None, "SYSTEM")]
        cursor.close()
    finally:
        conn.close()
