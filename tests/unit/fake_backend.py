"""Stand-ins for testing the pool without sockets or real time: FakeBackend for
backend.BackendConnection (the attributes the pool reads, and a record of what the pool
did to it), and FakeLoop, a clock that moves only when told with the pool's Scheduler
(timers, and coroutines stepped by hand), whose awaits are Pending outcomes the test
settles."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any


class FakeBackend:
    """An upstream connection as the pool sees it: a key, ages, closed or not."""

    def __init__(self, thread_id: int, key: int = 0, now: float | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.thread_id = thread_id
        self.key = key
        self.created_at = (time.monotonic() if clock is None else clock()) if now is None \
            else now
        self.last_active = self.created_at
        self.closed = False
        self.busy = False  # a command in flight: given back like that, it is aborted
        self.closed_how: str | None = None  # "close" (polite), "abort", or "died"
        self.loss_noticed = False  # died, and its close callbacks ran
        self.hangup_unseen = False  # the server ended it; the event loop has not said so
        self.hangup_checks = 0
        self.session: Any = None
        self._clock = clock
        # With a FakeLoop: a ping waits for the test to settle it (see `pings`).
        self.loop: FakeLoop | None = None
        self.ping_pending: Pending | None = None
        self.pinged_idle_for: float | None = None  # how long it was idle when last pinged
        self._close_callbacks: list[Callable[[FakeBackend], None]] = []

    def on_close(self, callback: Callable[[FakeBackend], None]) -> None:
        self._close_callbacks.append(callback)

    def close(self) -> None:
        self._end("close")

    def abort(self, reason: BaseException | None = None) -> None:
        self._end("abort")

    def die(self, notify: bool = True) -> None:
        """The server closed it (KILL, wait_timeout, a restart): as connection_lost, or,
        with notify False, as a connection whose loss is not known yet but whose flag
        says closed (a race the pool must survive)."""
        self._end("died")
        if self.ping_pending is not None and not self.ping_pending.done:
            self.ping_pending.fail(ConnectionResetError("upstream closed the connection"))
        if notify:
            self.loss_noticed = True
            for callback in self._close_callbacks:
                callback(self)

    def hung_up(self) -> bool:
        """As BackendConnection.hung_up: a look at the socket shows the server's FIN."""
        self.hangup_checks += 1
        if self.hangup_unseen and not self.closed:
            self._end("abort")
        return self.closed

    def _end(self, how: str) -> None:
        if not self.closed:
            self.closed = True
            self.closed_how = how

    async def ping(self) -> None:
        if self.closed:
            raise ConnectionResetError("upstream connection is closed")
        if self.loop is not None:
            self.pinged_idle_for = self.loop.now - self.last_active
            self.ping_pending = Pending(self.loop, f"ping of {self.thread_id}")
            try:
                await self.ping_pending
            finally:
                self.ping_pending = None
            if self._clock is not None:
                self.last_active = self._clock()

    def __repr__(self) -> str:
        return f"<FakeBackend {self.thread_id} key={self.key} closed={self.closed_how}>"


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Pending:
    """An outcome a fake coroutine awaits until the test settles it (resolve or fail)."""

    def __init__(self, loop: FakeLoop, what: str) -> None:
        self.loop = loop
        self.what = what
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.task: FakeTask | None = None

    def resolve(self, value: Any = None) -> None:
        self._settle(value, None)

    def fail(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        assert not self.done, f"{self.what} settled twice"
        self.done, self.value, self.error = True, value, error
        task = self.task
        if task is not None:
            self.loop.call_soon(task.step)

    def __await__(self) -> Generator[Pending, None, Any]:
        if not self.done:
            yield self
        if self.error is not None:
            raise self.error
        return self.value

    def __repr__(self) -> str:
        return f"<Pending {self.what}{' done' if self.done else ''}>"


class FakeTask:
    """A coroutine stepped by FakeLoop: it runs until it awaits a Pending that is not
    settled, and goes on when it is (as an asyncio Task on a Future)."""

    def __init__(self, loop: FakeLoop, coro: Coroutine[Any, Any, None]) -> None:
        self.loop = loop
        self.coro = coro
        self.done = False
        self.waiting: Pending | None = None
        loop.call_soon(self.step)  # as asyncio: the first step is not synchronous

    def step(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.waiting = None
        try:
            awaited = self.coro.send(None) if error is None else self.coro.throw(error)
        except (StopIteration, asyncio.CancelledError):
            self.done = True
            return
        except BaseException:  # escaped the pool's code (or a test's check): fail there
            self.done = True
            raise
        assert isinstance(awaited, Pending), f"a fake coroutine awaited {awaited!r}"
        self.waiting = awaited
        awaited.task = self

    def cancel(self) -> None:
        if not self.done:
            if self.waiting is not None:
                self.waiting.task = None
            self.loop.call_soon(lambda: self.step(asyncio.CancelledError()))


class FakeLoop:
    """The pool's clock and Scheduler for tests: time moves only in advance(); timers
    and coroutine steps run in order, one at a time, as on an event loop."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()
        self._ready: deque[Callable[[], None]] = deque()

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], None]) -> None:
        self._ready.append(callback)

    def call_at(self, when: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def spawn(self, coro: Coroutine[Any, Any, None]) -> FakeTask:
        return FakeTask(self, coro)

    def run_ready(self) -> None:
        """Run what is ready now (task steps, callbacks), and what that makes ready."""
        for _ in range(100_000):
            if not self._ready:
                return
            self._ready.popleft()()
        raise AssertionError("the fake loop never settles: something reschedules itself")

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` on, running each timer at its time."""
        until = self.now + seconds
        self.run_ready()
        for _ in range(100_000):
            if not (self._timers and self._timers[0][0] <= until):
                break
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
            self.run_ready()
        else:
            raise AssertionError("timers keep firing: something re-arms itself in a loop")
        self.now = until

    def close(self) -> None:
        """Drop what never ran (a test that failed mid-step), quietly: a coroutine never
        started would warn when collected."""
        while self._ready:
            callback = self._ready.popleft()
            task = getattr(callback, "__self__", None)
            if isinstance(task, FakeTask) and not task.done:
                task.done = True
                task.coro.close()
        self._timers.clear()

    def next_timer(self) -> float | None:
        """When the next timer that is not cancelled is due."""
        live = [when for when, _, timer in self._timers if not timer.cancelled]
        return min(live) if live else None
