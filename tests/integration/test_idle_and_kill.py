"""Upstream connections that the server drops (SPEC sections 1, 3, 4): the server's
wait_timeout, a KILL of idle pooled connections, and a KILL in the middle of a query.
Clients idle through all of it; a client whose running statement was killed gets
mysqlgate's own error and goes on on the same connection."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest
from harness import Gate, ScratchDb
from pymysql.constants import CR

N_CLIENTS = 5
IDLE_SECONDS = 5.0


def _close(conn: pymysql.connections.Connection) -> None:
    if conn.open:
        conn.close()


def _one(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall()
    assert len(rows) == 1, f"{sql!r} returned {len(rows)} rows"
    return tuple(rows[0])


@pytest.mark.server_options(wait_timeout=2)
def test_clients_idle_longer_than_wait_timeout(gate: Gate, db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as setup, setup.cursor() as cur:
        assert _one(setup, "SELECT @@SESSION.wait_timeout") == (2,)
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")

    clients: list[pymysql.connections.Connection] = []
    try:
        for i in range(N_CLIENTS):
            clients.append(gate.connect())
            assert _one(clients[i], "SELECT %s", (i,)) == (i,)
        direct = db.connect()  # the control: the server drops it while it idles
        clients.append(direct)
        # Held across the idle time: an open transaction, and a pinned session (a user
        # variable lives only on its upstream connection).
        in_trans = gate.connect()
        clients.append(in_trans)
        in_trans.begin()
        with in_trans.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1)")
        pinned = gate.connect()
        clients.append(pinned)
        with pinned.cursor() as cur:
            cur.execute("SET @kept = 42")

        time.sleep(IDLE_SECONDS)

        for i in range(N_CLIENTS):
            assert _one(clients[i], "SELECT %s", (i + 100,)) == (i + 100,)
            assert _one(clients[i], "SELECT DATABASE()") == (db.database,)

        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            _one(direct, "SELECT 1")
        assert excinfo.value.args[0] in (CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST)

        # The transaction survived the idle time and commits.
        with in_trans.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (2)")
        in_trans.commit()
        with contextlib.closing(db.connect()) as check:
            assert _one(check, "SELECT GROUP_CONCAT(id ORDER BY id) FROM t") == ("1,2",)
        # And so did the pinned session.
        assert _one(pinned, "SELECT @kept") == (42,)
    finally:
        for conn in clients:
            _close(conn)


def test_kill_idle_upstream_connections(gate: Gate, db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as setup, setup.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")

    clients = [gate.connect() for _ in range(N_CLIENTS)]
    try:
        # All clients busy at once, so that several upstream connections get opened.
        barrier = threading.Barrier(N_CLIENTS, timeout=30)

        def busy(i: int) -> None:
            barrier.wait()
            for _ in range(20):
                assert _one(clients[i], "SELECT SLEEP(0.01), %s", (i,)) == (0, i)

        with ThreadPoolExecutor(N_CLIENTS) as pool:
            for future in [pool.submit(busy, i) for i in range(N_CLIENTS)]:
                future.result()
        before = db.connection_ids()
        assert before, "mysqlgate holds no upstream connection to kill"

        # Every client idle now; kill all of mysqlgate's upstream connections.
        assert db.kill_user_connections() >= 1
        assert db.wait_processlist_count(0) == 0

        # Each client's next statement works: reads, and writes (nothing written twice).
        for i, conn in enumerate(clients):
            if i % 2:
                assert _one(conn, "SELECT %s", (i,)) == (i,)
            else:
                with conn.cursor() as cur:
                    assert cur.execute("INSERT INTO t VALUES (%s)", (i,)) == 1
        for conn in clients:
            assert _one(conn, "SELECT COUNT(*) FROM t") == (len(range(0, N_CLIENTS, 2)),)
        assert not set(before) & set(db.connection_ids()), "killed connections came back?"
    finally:
        for conn in clients:
            _close(conn)


def test_kill_mid_query(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    gate = gate_factory("--pool-size", "2")
    victim = gate.connect()
    bystander = gate.connect()
    stop = threading.Event()
    killed_at: list[float] = []
    killed_ids: list[int] = []

    def bystander_loop() -> int:
        """Simple queries until stopped; returns how many ran (any error propagates)."""
        n = 0
        while not stop.is_set():
            assert _one(bystander, "SELECT %s", (n,)) == (n,)
            n += 1
            time.sleep(0.01)
        return n

    def killer(started: float) -> None:
        deadline = started + 2.5
        while time.monotonic() < deadline:
            rows = db.server.query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO = %s",
                (db.user, "SELECT SLEEP(3)"),
            )
            if rows:
                thread_id = int(rows[0][0])
                time.sleep(max(0.0, started + 0.5 - time.monotonic()))
                db.server.query(f"KILL {thread_id}")
                killed_at.append(time.monotonic())
                killed_ids.append(thread_id)
                return
            time.sleep(0.02)
        raise AssertionError("SELECT SLEEP(3) never showed up in the processlist")

    try:
        victim_id = victim.thread_id()
        with ThreadPoolExecutor(2) as pool:
            loop = pool.submit(bystander_loop)
            time.sleep(0.2)  # the bystander is going
            started = time.monotonic()
            kill = pool.submit(killer, started)
            try:
                with pytest.raises(pymysql.err.OperationalError) as excinfo:
                    _one(victim, "SELECT SLEEP(3)")
                failed_at = time.monotonic()
                kill.result()
                time.sleep(0.3)  # the bystander goes on after the kill
            finally:
                stop.set()
            assert loop.result() > 10

        assert killed_at, "the query was not killed"
        assert failed_at - killed_at[0] <= 2.5, (
            f"the error came {failed_at - killed_at[0]:.2f} s after the KILL"
        )
        code, message = excinfo.value.args
        assert message.startswith("mysqlgate:"), excinfo.value.args
        assert code == CR.CR_SERVER_LOST, excinfo.value.args

        # The same client connection goes on, on another upstream connection.
        assert victim.open and victim.thread_id() == victim_id
        conn_id, value = _one(victim, "SELECT CONNECTION_ID(), 'after'")
        assert value == "after"
        assert conn_id != killed_ids[0]
        assert _one(bystander, "SELECT 'bystander after'") == ("bystander after",)
    finally:
        stop.set()
        _close(victim)
        _close(bystander)
