"""The upstream pool: bounded, FIFO-fair, recycling; it knows nothing of clients' SQL.

Connections move between three places: idle (in `_idle`), lent (to a session), and
being opened (counted in `_opening`). `size` bounds the sum. A connection that comes
back is, in order (after PgBouncer's release_server): closed if broken or past its
lifetime; reset if the session says its state must not be seen by another client
(a failed reset closes it); handed straight to the first waiter whose capability key
matches; else made idle. A waiter needing another key gets the freed slot instead.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .backend import BackendConnection
from .errors import PoolTimeout, ServerError, UpstreamAuthError, UpstreamUnavailable

log = logging.getLogger("mysqlgate.pool")

Connector = Callable[[int], Awaitable[BackendConnection]]

# Server errors that mean "the account or server is full", not "broken".
TOO_MANY_CONNECTIONS = (1040, 1203, 1226)


@dataclass
class PoolSettings:
    size: int
    queue_timeout: float
    idle_timeout: float
    max_lifetime: float
    ping_after: float


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
    lent_by: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class _Waiter:
    key: int
    future: asyncio.Future[BackendConnection | None]


class UpstreamPool:
    def __init__(self, name: str, connector: Connector, settings: PoolSettings) -> None:
        self.name = name
        self.settings = settings
        self.stats = PoolStats()
        self._connect = connector
        self._idle: deque[BackendConnection] = deque()
        self._lent: set[BackendConnection] = set()
        self._opening = 0
        self._waiters: deque[_Waiter] = deque()
        # Lowered when the server says the account is full (1226/1040), raised again
        # one step per successful connect (SPEC section 3).
        self.effective_size = settings.size
        self._backoff = 0.05
        self._closing = False

    # -- numbers -------------------------------------------------------------------

    @property
    def open_count(self) -> int:
        return len(self._idle) + len(self._lent) + self._opening

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def lent_count(self) -> int:
        return len(self._lent)

    @property
    def waiting_count(self) -> int:
        return len(self._waiters)

    def describe(self) -> str:
        return (
            f"pool '{self.name}': {len(self._lent)} of {self.effective_size} upstream "
            f"connections in use, {self._opening} opening, {len(self._waiters)} clients waiting"
        )

    # -- acquire -------------------------------------------------------------------

    async def acquire(self, key: int, who: str = "") -> BackendConnection:
        """A connection opened with capability `key`, waiting up to queue_timeout."""
        self.stats.acquires += 1
        deadline = time.monotonic() + self.settings.queue_timeout
        waited = False
        while True:
            if self._closing:
                raise UpstreamUnavailable("mysqlgate is shutting down")
            backend: BackendConnection | None = None
            if not self._waiters or waited:
                backend = self._take_idle(key)
                if backend is None and self.open_count < self.effective_size:
                    backend = await self._open(key, deadline)
                    if backend is None:
                        continue
                if backend is None and self._evict_idle_other_key():
                    continue
            if backend is None:
                waited = True
                self.stats.waits += 1
                backend = await self._wait(key, deadline)
                if backend is None:
                    continue  # a slot was freed for us: open one
            if not await self._usable(backend):
                continue
            self._lent.add(backend)
            return backend

    def _take_idle(self, key: int) -> BackendConnection | None:
        now = time.monotonic()
        # Most recently used first: it is warm, and the rest can age out.
        for backend in reversed(self._idle):
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

    def _evict_idle_other_key(self) -> bool:
        """At the size limit with idle connections of another key: close the oldest."""
        if not self._idle:
            return False
        backend = self._idle.popleft()
        self.stats.key_evictions += 1
        backend.close()
        return True

    async def _usable(self, backend: BackendConnection) -> bool:
        """Check a connection idle for a while before handing it out."""
        if backend.closed:
            return False
        if time.monotonic() - backend.last_active <= self.settings.ping_after:
            return True
        self._opening += 1  # counts against size while we check it
        try:
            await backend.ping()
            return True
        except (ServerError, ConnectionError, OSError) as exc:
            self.stats.pings_failed += 1
            log.info("%s: upstream %s failed its ping (%s); replacing it",
                     self.name, backend.thread_id, exc)
            backend.abort()
            return False
        finally:
            self._opening -= 1
            self._wake_for_slot()

    async def _open(self, key: int, deadline: float) -> BackendConnection | None:
        """Open a connection, or return None after backing off on a full account."""
        self._opening += 1
        try:
            backend = await self._connect(key)
        except ServerError as exc:
            self.stats.connect_failures += 1
            if exc.err.code not in TOO_MANY_CONNECTIONS:
                raise UpstreamUnavailable(f"the upstream server refused a connection: {exc}"
                                          ) from exc
            self.stats.limit_rejections += 1
            self._opening -= 1
            lowered = max(1, self.open_count)
            if lowered < self.effective_size:
                log.warning("%s: server says the account is full (%s); lowering the pool "
                            "size from %d to %d", self.name, exc.err.code,
                            self.effective_size, lowered)
                self.effective_size = lowered
            await self._sleep_backoff(deadline)
            return None
        except (UpstreamUnavailable, OSError) as exc:
            self.stats.connect_failures += 1
            self._opening -= 1
            self._wake_for_slot()
            if time.monotonic() + self._backoff >= deadline:
                raise UpstreamUnavailable(str(exc)) from exc
            log.warning("%s: %s; retrying", self.name, exc)
            await self._sleep_backoff(deadline)
            return None
        except UpstreamAuthError:
            self.stats.connect_failures += 1
            self._opening -= 1
            self._wake_for_slot()
            raise
        except BaseException:
            self._opening -= 1
            self._wake_for_slot()
            raise
        self._opening -= 1
        self.stats.connects += 1
        self._backoff = 0.05
        if self.effective_size < self.settings.size:
            self.effective_size += 1
        backend.on_close(self._on_backend_closed)
        return backend

    async def _sleep_backoff(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PoolTimeout(self._timeout_message())
        delay = min(self._backoff * (1 + random.random()), remaining)
        self._backoff = min(self._backoff * 2, 2.0)
        await asyncio.sleep(delay)

    async def _wait(self, key: int, deadline: float) -> BackendConnection | None:
        """Queue up; returns a connection handed over, or None for a freed slot."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(key, loop.create_future())
        self._waiters.append(waiter)
        future = waiter.future
        try:
            async with asyncio.timeout_at(loop.time() + max(0.0, deadline - time.monotonic())):
                return await future
        except TimeoutError:
            if future.done() and not future.cancelled():
                return future.result()  # handed over just as the time ran out
            self.stats.wait_timeouts += 1
            raise PoolTimeout(self._timeout_message()) from None
        except asyncio.CancelledError:
            # The client went away while queued: pass on whatever it was given.
            if future.done() and not future.cancelled() and future.exception() is None:
                got = future.result()
                if got is not None:
                    self.release(got)
                else:
                    self._wake_for_slot()
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

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
        if reset:
            self._opening += 1
            asyncio.ensure_future(self._reset_then_return(backend))
            return
        self._return(backend)

    async def _reset_then_return(self, backend: BackendConnection) -> None:
        try:
            await backend.reset()
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
            if backend.session is not None:
                backend.session.after_reset()
            self._return(backend)

    def _return(self, backend: BackendConnection) -> None:
        for waiter in self._waiters:
            if waiter.key == backend.key and not waiter.future.done():
                self._waiters.remove(waiter)
                self._lent.add(backend)
                waiter.future.set_result(backend)
                return
        if self._waiters and self._closing is False:
            first = self._waiters[0]
            if not first.future.done():
                # The first waiter needs another key: give it this connection's slot.
                self._waiters.popleft()
                self.stats.key_evictions += 1
                backend.close()
                first.future.set_result(None)
                return
        self._idle.append(backend)

    def _wake_for_slot(self) -> None:
        while self._waiters and self.open_count < self.effective_size:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)
                return

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

    async def close(self) -> None:
        self._closing = True
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(UpstreamUnavailable("mysqlgate is shutting down"))
        self._waiters.clear()
        for backend in list(self._idle) + list(self._lent):
            backend.close()
        self._idle.clear()
