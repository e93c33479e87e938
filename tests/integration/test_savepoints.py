"""Savepoints with autocommit off live on the connection while the status flags say
"no transaction" (shared/PROTOCOL-NOTES.md): the client must keep its connection from
the SAVEPOINT until its transaction ends, as Django's atomic() and TestCase need."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from harness import Gate, ScratchDb


def _run(conn: pymysql.connections.Connection, sql: str) -> tuple[tuple[Any, ...], ...]:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchall())


def _id(conn: pymysql.connections.Connection) -> int:
    return int(_run(conn, "SELECT CONNECTION_ID()")[0][0])


def test_savepoint_as_the_first_statement_with_autocommit_off(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    with contextlib.closing(db.connect()) as direct:
        _run(direct, "CREATE TABLE t (v INT) ENGINE=InnoDB")
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "10")
    with contextlib.closing(gate.connect(autocommit=False)) as a, \
            contextlib.closing(gate.connect()) as b:
        for round_ in range(3):
            _run(a, "SAVEPOINT s1")  # the first statement of A's transaction
            a_id = _id(a)
            # B starts a transaction: had A let its connection go, B would take it.
            b.begin()
            assert _id(b) != a_id
            _run(a, f"INSERT INTO t VALUES ({round_})")
            _run(a, "SAVEPOINT s2")
            _run(a, "INSERT INTO t VALUES (100)")
            _run(a, "ROLLBACK TO SAVEPOINT s2")
            _run(a, "RELEASE SAVEPOINT s2")
            assert _id(a) == a_id
            _run(a, "ROLLBACK TO SAVEPOINT s1")
            _run(a, f"INSERT INTO t VALUES ({round_ + 10})")
            _run(a, "RELEASE SAVEPOINT s1")
            a.commit()
            b.commit()
        assert _run(b, "SELECT v FROM t ORDER BY v") == ((10,), (11,), (12,))
        # After COMMIT the savepoint is gone on a direct connection too.
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            _run(a, "ROLLBACK TO SAVEPOINT s1")
        assert excinfo.value.args[0] == 1305


def test_client_leaving_with_a_savepoint_gets_its_transaction_rolled_back(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    with contextlib.closing(db.connect()) as direct:
        _run(direct, "CREATE TABLE t (v INT) ENGINE=InnoDB")
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "10")
    with contextlib.closing(gate.connect(autocommit=False)) as a:
        _run(a, "SAVEPOINT s1")
        a_id = _id(a)
        _run(a, "INSERT INTO t VALUES (1)")
    with contextlib.closing(gate.connect()) as b:
        assert _id(b) == a_id
        assert _run(b, "SELECT COUNT(*) FROM t") == ((0,),)
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            _run(b, "ROLLBACK TO SAVEPOINT s1")
        assert excinfo.value.args[0] == 1305
