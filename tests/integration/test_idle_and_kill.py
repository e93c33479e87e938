"""Upstream connections that the server drops (SPEC sections 1, 3, 4): the server's
wait_timeout, a KILL of idle pooled connections, and a KILL in the middle of a query.
Clients idle through all of it; a client whose running statement was killed gets
mysqlgate's own error and goes on on the same connection."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest
from harness import Gate, ScratchDb
from pymysql.constants import COMMAND, CR, ER

N_CLIENTS = 5
IDLE_SECONDS = 5.0


def _close(conn: pymysql.connections.Connection) -> None:
    if conn.open:
        conn.close()


def _wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `condition` until it holds or `timeout` s pass; return whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


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


@pytest.mark.server_options(wait_timeout=2)
def test_server_drops_an_idle_pooled_connection(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """The pool keeps idle connections longer than the server does (pool.idle_timeout
    60 s and no ping before 60 s, against the server's 2 s wait_timeout), so the server
    itself closes the pooled connection while the client idles. The client's next
    statement must work on a new connection without an error (SPEC section 4: upstream
    lost while the client is idle is invisible). It is a write, and happens once: a
    write cannot be retried blindly after a loss, so it works only if the gate knows
    the pooled connection is dead before it hands it out."""
    gate = gate_factory("--pool-size", "1", "--pool-idle-timeout", "60", "--pool-ping-after", "60")
    with contextlib.closing(db.connect()) as setup, setup.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
    with contextlib.closing(gate.connect()) as client:
        (first_id,) = _one(client, "SELECT CONNECTION_ID()")
        assert _wait_for(lambda: first_id not in db.connection_ids(), timeout=15), (
            f"the server did not drop idle upstream {first_id} after its wait_timeout"
        )
        with client.cursor() as cur:
            assert cur.execute("INSERT INTO t VALUES (1)") == 1
        second_id, count = _one(client, "SELECT CONNECTION_ID(), COUNT(*) FROM t")
        assert count == 1
        assert second_id != first_id


@pytest.mark.server_options(wait_timeout=2)
def test_server_drops_an_idle_pooled_connection_the_gate_has_not_noticed(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """As above, but the client's next statement reaches the gate before the gate has
    seen the server close the connection (in production: wait_timeout firing as a
    statement is dispatched, or a connection dropped silently on the way). The gate is
    frozen (SIGSTOP) while the server drops the idle connection and while the client's
    SELECT arrives, so it finds both waiting when it resumes. The statement never
    reached the server and is a read-only autocommit one: SPEC section 4 says it is
    retried on a fresh connection, invisibly to the client."""
    gate = gate_factory("--pool-size", "1", "--pool-idle-timeout", "60", "--pool-ping-after", "60")
    with contextlib.closing(gate.connect()) as client:
        (first_id,) = _one(client, "SELECT CONNECTION_ID()")
        gate.send_signal(signal.SIGSTOP)
        try:
            assert _wait_for(lambda: first_id not in db.connection_ids(), timeout=15), (
                f"the server did not drop idle upstream {first_id} after its wait_timeout"
            )
            # Write the query without waiting for its answer (what cursor.execute does
            # first); on loopback it is in the frozen gate's socket buffer at return.
            client._execute_command(COMMAND.COM_QUERY, "SELECT CONNECTION_ID(), 'after'")
        finally:
            gate.send_signal(signal.SIGCONT)
        client._read_query_result()
        rows = client._result.rows if client._result is not None else None
        assert rows is not None and len(rows) == 1, rows
        second_id, value = rows[0]
        assert value == "after"
        assert second_id != first_id
        assert _one(client, "SELECT 'and on'") == ("and on",)


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


VICTIM_SQL = "SELECT SLEEP(60)"  # far longer than any wait below: it ends only by the KILL


def test_kill_mid_query(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    """A KILL of the upstream connection in the middle of the victim's query: the victim
    gets mysqlgate's 1158 (08S01) promptly and goes on; a bystander on the other connection runs
    before, during and after it, unaffected. Progress is awaited as events with generous
    deadlines, not measured against the clock, so a loaded machine only makes it slower."""
    gate = gate_factory("--pool-size", "2")
    victim = gate.connect()
    bystander = gate.connect()
    stop = threading.Event()
    done = [0]  # the bystander's completed queries
    killed_at: list[float] = []
    killed_ids: list[int] = []

    def bystander_loop() -> int:
        """Simple queries until stopped; returns how many ran (any error propagates)."""
        while not stop.is_set():
            n = done[0]
            assert _one(bystander, "SELECT %s", (n,)) == (n,)
            done[0] = n + 1
            time.sleep(0.01)
        return done[0]

    def killer() -> None:
        """KILL the victim's upstream connection once its query is running."""
        rows: list[tuple[Any, ...]] = []

        def running() -> bool:
            rows[:] = db.server.query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO = %s",
                (db.user, VICTIM_SQL),
            )
            return bool(rows)

        assert _wait_for(running, timeout=20), f"{VICTIM_SQL} never showed up in the processlist"
        thread_id = int(rows[0][0])
        time.sleep(0.3)  # not synchronisation: let the query run a little first
        db.server.query(f"KILL {thread_id}")
        killed_at.append(time.monotonic())
        killed_ids.append(thread_id)

    try:
        victim_id = victim.thread_id()
        with ThreadPoolExecutor(2) as pool:
            loop = pool.submit(bystander_loop)
            try:
                assert _wait_for(lambda: done[0] >= 3 or loop.done(), timeout=20)
                kill = pool.submit(killer)
                with pytest.raises(pymysql.err.OperationalError) as excinfo:
                    _one(victim, VICTIM_SQL)
                failed_at = time.monotonic()
                kill.result()
                # The bystander goes on after the kill (a few more of its queries).
                after_kill = done[0]
                assert _wait_for(lambda: done[0] >= after_kill + 5 or loop.done(), timeout=20)
            finally:
                stop.set()
            assert loop.result() >= after_kill + 5

        assert killed_at, "the query was not killed"
        # Prompt: far sooner than the query's own end (it would hang ~60 s otherwise).
        assert failed_at - killed_at[0] <= 15, (
            f"the error came {failed_at - killed_at[0]:.2f} s after the KILL"
        )
        code, message = excinfo.value.args
        assert message.startswith("mysqlgate:"), excinfo.value.args
        assert code == ER.NET_READ_ERROR, excinfo.value.args  # 1158, not a client code

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


@pytest.mark.parametrize("row_bytes", [300, 1048576], ids=["small_rows", "rows_of_1MiB"])
def test_kill_mid_result(gate_factory: Callable[..., Gate], db: ScratchDb,
                         row_bytes: int) -> None:
    """The upstream connection is KILLed while a client reads a large result (rows pass
    on as they arrive). A row cut by a read is held back while it is small
    (session/exchange.py HOLD_ROW), so the client is at a packet's end: mysqlgate's
    clear 1158, and the connection goes on. Inside a row of 1 MiB, which passes on as
    it comes, only the end of the connection can say it: the driver's own lost
    connection. Never a broken packet stream (an error packet after half a row), nor a
    hang. Found by the fault soak (bench/soak.py)."""
    gate = gate_factory("--pool-size", "2")
    rows = 40_000_000 // row_bytes
    numbers = db.server.dialect.numbers(1, rows)
    sql = f"SELECT seq, REPEAT('x', {row_bytes}) FROM {numbers}"
    reader = gate.connect(cursorclass=pymysql.cursors.SSCursor, read_timeout=30)
    cursor = reader.cursor()
    try:
        reader_id = reader.thread_id()
        cursor.execute(sql)
        assert cursor.fetchone() is not None
        running = db.server.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO LIKE %s",
            (db.user, "SELECT seq, REPEAT%"))
        assert running, "the result's statement is not running upstream"
        db.server.query(f"KILL {int(running[0][0])}")
        killed_at = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            while cursor.fetchone() is not None:
                pass
        assert time.monotonic() - killed_at < 15
        code, message = excinfo.value.args[:2]
        if row_bytes < 65536:
            assert code == ER.NET_READ_ERROR and message.startswith("mysqlgate:"), \
                excinfo.value.args
            # The same client connection goes on.
            assert reader.open and reader.thread_id() == reader_id
            assert _one(reader, "SELECT 'reader goes on'") == ("reader goes on",)
        else:
            assert code == CR.CR_SERVER_LOST or (code == ER.NET_READ_ERROR
                                                 and message.startswith("mysqlgate:")), \
                excinfo.value.args
    finally:
        # PyMySQL would read the rest of the cut result when its objects go (and fail
        # on the closed socket, in a finalizer): they are told there is none.
        if reader._result is not None:
            reader._result.unbuffered_active = False
        reader._result = None
        cursor.connection = None
        _close(reader)
    # The gate serves on.
    with contextlib.closing(gate.connect()) as after:
        assert _one(after, "SELECT 'after'") == ("after",)
