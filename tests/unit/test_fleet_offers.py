"""Which parked connection of another mysqlgate this one takes (fleet.Fleet._take): the
decision alone, with the pool and the statements replaced by stand-ins. The statements
themselves are tested in test_fleet_sql.py, the sharing as a whole against both servers
in tests/integration/test_fleet.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from mysqlgate.fleet import Fleet
from mysqlgate.fleet_sql import Census, Park


class TakesAll:
    """FleetSql.take as if every park were still there: records what was taken."""

    def __init__(self) -> None:
        self.taken: list[Park] = []

    async def take(self, backend: Any, park: Park) -> bool:
        self.taken.append(park)
        return True


def fleet_holding(open_count: int, parked: dict[Any, str]) -> tuple[Fleet, TakesAll]:
    pool: Any = SimpleNamespace(open_count=open_count, name="app@db")
    fleet = Fleet(pool, "app", limit=6, reserve=1, floor=0, quiet_after=5.0, mariadb=True)
    fleet._parked = dict(parked)
    sql = TakesAll()
    fleet.sql = sql  # type: ignore[assignment]
    return fleet, sql


def census_with(*parks: Park) -> Census:
    return Census(at=0.0, total=5, mine=2, others_active=3, parks=list(parks))


def offer(gate: str, have: int) -> Park:
    return Park(thread=100 + have, kind="offer", gate=gate, have=have, waiting=3)


def test_one_holding_fewer_takes_an_offer_of_one_holding_more() -> None:
    fleet, sql = fleet_holding(open_count=1, parked={})
    assert asyncio.run(fleet._take(census_with(offer("b", 2)), check=object()))
    assert [p.gate for p in sql.taken] == ["b"]


def test_an_offer_of_its_own_counts_as_held() -> None:
    # 2 open, one of them offered: it holds as many as the other offerer, and taking
    # would leave it with 3 of 5 should its own offer go unclaimed.
    fleet, sql = fleet_holding(open_count=2, parked={object(): "offer"})
    assert fleet.have == 1
    assert not asyncio.run(fleet._take(census_with(offer("b", 2)), check=object()))
    assert sql.taken == []
    # From one holding more than it, counting its offer, it still takes.
    assert asyncio.run(fleet._take(census_with(offer("c", 3)), check=object()))
    assert [p.gate for p in sql.taken] == ["c"]


def test_a_spare_is_taken_whatever_it_holds() -> None:
    fleet, sql = fleet_holding(open_count=2, parked={object(): "offer"})
    spare = Park(thread=7, kind="spare", gate="b", have=1, waiting=0)
    assert asyncio.run(fleet._take(census_with(offer("c", 2), spare), check=object()))
    assert sql.taken == [spare]
