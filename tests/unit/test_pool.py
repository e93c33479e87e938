"""The pool's decisions, with fake connections and, where time matters, a fake clock: no
sockets, no server, no real time. test_pool_model.py checks the pool against a model."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mysqlgate.errors import PoolTimeout, ServerError, UpstreamUnavailable
from mysqlgate.pool import UpstreamPool
from mysqlgate.pool_state import HANGUP_CHECK_AFTER
from mysqlgate.pool_types import PoolSettings
from mysqlgate.protocol.messages import ERR

from .fake_backend import FakeBackend, FakeLoop, Pending


def settings(**overrides: Any) -> PoolSettings:
    values: dict[str, Any] = dict(size=4, queue_timeout=10.0, idle_timeout=0.5,
                                  max_lifetime=3600.0, ping_after=5.0)
    values.update(overrides)
    return PoolSettings(**values)


async def unused_reset(backend: Any) -> None:
    raise AssertionError("no reset expected")


def pool_with_idle(backends: list[FakeBackend], **overrides: Any) -> UpstreamPool:
    """A pool whose idle list holds `backends`, oldest first, as releases leave it."""
    async def connect(key: int) -> Any:
        return FakeBackend(100, key)

    pool = UpstreamPool("test", connect, unused_reset, settings(**overrides))
    for backend in backends:
        backend.on_close(pool._on_backend_closed)
        pool._lent.add(backend)  # type: ignore[arg-type]
        pool.release(backend)  # type: ignore[arg-type]
    return pool


async def test_expired_idle_connections_are_skipped_not_crashed_on() -> None:
    """Issue 16: the most recently used idle connection has expired and another follows;
    the search removed from the deque it iterated ('deque mutated during iteration'),
    inside a client's data_received, and the client was dropped."""
    now = time.monotonic()
    old, expired_a, expired_b = (FakeBackend(i, now=now) for i in (1, 2, 3))
    pool = pool_with_idle([old, expired_a, expired_b])
    old.last_active = now - 0.1  # still fresh
    expired_a.last_active = expired_b.last_active = now - 0.6  # past idle_timeout 0.5
    delivered: list[Any] = []
    pool.request(0, delivered.append)
    assert delivered == [old]
    assert expired_a.closed and expired_b.closed
    assert pool.idle_count == 0 and pool.lent_count == 1
    assert pool.stats.closed_idle == 2


async def test_closed_idle_connections_are_skipped_not_crashed_on() -> None:
    now = time.monotonic()
    alive, dead_a, dead_b = (FakeBackend(i, now=now) for i in (1, 2, 3))
    pool = pool_with_idle([alive, dead_a, dead_b])
    dead_a.closed = dead_b.closed = True  # closed with no callback yet (a race)
    delivered: list[Any] = []
    pool.request(0, delivered.append)
    assert delivered == [alive]
    assert pool.idle_count == 0
    assert pool.stats.closed_broken == 2


async def test_an_idle_connection_the_server_ended_unnoticed_is_not_lent() -> None:
    """The server's FIN came in the same turn of the event loop as a client's statement:
    the connection's flag still says open. One idle long enough for a server's timeout
    is looked at first (and not lent); a younger one is lent without a look."""
    now = time.monotonic()
    older, ended = FakeBackend(1, now=now), FakeBackend(2, now=now)
    pool = pool_with_idle([older, ended], idle_timeout=60.0)
    older.last_active = ended.last_active = now - HANGUP_CHECK_AFTER - 0.01
    ended.hangup_unseen = True
    delivered: list[Any] = []
    pool.request(0, delivered.append)
    assert delivered == [older]
    assert ended.closed and pool.stats.closed_broken == 1 and pool.idle_count == 0
    older.last_active = time.monotonic()  # the client's statement ran on it
    pool.release(older)  # type: ignore[arg-type]
    checks = older.hangup_checks
    pool.request(0, delivered.append)
    assert delivered == [older, older] and older.hangup_checks == checks  # just used


@pytest.mark.parametrize("expired", [0, 1, 2, 3])
async def test_every_expired_idle_connection_is_closed_and_counted(expired: int) -> None:
    now = time.monotonic()
    backends = [FakeBackend(i, now=now) for i in range(3)]
    pool = pool_with_idle(backends)
    for backend in backends[len(backends) - expired:]:
        backend.last_active = now - 1
    delivered: list[Any] = []
    pool.request(0, delivered.append)
    assert pool.stats.closed_idle == expired
    if expired < len(backends):
        assert delivered == [backends[len(backends) - expired - 1]]
    else:  # none left: a new one is opened for the request
        assert pool.opening_count == 1
        await asyncio.sleep(0)
        assert [b.thread_id for b in delivered] == [100]
    assert pool.open_count <= pool.settings.size


# -- single decisions, with a fake clock ------------------------------------------------------


class World:
    """A pool on a FakeLoop whose connects the test settles: `connects` holds the ones
    under way (key, outcome to settle, when it started)."""

    def __init__(self, **overrides: Any) -> None:
        self.loop = FakeLoop()
        self.connects: list[tuple[int, Pending, float]] = []
        self.started: list[float] = []  # when each connect started
        self.opened = 0
        self.pool = UpstreamPool("test", self._connect, unused_reset, settings(**overrides),
                                 clock=self.loop.time, scheduler=self.loop,
                                 jitter=lambda: 0.5)

    async def _connect(self, key: int) -> Any:
        pending = Pending(self.loop, f"connect {len(self.started)}")
        self.connects.append((key, pending, self.loop.now))
        self.started.append(self.loop.now)
        return await pending

    def ask(self, key: int = 0) -> list[Any]:
        """A request; its answer lands in the list returned."""
        answers: list[Any] = []
        self.pool.request(key, answers.append)
        self.loop.run_ready()
        return answers

    def refuse(self) -> None:
        self.loop.run_ready()
        for _, pending, _ in self.connects:
            pending.fail(UpstreamUnavailable("cannot connect: [Errno 111] Connection refused"))
        self.connects.clear()
        self.loop.run_ready()

    def accept(self) -> list[FakeBackend]:
        self.loop.run_ready()
        opened = []
        for key, pending, _ in self.connects:
            backend = FakeBackend(100 + self.opened, key, clock=self.loop.time)
            backend.loop = self.loop  # its pings wait for the test
            self.opened += 1
            opened.append(backend)
            pending.resolve(backend)
        self.connects.clear()
        self.loop.run_ready()
        return opened

    def outage(self, seconds: float, step: float = 0.005) -> None:
        """The server refuses every connect for `seconds`."""
        until = self.loop.now + seconds
        while self.loop.now < until:
            self.refuse()
            self.loop.advance(step)
        self.refuse()



def test_take_ready_hands_out_only_a_fresh_open_connection_of_the_key() -> None:
    world = World(size=2)
    first, second = world.ask(0), world.ask(8)
    a, b = world.accept()
    assert first == [a] and second == [b]
    world.pool.release(a)  # type: ignore[arg-type]
    world.pool.release(b)  # type: ignore[arg-type]  # b is the most recently used
    assert world.pool.take_ready(0) is None, "the most recent idle one has another key"
    b.closed = True  # dead, its loss not noticed yet
    assert world.pool.take_ready(8) is None
    b.closed = False
    world.loop.advance(5.1)  # past ping_after: it must be checked first
    assert world.pool.take_ready(8) is None
    b.last_active = world.loop.now
    assert world.pool.take_ready(8) is b
    assert world.pool.idle() == [a] and world.pool.lent() == [b]


def test_after_a_1226_one_connect_tries_beyond_the_lowered_size() -> None:
    """The account was full (someone else held a connection): the pool keeps to one,
    backs off, then tries a second connect; the waiting client is served when the
    account has room again, though the first connection stays in use."""
    world = World(size=2)
    holder = world.ask()
    world.accept()
    waiter = world.ask()
    ((_, pending, _),) = world.connects
    world.connects.clear()
    pending.fail(ServerError(ERR(1226, "User has exceeded the 'max_user_connections'")))
    world.loop.run_ready()
    assert world.pool.effective_size == 1 and world.pool.backing_off and not world.connects
    world.loop.advance(0.2)  # the back-off is over
    assert len(world.connects) == 1, "no connect beyond the lowered size"
    (opened,) = world.accept()
    assert waiter == [opened] and len(holder) == 1
    assert world.pool.effective_size == 2


def test_a_slot_freed_by_a_broken_connection_serves_the_queue() -> None:
    world = World(size=1)
    holder = world.ask()
    (backend,) = world.accept()
    assert holder == [backend]
    waiter = world.ask()
    assert waiter == [] and not world.connects
    backend.busy = True  # given back with a command in flight: it is closed
    world.pool.release(backend)  # type: ignore[arg-type]
    world.loop.run_ready()
    assert backend.closed and len(world.connects) == 1
    (opened,) = world.accept()
    assert waiter == [opened]


def test_paused_hands_out_nothing_and_resume_serves_in_order() -> None:
    world = World(size=1)
    world.pool.pause()
    first, second = world.ask(), world.ask()
    world.loop.advance(60.0)  # no queue timeout while paused
    assert first == second == [] and not world.connects
    world.pool.resume()
    (backend,) = world.accept()
    assert first == [backend] and second == []
    world.pool.release(backend)  # type: ignore[arg-type]
    assert second == [backend]


def test_the_janitor_closes_and_counts_idle_connections_past_their_timeouts() -> None:
    world = World(size=3, idle_timeout=30.0, max_lifetime=100.0)
    asks = [world.ask() for _ in range(3)]
    old, used, fresh = world.accept()
    assert asks == [[old], [used], [fresh]]
    world.loop.advance(20.0)
    for backend in (old, used, fresh):
        world.pool.release(backend)  # type: ignore[arg-type]
    world.loop.advance(15.0)
    used.last_active = world.loop.now - 31.0  # idle past the idle timeout
    fresh.last_active = world.loop.now
    old.created_at = world.loop.now - 101.0  # past its lifetime
    old.last_active = world.loop.now
    world.pool.expire_idle()
    assert world.pool.idle() == [fresh]
    assert used.closed and old.closed and not fresh.closed
    assert world.pool.stats.closed_idle == 1 and world.pool.stats.closed_lifetime == 1


def test_after_a_connection_died_the_idle_ones_are_checked_before_use() -> None:
    """A restart kills every connection: the one a client held dies first, and the read
    it runs again must not be sent on an idle one that is dying too."""
    world = World(size=3)
    asks = [world.ask() for _ in range(3)]
    held, idle_a, idle_b = world.accept()
    assert asks == [[held], [idle_a], [idle_b]]
    world.pool.release(idle_a)  # type: ignore[arg-type]
    world.pool.release(idle_b)  # type: ignore[arg-type]
    held.die()  # under its client
    world.pool.release(held)  # type: ignore[arg-type]
    assert world.pool.idle() == [] and world.pool.opening_count == 2
    assert world.pool.take_ready(0) is None
    retry = world.ask()
    world.loop.run_ready()
    assert idle_a.ping_pending is not None and idle_b.ping_pending is not None
    idle_b.die()  # dying too: its ping fails
    idle_a.ping_pending.resolve()
    world.loop.run_ready()
    assert retry == [idle_a]
    assert world.pool.stats.pings_failed == 1


# -- the server unreachable (issue 16, part 1) ------------------------------------------------


def test_requests_wait_out_an_outage_and_are_served_in_order() -> None:
    """A restart: the connect fails, the clients that ask meanwhile wait (no error, no
    connect of their own), one probe at a time looks for the server, and once it answers
    the clients are served at once, in the order they asked."""
    world = World(size=2)
    first = world.ask()
    world.refuse()
    assert world.pool.unreachable is not None
    second, third = world.ask(), world.ask()
    assert first == second == third == [] and not world.connects
    world.outage(2.5)
    assert first == second == third == [], "an error during the outage"
    assert world.pool.waiting_count == 3
    # The server accepts again: the next probe finds it soon.
    up = world.loop.now
    while not world.connects and world.loop.now - up < 2.0:
        world.loop.advance(0.001)
    assert world.connects and world.loop.now - up <= 0.1, "the server was found late"
    (probe,) = world.accept()
    assert first == [probe]
    (opened,) = world.accept()  # the second client's connect started at once (size 2)
    assert second == [opened] and third == []
    world.pool.release(probe)  # type: ignore[arg-type]
    assert third == [probe]
    assert world.pool.unreachable is None and world.pool.stats.outages == 1
    assert world.pool.stats.wait_timeouts == 0


def test_the_probe_interval_grows_from_tens_of_milliseconds_to_a_second() -> None:
    world = World(size=2)
    world.ask()
    world.refuse()
    world.outage(60.0, step=0.001)
    start = world.started[0]
    gaps = [b - a for a, b in zip(world.started[1:], world.started[2:], strict=False)]
    assert 0.015 <= min(gaps), "connects in a burst"
    assert world.started[1] - start <= 0.03, "the first retry not within tens of ms"
    at = {round(a - start, 1): b - a for a, b in zip(world.started, world.started[1:],
                                                     strict=False)}
    assert max(gap for t, gap in at.items() if 2.0 <= t <= 2.5) <= 0.1, \
        "the server would be found late after a restart of 2.5 s"
    assert max(gaps) <= 1.0 * 1.25 + 0.002, "more than about a second between tries"
    late = [t for t in world.started if t - start >= 40.0]
    assert len(late) <= 20 / 0.75 + 1, f"{len(late)} connects in the last 20 s: a storm"


def test_an_outage_longer_than_the_queue_timeout_gives_the_clear_error() -> None:
    world = World(size=2, queue_timeout=3.0)
    early = world.ask()
    world.refuse()
    world.outage(1.0)
    late = world.ask()
    world.outage(2.0 - 0.006)
    assert early == [] and late == []
    world.outage(0.01)  # the first client's queue timeout
    (error,) = early
    assert isinstance(error, UpstreamUnavailable) and "cannot be reached" in str(error)
    assert "pool.queue_timeout" in str(error)
    assert late == []  # it asked a second later: it still waits
    world.outage(1.0)
    assert isinstance(late[0], UpstreamUnavailable)
    assert world.pool.stats.wait_timeouts == 2


def test_a_saturated_pool_still_says_pool_full() -> None:
    world = World(size=1, queue_timeout=1.0)
    holder = world.ask()
    world.accept()
    assert len(holder) == 1
    waiter = world.ask()
    world.loop.advance(1.0)
    (error,) = waiter
    assert isinstance(error, PoolTimeout)
# -- a grower (fleet.py) decides when the pool opens ------------------------------------


class Grower:
    """Records what the pool tells it; admits first connections as told."""

    def __init__(self, admit: bool = True) -> None:
        self.wants = 0
        self.admit = admit
        self.first: list[Any] = []

    def wanted(self) -> None:
        self.wants += 1

    async def admit_first(self, backend: Any) -> bool:
        self.first.append(backend)
        return self.admit


def grown_pool(backends: list[FakeBackend], grower: Grower, **overrides: Any) -> UpstreamPool:
    pool = pool_with_idle(backends, **overrides)
    pool.grower = grower  # type: ignore[assignment]
    return pool


async def test_with_a_grower_the_pool_opens_nothing_by_itself() -> None:
    grower = Grower()
    pool = grown_pool([], grower)
    delivered: list[Any] = []
    pool.request(0, delivered.append)
    pool.request(0, delivered.append)
    await asyncio.sleep(0)
    assert delivered == [] and pool.opening_count == 0 and pool.waiting_count == 2
    assert grower.wants >= 1  # told (once is enough: it looks at waiting_count)
    assert await pool.grow()  # the grower found room: one for the first waiter
    assert [b.thread_id for b in delivered] == [100] and pool.waiting_count == 1


async def test_a_first_connection_waits_for_the_growers_word() -> None:
    """Opened with nothing to count on beforehand: not handed out until admitted; when
    not, the grower holds it (borrowed, counted) and the request stays first."""
    grower = Grower(admit=False)
    pool = grown_pool([], grower)
    delivered: list[Any] = []
    pool.request(0, delivered.append)
    assert not await pool.grow(first=True)
    assert delivered == [] and len(grower.first) == 1
    assert pool.borrowed() == grower.first and pool.open_count == 1
    assert pool.waiting_count == 1
    pool.give_back(grower.first[0])  # the account has room now
    assert delivered == grower.first and pool.borrowed() == []


async def test_borrow_next_comes_before_the_waiters() -> None:
    now = time.monotonic()
    busy = FakeBackend(1, now=now)
    grower = Grower()
    pool = grown_pool([busy], grower)
    lent: list[Any] = []
    pool.request(0, lent.append)
    assert lent == [busy]
    waiting: list[Any] = []
    pool.request(0, waiting.append)
    borrowed = pool.borrow_next()
    pool.release(busy)
    assert borrowed.done() and borrowed.result() is busy and waiting == []
    assert pool.open_count == 1  # borrowed still counts
    pool.give_back(busy)
    assert waiting == [busy]


async def test_a_connection_given_to_another_gate_frees_its_slot() -> None:
    now = time.monotonic()
    idle = FakeBackend(1, now=now)
    grower = Grower()
    pool = grown_pool([idle], grower)
    assert pool.borrow_idle() is idle and pool.idle_count == 0
    waiting: list[Any] = []
    pool.request(0, waiting.append)
    wants = grower.wants
    idle.close()  # another mysqlgate took it
    pool.give_back(idle)
    assert pool.open_count == 0 and waiting == [] and grower.wants > wants


def test_a_holder_gives_back_only_for_a_client_nothing_else_serves() -> None:
    """A session keeping its connection for its client's SHOW WARNINGS is asked to give
    it back once its grace is over and a client waits, but not for one whose own
    connection is being opened (a slow login on a loaded machine cost a client its
    warnings, found by a busy run); if that connect fails, the holder is asked then."""
    world = World(size=2)
    holder = world.ask()
    (held,) = world.accept()
    asked: list[float] = []
    world.pool.allow_preemption(held, lambda: asked.append(world.loop.now),  # type: ignore[arg-type]
                                0.2)
    world.loop.advance(0.5)  # the grace is over
    waiter = world.ask()
    assert len(world.connects) == 1 and world.pool.unserved_count == 0
    world.loop.advance(1.0)
    assert asked == [], "asked to give back while the waiter's connection was on its way"
    (_, pending, _), = world.connects
    world.connects.clear()
    pending.fail(ServerError(ERR(1226, "User has exceeded the 'max_user_connections'")))
    world.loop.run_ready()
    assert world.pool.unserved_count == 1
    assert len(asked) == 1 and holder == [held] and waiter == []
