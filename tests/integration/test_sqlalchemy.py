"""SQLAlchemy 2.x through mysqlgate with a pool smaller than the number of concurrent
clients (issue 6, "Tests" item 2; SPEC section 7): the sync engine with PyMySQL and
mysqlclient, and the asyncio engine with aiomysql. SQLAlchemy's own client-side pool
(pool_size=8) is larger than mysqlgate's upstream pool of 2.

Each scenario is a function that returns what the client saw; it is run with an engine
on the server directly (the reference) and with one through the gate, and the two must
agree, besides the absolute checks (rows committed, counters, isolation levels)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiomysql
import pytest
from harness import Gate, ScratchDb
from pool_load import DEADLINE, ConnectionSampler, PoolLoad
from sqlalchemy import URL, Engine, String, create_engine, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

DRIVERS = ("pymysql", "mysqldb")
GATE_POOL = "2"
CLIENT_POOL = 8
WORKERS = 6
T = TypeVar("T")


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "sa_rows"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    worker: Mapped[str] = mapped_column(String(32), index=True)
    value: Mapped[int]


class Counter(Base):
    __tablename__ = "sa_counter"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[int]


# -- engines ------------------------------------------------------------------------------------


def _url(driver: str, db: ScratchDb, host: str, port: int) -> URL:
    return URL.create(
        f"mysql+{driver}",
        username=db.user,
        password=db.password,
        host=host,
        port=port,
        database=db.database,
        query={"charset": "utf8mb4"},
    )


def _engine(driver: str, db: ScratchDb, host: str, port: int) -> Engine:
    return create_engine(
        _url(driver, db, host, port),
        pool_size=CLIENT_POOL,
        max_overflow=0,
        pool_timeout=DEADLINE,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 30, "read_timeout": 60, "write_timeout": 60},
    )


@pytest.fixture(params=DRIVERS)
def engines(
    request: pytest.FixtureRequest, gate_factory: Callable[..., Gate], db: ScratchDb
) -> Iterator[tuple[Engine, Engine, Gate]]:
    """(through the gate, direct, the gate) for the driver; the tables exist."""
    gate = gate_factory("--pool-size", GATE_POOL)
    through = _engine(request.param, db, gate.host, gate.port)
    direct = _engine(request.param, db, db.host, db.port)
    try:
        Base.metadata.create_all(direct)
        yield through, direct, gate
    finally:
        through.dispose()
        direct.dispose()


def _run_threads(count: int, fn: Callable[[int], T]) -> list[T]:
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(fn, index) for index in range(count)]
        return [future.result(timeout=DEADLINE * 2) for future in futures]


def _committed(db: ScratchDb, worker: str) -> list[int]:
    """The worker's committed values, seen directly."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT value FROM sa_rows WHERE worker = %s ORDER BY value", (worker,))
        return [row[0] for row in cur.fetchall()]


def _values(session: Session, worker: str) -> list[int]:
    return sorted(session.scalars(select(Row.value).where(Row.worker == worker)))


# -- nested transactions (SAVEPOINT) ------------------------------------------------------------


def _nested(engine: Engine, worker: str, rounds: int) -> list[str]:
    seen: list[str] = []
    for r in range(rounds):
        with Session(engine) as session, session.begin():
            savepoint = session.begin_nested()  # the transaction's first statement
            session.add(Row(worker=worker, value=-1 - r))
            session.flush()
            seen.append(f"inside: {_values(session, worker)}")
            savepoint.rollback()
            seen.append(f"after rollback: {_values(session, worker)}")
            session.add(Row(worker=worker, value=r))
            with session.begin_nested():
                session.add(Row(worker=worker, value=1000 + r))
            seen.append(f"before commit: {_values(session, worker)}")
        # A savepoint released, then the whole transaction rolled back.
        with Session(engine) as session:
            session.begin()
            with session.begin_nested():
                session.add(Row(worker=worker, value=-100 - r))
            seen.append(f"released: {len(_values(session, worker))}")
            session.rollback()
        with Session(engine) as session:
            seen.append(f"end: {len(_values(session, worker))}")
    return seen


def _nested_expected(rounds: int) -> list[int]:
    return sorted([*range(rounds), *range(1000, 1000 + rounds)])


def test_nested_transactions(engines: tuple[Engine, Engine, Gate], db: ScratchDb) -> None:
    through, direct, gate = engines
    rounds = 6
    reference = _nested(direct, "direct", rounds)
    assert reference[:5] == [
        "inside: [-1]",
        "after rollback: []",
        "before commit: [0, 1000]",
        "released: 3",
        "end: 2",
    ]
    assert _committed(db, "direct") == _nested_expected(rounds)

    with PoolLoad(gate, clients=2) as load, ConnectionSampler(db) as sampler:
        seen = _run_threads(WORKERS, lambda index: _nested(through, f"w{index}", rounds))
    assert load.statements > 0
    for index in range(WORKERS):
        assert seen[index] == reference, f"worker {index}"
        assert _committed(db, f"w{index}") == _nested_expected(rounds)
    assert sampler.peak <= 2 + 1  # the gate's pool (+ `direct`'s idle connection)


# -- pessimistic locking ------------------------------------------------------------------------


def test_with_for_update_loses_no_update(
    engines: tuple[Engine, Engine, Gate], db: ScratchDb
) -> None:
    through, direct, _ = engines
    with Session(direct) as session, session.begin():
        session.add(Counter(id=1, value=0))
    increments = 10

    def worker(_: int) -> list[int]:
        seen = []
        for _ in range(increments):
            with Session(through) as session, session.begin():
                counter = session.execute(
                    select(Counter).where(Counter.id == 1).with_for_update()
                ).scalar_one()
                seen.append(counter.value)
                counter.value += 1
        return seen

    seen = _run_threads(WORKERS, worker)
    with Session(direct) as session:
        assert session.get(Counter, 1).value == WORKERS * increments  # type: ignore[union-attr]
    # Every increment read a distinct value: no two transactions held the lock at once.
    values = sorted(value for worker_seen in seen for value in worker_seen)
    assert values == list(range(WORKERS * increments))


# -- bulk inserts -------------------------------------------------------------------------------


def test_bulk_insert_and_read_back(engines: tuple[Engine, Engine, Gate], db: ScratchDb) -> None:
    through, _, gate = engines
    rows_per_worker = 1500
    objects_per_worker = 300

    def worker(index: int) -> tuple[list[int], list[int], list[int]]:
        name = f"bulk{index}"
        with Session(through) as session, session.begin():
            # Core executemany: the driver batches it into multi-row INSERTs.
            session.execute(
                insert(Row), [{"worker": name, "value": i} for i in range(rows_per_worker)]
            )
        with Session(through) as session, session.begin():
            # ORM: the primary keys come back (insertmanyvalues).
            objects = [Row(worker=name, value=-1 - i) for i in range(objects_per_worker)]
            session.add_all(objects)
            session.flush()
            ids = [obj.id for obj in objects]
        with Session(through) as session:
            values = list(
                session.scalars(select(Row.value).where(Row.worker == name).order_by(Row.value))
            )
            by_id = dict(
                session.execute(select(Row.id, Row.value).where(Row.id.in_(ids))).all()
            )
        return values, ids, [by_id[i] for i in ids]

    with PoolLoad(gate, clients=2):
        results = _run_threads(4, worker)
    all_ids: set[int] = set()
    for index, (values, ids, values_by_id) in enumerate(results):
        name = f"bulk{index}"
        expected = sorted([*range(rows_per_worker), *(-1 - i for i in range(objects_per_worker))])
        assert values == expected, name
        assert _committed(db, name) == expected, name
        assert len(set(ids)) == objects_per_worker, name
        assert values_by_id == [-1 - i for i in range(objects_per_worker)], name
        all_ids |= set(ids)
    assert len(all_ids) == 4 * objects_per_worker
    with Session(through) as session:
        assert session.scalar(select(func.count()).select_from(Row)) == 4 * (
            rows_per_worker + objects_per_worker
        )


# -- isolation levels ---------------------------------------------------------------------------

# level: (rows committed by another client after the first read that a later read of the
# same transaction sees, uncommitted rows of another client it sees)
LEVELS = {
    "REPEATABLE READ": (0, 0),
    "READ COMMITTED": (1, 0),
    "READ UNCOMMITTED": (1, 1),
}


def _isolation(engine: Engine, db: ScratchDb, worker: str) -> list[Any]:
    """Per isolation level: what the connection reports and which rows of another client
    (a direct connection) a transaction sees; then AUTOCOMMIT; then the default again."""
    seen: list[Any] = []
    isolation_sql = db.server.dialect.translate("SELECT @@tx_isolation")
    count = select(func.count()).select_from(Row).where(Row.worker == worker)
    with contextlib.closing(db.connect()) as other, other.cursor() as cur:
        for level in LEVELS:
            with engine.connect() as conn:
                conn.execution_options(isolation_level=level)
                seen.append(conn.get_isolation_level())
                with conn.begin():
                    before = conn.scalar(count)
                    other.begin()
                    cur.execute("INSERT INTO sa_rows (worker, value) VALUES (%s, 1)", (worker,))
                    dirty = conn.scalar(count)
                    other.rollback()
                    cur.execute("INSERT INTO sa_rows (worker, value) VALUES (%s, 2)", (worker,))
                    after = conn.scalar(count)
                    seen.append((level, after - before, dirty - before))  # type: ignore[operator]
        with engine.connect() as conn:
            conn.execution_options(isolation_level="SERIALIZABLE")
            seen.append(conn.get_isolation_level())
            with conn.begin():
                seen.append(conn.scalar(text(isolation_sql)))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            seen.append(("@@autocommit", conn.scalar(text("SELECT @@autocommit"))))
            conn.execute(insert(Row).values(worker=worker, value=3))
            # No COMMIT: the row is there for everyone at once.
            cur.execute("SELECT value FROM sa_rows WHERE worker = %s AND value = 3", (worker,))
            seen.append(("AUTOCOMMIT", cur.fetchall()))
        with engine.connect() as conn:
            seen.append(("default again", conn.get_isolation_level()))
            seen.append(conn.scalar(text(isolation_sql)))
    return seen


def test_isolation_levels(engines: tuple[Engine, Engine, Gate], db: ScratchDb) -> None:
    through, direct, gate = engines
    reference = _isolation(direct, db, "direct")
    expected: list[Any] = []
    for level, (committed, dirty) in LEVELS.items():
        expected += [level, (level, committed, dirty)]
    expected += [
        "SERIALIZABLE",
        "SERIALIZABLE",
        ("@@autocommit", 1),
        ("AUTOCOMMIT", ((3,),)),
        ("default again", "REPEATABLE READ"),
        "REPEATABLE-READ",
    ]
    assert reference == expected

    with PoolLoad(gate, clients=2):
        seen = _run_threads(4, lambda index: _isolation(through, db, f"iso{index}"))
    for index in range(4):
        assert seen[index] == reference, f"worker {index}"


# -- asyncio engine (aiomysql) ------------------------------------------------------------------


def _async_engine(db: ScratchDb, host: str, port: int) -> AsyncEngine:
    return create_async_engine(
        _url("aiomysql", db, host, port),
        pool_size=CLIENT_POOL,
        max_overflow=0,
        pool_timeout=DEADLINE,
        connect_args={"connect_timeout": 30},
    )


async def _async_nested(engine: AsyncEngine, worker: str, rounds: int) -> list[str]:
    async def values(session: AsyncSession) -> list[int]:
        return sorted(await session.scalars(select(Row.value).where(Row.worker == worker)))

    seen: list[str] = []
    for r in range(rounds):
        async with AsyncSession(engine) as session, session.begin():
            savepoint = await session.begin_nested()  # the transaction's first statement
            session.add(Row(worker=worker, value=-1 - r))
            await session.flush()
            seen.append(f"inside: {await values(session)}")
            await savepoint.rollback()
            seen.append(f"after rollback: {await values(session)}")
            session.add(Row(worker=worker, value=r))
            async with session.begin_nested():
                session.add(Row(worker=worker, value=1000 + r))
            seen.append(f"before commit: {await values(session)}")
        async with AsyncSession(engine) as session:
            await session.begin()
            async with session.begin_nested():
                session.add(Row(worker=worker, value=-100 - r))
            seen.append(f"released: {len(await values(session))}")
            await session.rollback()
        async with AsyncSession(engine) as session:
            seen.append(f"end: {len(await values(session))}")
    return seen


async def _async_increments(engine: AsyncEngine, increments: int) -> list[int]:
    seen = []
    for _ in range(increments):
        async with AsyncSession(engine) as session, session.begin():
            counter = (
                await session.execute(select(Counter).where(Counter.id == 1).with_for_update())
            ).scalar_one()
            seen.append(counter.value)
            counter.value += 1
    return seen


async def _async_isolation(engine: AsyncEngine, db: ScratchDb, worker: str) -> list[Any]:
    seen: list[Any] = []
    count = select(func.count()).select_from(Row).where(Row.worker == worker)
    other = await aiomysql.connect(
        host=db.host, port=db.port, user=db.user, password=db.password, db=db.database,
        autocommit=True,
    )
    try:
        async with other.cursor() as cur:
            for level in LEVELS:
                async with engine.connect() as conn:
                    await conn.execution_options(isolation_level=level)
                    seen.append(await conn.get_isolation_level())
                    async with conn.begin():
                        before = await conn.scalar(count)
                        await other.begin()
                        await cur.execute(
                            "INSERT INTO sa_rows (worker, value) VALUES (%s, 1)", (worker,))
                        dirty = await conn.scalar(count)
                        await other.rollback()
                        await cur.execute(
                            "INSERT INTO sa_rows (worker, value) VALUES (%s, 2)", (worker,))
                        after = await conn.scalar(count)
                        seen.append((level, after - before, dirty - before))  # type: ignore[operator]
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                seen.append(("@@autocommit", await conn.scalar(text("SELECT @@autocommit"))))
                await conn.execute(insert(Row).values(worker=worker, value=3))
                await cur.execute(
                    "SELECT value FROM sa_rows WHERE worker = %s AND value = 3", (worker,))
                seen.append(("AUTOCOMMIT", await cur.fetchall()))
            async with engine.connect() as conn:
                seen.append(("default again", await conn.get_isolation_level()))
    finally:
        other.close()
    return seen


async def test_asyncio_engine(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    gate = gate_factory("--pool-size", GATE_POOL)
    direct = _async_engine(db, db.host, db.port)
    through = _async_engine(db, gate.host, gate.port)
    try:
        async with direct.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(insert(Counter).values(id=1, value=0))

        rounds, increments, rows_per_task = 5, 8, 800
        reference = await _async_nested(direct, "direct", rounds)
        assert reference[:5] == [
            "inside: [-1]",
            "after rollback: []",
            "before commit: [0, 1000]",
            "released: 3",
            "end: 2",
        ]
        iso_reference = await _async_isolation(direct, db, "direct-iso")
        assert iso_reference == [
            *(x for level, (c, d) in LEVELS.items() for x in (level, (level, c, d))),
            ("@@autocommit", 1),
            ("AUTOCOMMIT", ((3,),)),
            ("default again", "REPEATABLE READ"),
        ]

        async def bulk(index: int) -> list[int]:
            name = f"abulk{index}"
            async with AsyncSession(through) as session, session.begin():
                await session.execute(
                    insert(Row), [{"worker": name, "value": i} for i in range(rows_per_task)]
                )
            async with AsyncSession(through) as session:
                return list(await session.scalars(
                    select(Row.value).where(Row.worker == name).order_by(Row.value)))

        with PoolLoad(gate, clients=2):
            nested, counted, bulked, isolated = await asyncio.wait_for(
                asyncio.gather(
                    asyncio.gather(
                        *(_async_nested(through, f"a{i}", rounds) for i in range(WORKERS))),
                    asyncio.gather(
                        *(_async_increments(through, increments) for _ in range(WORKERS))),
                    asyncio.gather(*(bulk(i) for i in range(3))),
                    asyncio.gather(
                        *(_async_isolation(through, db, f"aiso{i}") for i in range(3))),
                ),
                DEADLINE * 2,
            )
        for index, seen in enumerate(nested):
            assert seen == reference, f"task {index}"
            assert _committed(db, f"a{index}") == _nested_expected(rounds)
        values = sorted(value for task_seen in counted for value in task_seen)
        assert values == list(range(WORKERS * increments))
        with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT value FROM sa_counter WHERE id = 1")
            assert cur.fetchone() == (WORKERS * increments,)
        for index, values in enumerate(bulked):
            assert values == list(range(rows_per_task)), f"bulk task {index}"
            assert _committed(db, f"abulk{index}") == list(range(rows_per_task))
        for index, seen in enumerate(isolated):
            assert seen == iso_reference, f"isolation task {index}"
    finally:
        await through.dispose()
        await direct.dispose()
