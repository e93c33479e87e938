"""When the pool may connect again after a connect failed, and how long it waits.

Two conditions hold connects back. The server could not be reached (refused, timed out,
cut): the pool is *unreachable*; requests wait in its queue instead of each trying a
connect of its own, and one probe at a time looks for the server, at an interval that
grows with the outage (tens of milliseconds at first, a second after fifty); the first
connect that succeeds ends the outage. The server said the account is full (1226,
1040): no connect starts until a back-off ends (SPEC section 3: waiting clients never
see 1226).

This module keeps the time and the state of both and logs them; the pool decides what
to open (`UpstreamPool._probe` makes room for the probe, `_fill` starts connects).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .pool_types import Cancellable, Clock, PoolStats, Scheduler

log = logging.getLogger("mysqlgate.pool")

UNREACHABLE_LOG_EVERY = 30.0  # seconds between "still unreachable" log lines
# While the server cannot be reached, the next connect is tried after this share of the
# outage so far, within [PROBE_MIN, PROBE_MAX] seconds, times a jitter of +-25% (so that
# several mysqlgates in front of one server do not try in step): the server is found
# within 2.5% of the outage's length (60 ms after a 2.5 s restart, 125 ms after 5 s: a
# MySQL's graceful stop and start); past 50 s an outage costs one connect a second.
PROBE_GROWTH = 0.02
PROBE_MIN = 0.02
PROBE_MAX = 1.0
# After the server said the account is full: wait this long before the next connect,
# doubling up to LIMIT_BACKOFF_MAX, times 1 to 2 (jitter).
LIMIT_BACKOFF_FIRST = 0.05
LIMIT_BACKOFF_MAX = 2.0


class Reconnect:
    """One pool's outage and back-off. `probe` is called when the next probe is due
    (the pool starts it, or calls `schedule_probe` again when it has no room);
    `backed_off` when connects may start again after the account was full."""

    def __init__(self, name: str, clock: Clock, scheduler: Scheduler,
                 jitter: Callable[[], float], stats: PoolStats,
                 probe: Callable[[], None], backed_off: Callable[[], None]) -> None:
        self._name = name
        self._clock = clock
        self._scheduler = scheduler
        self._jitter = jitter
        self._stats = stats
        self._on_probe = probe
        self._on_backed_off = backed_off
        self._closed = False
        # The server cannot be reached: why, since when, the probe that looks for it.
        self.unreachable: str | None = None
        self.since = 0.0
        self._logged = 0.0
        self._probe_timer: Cancellable | None = None
        self._probe_at = 0.0
        self.probing = False  # a probe's connect is under way
        self.probe_key = 0  # capability key to probe with when no one waits
        self._last_connect = float("-inf")  # when the latest successful connect started
        # The account is full: the next back-off (before its jitter), the one running.
        self._backoff = LIMIT_BACKOFF_FIRST
        self._retry: Cancellable | None = None
        self.beyond = False  # a connect beyond the lowered effective size is under way

    @property
    def holding(self) -> bool:
        """No connect may start now but the probe's: unreachable, or backing off."""
        return self.unreachable is not None or self._retry is not None

    @property
    def backing_off(self) -> bool:
        return self._retry is not None

    def unreachable_for(self) -> float:
        return 0.0 if self.unreachable is None else self._clock() - self.since

    def next_probe(self) -> float | None:
        """When the next probe is due, on the pool's clock (None: none is scheduled)."""
        return None if self._probe_timer is None else self._probe_at

    # -- what connects tell --------------------------------------------------------

    def connected(self, started: float) -> None:
        """A connect that started at `started` succeeded: the server answers and the
        account had room."""
        self._last_connect = max(self._last_connect, started)
        self._backoff = LIMIT_BACKOFF_FIRST
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.reachable()

    def outdated(self, started: float) -> bool:
        """A connect that failed for want of a server started before one that worked
        (while the pool is not unreachable): the server is back, its failure is old news."""
        return self.unreachable is None and started < self._last_connect

    def lost(self, reason: str, key: int, queue_timeout: float) -> None:
        """A connect failed for want of a server: until one succeeds, requests wait
        instead of connecting, and one probe at a time tries (with `key` when no one
        waits)."""
        now = self._clock()
        if self.unreachable is None:
            self.since = self._logged = now
            self._stats.outages += 1
            log.warning("%s: upstream unreachable: %s; clients wait up to %gs "
                        "(pool.queue_timeout) while mysqlgate reconnects", self._name, reason,
                        queue_timeout)
        elif now - self._logged > UNREACHABLE_LOG_EVERY:
            self._logged = now
            log.warning("%s: upstream still unreachable after %.0fs: %s", self._name,
                        now - self.since, reason)
        self.unreachable = reason
        self.probe_key = key
        self.schedule_probe()

    def reachable(self) -> None:
        """The server answered (a connect worked, or it refused with a reason)."""
        if self.unreachable is None:
            return
        outage = self._clock() - self.since
        self._stats.outage_seconds += outage
        log.info("%s: upstream reachable again after %.2fs", self._name, outage)
        self.unreachable = None
        if self._probe_timer is not None:
            self._probe_timer.cancel()
            self._probe_timer = None

    def full(self) -> None:
        """The server said the account is full: no connect for a while, the clients
        staying queued."""
        if self._retry is not None:
            return
        delay = self._backoff * (1 + self._jitter())
        self._backoff = min(self._backoff * 2, LIMIT_BACKOFF_MAX)
        self._retry = self._scheduler.call_at(self._clock() + delay, self._retry_due)

    # -- timers --------------------------------------------------------------------

    def schedule_probe(self) -> None:
        if self._probe_timer is not None or self.probing or self._closed:
            return
        now = self._clock()
        delay = min(PROBE_MAX, max(PROBE_MIN, (now - self.since) * PROBE_GROWTH))
        delay *= 0.75 + 0.5 * self._jitter()
        self._probe_at = now + delay
        self._probe_timer = self._scheduler.call_at(self._probe_at, self._probe_due)

    def _probe_due(self) -> None:
        self._probe_timer = None
        if self.unreachable is not None and not self._closed:
            self._on_probe()

    def _retry_due(self) -> None:
        self._retry = None
        self._on_backed_off()

    def close(self) -> None:
        self._closed = True
        for timer in (self._probe_timer, self._retry):
            if timer is not None:
                timer.cancel()
