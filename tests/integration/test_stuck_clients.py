"""Stuck clients (issue 7): a client that opened a transaction (or pinned its session) and
went quiet must not starve a small pool forever. pool.idle_transaction_timeout `auto`
acts only while other clients wait, and only after the server's own wait_timeout (no
sooner than a direct connection would have failed); the transaction is rolled back and
the stuck client's next statement says why."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pymysql
import pytest
from harness import Gate, ScratchDb, fetch_rows


@pytest.fixture
def table(db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as direct:
        fetch_rows(direct, "CREATE TABLE t (v INT) ENGINE=InnoDB")
        fetch_rows(direct, "INSERT INTO t VALUES (1)")


@pytest.mark.server_options(wait_timeout=3)
def test_auto_rolls_back_stuck_transactions_only_while_others_wait(
    gate_factory: Callable[..., Gate], db: ScratchDb, table: None
) -> None:
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "20")
    stuck = [gate.connect(autocommit=False, ssl_disabled=True) for _ in range(2)]
    try:
        for conn in stuck:  # a DB-API connection that read a table and never committed
            assert fetch_rows(conn, "SELECT v FROM t") == ((1,),)
            fetch_rows(conn, "INSERT INTO t VALUES (2)")
        # Nobody waits: nothing happens, however long they stay quiet.
        time.sleep(4)
        assert fetch_rows(stuck[0], "SELECT COUNT(*) FROM t") == ((2,),)  # its own insert seen
        # A third client waits: the stuck ones have been idle longer than the server's
        # wait_timeout (3 s), so one is rolled back and the waiting client is served
        # (at the janitor's next look), long before its queue timeout.
        started = time.monotonic()
        with contextlib.closing(gate.connect(ssl_disabled=True)) as third:
            assert fetch_rows(third, "SELECT COUNT(*) FROM t") == ((1,),)  # committed rows only
        waited = time.monotonic() - started
        assert waited < 15, waited
        outcomes = []
        for conn in stuck:
            try:
                outcomes.append(fetch_rows(conn, "SELECT COUNT(*) FROM t"))
            except pymysql.err.OperationalError as exc:
                outcomes.append(exc.args)
        errors = [o for o in outcomes if isinstance(o[0], int)]
        assert len(errors) >= 1, outcomes
        code, message = errors[0]
        assert code == 1213 and message.startswith("mysqlgate:"), errors[0]
        assert "rolled back" in message and "pool.idle_transaction_timeout" in message
    finally:
        for conn in stuck:
            with contextlib.suppress(Exception):
                conn.close()
    with contextlib.closing(db.connect()) as direct:  # nothing of either stays
        assert fetch_rows(direct, "SELECT COUNT(*) FROM t") == ((1,),)


def test_explicit_timeout_and_off(gate_factory: Callable[..., Gate], db: ScratchDb,
                                  table: None) -> None:
    gate = gate_factory("--pool-size", "2", "--pool-idle-transaction-timeout", "1")
    with contextlib.closing(gate.connect(autocommit=False, ssl_disabled=True)) as conn:
        fetch_rows(conn, "INSERT INTO t VALUES (5)")
        time.sleep(3)  # no one waits, but an explicit timeout acts anyway
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            fetch_rows(conn, "SELECT 1")
        assert excinfo.value.args[0] == 1213
        assert fetch_rows(conn, "SELECT COUNT(*) FROM t WHERE v = 5") == ((0,),)  # goes on
    gate_off = gate_factory("--pool-size", "1", "--pool-idle-transaction-timeout", "off")
    with contextlib.closing(gate_off.connect(autocommit=False, ssl_disabled=True)) as conn:
        fetch_rows(conn, "INSERT INTO t VALUES (6)")
        time.sleep(2.5)
        assert fetch_rows(conn, "SELECT COUNT(*) FROM t WHERE v = 6") == ((1,),)
        conn.rollback()
