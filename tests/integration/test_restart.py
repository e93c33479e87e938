"""Riding through a server restart (issue 16, part 1; SPEC section 4): while the server
cannot be reached, clients' statements, pings and logins wait while mysqlgate
reconnects, up to pool.queue_timeout, then get the clear error. A restart costs idle and
busy clients a delay, not an error, and the first waiting statement is served within
250 ms of the server accepting connections again (less what a direct client's first
login and statement then took beyond their usual time, which is the server's). A
statement that was running when the server went away gets the clear lost-connection
error and is never run again."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pymysql
import pymysql.cursors
import pytest
from harness import DbServer, Gate, ScratchDb, fetch_rows, wait_until
from pymysql.constants import ER

IDLE_CLIENTS = 10
BUSY_CLIENTS = 3
BUSY_EVERY = (0.2, 0.2, 0.0)  # seconds between a busy client's statements: the last one
# runs them back to back (MySQL answers statements 1053 during its shutdown: such a read
# must wait for the restart too)
# The server is gone this long before it is started again; the outage is longer by its
# startup (MariaDB ~0.2 s, MySQL ~1.3 s here).
STOPPED_FOR = 2.5
FIRST_SERVED_WITHIN = 0.25


class Availability(threading.Thread):
    """Asks the server for its greeting directly every 10 ms: when it stopped and when it
    accepted connections again; then, as a direct client would, logs in and runs a
    statement until one is answered: when the server could first serve one."""

    def __init__(self, server: DbServer, db: ScratchDb) -> None:
        super().__init__(name="availability", daemon=True)
        self.address = (server.host, server.port)
        self.db = db
        self.down_at: float | None = None
        self.up_at: float | None = None  # the first greeting after down_at
        self.answered_at: float | None = None  # a direct statement's answer after up_at
        self._stop_event = threading.Event()

    def greets(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=0.5) as sock:
                greeting = sock.recv(5)
        except OSError:
            return False
        return len(greeting) == 5 and greeting[4] == 10  # protocol 10, not an ERR

    def run(self) -> None:
        while not self._stop_event.is_set():
            now = time.monotonic()
            if self.greets():
                if self.down_at is not None and self.up_at is None:
                    self.up_at = now
                    self.first_direct_answer()
                    return
            elif self.down_at is None:
                self.down_at = now
            self._stop_event.wait(0.01)

    def direct_answer(self) -> None:
        with contextlib.closing(self.db.connect(connect_timeout=5, read_timeout=5)) as conn:
            fetch_rows(conn, "SELECT 1")

    def usual_direct_answer(self) -> float:
        """Seconds a direct login and statement take while the server runs (the least
        of three)."""
        times = []
        for _ in range(3):
            started = time.monotonic()
            self.direct_answer()
            times.append(time.monotonic() - started)
        return min(times)

    def first_direct_answer(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.direct_answer()
                self.answered_at = time.monotonic()
                return
            except pymysql.err.MySQLError:
                self._stop_event.wait(0.01)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


@dataclass
class Outcome:
    started: float
    ended: float
    error: BaseException | None = None


def timed(run: Callable[[], object]) -> Outcome:
    started = time.monotonic()
    try:
        run()
    except pymysql.err.MySQLError as exc:
        return Outcome(started, time.monotonic(), exc)
    return Outcome(started, time.monotonic())


def test_a_restart_costs_clients_a_delay_not_an_error(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    gate = gate_factory()  # pool.queue_timeout 10 s: the wait for the server too
    idle = [gate.connect() for _ in range(IDLE_CLIENTS)]
    stop_busy = threading.Event()
    busy_outcomes: list[Outcome] = []
    watcher = Availability(private_server, db)
    usual = watcher.usual_direct_answer()

    def busy_client(number: int) -> None:
        with contextlib.closing(gate.connect(read_timeout=30)) as conn:
            while not stop_busy.is_set():
                outcome = timed(lambda: fetch_rows(conn, f"SELECT {number}, CONNECTION_ID()"))
                busy_outcomes.append(outcome)
                time.sleep(BUSY_EVERY[number])

    def idle_client(conn: pymysql.connections.Connection, number: int) -> Outcome:
        if number == 0:  # a driver's liveness check waits like a statement
            return timed(lambda: conn.ping(reconnect=False))
        return timed(lambda: fetch_rows(conn, f"SELECT {number}"))

    def new_client() -> Outcome:
        def run() -> None:
            with contextlib.closing(gate.connect(read_timeout=30)) as conn:
                assert fetch_rows(conn, "SELECT 42") == ((42,),)
        return timed(run)

    try:
        for conn in idle:
            assert fetch_rows(conn, "SELECT 1") == ((1,),)
        with ThreadPoolExecutor(BUSY_CLIENTS + IDLE_CLIENTS + 1) as executor:
            busy = [executor.submit(busy_client, n) for n in range(BUSY_CLIENTS)]
            watcher.start()
            time.sleep(0.5)
            private_server.stop()
            wait_until(lambda: watcher.down_at is not None, "the server seen gone")
            down_at = watcher.down_at
            assert down_at is not None
            time.sleep(max(0.0, down_at + STOPPED_FOR / 2 - time.monotonic()))
            # The idle clients' next statements (and a new client) arrive while the
            # server is down.
            waiting: list[Future[Outcome]] = [
                executor.submit(idle_client, conn, n) for n, conn in enumerate(idle)]
            waiting.append(executor.submit(new_client))
            time.sleep(max(0.0, down_at + STOPPED_FOR - time.monotonic()))
            private_server.start()
            outcomes = [future.result(timeout=60) for future in waiting]
            time.sleep(1.0)
            stop_busy.set()
            for future in busy:
                future.result(timeout=60)
    finally:
        stop_busy.set()
        watcher.stop()
        for conn in idle:
            conn.close()

    assert watcher.down_at is not None and watcher.up_at is not None
    outage = watcher.up_at - watcher.down_at
    assert outage >= STOPPED_FOR
    errors = [o.error for o in outcomes + busy_outcomes if o.error is not None]
    assert not errors, f"a restart of {outage:.2f}s cost clients errors: {errors}"
    waited = [o for o in outcomes + busy_outcomes
              if o.started < watcher.up_at < o.ended]
    assert len(waited) >= len(outcomes), "the statements sent while it was down did not wait"
    assert watcher.answered_at is not None, "no direct statement was answered after it"
    first = min(o.ended for o in waited) - watcher.up_at
    longest = max(o.ended - o.started for o in waited)
    direct = watcher.answered_at - watcher.up_at
    # What the server itself took beyond its usual to answer a direct client after its
    # start is not mysqlgate's: on a busy machine a busy run failed at 351 ms from the
    # greeting, the gate's reconnect done ~0.27 s after it with probes due every ~60 ms.
    # Where the server's first login after its start is as quick as usual, the bound
    # counts from the greeting.
    slow_start = max(0.0, direct - usual)
    print(f"\nrestart: server unreachable {outage:.2f}s; {len(waited)} statements waited, "
          f"the longest {longest:.2f}s; the first served {first * 1000:.0f} ms after the "
          f"server accepted again (a direct login and statement: {direct * 1000:.0f} ms, "
          f"{usual * 1000:.0f} ms before the restart); {len(busy_outcomes)} busy "
          "statements, 0 errors")
    assert first - slow_start < FIRST_SERVED_WITHIN, \
        f"the first statement was served {first:.3f}s after the server accepted again " \
        f"(a direct client's first login and statement took {direct:.3f}s from then, " \
        f"{usual:.3f}s before the restart)"
    assert "reachable again" in gate.log_text()


def test_an_outage_longer_than_the_wait_gives_the_clear_error(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    gate = gate_factory("--pool-queue-timeout", "2")
    with contextlib.closing(gate.connect(read_timeout=30)) as conn:
        assert fetch_rows(conn, "SELECT 1") == ((1,),)
        private_server.stop()
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            fetch_rows(conn, "SELECT 2")
        took = time.monotonic() - started
        code, message = excinfo.value.args
        assert code == ER.SERVER_SHUTDOWN and message.startswith("mysqlgate:"), message  # 1053
        assert "cannot be reached" in message and "pool.queue_timeout" in message, message
        assert 1.8 <= took < 6, f"the error came after {took:.1f}s, the wait is 2s"
        # The console shows the outage.
        (pool,) = gate.admin("SHOW POOLS")
        stats = {row["stat"]: row for row in gate.admin("SHOW STATS")}
        assert pool["status"].startswith("unreachable for "), pool
        assert pool["unreachable_s"] >= took, pool
        assert stats["upstream_outages"]["total"] == 1, stats["upstream_outages"]
        private_server.start()
        # The same client goes on once the server answers.
        assert fetch_rows(conn, "SELECT 3") == ((3,),)


def test_a_statement_running_when_the_server_dies_gets_the_clear_error_once(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """Never replayed: the write was cut off by the crash and rolled back by the server;
    nothing runs it again after the restart."""
    gate = gate_factory()
    with contextlib.closing(gate.connect(read_timeout=60)) as conn, \
            ThreadPoolExecutor(1) as executor:
        fetch_rows(conn, "CREATE TABLE cut (v INT)")
        pending = executor.submit(fetch_rows, conn, "INSERT INTO cut SELECT SLEEP(3)")
        wait_until(lambda: any("SLEEP" in str(row[-1]) for row in private_server.query(
            "SELECT ID, INFO FROM information_schema.PROCESSLIST")), "the insert running")
        private_server.kill()
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            pending.result(timeout=30)
        code, message = excinfo.value.args
        assert code == ER.NET_READ_ERROR and message.startswith("mysqlgate:"), message  # 1158
        assert "lost" in message, message
        private_server.start()
        assert fetch_rows(conn, "SELECT COUNT(*) FROM cut") == ((0,),)
        time.sleep(4)  # longer than the insert would take: had it run again, it shows now
        assert fetch_rows(conn, "SELECT COUNT(*) FROM cut") == ((0,),)
