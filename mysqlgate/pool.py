"""The upstream pool: bounded, FIFO-fair, recycling; it knows nothing of clients' SQL.

Theory of operation. A connection is in one of four places: idle (in `_idle`, most
recently used last), lent (to a session, in `_lent`), borrowed (by the grower, below),
or on its way (being opened, checked with a ping, or reset: counted in `_opening`, and
per capability key in `_incoming`). `size` bounds the sum.

A request that cannot be served at once joins the queue `_waiters` (pool_queue.py: its
order and its deadlines) and stays there
until it gets a connection or an error: connections go to the queue, not to whoever
caused them to be opened. Whatever connection becomes usable (opened, checked, reset,
given back) goes to the first waiter whose capability key matches (so waiters of one key
are served in their order, whatever connect finishes first), else it is made idle.
`_fill` is the one place that starts work for waiters: in queue order, a waiter that no
connection on its way covers takes an idle connection of its key (pinged first when it
was idle a while), else a connect starts if there is room (an idle connection of
another key is closed to make room).

A connection that comes back is, in order (after PgBouncer's release_server): closed if
broken or past its lifetime; reset if the session says its state must not reach
another client (a failed reset closes it); else offered as above.

Connects that fail for want of a server (refused, timed out, cut) make the pool
*unreachable*: requests wait in the queue (up to pool.queue_timeout, then the
unreachable error) and one probe at a time looks for the server; a server that says the
account is full (1226, 1040) lowers the size kept to and backs off before the next
connect (pool_reconnect.py keeps the time of both).

Time and waiting go through `clock` and a `Scheduler` (timers and concurrent
coroutines): asyncio's in production; the unit tests drive the pool with a fake clock
and fake connections (tests/unit/test_pool_model.py).

Several mysqlgates sharing one account (fleet.py): when a `Grower` is set, the pool opens
no connection on its own. Where `_fill` would start a connect it tells the grower
(`wanted`), which calls `grow()` once the account has room on the server. The grower
also borrows connections that are not lent (`borrow_idle`, `borrow_next`: the next one
to arrive or come back, before any waiter) for its own statements, and gives them back
(`give_back`), closed if it gave them to another mysqlgate; borrowed ones count
against the size.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from .backend import BackendConnection
from .errors import (
    MysqlgateError,
    PoolTimeout,
    ServerError,
    UpstreamUnavailable,
)
from .pool_preempt import Preemption
from .pool_queue import WaitQueue
from .pool_reconnect import Reconnect
from .pool_types import (
    SERVER_GOING_AWAY,
    TOO_MANY_CONNECTIONS,
    AsyncioScheduler,
    Cancellable,
    Clock,
    Connector,
    Delivery,
    Grower,
    PoolSettings,
    PoolStats,
    Request,
    Resetter,
    Scheduler,
)

log = logging.getLogger("mysqlgate.pool")

class UpstreamPool:
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
                                      lambda: len(self._waiters))
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

    # -- numbers -------------------------------------------------------------------

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

    # -- acquire -------------------------------------------------------------------

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
            if self._preemption.pending:
                self._preemption.ask()
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

    # -- serving the queue -----------------------------------------------------------

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

    def _spawn(self, work: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        token = object()

        async def run() -> None:
            try:
                await work(*args)
            finally:
                self._tasks.pop(token, None)

        self._tasks[token] = self._scheduler.spawn(run())

    def _offer(self, backend: BackendConnection) -> None:
        """A connection that arrived (opened, checked, reset): to the queue, or idle."""
        if backend.closed:
            self.stats.closed_broken += 1
            self._fill()
            return
        self._return(backend)

    def _return(self, backend: BackendConnection) -> None:
        if self._shedding and self._shed(backend):
            return
        while self._borrowers:  # the grower asked for the next one (borrow_next)
            borrower = self._borrowers.popleft()
            if not borrower.done():
                self._borrowed.add(backend)
                borrower.set_result(backend)
                return
        key = backend.key
        for req in self._waiters:
            if req.key == key:
                if self._clock() - backend.last_active > self.settings.ping_after:
                    self._recheck(backend)  # quiet a while in its holder's hands
                    return
                self._deliver(req, backend)
                return
        self._idle.append(backend)
        if self._waiters:  # of other keys: this one may be closed to make room for them
            self._fill()

    def _recheck(self, backend: BackendConnection) -> None:
        """A connection given back after a quiet while (a client that held it for its
        diagnostics, or kept it idle in a transaction) is checked as an idle one would
        be before a waiter gets it: pinged, or closed if past the idle timeout."""
        if self._clock() - backend.last_active > self.settings.idle_timeout:
            self.stats.closed_idle += 1
            backend.close()
            self._fill()
        else:
            self._start_check(backend)

    def _shed(self, backend: BackendConnection) -> bool:
        """Close `backend` rather than keep it: paused, shutting down, or above the size."""
        if self.paused or self._closing:
            backend.close()
            if self.paused:
                self.stats.closed_paused += 1
            return True
        if self.open_count >= self.settings.size:  # `backend` is not counted any more
            self.stats.closed_excess += 1
            backend.close()
            return True
        self._above_size = False
        self._update_shedding()
        return False

    def _update_shedding(self) -> None:
        self._shedding = self.paused or self._closing or self._above_size

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
        past the idle timeout, or past its lifetime (then it is closed and counted)."""
        if backend.closed:
            self.stats.closed_broken += 1
        elif now - backend.last_active > self.settings.idle_timeout:
            self.stats.closed_idle += 1
            backend.close()
        elif now - backend.created_at > self._lifetime(backend):
            self.stats.closed_lifetime += 1
            backend.close()
        else:
            return False
        return True

    # -- connects, checks ------------------------------------------------------------

    async def _check(self, backend: BackendConnection) -> None:
        """Ping a connection idle for a while before it serves the queue."""
        try:
            await backend.ping()
            ok = True
        except (ServerError, ConnectionError, OSError) as exc:
            log.info("%s: upstream %s failed its ping (%s); replacing it",
                     self.name, backend.thread_id, exc)
            ok = False
        except BaseException:
            backend.abort()
            self._arrived(backend.key)
            raise
        self._arrived(backend.key)
        if ok:
            self._offer(backend)
        else:
            self.stats.pings_failed += 1
            backend.abort()
            self._fill()

    async def _open(self, key: int, probe: bool, beyond: bool, first: bool = False) -> None:
        """Connect; `probe`: the one looking for an unreachable server; `beyond`: the one
        trying beyond an effective size lowered after a 1226; `first`: opened for the
        grower with nothing counted beforehand (admit_first)."""
        started = self._clock()
        try:
            backend = await self._connect(key)
        except BaseException as exc:
            self._arrived(key)
            self._ended(probe, beyond)
            self._open_failed(key, exc, started)
            if not isinstance(exc, Exception):
                raise  # cancelled (shutdown)
            return
        self._arrived(key)
        self._ended(probe, beyond)
        self.stats.connects += 1
        log.debug("%s: opened upstream %s (capabilities %#x); %d open",
                  self.name, backend.thread_id, key, self.open_count + 1)
        self._reconnect.connected(started)
        if self.effective_size < self.settings.size:
            self.effective_size += 1
        backend.on_close(self._on_backend_closed)
        if first and self.grower is not None and not await self._admitted(backend):
            return  # the grower keeps it for now
        self._offer(backend)
        # Back from an outage or a 1226 there may be room for more than this one.
        self._fill()

    def _ended(self, probe: bool, beyond: bool) -> None:
        """A probe's or a beyond-the-size connect is over: the next may start."""
        if probe:
            self._reconnect.probing = False
        if beyond:
            self._reconnect.beyond = False

    def _open_failed(self, key: int, exc: BaseException, started: float) -> None:
        if not isinstance(exc, Exception) or self._closing:
            return
        self.stats.connect_failures += 1
        if isinstance(exc, ServerError) and exc.err.code in TOO_MANY_CONNECTIONS:
            self._reconnect.reachable()  # it answered
            self.stats.limit_rejections += 1
            lowered = max(1, self.open_count)
            if lowered < self.effective_size:
                log.warning("%s: server says the account is full (%s); lowering the pool "
                            "size from %d to %d", self.name, exc.err.code,
                            self.effective_size, lowered)
                self.effective_size = lowered
            self._reconnect.full()
            return
        if isinstance(exc, ServerError) and exc.err.code in SERVER_GOING_AWAY or \
                isinstance(exc, (OSError, UpstreamUnavailable)):  # refused, timed out, cut
            if self._reconnect.outdated(started):
                self._fill()  # older than a connect that worked: the server is back
            else:
                self.mark_unreachable(str(exc), key)
            return
        # The server answered with a refusal that waiting will not cure (a wrong
        # password, a host not allowed): the oldest waiter for this key is told.
        self._reconnect.reachable()
        error: BaseException
        if isinstance(exc, MysqlgateError):
            error = exc
        elif isinstance(exc, ServerError):
            error = UpstreamUnavailable(f"the upstream server refused a connection: {exc}")
        else:
            log.error("%s: cannot open an upstream connection", self.name, exc_info=exc)
            error = UpstreamUnavailable(f"cannot open an upstream connection: {exc}")
        req = self._waiters.first(key)
        if req is not None:
            self._fail(req, error)
        self._fill()

    # -- the server unreachable (pool_reconnect.py keeps the time) -----------------

    def mark_unreachable(self, reason: str, key: int = 0) -> None:
        """A connect failed for want of a server: requests wait, one probe looks."""
        self._reconnect.lost(reason, key, self.settings.queue_timeout)

    def _probe(self) -> None:
        """The next look for the server is due: one connect, room made for it if
        someone waits."""
        if self._closing:
            return
        if self.open_count >= self.effective_size:
            if not (self._idle and self._waiters):
                self._reconnect.schedule_probe()  # no room: try again later
                return
            self.stats.key_evictions += 1  # someone waits: make room
            self._idle.popleft().close()
        self._reconnect.probing = True
        key = self._waiters[0].key if self._waiters else self._reconnect.probe_key
        self._start_open(key, True)

    # -- queue timeouts ---------------------------------------------------------------

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

    # -- pause ------------------------------------------------------------------------

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

    # -- preemption -----------------------------------------------------------------

    def allow_preemption(self, backend: BackendConnection, give_back: Callable[[], None],
                         after: float) -> None:
        """The session holding `backend` keeps it only for its client's convenience:
        from `after` seconds on, if a client waits, call `give_back` (which must release
        the connection, at once or soon)."""
        self._preemption.allow(backend, give_back, after)

    def forbid_preemption(self, backend: BackendConnection) -> None:
        self._preemption.forbid(backend)

    # -- release -------------------------------------------------------------------

    def release(self, backend: BackendConnection, *, reset: bool = False) -> None:
        """Take a connection back from a session. `reset`: its session state must not
        reach another client."""
        self._lent.discard(backend)
        self._preemption.forbid(backend)
        if backend.closed or backend.busy:
            died = backend.closed  # (busy: its client left mid-result; we abort it)
            backend.abort()
            self.stats.closed_broken += 1
            if died:
                self._suspect_idle()
            self._fill()
            return
        if self._clock() - backend.created_at > self._lifetime(backend):
            self.stats.closed_lifetime += 1
            backend.close()
            self._fill()
            return
        if reset and not self.paused:  # paused, _return closes it: no reset needed
            self._opening += 1
            self._incoming[backend.key] = self._incoming.get(backend.key, 0) + 1
            self._spawn(self._reset_then_offer, backend)
            return
        self._return(backend)

    async def _reset_then_offer(self, backend: BackendConnection) -> None:
        try:
            await self._reset(backend)
        except Exception as exc:
            log.info("%s: reset of upstream %s failed (%s); closing it",
                     self.name, backend.thread_id, exc)
            backend.abort()  # _offer counts it
        except BaseException:  # cancelled (shutdown): nothing more to do with it
            backend.abort()
            self._arrived(backend.key)
            raise
        else:
            self.stats.resets += 1
        self._arrived(backend.key)
        self._offer(backend)

    def _on_backend_closed(self, backend: BackendConnection) -> None:
        if backend in self._idle:
            self._idle.remove(backend)
            self.stats.closed_broken += 1
            self._suspect_idle()
            self._fill()

    def _suspect_idle(self) -> None:
        """A connection died: the idle ones may be dying too (a server restarting, a
        network cut), so each is checked (pinged) before anyone gets it; a statement run
        again after the loss must not meet a second dead connection."""
        now = self._clock()
        while self._idle:
            backend = self._idle.pop()
            if not self._retired(backend, now):
                self._start_check(backend)

    def _lifetime(self, backend: BackendConnection) -> float:
        # Jitter (up to 10%, fixed per connection) so connections opened together
        # are not all replaced at once.
        jitter = (backend.thread_id % 97) / 970.0
        return self.settings.max_lifetime * (1 - jitter)

    # -- the grower's side (fleet.py) -------------------------------------------------

    async def grow(self, first: bool = False) -> bool:
        """Open one connection for the first waiter that none on its way covers: the
        grower calls this once it made sure the account has room (`first`: it could
        not count beforehand, see admit_first). True when one was opened and offered."""
        if self._closing or self.paused or self.unreachable is not None:
            return False
        key = self._uncovered_key()
        if key is None:
            return False
        if self.open_count >= self.settings.size:
            if not self._idle:
                return False
            self.stats.key_evictions += 1  # idle ones of other keys: make room
            self._idle.popleft().close()
        self._opening += 1
        self._incoming[key] = self._incoming.get(key, 0) + 1
        connects = self.stats.connects
        borrowed = len(self._borrowed)
        await self._open(key, False, False, first)
        return self.stats.connects > connects and len(self._borrowed) == borrowed

    def _uncovered_key(self) -> int | None:
        seen: dict[int, int] = {}
        for req in self._waiters:
            count = seen[req.key] = seen.get(req.key, 0) + 1
            if count > self._incoming.get(req.key, 0):
                return req.key
        return None

    async def _admitted(self, backend: BackendConnection) -> bool:
        assert self.grower is not None
        self._borrowed.add(backend)  # counts against the size while it is checked
        try:
            admitted = await self.grower.admit_first(backend)
        except BaseException:
            self._borrowed.discard(backend)
            backend.abort()
            raise
        if admitted or backend.closed:
            self._borrowed.discard(backend)
        return admitted

    def borrow_idle(self) -> BackendConnection | None:
        """The connection idle the longest, for the grower's own use (not lent)."""
        while self._idle:
            backend = self._idle.popleft()
            if not backend.closed:
                self._borrowed.add(backend)
                return backend
        return None

    def borrow_next(self) -> asyncio.Future[BackendConnection]:
        """The next connection to arrive or be given back, before any waiter gets it."""
        future: asyncio.Future[BackendConnection] = \
            asyncio.get_running_loop().create_future()
        self._borrowers.append(future)
        return future

    def give_back(self, backend: BackendConnection) -> None:
        """A borrowed connection comes back: to the queue or idle; closed (the grower
        gave it to another mysqlgate), its slot is free."""
        self._borrowed.discard(backend)
        if backend.closed:
            self._fill()
            return
        self._lent.add(backend)
        self.release(backend)

    def borrowed(self) -> list[BackendConnection]:
        return list(self._borrowed)

    # -- maintenance (the janitor calls this) ---------------------------------------

    def expire_idle(self) -> None:
        now = self._clock()
        self._idle = deque(backend for backend in self._idle
                           if not self._retired(backend, now))
        self._fill()

    def server_going_away(self) -> None:
        """A connection said the server shuts down (1053): the idle ones are closed now,
        before they are handed out to hear the same; new connects will tell when it is
        back."""
        while self._idle:
            self._idle.pop().abort()
            self.stats.closed_broken += 1

    def lent(self) -> list[BackendConnection]:
        return list(self._lent)

    def idle(self) -> list[BackendConnection]:
        return list(self._idle)

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
