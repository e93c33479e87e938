"""memory.py: when free pages are given back (a fake clock), and that glibc's malloc_trim,
called for real, returns freed heap memory to the system."""

from __future__ import annotations

import pytest

from mysqlgate import memory
from mysqlgate.memory import GIVE_BACK_EVERY, SOONEST, GiveBack


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[GiveBack, Clock, list[float]]:
    clock = Clock()
    calls: list[float] = []

    def release() -> bool:
        calls.append(clock.now)
        return True

    return GiveBack(clock, release), clock, calls


def test_a_freed_read_ahead_is_given_back_within_a_second_and_not_more_often() -> None:
    give_back, clock, calls = make()
    give_back.freed()
    clock.now += SOONEST - 0.01
    assert give_back.maybe() is False and calls == []
    clock.now += 0.01
    assert give_back.maybe() is True and calls == [clock.now]
    # Nothing freed since: not again until the periodic return.
    clock.now += 5 * SOONEST
    assert give_back.maybe() is False
    give_back.freed()
    give_back.freed()  # freed twice in a second: one return
    assert give_back.maybe() is True
    assert give_back.maybe() is False and len(calls) == 2


def test_without_large_frees_pages_are_given_back_now_and_then() -> None:
    give_back, clock, calls = make()
    clock.now += GIVE_BACK_EVERY - 0.5
    assert give_back.maybe() is False
    clock.now += 0.5
    assert give_back.maybe() is True
    clock.now += GIVE_BACK_EVERY
    assert give_back.maybe() is True and len(calls) == 2


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(memory._glibc() is None, reason="malloc_trim is glibc's")
def test_giving_back_returns_the_holes_in_the_heap() -> None:
    # 64 KiB blocks come from the heap; freeing every other one leaves holes below live
    # blocks, which glibc does not return by itself (only a free top of the heap).
    blocks = [b"x" * (64 * 1024 - 100) for _ in range(400)]
    del blocks[::2]
    before = resident_kib()
    assert memory.give_back() is True
    assert before - resident_kib() >= 6 * 1024  # of the 12.5 MiB freed
    assert len(blocks) == 200
