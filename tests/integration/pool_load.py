"""Helpers for the application-pattern tests (test_django, test_sqlalchemy,
test_async_drivers, test_connector_prepared): clients that keep a gate's small pool busy,
so that a client's consecutive statements land on different upstream connections, and a
sampler of the account's server connections.

Not a test module: pytest collects only test_*.py files."""

from __future__ import annotations

import threading
import time
from typing import Any

import pymysql
from harness import Gate, ScratchDb

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
    `peak` is the largest count seen."""

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
