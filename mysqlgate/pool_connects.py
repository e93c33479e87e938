"""Opening and checking upstream connections, and what a failed connect means.

A connect that fails for want of a server (refused, timed out, cut, or the server
shutting down) makes the pool unreachable: requests wait and one probe at a time looks
for the server (pool_reconnect.py keeps the time). A server that says the account is
full (1226, 1040) lowers the size kept to and backs off; waiting clients never see 1226
(SPEC section 3). Any other refusal (a wrong password, a host not allowed) is told to
the oldest waiter for that key. A connection idle a while is pinged before it serves.
"""

from __future__ import annotations

import logging

from .backend import BackendConnection
from .errors import (
    MysqlgateError,
    ServerError,
    UpstreamUnavailable,
)
from .pool_state import PoolState
from .pool_types import (
    SERVER_GOING_AWAY,
    TOO_MANY_CONNECTIONS,
)

log = logging.getLogger("mysqlgate.pool")


class Connecting(PoolState):
    """Connects, pings, probes."""

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
        self._ask_holders()  # the client it was for has nothing on its way now
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
