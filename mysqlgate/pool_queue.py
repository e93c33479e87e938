"""The requests waiting for a connection: their order and their deadlines.

pool.py decides which connection goes to which request (first come, first served per
capability key); this queue keeps them in the order they came and fails none itself:
when deadlines pass it hands the pool the requests whose time is up. One timer serves
every deadline, due at the earliest (the head's, as the queue is FIFO), so a statement
that waits costs no timer of its own to start and cancel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from .pool_types import Cancellable, Clock, Request, Scheduler


class WaitQueue(deque[Request]):
    """A deque (the pool iterates it on the path of every statement that waits) with
    the deadlines' timer. `expired` gets the requests whose deadline passed, still
    queued; the pool fails them."""

    def __init__(self, clock: Clock, scheduler: Scheduler,
                 expired: Callable[[list[Request]], None]) -> None:
        super().__init__()
        self._clock = clock
        self._scheduler = scheduler
        self._expired = expired
        self._timer: Cancellable | None = None
        self._timer_at = 0.0
        self._held = False  # paused: no request times out

    def first(self, key: int) -> Request | None:
        for req in self:
            if req.key == key:
                return req
        return None

    def discard(self, req: Request) -> None:
        if req in self:
            self.remove(req)

    def longest_wait(self) -> float:
        """Seconds the longest-waiting request has waited (0: none waits)."""
        if not self:
            return 0.0
        return self._clock() - min(req.since for req in self)

    def expire_by(self, deadline: float) -> None:
        """Make sure the timer runs by `deadline`."""
        if self._held:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._scheduler.call_at(deadline, self._due)

    def hold(self) -> None:
        """No request times out until restart() (PAUSE, or the pool closing)."""
        self._held = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def restart(self, deadline: float) -> None:
        """Every queued request times out at `deadline` (RESUME gives each a fresh
        queue timeout)."""
        self._held = False
        if not self:
            return
        for req in self:
            req.deadline = deadline
        self.expire_by(deadline)

    def _due(self) -> None:
        self._timer = None
        if self._held or not self:
            return
        now = self._clock()
        due = [req for req in self if req.deadline <= now]
        if due:
            self._expired(due)
        if self:
            self.expire_by(min(req.deadline for req in self))
