"""Several mysqlgates, one account: they share its max_user_connections through the
server itself, with no list of members and no service of their own (issue 18).

Each sees the account's threads on the server (the PROCESSLIST shows an account all of
its own, from every host, without the PROCESS privilege) and named locks, which the
server releases when their connection dies. Every statement here runs on a connection
this mysqlgate holds and has not lent (an idle one, or one just given back, borrowed
before the next client: pool.borrow_next), and every lock is released before that
connection is lent again: no client sees one of mysqlgate's locks as its own
(IS_USED_LOCK, RELEASE_ALL_LOCKS), and the resets between clients cannot drop one. A
connection of the fleet's own would do as much, at the cost of a slot of the account
on every host: with three mysqlgates on an account of 6, half of it.

1. The reserve. The pool opens nothing by itself (pool.Grower). Under a named lock
   (`grow`), held from the count until the new connection has logged in (the next
   mysqlgate to count sees it), the fleet counts the account's threads and opens while
   the limit less pool.reserve allows. A mutex rather than a lock per slot held by each
   connection: those would live on connections lent to clients. Other programs (a
   shell, a script) count like any connection; should one take the reserve, a count
   that finds the account over for OVER_GRACE makes a mysqlgate give one back. With
   nothing to count on (it holds none, or all are held), a mysqlgate logs in first and
   counts before lending (admit_first); over the limit, that connection waits, marked
   `want`, for another to give one back: the reserve is in use meanwhile (0.1-0.2 s,
   bench/README.md).
2. Sharing by demand. A connection a mysqlgate can spare is parked: it runs
   `/* mysqlgate-fleet spare|offer|want gate=... have=n waiting=n */ SELECT SLEEP(s)`,
   which every mysqlgate of the account sees in the PROCESSLIST. A spare is idle beyond
   fleet.floor (0 once the clients were quiet for fleet.quiet_after) while the account
   is full and shared; an offer, one a busy mysqlgate holding 2 or more puts up now and
   then. A mysqlgate whose clients wait at the limit takes a spare, or an offer from one
   holding more, under the grow lock: it claims the thread's `door.<thread>` lock,
   checks it is still parked, KILLs it (an account may end its own threads) and grows
   into the slot. The owner checks the door before it lends a parked connection again,
   so a KILL never meets a client's statement. Offers from richer to poorer even the
   split and move the odd connection round.
3. Where the server does not allow it (named locks refused, the PROCESSLIST unreadable)
   the fleet says why once and the pool goes on as if alone. Alone, it costs a count
   per connection opened and one now and then (`fleet_queries` in SHOW STATS).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from .backend import BackendConnection
from .errors import MysqlgateError, ServerError
from .fleet_sql import CannotShare, Census, FleetSql, Park, gate_name, marker
from .pool import UpstreamPool

log = logging.getLogger("mysqlgate.fleet")

BORROW_WAIT = 0.2  # seconds to wait for a connection to come back, to count on
HUNGRY_EVERY = 0.05  # seconds between counts while clients wait and others share
HUNGRY_ALONE_EVERY = 0.5  # the same when nobody else uses the account
MAINTAIN_EVERY = 0.25  # seconds between looks at idle connections and offers
RECOUNT_EVERY = 1.0  # idle connections beyond the floor: count this often
RECOUNT_ALONE_EVERY = 3.0  # ... when the last count saw nobody else
SPARE_AFTER = 0.5  # seconds idle before a connection can be a spare
SPARE_SLICE = 0.5  # seconds per park of a spare (a dead mysqlgate's ends with it)
OFFER_SLICE = 0.2  # seconds an offer stands (takers count every HUNGRY_EVERY)
OFFER_EVERY = 0.6  # seconds between offers of a busy mysqlgate (doubled, to 8, untaken)
WANT_SLICE = 0.1
OVER_GRACE = 0.3  # seconds over the limit less the reserve before one is given back
WANT_MAX = 3.0  # seconds a connection over the limit waits for one to be given back
ENTER_BACKOFF = 1.0  # seconds before connecting again after that


@dataclass
class FleetStats:
    grown: int = 0  # connections opened after a count
    given_back: int = 0  # connections this mysqlgate let another one have
    taken: int = 0  # parked connections of others this one ended to grow
    entries_over: int = 0  # first connections that found the account at its limit
    over_limit_seconds: float = 0.0  # how long those waited: the reserve in use


@dataclass
class FleetView:
    """What the console and /metrics show (SHOW POOLS)."""

    status: str  # alone, sharing, or off: why
    account_limit: int
    reserve: int
    account_connections: int | None  # at the last count
    share: int  # this mysqlgate's connections, parked ones not counted
    queries: int
    stats: FleetStats = field(default_factory=FleetStats)


class Fleet:
    """The coordination for one account's pool; the pool's Grower."""

    def __init__(self, pool: UpstreamPool, user: str, limit: int, reserve: int,
                 floor: int, quiet_after: float, mariadb: bool) -> None:
        self.pool = pool
        self.limit = limit
        self.reserve = reserve
        self.budget = max(1, limit - reserve)
        self.floor = floor
        self.quiet_after = quiet_after
        self.gate = gate_name()
        self.sql = FleetSql(user, mariadb)
        self.stats = FleetStats()
        self.off: str | None = None  # why the fleet stopped, if it did
        self.census: Census | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._parked: dict[BackendConnection, str] = {}
        self._next_hungry = 0.0
        self._next_maintain = 0.0
        self._next_recount = 0.0
        self._next_offer = 0.0
        self._offer_every = OFFER_EVERY
        self._last_have = 0  # connections held at the last look (_note_have)
        self._enter_not_before = 0.0
        self._acquires = -1
        self._last_demand = time.monotonic()
        self._answered_wants: dict[int, float] = {}
        self._over_since: float | None = None  # when a count first found it over

    # -- life ----------------------------------------------------------------------

    def start(self) -> None:
        self.pool.grower = self
        self._task = asyncio.get_running_loop().create_task(self._run())
        log.info("%s: sharing the account's %d connections with other mysqlgates through "
                 "the server (pool.reserve %d left free), as %s", self.pool.name,
                 self.limit, self.reserve, self.gate)

    async def stop(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
        self.pool.grower = None

    def _disable(self, reason: str) -> None:
        if self.off is not None:
            return
        self.off = reason
        log.warning("%s: cannot share the account with other mysqlgates on this server "
                    "(%s); this mysqlgate sizes its pool as if it were alone, as before "
                    "issue 18", self.pool.name, reason)
        self.pool.grower = None
        self.pool.resize(self.pool.settings)  # the pool serves its waiters itself again

    def view(self) -> FleetView:
        status = f"off: {self.off}" if self.off else \
            "sharing" if self.census is not None and self.census.others else "alone"
        return FleetView(status, self.limit, self.reserve,
                         None if self.census is None else self.census.total,
                         self.have, self.sql.queries, self.stats)

    @property
    def have(self) -> int:
        """This mysqlgate's connections, parked ones not counted."""
        return self.pool.open_count - len(self._parked)

    def _mine(self) -> set[int]:
        pool = self.pool
        return {b.thread_id for b in [*pool.idle(), *pool.lent(), *pool.borrowed()]}

    async def _locked_census(self, backend: BackendConnection,
                             release: bool) -> Census | None:
        census = await self.sql.locked_census(backend, self._mine(), release)
        if census is not None:
            self.census = census
        return census

    async def _count(self, backend: BackendConnection) -> Census:
        self.census = await self.sql.count(backend, self._mine())
        return self.census

    # -- the pool's Grower ------------------------------------------------------------

    def wanted(self) -> None:
        # Called for every request that queues: the loop wakes only when a count is due.
        if time.monotonic() >= self._next_hungry:
            self._wake.set()

    async def admit_first(self, backend: BackendConnection) -> bool:
        if await self.room_for(backend):
            return True
        self.stats.entries_over += 1
        log.info("%s: the account has all its %d connections but pool.reserve, this one "
                 "included; it waits for another mysqlgate to give one back",
                 self.pool.name, self.limit)
        self._parked[backend] = "want"
        self._spawn(self._want(backend))
        return False

    async def room_for(self, backend: BackendConnection) -> bool:
        """Whether the account's count, `backend` included, leaves the reserve free
        (or cannot be taken: then as before issue 18)."""
        if self.off is not None:
            return True
        try:
            # Another mysqlgate holding the lock long (opening several on a slow
            # server): count all the same, rather than let this one in unseen.
            census = await self._locked_census(backend, release=True) or \
                await self._count(backend)
        except CannotShare as exc:
            self._disable(str(exc))
            return True
        except (ServerError, ConnectionError, OSError) as exc:
            log.debug("%s: counting on a new connection: %s", self.pool.name, exc)
            return True
        return census.total <= self.budget

    # -- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        while self.off is None:
            now = time.monotonic()
            due = self._next_maintain
            if self.pool.waiting_count:
                due = min(due, self._next_hungry)
            if due > now:
                try:
                    async with asyncio.timeout(due - now):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self._step()
            except CannotShare as exc:
                self._disable(str(exc))
            except (ServerError, ConnectionError, OSError, MysqlgateError) as exc:
                # One statement on one connection (a restart's 1053, a KILL QUERY):
                # the next step counts again.
                log.debug("%s: fleet step: %s", self.pool.name, exc)
            except Exception:
                # While the fleet is on the pool opens nothing itself: the loop must
                # outlive a defect here, or every client would wait in vain.
                log.exception("%s: fleet step failed; going on", self.pool.name)

    async def _step(self) -> None:
        pool = self.pool
        now = time.monotonic()
        if pool.paused or pool.unreachable is not None:
            # Nothing to count on or open for now; look again later. (Returning with
            # nothing due would make _run spin without ever yielding to the event loop:
            # mysqlgate stopped whole, clients and the server's return unseen.)
            self._next_hungry = self._next_maintain = now + MAINTAIN_EVERY
            return
        if pool.waiting_count and now >= self._next_hungry:
            self._next_hungry = now + HUNGRY_ALONE_EVERY
            if pool.open_count == 0:
                if now >= self._enter_not_before:
                    await pool.grow(first=True)
            elif "want" not in self._parked.values():
                await self._grow_or_take()
        if time.monotonic() >= self._next_maintain:
            self._next_maintain = time.monotonic() + MAINTAIN_EVERY
            await self._maintain()

    async def _grow_or_take(self) -> None:
        """Under the `grow` lock, on a borrowed connection: count, and open what the
        account has room for; at the limit, take another mysqlgate's spare or offer and
        grow into its slot before the lock goes (so no third one gets it)."""
        pool = self.pool
        check = pool.borrow_idle() or await self._borrow_next()
        if check is None:
            # Every connection is held (transactions, pins): nothing to count on, as
            # with none at all, so the new one is counted once it has logged in. Not
            # while the last count (lately) saw others use the account: it could find
            # the account full once in, and wait there with the reserve.
            census = self.census
            if (census is None or time.monotonic() - census.at > 2 * RECOUNT_EVERY or
                    census.total < self.budget and not census.shared) and \
                    time.monotonic() >= self._enter_not_before and \
                    pool.open_count < pool.settings.size:
                await pool.grow(first=True)
            return
        try:
            # Counting needs no lock; acting on the count (opening, taking) does, and
            # counts again under it. At the limit with nothing to take: one statement.
            census = await self._count(check)
            self._next_hungry = time.monotonic() + (
                HUNGRY_EVERY if census.shared else HUNGRY_ALONE_EVERY)
            if census.total == self.budget and not census.parks:
                return
            locked = await self._locked_census(check, release=False)
            if locked is None:
                return
            try:
                room = await self._open(locked.total)
                if room <= 0 and pool.waiting_count and \
                        not self._give_if_over(locked, check) and \
                        pool.open_count < pool.settings.size and \
                        await self._take(locked, check):
                    await self._open((await self._count(check)).total)
            finally:
                await self.sql.release_grow(check)
        finally:
            pool.give_back(check)

    async def _open(self, total: int) -> int:
        """Open connections for waiters while `total` leaves room (the lock is held);
        the room left."""
        pool = self.pool
        room = self.budget - total
        while room > 0 and pool.waiting_count and pool.open_count < pool.settings.size:
            if not await pool.grow():
                break
            self.stats.grown += 1
            room -= 1
        return room

    async def _borrow_next(self) -> BackendConnection | None:
        future = self.pool.borrow_next()
        await asyncio.wait({future}, timeout=BORROW_WAIT)
        if future.done() and not future.cancelled():
            return future.result()
        future.cancel()  # the pool skips it
        return None

    # -- idle connections and offers -------------------------------------------------

    async def _maintain(self) -> None:
        pool = self.pool
        now = time.monotonic()
        if pool.stats.acquires != self._acquires:
            self._acquires = pool.stats.acquires
            self._last_demand = now
        self._note_have(now)
        floor = self.floor if now - self._last_demand < self.quiet_after else 0
        spares = [b for b in pool.idle() if now - b.last_active >= SPARE_AFTER]
        spare_count = min(len(spares), self.have - floor)
        crowded = self._crowded()
        # Counted when there are spares to park, and while the account is full and
        # shared, when this one could give one to a mysqlgate that has none (a `want`,
        # which a mysqlgate whose clients do not wait would not see otherwise).
        if (spare_count > 0 or crowded and self.have >= 2) and now >= self._next_recount:
            check = pool.borrow_idle() or (await self._borrow_next() if crowded else None)
            if check is not None:
                try:
                    if (await self._count(check)).total > self.budget and self.have >= 2:
                        locked = await self._locked_census(check, release=False)
                        try:
                            if locked is not None:
                                self._give_if_over(locked, check)
                        finally:
                            await self.sql.release_grow(check)
                finally:
                    pool.give_back(check)
            alone = self.census is None or not self.census.others
            self._next_recount = now + (MAINTAIN_EVERY if self._crowded() else
                                        RECOUNT_ALONE_EVERY if alone else RECOUNT_EVERY)
        census = self.census
        if census is None or time.monotonic() - census.at > 2 * RECOUNT_EVERY:
            return
        at_limit = census.total >= self.budget
        if spare_count > 0 and at_limit and census.shared:
            for _ in range(spare_count):
                backend = pool.borrow_idle()
                if backend is None:
                    break
                self._park_one(backend, "spare", self.have)
        elif pool.waiting_count and not pool.idle_count and self.have >= 2 and at_limit \
                and census.shared and now >= self._next_offer:
            backend = await self._borrow_next()
            if backend is not None:
                self._park_one(backend, "offer", self.have)
                self._next_offer = now + self._offer_every * random.uniform(0.8, 1.2)

    def _note_have(self, now: float) -> None:
        """A mysqlgate that just got one more holds it a while before it offers one:
        meanwhile the others' offers are taken, those that held theirs longest, so the
        odd connection goes round."""
        have = self.have
        if have > self._last_have:
            self._offer_every = OFFER_EVERY
            self._next_offer = max(self._next_offer, now + OFFER_EVERY)
        self._last_have = have

    def _park_one(self, backend: BackendConnection, kind: str, have: int) -> None:
        """`have`: this mysqlgate's connections, `backend` included (a taker holding
        fewer takes an offer)."""
        self._parked[backend] = kind
        self._spawn(self._park(backend, kind, have))

    async def _park(self, backend: BackendConnection, kind: str, have: int) -> None:
        """Keep `backend` parked where other mysqlgates can take it, until it is taken
        (closed), or this mysqlgate wants it back."""
        pool = self.pool
        idle_since = backend.last_active
        given = False
        try:
            for slices in range(1, 1 << 30):
                mark = marker(kind, self.gate, have, pool.waiting_count)
                ended = await self.sql.park(backend, mark, OFFER_SLICE if kind == "offer"
                                            else SPARE_SLICE)
                if not ended or backend.closed or not await self.sql.door_free(backend):
                    given = True  # another mysqlgate took it
                    break
                if kind == "offer" or pool.waiting_count:
                    break
                if slices % 4 == 0:  # is it still wanted somewhere?
                    await self._count(backend)
                if not self._crowded():
                    break
        except (ServerError, CannotShare, ConnectionError, OSError) as exc:
            given = backend.closed
            if not given:
                log.info("%s: parked upstream %s: %s", pool.name, backend.thread_id, exc)
                backend.abort()
            if isinstance(exc, CannotShare):
                self._disable(str(exc))
        finally:
            del self._parked[backend]
            if given:
                backend.close()
                self.stats.given_back += 1
                log.debug("%s: upstream %s (%s) went to another mysqlgate", pool.name,
                          backend.thread_id, kind)
            if kind == "spare":
                backend.last_active = idle_since  # parking is no use: the idle timeout runs
            else:
                self._offer_every = OFFER_EVERY if given else \
                    min(self._offer_every * 2, 8.0)
            pool.give_back(backend)

    def _crowded(self) -> bool:
        """At the last count (lately), the account was at its limit and shared."""
        census = self.census
        return census is not None and census.shared and census.total >= self.budget and \
            time.monotonic() - census.at < 3 * RECOUNT_EVERY

    async def _want(self, backend: BackendConnection) -> None:
        """A first connection over the limit: wait, marked, for another mysqlgate to
        give one back, taking a spare or an offer meanwhile; give up after WANT_MAX."""
        pool = self.pool
        started = time.monotonic()
        admitted = False
        try:
            while pool.waiting_count and time.monotonic() - started < WANT_MAX:
                mark = marker("want", self.gate, 0, pool.waiting_count)
                if not await self.sql.park(backend, mark, WANT_SLICE):
                    break
                census = await self._locked_census(backend, release=True)
                if census is not None and census.total <= self.budget:
                    admitted = True
                    break
                if census is not None:
                    await self._take(census, backend, any_offer=True)
        except (ServerError, CannotShare, ConnectionError, OSError) as exc:
            log.info("%s: waiting upstream %s: %s", pool.name, backend.thread_id, exc)
            if isinstance(exc, CannotShare):
                self._disable(str(exc))
        finally:
            del self._parked[backend]
            self.stats.over_limit_seconds += time.monotonic() - started
            if not admitted:
                backend.close()
                self._enter_not_before = time.monotonic() + ENTER_BACKOFF
            pool.give_back(backend)

    # -- other mysqlgates' parked connections ---------------------------------------

    def _give_if_over(self, census: Census, check: BackendConnection) -> bool:
        """The account is over its limit less the reserve, by a count taken under the
        `grow` lock: close `check` (give it back) if this mysqlgate holds 2 or more and
        it is a `want` (another mysqlgate's first connection) or lasted OVER_GRACE (a
        program holding connections; a person's login for a moment does not count).
        True when `check` was closed."""
        now = time.monotonic()
        if census.total <= self.budget:
            self._over_since = None
            return False
        wants = [p for p in census.parks if p.kind == "want"
                 and now - self._answered_wants.get(p.thread, 0) > 3 * WANT_SLICE]
        if self._over_since is None:
            self._over_since = now
        if self.have < 2 or not wants and now - self._over_since < OVER_GRACE:
            return False
        if wants:
            self._answered_wants = {p.thread: now for p in wants}
        self._over_since = None
        check.close()
        self.stats.given_back += 1
        log.debug("%s: gave upstream %s back: the account had %d connections%s",
                  self.pool.name, check.thread_id, census.total,
                  f" ({wants[0].gate} had none)" if wants else "")
        return True

    async def _take(self, census: Census, check: BackendConnection,
                    any_offer: bool = False) -> bool:
        """End another mysqlgate's spare, or an offer from one holding more than this
        one: its slot is free then. This one's own offers standing meanwhile count as
        held: taking beside them would leave it with more than the giver once its offer
        went unclaimed (measured: 3 of 5 with the other two at 1, for 1.2 s)."""
        offered = sum(1 for kind in self._parked.values() if kind == "offer")
        have = 0 if any_offer else self.have + offered
        candidates = [p for p in census.parks if p.kind == "spare" or
                      p.kind == "offer" and p.have > have]
        if not candidates:
            return False
        park: Park = max(candidates, key=lambda p: (p.kind == "spare", p.have))
        if not await self.sql.take(check, park):
            return False
        self.stats.taken += 1
        log.debug("%s: took a %s of %s (have %d)", self.pool.name, park.kind, park.gate,
                  park.have)
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
