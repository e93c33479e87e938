"""KILL from clients (issue 6): the id a client was given in its greeting (PyMySQL's
thread_id()), or the upstream thread id its CONNECTION_ID() showed while it held that
connection, aims at that client: KILL QUERY interrupts its running statement, KILL ends
it; never an upstream connection that serves someone else. And a client's own
wait_timeout, which the server would apply to it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pymysql
import pytest
from harness import Gate, ScratchDb, fetch_rows
from pymysql.constants import CR

SLEEP = "SELECT SLEEP(20)"


def _upstream_running(db: ScratchDb, sql: str, timeout: float = 20.0) -> int:
    """The server thread id running `sql` for the scratch account, once it shows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = db.server.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO = %s",
            (db.user, sql))
        if rows:
            return int(rows[0][0])
        time.sleep(0.02)
    raise AssertionError(f"{sql} never showed up in the processlist")


def _connect(gate: Gate) -> pymysql.connections.Connection:
    return gate.connect(ssl_disabled=True)


@pytest.mark.parametrize("aim", ["greeting_id", "connection_id", "com_process_kill"])
def test_kill_query_interrupts_only_its_clients_statement(
    gate_factory: Callable[..., Gate], db: ScratchDb, aim: str
) -> None:
    """The victim's SLEEP ends with 1317 at once, the victim goes on; a bystander's SLEEP
    on the other upstream connection runs on undisturbed."""
    gate = gate_factory("--pool-size", "3")
    with contextlib.closing(_connect(gate)) as victim, \
            contextlib.closing(_connect(gate)) as bystander, \
            contextlib.closing(_connect(gate)) as killer, ThreadPoolExecutor(2) as pool:
        by_sql = "SELECT SLEEP(1.5) AS bystander"
        by_future = pool.submit(fetch_rows, bystander, by_sql)
        _upstream_running(db, by_sql)
        future = pool.submit(fetch_rows, victim, SLEEP)
        upstream_id = _upstream_running(db, SLEEP)
        started = time.monotonic()
        if aim == "greeting_id":
            fetch_rows(killer, f"KILL QUERY {victim.thread_id()}")
        elif aim == "connection_id":
            fetch_rows(killer, f"KILL QUERY {upstream_id}")
        else:  # PyMySQL's kill() is COM_PROCESS_KILL: it ends the client
            killer.kill(victim.thread_id())
        if aim == "com_process_kill":
            with pytest.raises(pymysql.err.OperationalError) as excinfo:
                future.result(20)
            assert excinfo.value.args[0] in (CR.CR_SERVER_LOST, CR.CR_SERVER_GONE_ERROR)
        elif db.server.is_mysql:
            # MySQL: a SLEEP() that is all of its query returns 1 when interrupted, and the
            # query no error (documented).
            assert future.result(20) == ((1,),)
            assert fetch_rows(victim, "SELECT 'victim goes on'") == (("victim goes on",),)
        else:
            with pytest.raises(pymysql.err.OperationalError) as excinfo:
                future.result(20)
            assert excinfo.value.args[0] == 1317  # Query execution was interrupted
            assert fetch_rows(victim, "SELECT 'victim goes on'") == (("victim goes on",),)
        assert time.monotonic() - started < 10
        assert by_future.result(20) == ((0,),)  # SLEEP returns 0 when not interrupted


def test_kill_connection_ends_the_client(gate_factory: Callable[..., Gate], db: ScratchDb
                                         ) -> None:
    gate = gate_factory("--pool-size", "2")
    with contextlib.closing(_connect(gate)) as victim, \
            contextlib.closing(_connect(gate)) as killer:
        victim.begin()
        fetch_rows(victim, "SELECT 1")  # idle in a transaction: holds a connection
        fetch_rows(killer, f"KILL {victim.thread_id()}")
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            fetch_rows(victim, "SELECT 1")
        assert excinfo.value.args[0] in (CR.CR_SERVER_LOST, CR.CR_SERVER_GONE_ERROR)
        assert fetch_rows(killer, "SELECT 'killer goes on'") == (("killer goes on",),)


def test_kill_refusals(gate_factory: Callable[..., Gate], db: ScratchDb,
                       db_factory: Callable[..., ScratchDb]) -> None:
    other = db_factory()
    gate = gate_factory("--upstream", other.upstream_url)
    stranger = pymysql.connect(host=gate.host, port=gate.port, user=other.user,
                               password=other.password, ssl_disabled=True)
    with contextlib.closing(_connect(gate)) as conn, contextlib.closing(stranger):
        for sql, code in ((f"KILL {stranger.thread_id()}", 1095),
                          ("KILL 987654", 1094),
                          (f"KILL USER '{db.user}'", 1235),
                          ("KILL QUERY ID 5", 1235)):
            with pytest.raises(pymysql.err.MySQLError) as excinfo:
                fetch_rows(conn, sql)
            assert excinfo.value.args[0] == code, sql
        assert fetch_rows(stranger, "SELECT 1") == ((1,),)
        assert fetch_rows(conn, f"KILL QUERY {conn.thread_id()}") == ()  # itself: nothing runs


def test_a_clients_own_wait_timeout(gate_factory: Callable[..., Gate], db: ScratchDb
                                     ) -> None:
    """A client that sets its own wait_timeout is disconnected after that long idle, as
    the server would; one that did not stays (the server's default never applies)."""
    gate = gate_factory("--pool-size", "2")
    with contextlib.closing(_connect(gate)) as short, contextlib.closing(_connect(gate)) as plain:
        fetch_rows(short, "SET SESSION wait_timeout = 1")
        time.sleep(3)
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            fetch_rows(short, "SELECT 1")
        assert excinfo.value.args[0] in (CR.CR_SERVER_LOST, CR.CR_SERVER_GONE_ERROR)
        assert fetch_rows(plain, "SELECT 'still here'") == (("still here",),)


def test_kill_query_keeps_the_connection_until_it_ran(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """Many KILL QUERYs aimed at a client whose statements are short, while a bystander
    shares the pool: each interrupts the victim's statement or nothing, never the
    bystander's (a KILL in flight keeps the victim's connection the victim's)."""
    gate = gate_factory("--pool-size", "2")
    stop = threading.Event()

    def bystander() -> int:
        runs = 0
        with contextlib.closing(_connect(gate)) as conn:
            while not stop.is_set():
                assert fetch_rows(conn, "SELECT SLEEP(0.002), 'b'") == ((0, "b"),)
                runs += 1
        return runs

    def victim_loop(victim: pymysql.connections.Connection) -> int:
        interrupted = 0
        while not stop.is_set():
            try:
                fetch_rows(victim, "SELECT SLEEP(0.002)")
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1317, exc
                interrupted += 1
        return interrupted

    with contextlib.closing(_connect(gate)) as victim, \
            contextlib.closing(_connect(gate)) as killer, ThreadPoolExecutor(2) as pool:
        by = pool.submit(bystander)
        vic = pool.submit(victim_loop, victim)
        try:
            # Short statements and many KILLs: a KILL whose statement ends while it is on
            # its way, and a bystander waiting for that connection, happen within a few.
            for _ in range(200):
                fetch_rows(killer, f"KILL QUERY {victim.thread_id()}")
                time.sleep(0.002)
        finally:
            stop.set()
        assert by.result(30) > 0
        assert vic.result(30) >= 0
