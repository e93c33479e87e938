"""The pool's state, and what every part of it does with that state.

A connection is in one of four places: idle (in `_idle`, most recently used last), lent
(to a session, in `_lent`), borrowed (by the grower, pool_growing.py), or on its way
(being opened, checked with a ping, or reset: counted in `_opening`, and per capability
key in `_incoming`). `size` bounds the sum. Requests that wait are in `_waiters`
(pool_queue.py).

The pool is one state machine in parts, each a class over this one and a file of its
own: pool_connects.py (opening and checking connections), pool_recycling.py (taking
them back), pool_growing.py (the grower's side), pool.py (the queue served, and the
pool put together). A part calls another's method through the declarations at the end
of PoolState.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .backend import BackendConnection
from .pool_preempt import Preemption
from .pool_queue import WaitQueue
from .pool_reconnect import Reconnect
from .pool_types import (
    AsyncioScheduler,
    Cancellable,
    Clock,
    Connector,
    Grower,
    PoolSettings,
    PoolStats,
    Request,
    Resetter,
    Scheduler,
)

# An idle connection that has not been used for this long is looked at (a peek at its
# socket) before it is lent: a server's wait_timeout or a KILL may have ended it a moment
# ago (BackendConnection.hung_up). Younger ones are lent as they are: a point select
# costs no system call more, and a server's timeout cannot have struck them.
HANGUP_CHECK_AFTER = 1.0


class PoolState:
    def __init__(self, name: str, connector: Connector, resetter: Resetter,
                 settings: PoolSettings, *, clock: Clock = time.monotonic,
                 scheduler: Scheduler | None = None,
                 jitter: Callable[[], float] = random.random) -> None:
        self.name = name
        self.settings = settings
        self.stats = PoolStats()
        self._connect = connector
        self._reset = resetter
        self._clock = clock
        self._scheduler: Scheduler = scheduler if scheduler is not None \
            else AsyncioScheduler(clock)
        self._jitter = jitter
        self._idle: deque[BackendConnection] = deque()
        self._lent: set[BackendConnection] = set()
        self._opening = 0  # connections being opened, checked or reset: they count against size
        self._incoming: dict[int, int] = {}  # of those, per capability key
        self._waiters = WaitQueue(clock, self._scheduler, self._timed_out)
        # Lowered when the server says the account is full (1226/1040), raised again
        # one step per successful connect (SPEC section 3).
        self.effective_size = settings.size
        # resize() lowered the size below what is open: connections that come back are
        # closed until the pool fits.
        self._above_size = False
        # paused, closing or above the size: _return has more to check (one flag on
        # the path of every statement instead of three).
        self._shedding = False
        self._closing = False
        self._tasks: dict[object, Cancellable] = {}
        self._filling = False  # _fill is running (a delivery may call back into the pool)
        self._refill = False
        # Lent connections their sessions would give back if someone waits.
        self._preemption = Preemption(clock, self._scheduler, self.stats,
                                      lambda: self.unserved_count)
        # The server unreachable, or the account full: when to connect again.
        self._reconnect = Reconnect(name, clock, self._scheduler, jitter, self.stats,
                                    self._probe, self._fill)
        # PAUSE (admin console): no connection is handed out; requests wait, without
        # their queue timeout, until RESUME.
        self.paused = False
        # Several mysqlgates on one account (fleet.py): who decides when to open, the
        # connections it borrowed, and who waits for the next one to arrive.
        self.grower: Grower | None = None
        self._borrowed: set[BackendConnection] = set()
        self._borrowers: deque[asyncio.Future[BackendConnection]] = deque()

    @property
    def open_count(self) -> int:
        return len(self._idle) + len(self._lent) + self._opening + len(self._borrowed)

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def lent_count(self) -> int:
        return len(self._lent)

    @property
    def opening_count(self) -> int:
        """Connections being opened, checked or reset: they count against the size."""
        return self._opening

    @property
    def waiting_count(self) -> int:
        return len(self._waiters)

    @property
    def unserved_count(self) -> int:
        """Clients waiting beyond the connections on their way to them: those only
        another client's giving one back would serve (at the size, the account full, or
        the server unreachable). A client whose connection is being opened is not one."""
        return max(0, len(self._waiters) - self._opening)

    @property
    def longest_wait(self) -> float:
        """Seconds the longest-waiting request has waited (0: none waits)."""
        return self._waiters.longest_wait()

    @property
    def unreachable(self) -> str | None:
        """Why the server cannot be reached, while it cannot."""
        return self._reconnect.unreachable

    @property
    def unreachable_for(self) -> float:
        """Seconds the server has been unreachable (0: it answers)."""
        return self._reconnect.unreachable_for()

    @property
    def backing_off(self) -> bool:
        """The server said the account is full: no connect until the back-off ends."""
        return self._reconnect.backing_off

    def describe(self) -> str:
        return (
            f"pool '{self.name}': {len(self._lent)} of {self.effective_size} upstream "
            f"connections in use, {self._opening} opening, {len(self._waiters)} clients waiting"
        )

    def lent(self) -> list[BackendConnection]:
        return list(self._lent)

    def idle(self) -> list[BackendConnection]:
        return list(self._idle)

    def _deliver(self, req: Request, backend: BackendConnection) -> None:
        """Hand `backend` to `req`, a request in the queue."""
        self._waiters.remove(req)
        req.done = True
        self._lent.add(backend)
        self.stats.observe_wait(self._clock() - req.since)
        req.deliver(backend)

    def _fail(self, req: Request, exc: BaseException) -> None:
        if req.done:
            return
        req.done = True
        self._waiters.discard(req)
        req.deliver(exc)

    def _start_open(self, key: int, probe: bool = False, beyond: bool = False) -> None:
        self._opening += 1
        self._incoming[key] = self._incoming.get(key, 0) + 1
        self._spawn(self._open, key, probe, beyond)

    def _start_check(self, backend: BackendConnection) -> None:
        self._opening += 1
        self._incoming[backend.key] = self._incoming.get(backend.key, 0) + 1
        self._spawn(self._check, backend)

    def _arrived(self, key: int) -> None:
        """A connection on its way arrived (or failed): it no longer counts as coming."""
        self._opening -= 1
        left = self._incoming[key] - 1
        if left:
            self._incoming[key] = left
        else:
            del self._incoming[key]

    def _ask_holders(self) -> None:
        """Ask sessions keeping a connection for their client's convenience to give it
        back, for clients that no connection on its way will serve (unserved_count)."""
        if self._waiters and self._preemption.pending and not self.paused:
            self._preemption.ask()

    def _spawn(self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        token = object()

        async def run() -> None:
            try:
                await work(*args)
            finally:
                self._tasks.pop(token, None)

        self._tasks[token] = self._scheduler.spawn(run())

    def _take_idle(self, key: int) -> BackendConnection | None:
        """The most recently used idle connection of `key` that is open and not past
        its idle timeout or lifetime (those are closed on the way: the rest can age)."""
        now = self._clock()
        # Over a copy: an expired or closed one is removed and the search goes on
        # (issue 16: removing from the deque being iterated dropped a client).
        for backend in reversed(list(self._idle)):
            if backend.key == key:
                self._idle.remove(backend)
                if not self._retired(backend, now):
                    return backend
        return None

    def _retired(self, backend: BackendConnection, now: float) -> bool:
        """Whether `backend`, out of the idle list, may not serve again: closed, idle
        past the idle timeout, past its lifetime, or ended by the server a moment ago
        (then it is closed and counted)."""
        if backend.closed:
            self.stats.closed_broken += 1
        elif now - backend.last_active > self.settings.idle_timeout:
            self.stats.closed_idle += 1
            backend.close()
        elif now - backend.created_at > self._lifetime(backend):
            self.stats.closed_lifetime += 1
            backend.close()
        elif now - backend.last_active >= HANGUP_CHECK_AFTER and backend.hung_up():
            self.stats.closed_broken += 1  # hung_up closed it
        else:
            return False
        return True

    def _lifetime(self, backend: BackendConnection) -> float:
        # Jitter (up to 10%, fixed per connection) so connections opened together
        # are not all replaced at once.
        jitter = (backend.thread_id % 97) / 970.0
        return self.settings.max_lifetime * (1 - jitter)

    # -- what the other parts provide (declared here for the parts that call them) ---

    def _fill(self) -> None:
        raise NotImplementedError  # pool.py

    def _timed_out(self, due: list[Request]) -> None:
        raise NotImplementedError  # pool.py

    async def _open(self, key: int, probe: bool, beyond: bool, first: bool = False) -> None:
        raise NotImplementedError  # pool_connects.py

    async def _check(self, backend: BackendConnection) -> None:
        raise NotImplementedError  # pool_connects.py

    def _probe(self) -> None:
        raise NotImplementedError  # pool_connects.py

    def _offer(self, backend: BackendConnection) -> None:
        raise NotImplementedError  # pool_recycling.py

    def _update_shedding(self) -> None:
        raise NotImplementedError  # pool_recycling.py

    def release(self, backend: BackendConnection, *, reset: bool = False) -> None:
        raise NotImplementedError  # pool_recycling.py

    def _on_backend_closed(self, backend: BackendConnection) -> None:
        raise NotImplementedError  # pool_recycling.py

    async def _admitted(self, backend: BackendConnection) -> bool:
        raise NotImplementedError  # pool_growing.py
