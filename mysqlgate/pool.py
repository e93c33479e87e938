"""The upstream pool: bounded, FIFO-fair, recycling; it knows nothing of clients' SQL.

Theory of operation (pool_state.py says where a connection can be). A request that
cannot be served at once joins the queue `_waiters` (pool_queue.py: its order and its
deadlines) and stays there until it gets a connection or an error: connections go to the
queue, not to whoever caused them to be opened. Whatever connection becomes usable
(opened, checked, reset, given back) goes to the first waiter whose capability key
matches (so waiters of one key are served in their order, whatever connect finishes
first), else it is made idle. `_fill` is the one place that starts work for waiters: in
queue order, a waiter that no connection on its way covers takes an idle connection of
its key (pinged first when it was idle a while), else a connect starts if there is room
(an idle connection of another key is closed to make room).

The parts: pool_connects.py (connects, pings, what a failed connect means),
pool_recycling.py (connections coming back), pool_growing.py (when fleet.py decides
when to open), pool_reconnect.py (when to connect again after an outage or a full
account), pool_preempt.py (lent connections to ask back).

Time and waiting go through `clock` and a `Scheduler` (timers and concurrent
coroutines): asyncio's in production; the unit tests drive the pool with a fake clock
and fake connections (tests/unit/test_pool_model.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .backend import BackendConnection
from .errors import (
    PoolTimeout,
    UpstreamUnavailable,
)
from .pool_connects import Connecting
from .pool_growing import Growing
from .pool_recycling import Recycling
from .pool_types import (
    Delivery,
    PoolSettings,
    Request,
)

log = logging.getLogger("mysqlgate.pool")


class UpstreamPool(Connecting, Recycling, Growing):
    def request(self, key: int, deliver: Delivery) -> Request:
        """Ask for a connection opened with capability `key`; FIFO behind earlier
        requests for the same key; PoolTimeout (or, while the server cannot be reached,
        UpstreamUnavailable) after queue_timeout."""
        self.stats.acquires += 1
        now = self._clock()
        req = Request(key, deliver, now + self.settings.queue_timeout, now)
        if self._closing:
            self._fail(req, UpstreamUnavailable("mysqlgate is shutting down"))
            return req
        backend = None
        if not self._waiters and not self.paused:
            backend = self._take_idle(key)
            if backend is not None and now - backend.last_active <= self.settings.ping_after:
                req.done = True
                self._lent.add(backend)
                self.stats.observe_wait(0.0)
                deliver(backend)
                return req
        self.stats.waits += 1
        self._waiters.append(req)
        if not self.paused:
            self._waiters.expire_by(req.deadline)
        if backend is not None:
            self._start_check(backend)  # idle a while: ping it first (this request is its)
        else:
            self._fill()
        return req

    async def acquire(self, key: int) -> BackendConnection:
        """request() for coroutines."""
        future: asyncio.Future[BackendConnection] = asyncio.get_running_loop().create_future()

        def deliver(result: BackendConnection | BaseException) -> None:
            if future.done():  # the caller was cancelled meanwhile
                if isinstance(result, BackendConnection):
                    self.release(result)
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        req = self.request(key, deliver)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(req)
            raise

    def cancel(self, req: Request) -> None:
        """The requester went away."""
        if not req.done:
            req.done = True
            self._waiters.discard(req)

    def take_ready(self, key: int) -> BackendConnection | None:
        """The fast path: an idle connection that needs no check, when no one is
        queued ahead; None otherwise (then use request)."""
        if self._waiters or not self._idle or self.paused:
            return None
        backend = self._idle[-1]
        clock = self._clock  # (a local: calling an instance attribute is slower, here)
        if backend.key != key or backend.closed or \
                clock() - backend.last_active > self.settings.ping_after:
            return None
        self._idle.pop()
        self._lent.add(backend)
        self.stats.acquires += 1
        self.stats.observe_wait(0.0)
        return backend

    def unreachable_error(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"the upstream server of pool '{self.name}' cannot be reached: {self.unreachable}. "
            f"This client waited {self.settings.queue_timeout:g}s (pool.queue_timeout) while "
            "mysqlgate tried to reconnect; it keeps trying and serves clients as soon as "
            "the server answers. Check that the server runs and upstream.url points at it.")

    def _fill(self) -> None:
        """Start what the queue needs, in its order (see the module's docstring)."""
        if self._filling:  # called back from a delivery: the running _fill starts over
            self._refill = True
            return
        self._filling = True
        try:
            again = True
            while again and self._waiters:
                self._refill = False
                again = self._fill_once() or self._refill
        finally:
            self._filling = False
        # After the queue started what it needs, so that a login slow on a loaded
        # machine does not cost another client its diagnostics.
        self._ask_holders()

    def _fill_once(self) -> bool:
        """One pass over the queue; stops after a delivery (which may change it), and
        says whether there was one."""
        if self.paused or self._closing:
            return False
        seen: dict[int, int] = {}
        for req in self._waiters:
            key = req.key
            count = seen[key] = seen.get(key, 0) + 1
            if count <= self._incoming.get(key, 0):
                continue  # a connection on its way will serve it
            backend = self._take_idle(key)
            if backend is not None:
                if self._clock() - backend.last_active <= self.settings.ping_after:
                    first = self._waiters.first(key)
                    assert first is not None
                    self._deliver(first, backend)
                    return True
                self._start_check(backend)
                continue
            if self._reconnect.holding:
                if not self._idle:
                    break  # only the probe or the back-off's end can serve anyone now
                continue  # idle connections of other keys may still serve others
            if self.grower is not None:  # fleet.py opens one once the account has room
                self.grower.wanted()
                break
            if self.open_count >= self.effective_size:
                if self._idle and self.open_count - 1 < self.effective_size:
                    # At the limit with idle connections of other keys: replace the oldest.
                    self.stats.key_evictions += 1
                    self._idle.popleft().close()
                elif self.effective_size < self.settings.size and \
                        not self._reconnect.beyond and self.open_count < self.settings.size:
                    # Lowered after a 1226: one connect at a time tries beyond it, or the
                    # size would never come back while every connection stays in use.
                    self._reconnect.beyond = True
                    self._start_open(key, beyond=True)
                    continue
                else:
                    break  # no room, and none can be made: wait for a connection back
            self._start_open(key)
        return False

    def _timed_out(self, due: list[Request]) -> None:
        """Fail the queued requests whose time is up (the queue's timer says which)."""
        for req in due:
            self.stats.wait_timeouts += 1
            if self.unreachable is not None:
                log.warning("%s: a client waited %gs for the unreachable server and got "
                            "an error", self.name, self.settings.queue_timeout)
                self._fail(req, self.unreachable_error())
            else:
                log.warning("%s: pool saturated, a client waited %gs and got an error; %s",
                            self.name, self.settings.queue_timeout, self.describe())
                self._fail(req, PoolTimeout(self._timeout_message()))

    def _timeout_message(self) -> str:
        return (
            f"no upstream connection became free within {self.settings.queue_timeout:g}s; "
            f"{self.describe()}. Clients holding connections are in transactions or pinned "
            "(see mysqlgate status). Raise pool.queue_timeout, shorten transactions, or "
            "raise pool.size if the account allows more connections."
        )

    def pause(self) -> None:
        """Hand out no connection until resume() (e.g. during a server upgrade): requests
        wait, however long, and statements already running go on. Idle connections are
        closed now, and connections given back while paused, so that once in_use is 0
        nothing holds the server (as PgBouncer's PAUSE); resume() opens new ones."""
        self.paused = True
        self._update_shedding()
        self._waiters.hold()
        while self._idle:
            self._idle.pop().close()
            self.stats.closed_paused += 1

    def resume(self) -> None:
        self.paused = False
        self._update_shedding()
        self._waiters.restart(self._clock() + self.settings.queue_timeout)
        self._fill()

    def allow_preemption(self, backend: BackendConnection, give_back: Callable[[], None],
                         after: float) -> None:
        """The session holding `backend` keeps it only for its client's convenience:
        from `after` seconds on, if a client waits, call `give_back` (which must release
        the connection, at once or soon)."""
        self._preemption.allow(backend, give_back, after)

    def forbid_preemption(self, backend: BackendConnection) -> None:
        self._preemption.forbid(backend)

    def resize(self, settings: PoolSettings) -> None:
        """New settings (the server's limits became known): the size bound with them.
        Above a lowered size, idle connections are closed now and lent ones as they
        come back."""
        self.settings = settings
        self.effective_size = settings.size
        while self._idle and self.open_count > settings.size:
            self._idle.popleft().close()
            self.stats.closed_excess += 1
        self._above_size = self.open_count > settings.size
        self._update_shedding()
        self._fill()

    async def close(self) -> None:
        self._closing = True
        self._update_shedding()
        self._reconnect.close()
        self._waiters.hold()
        self._preemption.close()
        for req in list(self._waiters):
            self._fail(req, UpstreamUnavailable("mysqlgate is shutting down"))
        self._waiters.clear()
        for backend in list(self._idle) + list(self._lent) + list(self._borrowed):
            backend.close()
        self._idle.clear()
        self._borrowed.clear()
        for borrower in self._borrowers:
            borrower.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
