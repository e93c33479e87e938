"""The pool's decisions, with fake connections: no sockets, no server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mysqlgate.pool import PoolSettings, UpstreamPool

from .fake_backend import FakeBackend


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
