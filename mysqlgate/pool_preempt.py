"""Lent connections whose holders would give them back when someone waits.

A session that keeps its connection only for its client's convenience (the diagnostics
of the last statement, SHOW WARNINGS still to come) tells the pool so; once a grace has
passed and clients wait, the pool asks it to give the connection back, the longest held
first, as many as wait.
"""

from __future__ import annotations

from collections.abc import Callable

from .backend import BackendConnection
from .pool_types import Cancellable, Clock, PoolStats, Scheduler


class Preemption:
    """`waiting` says how many clients wait at the moment the holders are asked."""

    def __init__(self, clock: Clock, scheduler: Scheduler, stats: PoolStats,
                 waiting: Callable[[], int]) -> None:
        self._clock = clock
        self._scheduler = scheduler
        self._stats = stats
        self._waiting = waiting
        # From when on each would be given back, and how to ask.
        self._holders: dict[BackendConnection, tuple[float, Callable[[], None]]] = {}
        self._timer: Cancellable | None = None

    @property
    def pending(self) -> bool:
        """Any holder that may be asked, now or later."""
        return bool(self._holders) or self._timer is not None

    def allow(self, backend: BackendConnection, give_back: Callable[[], None],
              after: float) -> None:
        self._holders[backend] = (self._clock() + after, give_back)
        if self._waiting():
            self.ask()

    def forbid(self, backend: BackendConnection) -> None:
        self._holders.pop(backend, None)

    def ask(self) -> None:
        """Ask holders past their grace to give back as many connections as clients
        wait; wake again when the next grace ends."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting = self._waiting()
        if not self._holders or not waiting:
            return
        now = self._clock()
        due = sorted((b for b, (since, _) in self._holders.items() if since <= now),
                     key=lambda b: self._holders[b][0])
        for backend in due[:waiting]:
            _, give_back = self._holders.pop(backend)
            self._stats.preemptions += 1
            give_back()
        if self._holders and self._waiting() and self._timer is None:
            first = min(since for since, _ in self._holders.values())
            self._timer = self._scheduler.call_at(first, self.ask)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
