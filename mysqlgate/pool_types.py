"""What the pool is made of and talks through: its settings and statistics, a request
for a connection, the scheduler it waits with, and the grower (fleet.py) that may decide
when it opens. No logic: pool.py decides, pool_reconnect.py says when to connect again."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from .backend import BackendConnection

Connector = Callable[[int], Awaitable[BackendConnection]]
# Brings a connection back to a fresh session; raises when it cannot (then it is closed).
Resetter = Callable[[BackendConnection], Awaitable[None]]
Clock = Callable[[], float]

# Server errors that mean "the account or server is full", not "broken".
TOO_MANY_CONNECTIONS = (1040, 1203, 1226)
# Server errors to a connect that mean the server is going away (a restart): like a
# refused connect, waited out.
SERVER_GOING_AWAY = (1053,)  # ER_SERVER_SHUTDOWN


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Scheduler(Protocol):
    """How the pool waits: a callback at a time of the pool's clock, and coroutines that
    run concurrently (connects, pings, resets)."""

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable: ...

    def spawn(self, coro: Coroutine[Any, Any, None]) -> Cancellable: ...


class AsyncioScheduler:
    """The Scheduler of the running asyncio loop, for a pool whose clock is `clock`."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps weak references only

    def call_at(self, when: float, callback: Callable[[], None]) -> Cancellable:
        loop = asyncio.get_running_loop()
        return loop.call_at(loop.time() + max(0.0, when - self._clock()), callback)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> Cancellable:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


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
    closed_excess: int = 0  # above a size lowered by resize()
    preemptions: int = 0
    # Times the server could not be reached, and their length (finished ones).
    outages: int = 0
    outage_seconds: float = 0.0
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
        """`backend` was opened with nothing to check the account on beforehand (the
        pool held none, or all were held): may it serve the queue? False: the grower
        keeps it (borrowed) until the account has room, then gives it back, or closes it."""


@dataclass(eq=False)
class Request:
    """A session's request for a connection. `deliver` gets the connection or the
    error, exactly once, possibly synchronously from `request` or `release`."""

    key: int
    deliver: Delivery
    deadline: float
    since: float
    done: bool = False
