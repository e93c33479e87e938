"""Tests of the test harness itself (tests/harness, tests/conftest.py), against the real
MariaDB server and without mysqlgate."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest
from harness import DbServer, Gate, GateError, ScratchDb, fetch_rows, wait_until
from pool_load import DEADLINE, ConnectionSampler, closed_by_client
from pymysql.constants import CR, ER

STANDIN_GATE = [sys.executable, str(Path(__file__).parents[1] / "harness" / "standin_gate.py")]


def _close(conn: pymysql.connections.Connection) -> None:
    # PyMySQL closes a connection by itself when the server drops it; close() would then
    # raise "Already closed".
    if conn.open:
        conn.close()


def test_db_user_connects_and_creates_tables(db: ScratchDb) -> None:
    conn = db.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER(), DATABASE(), @@autocommit")
            assert cursor.fetchone() == (f"{db.user}@%", db.database, 1)
            cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB")
            cursor.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
            cursor.execute("SELECT v FROM t ORDER BY id")
            assert cursor.fetchall() == (("one",), ("two",))
    finally:
        conn.close()

    socket_conn = db.connect(unix_socket=db.socket)
    try:
        with socket_conn.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER()")
            assert cursor.fetchone() == (f"{db.user}@localhost",)
    finally:
        socket_conn.close()

    assert db.upstream_url == f"mysql://{db.user}:{db.password}@127.0.0.1:{db.port}/{db.database}"
    root = db.root()
    try:
        with root.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER()")
            assert cursor.fetchone() in (("root@localhost",), ("root@127.0.0.1",))
    finally:
        root.close()


def test_processlist_count_and_kill(db: ScratchDb) -> None:
    assert db.processlist_count() == 0
    conns = [db.connect() for _ in range(2)]
    try:
        assert db.processlist_count() == 2
        assert db.kill_user_connections() == 2
        assert db.wait_processlist_count(0) == 0
        with pytest.raises(pymysql.err.OperationalError) as excinfo, conns[0].cursor() as cur:
            cur.execute("SELECT 1")
        assert excinfo.value.args[0] in (CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST)
    finally:
        for conn in conns:
            _close(conn)


@pytest.mark.db_options(max_user_connections=3)
def test_db_options_limit_user_connections(db: ScratchDb) -> None:
    conns = [db.connect() for _ in range(3)]
    try:
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            db.connect()
        assert excinfo.value.args[0] == ER.USER_LIMIT_REACHED  # 1226
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.server_options(wait_timeout=2)
def test_server_options_set_wait_timeout(db: ScratchDb, server: DbServer) -> None:
    assert server.get_global("wait_timeout") == 2
    conn = db.connect()
    try:
        time.sleep(3)
        with pytest.raises(pymysql.err.OperationalError) as excinfo, conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert excinfo.value.args[0] in (CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST)
    finally:
        _close(conn)


def test_server_options_are_restored(server: DbServer) -> None:
    # Runs after the test above: its SET GLOBAL must not outlive it.
    assert server.get_global("wait_timeout") == 28800


@pytest.mark.server_options(max_connections=50)
def test_private_server_kill_and_restart(private_server: DbServer, db: ScratchDb) -> None:
    assert db.server is private_server  # `db` follows the test onto its private server
    assert private_server.get_global("max_connections") == 50
    port = private_server.port

    conn = db.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")
            cursor.execute("INSERT INTO t VALUES (1)")
        private_server.kill()
        assert not private_server.running
        with pytest.raises(pymysql.err.OperationalError) as excinfo, conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert excinfo.value.args[0] in (CR.CR_SERVER_GONE_ERROR, CR.CR_SERVER_LOST)
    finally:
        _close(conn)
    with pytest.raises(pymysql.err.OperationalError):
        db.connect(connect_timeout=2)

    private_server.start()  # crash recovery, same port and data
    assert private_server.port == port
    private_server.stop()  # and a graceful shutdown and start
    private_server.start()
    conn = db.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT id FROM t")
            assert cursor.fetchall() == ((1,),)
    finally:
        conn.close()


def test_gate_with_stand_in(
    gate_factory: Callable[..., Gate], db: ScratchDb, db_factory: Callable[..., ScratchDb]
) -> None:
    # mysqlgate's own tests use the real proxy; this checks the Gate plumbing with a relay.
    gate = gate_factory("--some-flag", "7", command=STANDIN_GATE)
    assert gate.running and gate.pid > 0
    for conn in (gate.connect(), gate.connect(unix_socket=gate.socket)):
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT CURRENT_USER(), DATABASE()")
                assert cursor.fetchone() == (f"{db.user}@%", db.database)
        finally:
            conn.close()
    other_db = db_factory()
    other = gate_factory(db=other_db, command=STANDIN_GATE)
    conn = other.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT DATABASE()")
            assert cursor.fetchone() == (other_db.database,)
    finally:
        conn.close()

    assert "stand-in extra arguments: ['--some-flag', '7']" in gate.log_text()
    assert gate.stop() == 0
    assert "stopping on SIGTERM" in gate.log_text()


def test_gate_reports_early_exit(db: ScratchDb, tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "import sys; sys.exit('no such option: --upstream')"]
    gate = Gate(db, command=crash, workdir=tmp_path)
    with pytest.raises(GateError, match=r"(?s)exited with code 1.*no such option"):
        gate.start()
    gate.close()


def test_gate_waits_for_ready(db: ScratchDb, tmp_path: Path) -> None:
    """Ready is what the process reports (READY=1 once every listener is open), not a
    port that happens to answer: a process that never says so is reported."""
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    gate = Gate(db, command=silent, workdir=tmp_path, ready_timeout=1)
    with pytest.raises(GateError, match=r"did not report READY=1 \(all listeners open\)"):
        gate.start()
    gate.close()
    assert not gate.running


def test_sampler_waits_for_connections_closed_by_their_client(db: ScratchDb) -> None:
    """A direct connection its client has closed still counts on the server a while (on
    a busy machine, long enough to be sampled as one of the gate's): ConnectionSampler
    waits for it to be gone before it samples; open ones count from the start. The
    server keeps the closed one here for as long as the test likes: it waits in
    GET_LOCK for a lock another connection holds."""
    holder, kept, blocked = db.connect(), db.connect(), db.connect()
    blocked_id = blocked.thread_id()
    try:
        fetch_rows(holder, "SELECT GET_LOCK('sampler', 60)")
        waiter = threading.Thread(target=_run_quietly,
                                  args=(blocked, "SELECT GET_LOCK('sampler', 60)"))
        waiter.start()
        wait_until(lambda: _waits_for_lock(db, blocked_id), "the client to wait for the lock")
        blocked._sock.shutdown(socket.SHUT_RDWR)  # its client's end is closed, not its thread
        waiter.join(DEADLINE)
        assert [thread_id for thread_id, _ in closed_by_client(db)] == [blocked_id]

        entered = threading.Event()
        sampler = ConnectionSampler(db)

        def enter() -> None:
            sampler.__enter__()
            entered.set()

        entering = threading.Thread(target=enter)
        entering.start()
        # It cannot have entered while the closed connection is on the server (until the
        # lock is released; though MariaDB, now and then, on a busy machine, notices the
        # closed client of a lock wait and ends it sooner: then the sampler may go in).
        entered_before = entered.is_set()
        assert not (entered_before and blocked_id in db.connection_ids())
        fetch_rows(holder, "SELECT RELEASE_LOCK('sampler')")
        entering.join(DEADLINE)
        assert entered.is_set()
        wait_until(lambda: len(sampler.samples) > 0, "a sample")
        sampler.__exit__(None, None, None)
        assert sampler.samples[0] == 2  # holder and kept, still open
        assert blocked_id not in db.connection_ids()
    finally:
        for conn in (holder, kept, blocked):
            _close_quietly(conn)


def _run_quietly(conn: pymysql.connections.Connection, sql: str) -> None:
    with contextlib.suppress(pymysql.err.MySQLError, OSError):
        fetch_rows(conn, sql)


def _close_quietly(conn: pymysql.connections.Connection) -> None:
    with contextlib.suppress(pymysql.err.MySQLError, OSError):
        _close(conn)


def _waits_for_lock(db: ScratchDb, thread_id: int) -> bool:
    rows = db.server.query(
        "SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = %s", (thread_id,))
    return bool(rows) and "GET_LOCK" in str(rows[0][0])
