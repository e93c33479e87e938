"""The grower's side: several mysqlgates sharing one account (fleet.py).

When a `Grower` is set, the pool opens no connection on its own. Where `_fill` would
start a connect it tells the grower (`wanted`), which calls `grow()` once the account
has room on the server. The grower also borrows connections that are not lent
(`borrow_idle`, `borrow_next`: the next one to arrive or come back, before any waiter)
for its own statements, and gives them back (`give_back`), closed if it gave them to
another mysqlgate; borrowed ones count against the size.
"""

from __future__ import annotations

import asyncio

from .backend import BackendConnection
from .pool_state import PoolState


class Growing(PoolState):
    """What fleet.py asks of the pool."""

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
