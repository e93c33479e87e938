"""The upstream pool: bounded, FIFO-fair, recycling; it knows nothing of clients' SQL.

Connections move between three places: idle (in `_idle`), lent (to a session), and
being opened (counted in `_opening`). `size` bounds the sum. A connection that comes
back is, in order (after PgBouncer's release_server): closed if broken or past its
lifetime; reset if the session says its state must not be seen by another client
(a failed reset closes it); handed straight to the first waiter whose capability key
matches; else made idle. A waiter needing another key gets the freed slot instead.

Several mysqlgates sharing one account (fleet.py): when a `Grower` is set, the pool opens
no connection on its own. A request that would have opened one waits, and the grower is
told; it calls `grow()` once the account has room on the server. It also borrows
connections that are not lent (`borrow_idle`, `borrow_next`) for its own statements, and
gives them back (`give_back`), closed if it gave them to another mysqlgate.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from .backend import BackendConnection
from .errors import (
    MysqlgateError,
    PoolTimeout,
    ServerError,
    UpstreamAuthError,
    UpstreamUnavailable,
)

log = logging.getLogger("mysqlgate.pool")

Connector = Callable[[int], Awaitable[BackendConnection]]
UNREACHABLE_LOG_EVERY = 30.0  # seconds between "still unreachable" log lines
RECHECK_MAX = 5.0  # seconds between attempts at most, while the server is unreachable
# Brings a connection back to a fresh session; raises when it cannot (then it is closed).
Resetter = Callable[[BackendConnection], Awaitable[None]]

# Server errors that mean "the account or server is full", not "broken".
TOO_MANY_CONNECTIONS = (1040, 1203, 1226)


@dataclass
class PoolSettings:
    size: int
    queue_timeout: float
    idle_timeout: float
    max_lifetime: float
    ping_after: float


# Upper bounds of the wait-time histogram (seconds); the last bucket is everything above.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class PoolStats:
    connects: int = 0
    connect_failures: int = 0
    limit_rejections: int = 0
    acquires: int = 0
    waits: int = 0
    wait_timeouts: int = 0
    resets: int = 0
    pings_failed: int = 0
    closed_idle: int = 0
    closed_lifetime: int = 0
    closed_broken: int = 0
    key_evictions: int = 0
    closed_paused: int = 0
    preemptions: int = 0
    # How long requests waited for a connection: counts per WAIT_BUCKETS bound (and
    # one more for longer waits), their sum, and how many.
    wait_buckets: list[int] = field(default_factory=lambda: [0] * (len(WAIT_BUCKETS) + 1))
    wait_seconds: float = 0.0
    waited: int = 0

    def observe_wait(self, seconds: float) -> None:
        self.wait_buckets[bisect.bisect_left(WAIT_BUCKETS, seconds)] += 1
        self.wait_seconds += seconds
        self.waited += 1


Delivery = Callable[[BackendConnection | BaseException], None]


class Grower(Protocol):
    """Decides when the pool may open a connection (fleet.py); the pool knows no SQL."""

    def wanted(self) -> None:
        """A request waits for a connection the pool did not open: call grow() when
        the account has room."""

    async def admit_first(self, backend: BackendConnection) -> bool:
        """`backend` was opened while the pool held no connection, with nothing to
        check the account on beforehand: may it be handed out? False: the grower keeps
        it (borrowed) until the account has room, then gives it back, or closes it."""


@dataclass(eq=False)
class Request:
    """A session's request for a connection. `deliver` gets the connection or the
    error, exactly once, possibly synchronously from `request` or `release`."""

    key: int
    deliver: Delivery
    deadline: float
    done: bool = False
    since: float = field(default_factory=time.monotonic)


class UpstreamPool:
    def __init__(self, name: str, connector: Connector, resetter: Resetter,
                 settings: PoolSettings) -> None:
        self.name = name
        self.settings = settings
        self.stats = PoolStats()
        self._connect = connector
        self._reset = resetter
        self._idle: deque[BackendConnection] = deque()
        self._lent: set[BackendConnection] = set()
        self._opening = 0  # connections being opened or checked: they count against size
        self._waiters: deque[Request] = deque()
        # One timer for every queued request's timeout, due at the earliest deadline
        # (the head's: the queue is FIFO): a statement that waits costs no timer of its
        # own to start and cancel.
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_due = 0.0
        # Lowered when the server says the account is full (1226/1040), raised again
        # one step per successful connect (SPEC section 3).
        self.effective_size = settings.size
        self._backoff = 0.05
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Lent connections their sessions would give back if someone waits: from when
        # on, and how to ask.
        self._preemptible: dict[BackendConnection, tuple[float, Callable[[], None]]] = {}
        self._preempt_timer: asyncio.TimerHandle | None = None
        # Why the server cannot be reached, while it cannot: clients get an error at
        # once instead of waiting their whole queue timeout; a watcher keeps trying.
        self.unreachable: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        # PAUSE (admin console): no connection is handed out; requests wait, without
        # their queue timeout, until RESUME.
        self.paused = False
        # Several mysqlgates on one account (fleet.py): who decides when to open, the
        # connections it borrowed, and who waits for the next one given back.
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
        if not self._waiters:
            return 0.0
        return time.monotonic() - min(req.since for req in self._waiters)

    def describe(self) -> str:
        return (
            f"pool '{self.name}': {len(self._lent)} of {self.effective_size} upstream "
            f"connections in use, {self._opening} opening, {len(self._waiters)} clients waiting"
        )

    # -- acquire -------------------------------------------------------------------

    def request(self, key: int, deliver: Delivery) -> Request:
        """Ask for a connection opened with capability `key`; FIFO behind earlier
        requests; PoolTimeout after queue_timeout."""
        self.stats.acquires += 1
        req = Request(key, deliver, time.monotonic() + self.settings.queue_timeout)
        if self._waiters:
            self._enqueue(req)
        else:
            self._serve(req)
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
            if req in self._waiters:
                self._waiters.remove(req)

    def take_ready(self, key: int) -> BackendConnection | None:
        """The fast path: an idle connection that needs no check, when no one is
        queued ahead; None otherwise (then use request)."""
        if self._waiters or not self._idle or self.paused:
            return None
        backend = self._idle[-1]
        if backend.key != key or backend.closed or \
                time.monotonic() - backend.last_active > self.settings.ping_after:
            return None
        self._idle.pop()
        self._lent.add(backend)
        self.stats.acquires += 1
        self.stats.observe_wait(0.0)
        return backend

    def mark_unreachable(self, reason: str, key: int = 0) -> None:
        """The server did not answer a connect: fail new requests at once with
        `reason`, and try again now and then (with `key`) until it answers."""
        if self.unreachable is None:
            log.warning("%s: upstream unreachable: %s; clients get an error until it "
                        "answers (checking every %gs at most)", self.name, reason, RECHECK_MAX)
        self.unreachable = reason
        if self._watcher is None and not self._closing:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(key))

    async def _watch(self, key: int) -> None:
        delay = 0.5
        logged = time.monotonic()
        try:
            while self.unreachable is not None and not self._closing:
                await asyncio.sleep(delay)
                if self.open_count >= self.effective_size:
                    continue  # nothing to try with: a slot frees up first
                self._opening += 1
                try:
                    backend = await self._connect(key)
                except (MysqlgateError, OSError, ServerError) as exc:
                    self.unreachable = str(exc)
                    delay = min(delay * 2, RECHECK_MAX)
                    if time.monotonic() - logged > UNREACHABLE_LOG_EVERY:
                        logged = time.monotonic()
                        log.warning("%s: upstream still unreachable: %s", self.name, exc)
                    continue
                finally:
                    self._opening -= 1
                log.info("%s: upstream reachable again", self.name)
                self.unreachable = None
                self.stats.connects += 1
                backend.on_close(self._on_backend_closed)
                self._lent.add(backend)
                self.release(backend)  # to a waiter, or idle
        finally:
            self._watcher = None

    def unreachable_error(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            f"the upstream server of pool '{self.name}' cannot be reached: {self.unreachable}. "
            "mysqlgate keeps trying and serves this connection as soon as it answers; "
            "check that the server runs and upstream.url points at it.")

    def _serve(self, req: Request, probe: bool = False) -> None:
        """Satisfy `req` now, start opening or checking a connection for it, or queue it.
        `probe`: a retry after the server said the account was full; it may try a
        connect beyond the lowered effective size (up to pool.size), or the size would
        never come back up while every connection stays in use."""
        if req.done or self._closing:
            if self._closing:
                self._fail(req, UpstreamUnavailable("mysqlgate is shutting down"))
            return
        if self.paused:
            self._enqueue(req)
            return
        backend = self._take_idle(req.key)
        if backend is not None:
            if time.monotonic() - backend.last_active <= self.settings.ping_after:
                self._deliver(req, backend)
            else:
                self._opening += 1  # counts against size while we check it
                self._spawn(self._check_then_deliver(req, backend))
            return
        if self.open_count >= self.effective_size and self._idle:
            # At the limit with idle connections of another key: replace the oldest.
            self.stats.key_evictions += 1
            self._idle.popleft().close()
        if self.unreachable is not None:
            self._fail(req, self.unreachable_error())
            return
        if self.grower is not None:  # fleet.py opens one once the account has room
            self._enqueue(req, front=probe)
            self.grower.wanted()
            return
        if self.open_count < (self.settings.size if probe else self.effective_size):
            self._opening += 1
            self._spawn(self._open_then_deliver(req))
            return
        self._enqueue(req, front=probe)

    def _enqueue(self, req: Request, front: bool = False) -> None:
        if front:
            self._waiters.appendleft(req)  # a retried request keeps its turn
        else:
            self.stats.waits += 1
            self._waiters.append(req)
        if not self.paused:
            self._expire_at(req.deadline)
            if self._preemptible or self._preempt_timer is not None:
                self._preempt()

    def _expire_at(self, deadline: float) -> None:
        """Make sure the expiry timer runs by `deadline`."""
        if self._expiry is not None:
            if self._expiry_due <= deadline:
                return
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry_due = deadline
        self._expiry = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()),
                                    self._expire_waiters)

    def _expire_waiters(self) -> None:
        """Fail the queued requests whose time is up; wake again for the next one."""
        self._expiry = None
        if self.paused or not self._waiters:
            return
        now = time.monotonic()
        for req in [r for r in self._waiters if r.deadline <= now]:
            self.stats.wait_timeouts += 1
            log.warning("%s: pool saturated, a client waited %gs and got an error; %s",
                        self.name, self.settings.queue_timeout, self.describe())
            self._fail(req, PoolTimeout(self._timeout_message()))
        if self._waiters:
            self._expire_at(min(r.deadline for r in self._waiters))

    def pause(self) -> None:
        """Hand out no connection until resume() (e.g. during a server upgrade): requests
        wait, however long, and statements already running go on. Idle connections are
        closed now, and connections given back while paused, so that once in_use is 0
        nothing holds the server (as PgBouncer's PAUSE); resume() opens new ones."""
        self.paused = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        while self._idle:
            self._idle.pop().close()
            self.stats.closed_paused += 1

    def resume(self) -> None:
        self.paused = False
        waiters = list(self._waiters)
        self._waiters.clear()
        now = time.monotonic()
        for req in waiters:  # in their order; each with a fresh queue timeout
            req.deadline = now + self.settings.queue_timeout
            self._serve(req)

    # -- preemption -----------------------------------------------------------------

    def allow_preemption(self, backend: BackendConnection, give_back: Callable[[], None],
                         after: float) -> None:
        """The session holding `backend` keeps it only for its client's convenience:
        from `after` seconds on, if a client waits, call `give_back` (which must release
        the connection, at once or soon)."""
        self._preemptible[backend] = (time.monotonic() + after, give_back)
        if self._waiters:
            self._preempt()

    def forbid_preemption(self, backend: BackendConnection) -> None:
        self._preemptible.pop(backend, None)

    def _preempt(self) -> None:
        """Ask holders past their grace to give back as many connections as clients wait."""
        if self._preempt_timer is not None:
            self._preempt_timer.cancel()
            self._preempt_timer = None
        if not self._preemptible or not self._waiters:
            return
        now = time.monotonic()
        due = sorted((b for b, (since, _) in self._preemptible.items() if since <= now),
                     key=lambda b: self._preemptible[b][0])
        for backend in due[:len(self._waiters)]:
            _, give_back = self._preemptible.pop(backend)
            self.stats.preemptions += 1
            give_back()
        if self._preemptible and self._waiters and self._preempt_timer is None:
            first = min(since for since, _ in self._preemptible.values())
            loop = asyncio.get_running_loop()
            self._preempt_timer = loop.call_at(
                loop.time() + max(0.0, first - time.monotonic()), self._preempt)

    def _deliver(self, req: Request, backend: BackendConnection) -> None:
        if req.done:  # the requester went away: the connection goes back
            self._lent.add(backend)
            self.release(backend)
            return
        req.done = True
        self._lent.add(backend)
        self.stats.observe_wait(time.monotonic() - req.since)
        req.deliver(backend)

    def _fail(self, req: Request, exc: BaseException) -> None:
        if req.done:
            return
        req.done = True
        if req in self._waiters:
            self._waiters.remove(req)
        req.deliver(exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take_idle(self, key: int) -> BackendConnection | None:
        now = time.monotonic()
        # Most recently used first: it is warm, and the rest can age out. Over a copy:
        # an expired or closed one is removed and the search goes on (issue 16).
        for backend in reversed(list(self._idle)):
            if backend.key == key:
                self._idle.remove(backend)
                if backend.closed:
                    self.stats.closed_broken += 1
                    continue
                if now - backend.last_active > self.settings.idle_timeout:
                    self.stats.closed_idle += 1
                    backend.close()
                    continue
                return backend
        return None

    async def _check_then_deliver(self, req: Request, backend: BackendConnection) -> None:
        """Ping a connection idle for a while before handing it out."""
        try:
            await backend.ping()
            ok = True
        except (ServerError, ConnectionError, OSError) as exc:
            self.stats.pings_failed += 1
            log.info("%s: upstream %s failed its ping (%s); replacing it",
                     self.name, backend.thread_id, exc)
            backend.abort()
            ok = False
        finally:
            self._opening -= 1
        if ok:
            self._deliver(req, backend)
        else:
            self._serve(req)

    async def _open_then_deliver(self, req: Request, first: bool = False) -> None:
        try:
            backend = await self._connect(req.key)
        except ServerError as exc:
            self._opening -= 1
            self.stats.connect_failures += 1
            if exc.err.code not in TOO_MANY_CONNECTIONS:
                self._fail(req, UpstreamUnavailable(
                    f"the upstream server refused a connection: {exc}"))
                self._wake_for_slot()
                return
            self.stats.limit_rejections += 1
            lowered = max(1, self.open_count)
            if lowered < self.effective_size:
                log.warning("%s: server says the account is full (%s); lowering the pool "
                            "size from %d to %d", self.name, exc.err.code,
                            self.effective_size, lowered)
                self.effective_size = lowered
            self._retry_later(req)
            return
        except (UpstreamUnavailable, OSError) as exc:
            self._opening -= 1
            self.stats.connect_failures += 1
            self.mark_unreachable(str(exc), req.key)
            self._fail(req, self.unreachable_error())
            for waiter in list(self._waiters):  # they would only wait to fail
                self._fail(waiter, self.unreachable_error())
            return
        except UpstreamAuthError as exc:
            self._opening -= 1
            self.stats.connect_failures += 1
            self._fail(req, exc)
            self._wake_for_slot()
            return
        except BaseException as exc:
            self._opening -= 1
            self._fail(req, UpstreamUnavailable(f"cannot open an upstream connection: {exc}"))
            self._wake_for_slot()
            raise
        self._opening -= 1
        self.stats.connects += 1
        log.debug("%s: opened upstream %s (capabilities %#x); %d open",
                  self.name, backend.thread_id, req.key, self.open_count + 1)
        self._backoff = 0.05
        if self.effective_size < self.settings.size:
            self.effective_size += 1
        backend.on_close(self._on_backend_closed)
        if first and self.grower is not None and not await self._admitted(backend):
            self._enqueue(req, front=True)  # the grower keeps the connection for now
            return
        self._deliver(req, backend)

    def _retry_later(self, req: Request) -> None:
        """Back off, keeping the client queued (SPEC: waiting clients never see 1226)."""
        delay = self._backoff * (1 + random.random())
        self._backoff = min(self._backoff * 2, 2.0)
        if time.monotonic() + delay >= req.deadline:
            self.stats.wait_timeouts += 1
            self._fail(req, PoolTimeout(self._timeout_message()))
            return
        self._waiters.appendleft(req)  # it keeps its place at the head
        if not self.paused:
            self._expire_at(req.deadline)
        asyncio.get_running_loop().call_later(delay, self._retry, req)

    def _retry(self, req: Request) -> None:
        if req.done or req not in self._waiters:
            return
        self._waiters.remove(req)
        self._serve(req, probe=True)

    def _timeout_message(self) -> str:
        return (
            f"no upstream connection became free within {self.settings.queue_timeout:g}s; "
            f"{self.describe()}. Clients holding connections are in transactions or pinned "
            "(see mysqlgate status). Raise pool.queue_timeout, shorten transactions, or "
            "raise pool.size if the account allows more connections."
        )

    # -- release -------------------------------------------------------------------

    def release(self, backend: BackendConnection, *, reset: bool = False) -> None:
        """Take a connection back from a session. `reset`: its session state must not
        reach another client."""
        self._lent.discard(backend)
        self._preemptible.pop(backend, None)
        if backend.closed or backend.busy:
            backend.abort()
            self.stats.closed_broken += 1
            self._wake_for_slot()
            return
        if time.monotonic() - backend.created_at > self._lifetime(backend):
            self.stats.closed_lifetime += 1
            backend.close()
            self._wake_for_slot()
            return
        if reset and not self.paused:  # paused, _return closes it: no reset needed
            self._opening += 1
            asyncio.ensure_future(self._reset_then_return(backend))
            return
        self._return(backend)

    async def _reset_then_return(self, backend: BackendConnection) -> None:
        try:
            await self._reset(backend)
            self.stats.resets += 1
        except BaseException as exc:
            log.info("%s: reset of upstream %s failed (%s); closing it",
                     self.name, backend.thread_id, exc)
            backend.abort()
        finally:
            self._opening -= 1
        if backend.closed:
            self._wake_for_slot()
        else:
            self._return(backend)

    def _return(self, backend: BackendConnection) -> None:
        if self.paused:
            backend.close()
            self.stats.closed_paused += 1
            return
        while self._borrowers:  # the grower asked for the next one (borrow_next)
            borrower = self._borrowers.popleft()
            if not borrower.done():
                self._borrowed.add(backend)
                borrower.set_result(backend)
                return
        for req in self._waiters:
            if req.key == backend.key:
                self._waiters.remove(req)
                self._deliver(req, backend)
                return
        if self._waiters and not self._closing:
            # The first waiter needs another key: give it this connection's slot.
            self.stats.key_evictions += 1
            backend.close()
            self._serve(self._waiters.popleft())
            return
        self._idle.append(backend)

    def _wake_for_slot(self) -> None:
        if self.grower is not None:
            if self._waiters and not self.paused and not self._closing:
                self.grower.wanted()
            return
        while self._waiters and self.open_count < self.effective_size and not self.paused:
            self._serve(self._waiters.popleft())

    def _on_backend_closed(self, backend: BackendConnection) -> None:
        if backend in self._idle:
            self._idle.remove(backend)
            self.stats.closed_broken += 1
            self._wake_for_slot()

    def _lifetime(self, backend: BackendConnection) -> float:
        # Jitter (up to 10%, fixed per connection) so connections opened together
        # are not all replaced at once.
        jitter = (backend.thread_id % 97) / 970.0
        return self.settings.max_lifetime * (1 - jitter)

    # -- the grower's side (fleet.py) -------------------------------------------------

    async def grow(self, first: bool = False) -> bool:
        """Open one connection for the first waiter: the grower calls this once it made
        sure the account has room (`first`: the pool holds none, see admit_first).
        True when it was opened and handed out."""
        if not self._waiters or self._closing or self.paused or \
                self.unreachable is not None or self.open_count >= self.settings.size:
            return False
        req = self._waiters.popleft()
        self._opening += 1
        connects = self.stats.connects
        await self._open_then_deliver(req, first)
        return req.done and self.stats.connects > connects

    async def _admitted(self, backend: BackendConnection) -> bool:
        assert self.grower is not None
        self._opening += 1  # still counts against the size while it is checked
        try:
            admitted = await self.grower.admit_first(backend)
        except BaseException:
            backend.abort()
            raise
        finally:
            self._opening -= 1
        if not admitted and not backend.closed:
            self._borrowed.add(backend)
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
        """The next connection given back by a session, before any waiter gets it."""
        future: asyncio.Future[BackendConnection] = \
            asyncio.get_running_loop().create_future()
        self._borrowers.append(future)
        return future

    def give_back(self, backend: BackendConnection) -> None:
        """A borrowed connection comes back: to a waiter, idle, or (closed: the grower
        gave it to another mysqlgate) its slot is free."""
        self._borrowed.discard(backend)
        if backend.closed:
            self._wake_for_slot()
            return
        self._lent.add(backend)
        self.release(backend)

    def borrowed(self) -> list[BackendConnection]:
        return list(self._borrowed)

    # -- maintenance (the janitor calls this) ---------------------------------------

    def expire_idle(self) -> None:
        now = time.monotonic()
        keep: deque[BackendConnection] = deque()
        for backend in self._idle:
            if backend.closed:
                continue
            if now - backend.last_active > self.settings.idle_timeout:
                self.stats.closed_idle += 1
                backend.close()
            elif now - backend.created_at > self._lifetime(backend):
                self.stats.closed_lifetime += 1
                backend.close()
            else:
                keep.append(backend)
        self._idle = keep
        self._wake_for_slot()

    def lent(self) -> list[BackendConnection]:
        return list(self._lent)

    def idle(self) -> list[BackendConnection]:
        return list(self._idle)

    def resize(self, settings: PoolSettings) -> None:
        """New settings (the server's limits became known): the size bound with them."""
        self.settings = settings
        self.effective_size = settings.size
        self._wake_for_slot()

    async def close(self) -> None:
        self._closing = True
        if self._watcher is not None:
            self._watcher.cancel()
        for req in list(self._waiters):
            self._fail(req, UpstreamUnavailable("mysqlgate is shutting down"))
        self._waiters.clear()
        for backend in list(self._idle) + list(self._lent) + list(self._borrowed):
            backend.close()
        self._idle.clear()
        self._borrowed.clear()
        for borrower in self._borrowers:
            borrower.cancel()
        for task in list(self._tasks):
            task.cancel()
