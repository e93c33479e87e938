"""Helpers for the application-pattern tests (test_django, test_sqlalchemy,
test_async_drivers, test_connector_prepared): clients that keep a gate's small pool busy,
so that a client's consecutive statements land on different upstream connections, and a
sampler of the account's server connections.

Not a test module: pytest collects only test_*.py files."""

from __future__ import annotations

import ipaddress
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
from harness import Gate, ScratchDb

from mysqlgate.admin.peer import decode_endpoint

# Generous: a loaded CI machine must not turn a slow answer into a failure.
DEADLINE = 60.0


class PoolLoad:
    """`clients` PyMySQL clients through `gate` that keep its pool busy while the block runs.

    Each runs `SELECT <its token>, SLEEP(hold)` back to back and checks that the answer
    carries its own token. On entry it waits until every client has run `warmup`
    statements (so the pool is busy before the test's own client starts); on exit it stops
    them and raises the first error any of them met (unless the block itself raised).
    """

    def __init__(
        self, gate: Gate, clients: int = 3, hold: float = 0.005, warmup: int = 2
    ) -> None:
        self.gate = gate
        self.clients = clients
        self.hold = hold
        self.warmup = warmup
        self.counts = [0] * clients
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[pymysql.connections.Connection] = []

    @property
    def statements(self) -> int:
        return sum(self.counts)

    def __enter__(self) -> PoolLoad:
        for _ in range(self.clients):
            self._conns.append(self.gate.connect(read_timeout=DEADLINE, write_timeout=DEADLINE))
        for index, conn in enumerate(self._conns):
            thread = threading.Thread(
                target=self._run, args=(index, conn), name=f"pool-load-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        deadline = time.monotonic() + DEADLINE
        while min(self.counts) < self.warmup:
            if self.errors:
                self._finish()
                raise AssertionError(f"pool load failed to start: {self.errors}")
            if time.monotonic() > deadline:
                self._finish()
                raise AssertionError(f"pool load did not get going: {self.counts}")
            self._stop.wait(0.01)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._finish()
        if exc_type is None:
            assert not self.errors, f"a client keeping the pool busy failed: {self.errors}"

    def _finish(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(DEADLINE)
        for conn in self._conns:
            if conn.open:
                conn.close()
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            self.errors.append(f"still running after {DEADLINE} s: {stuck}")

    def _run(self, index: int, conn: pymysql.connections.Connection) -> None:
        try:
            with conn.cursor() as cur:
                n = 0
                while not self._stop.is_set():
                    token = f"load-{index}-{n}"
                    cur.execute("SELECT %s, SLEEP(%s)", (token, self.hold))
                    row = cur.fetchone()
                    if row != (token, 0):
                        self.errors.append(f"client {index} sent {token!r}, got {row!r}")
                        return
                    n += 1
                    self.counts[index] = n
        except Exception as exc:  # reported by __exit__
            self.errors.append(f"client {index}: {exc!r}")


class ConnectionSampler:
    """Counts `db`'s account's server connections every `interval` s while the block runs;
    `peak` is the largest count seen.

    A connection its client has closed stays in the server's PROCESSLIST a moment longer,
    longer still on a busy machine: a direct connection of the test's step before would be
    counted as one of the gate's. So on entry the sampler first waits until every such
    connection is gone. Connections whose client still has them open (a direct alias kept
    open on purpose, the gate's own) are counted from the start, as they should be.
    """

    def __init__(self, db: ScratchDb, interval: float = 0.02) -> None:
        self.db = db
        self.interval = interval
        self.samples: list[int] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="processlist-sampler",
                                        daemon=True)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    def __enter__(self) -> ConnectionSampler:
        deadline = time.monotonic() + DEADLINE
        while closing := closed_by_client(self.db):
            assert time.monotonic() < deadline, (
                f"connections closed by their client still on the server after {DEADLINE} s: "
                f"{closing}")
            time.sleep(0.02)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        self._thread.join(DEADLINE)
        if exc_type is None and self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.samples.append(self.db.processlist_count())
                self._stop.wait(self.interval)
        except BaseException as exc:  # raised by __exit__
            self.error = exc


# /proc/net/tcp states in which the client has not closed its end of a connection.
TCP_ESTABLISHED, TCP_CLOSE_WAIT = 0x01, 0x08
TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def closed_by_client(db: ScratchDb) -> list[tuple[int, str]]:
    """The account's server connections (id, host:port) whose client has closed its end
    while the server still lists them. The client's end is found in this host's TCP table
    (the tests, the gate and the server share it): gone, or in a state after its close
    (FIN_WAIT, TIME_WAIT...). Unix socket connections ('localhost') cannot be told and
    count as open."""
    rows = db.server.query(
        "SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE USER = %s", (db.user,))
    open_ends = _open_client_ends(db.port)
    closing = []
    for thread_id, host in rows:
        address, _, port = str(host).rpartition(":")
        if not port.isdigit():
            continue
        try:
            end = (ipaddress.ip_address(address), int(port))
        except ValueError:
            continue
        if end not in open_ends:
            closing.append((int(thread_id), str(host)))
    return closing


def _open_client_ends(server_port: int) -> set[tuple[Any, int]]:
    """Local (address, port) of every socket on this host connected to `server_port` whose
    owner has not closed it."""
    ends = set()
    for table in TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or int(fields[3], 16) not in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
                continue
            local, remote = decode_endpoint(fields[1]), decode_endpoint(fields[2])
            if remote[1] == server_port:
                ends.add(local)
    return ends
