"""asyncio drivers through mysqlgate: many concurrent tasks, each with its own
connection, through a pool of 2 (issue 6, "Tests" item 2; SPEC section 7). aiomysql
always; asyncmy when it is installed (it is optional).

Every task keeps session settings of its own (time zone, a session variable, the
character set it connected with), writes rows of its own and checks at every step that
it reads only its own data, its own LAST_INSERT_ID() and its own variables, while the
other tasks' statements run on the same two upstream connections in between."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiomysql
import pytest
from harness import Gate, ScratchDb
from pool_load import DEADLINE, ConnectionSampler

TASKS = 24
STEPS = 12

Connect = Callable[..., Awaitable[Any]]


def _aiomysql_connect(host: str, port: int, db: ScratchDb) -> Connect:
    async def connect(**kwargs: Any) -> Any:
        return await aiomysql.connect(
            host=host, port=port, user=db.user, password=db.password, db=db.database,
            connect_timeout=30, **kwargs,
        )

    return connect


def _asyncmy_connect(host: str, port: int, db: ScratchDb) -> Connect:
    asyncmy = importlib.import_module("asyncmy")

    async def connect(**kwargs: Any) -> Any:
        return await asyncmy.connect(
            host=host, port=port, user=db.user, password=db.password, database=db.database,
            connect_timeout=30, **kwargs,
        )

    return connect


def _create_table(db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, owner INT NOT NULL,"
            " n INT NOT NULL, note VARCHAR(50), KEY (owner)) ENGINE=InnoDB"
        )


def _settings(index: int) -> tuple[str, int, str]:
    """(time zone, group_concat_max_len, character set) of task `index`."""
    time_zone = f"+{index % 12:02d}:{15 * (index % 4):02d}"
    return time_zone, 4096 + index, "latin1" if index % 3 == 0 else "utf8mb4"


async def _task(connect: Connect, index: int, barrier: asyncio.Barrier,
                database: str) -> list[int]:
    """One client's life; returns its committed `n` values."""
    time_zone, concat_len, charset = _settings(index)
    expected_settings = (time_zone, concat_len, charset, database)
    note = f"task {index} é"  # a non-ASCII character, in either character set
    conn = await connect(charset=charset, autocommit=True)
    try:
        async with conn.cursor() as cur:

            async def one(sql: str, args: Any = None) -> tuple[Any, ...]:
                await cur.execute(sql, args)
                rows = await cur.fetchall()
                assert len(rows) == 1, f"task {index}: {sql!r} returned {rows!r}"
                return tuple(rows[0])

            await cur.execute(
                "SET time_zone = %s, group_concat_max_len = %s", (time_zone, concat_len)
            )
            await barrier.wait()  # every task connected and set up: now all at once
            for step in range(STEPS):
                state = await one(
                    "SELECT @@time_zone, @@group_concat_max_len, @@character_set_client,"
                    " DATABASE()"
                )
                assert state == expected_settings, f"task {index} step {step}"
                await cur.execute(
                    "INSERT INTO t (owner, n, note) VALUES (%s, %s, %s)", (index, step, note)
                )
                row_id = cur.lastrowid
                assert await one("SELECT LAST_INSERT_ID()") == (row_id,), f"task {index}"
                assert await one("SELECT owner, n, note FROM t WHERE id = %s", (row_id,)) == (
                    index, step, note)
                if step % 3 == 0:
                    # A transaction rolled back: its row is seen inside it, gone after.
                    await conn.begin()
                    await cur.execute(
                        "INSERT INTO t (owner, n, note) VALUES (%s, %s, 'undone')",
                        (index, -1 - step),
                    )
                    assert await one(
                        "SELECT COUNT(*) FROM t WHERE owner = %s", (index,)) == (step + 2,)
                    await conn.rollback()
                assert await one("SELECT COUNT(*) FROM t WHERE owner = %s", (index,)) == (
                    step + 1,), f"task {index} step {step}"
                # The time zone is the task's own: NOW() shifts by the offset.
                assert await one("SELECT TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW())") in {
                    (_minutes(time_zone),), (_minutes(time_zone) - 1,)}
            await barrier.wait()
            await cur.execute("SELECT n FROM t WHERE owner = %s ORDER BY n", (index,))
            return [row[0] for row in await cur.fetchall()]
    finally:
        conn.close()


def _minutes(time_zone: str) -> int:
    sign = -1 if time_zone.startswith("-") else 1
    hours, minutes = time_zone[1:].split(":")
    return sign * (int(hours) * 60 + int(minutes))


async def _many_tasks(connect: Connect, tasks: int, database: str) -> list[list[int]]:
    barrier = asyncio.Barrier(tasks)
    async with asyncio.timeout(DEADLINE * 2):
        return await asyncio.gather(
            *(_task(connect, index, barrier, database) for index in range(tasks))
        )


DRIVERS = {"aiomysql": _aiomysql_connect, "asyncmy": _asyncmy_connect}


@pytest.mark.parametrize("driver", sorted(DRIVERS))
async def test_many_tasks_through_a_pool_of_two(
    driver: str, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    _create_table(db)
    make_connect = DRIVERS[driver]
    # The same code directly first (a few tasks): the reference for what each sees.
    direct = await _many_tasks(make_connect(db.host, db.port, db), 3, db.database)
    assert direct == [list(range(STEPS))] * 3
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM t")

    gate = gate_factory("--pool-size", "2")
    with ConnectionSampler(db) as sampler:
        results = await _many_tasks(make_connect(gate.host, gate.port, db), TASKS, db.database)
    for index, values in enumerate(results):
        assert values == list(range(STEPS)), f"task {index}"
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT owner, COUNT(*), SUM(n) FROM t GROUP BY owner ORDER BY owner")
        assert cur.fetchall() == tuple(
            (index, STEPS, sum(range(STEPS))) for index in range(TASKS))
    assert 1 <= sampler.peak <= 2, f"upstream connections: {sampler.samples}"


async def test_aiomysql_streaming_cursor_beside_other_tasks(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """An unbuffered (SSCursor) result read slowly in chunks holds its upstream connection
    until it is read; the other tasks share the other one meanwhile."""
    _create_table(db)
    rows = 20000
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        numbers = db.server.dialect.numbers(0, rows - 1)
        cur.execute(f"INSERT INTO t (owner, n) SELECT 999, seq FROM {numbers}")
    gate = gate_factory("--pool-size", "2")
    connect = _aiomysql_connect(gate.host, gate.port, db)
    streaming_started = asyncio.Event()
    streamed_done = asyncio.Event()

    async def stream() -> list[int]:
        conn = await connect(autocommit=True)
        try:
            async with conn.cursor(aiomysql.SSCursor) as cur:
                await cur.execute("SELECT n FROM t WHERE owner = 999 ORDER BY n")
                got: list[int] = []
                while True:
                    chunk = await cur.fetchmany(500)
                    if not chunk:
                        break
                    got += [row[0] for row in chunk]
                    streaming_started.set()
                    await asyncio.sleep(0)  # let the other tasks run between chunks
            return got
        finally:
            streamed_done.set()
            conn.close()

    async def other(index: int) -> int:
        conn = await connect(autocommit=True)
        try:
            await streaming_started.wait()
            count = 0
            async with conn.cursor() as cur:
                # Until the stream ends, and at least a few statements.
                while not streamed_done.is_set() or count < 5:
                    await cur.execute("SELECT %s, COUNT(*) FROM t WHERE owner = %s",
                                      (index, index))
                    assert await cur.fetchone() == (index, 0)
                    count += 1
            return count
        finally:
            conn.close()

    async with asyncio.timeout(DEADLINE):
        streaming = asyncio.ensure_future(stream())
        counts = await asyncio.gather(*(other(i) for i in range(8)))
        streamed = await streaming
    assert streamed == list(range(rows))
    assert all(count >= 5 for count in counts), counts
