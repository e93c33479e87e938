"""Connections coming back to the pool, and those that may not serve again.

A connection that comes back is, in order (after PgBouncer's release_server): closed if
broken or past its lifetime; reset if the session says its state must not reach
another client (a failed reset closes it); else offered: to the first waiter of its
key, or idle. One that died makes the idle ones suspect: each is pinged before use.
"""

from __future__ import annotations

import logging
from collections import deque

from .backend import BackendConnection
from .pool_state import PoolState

log = logging.getLogger("mysqlgate.pool")


class Recycling(PoolState):
    """Release, reset, offer; the janitor's expiry."""

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
