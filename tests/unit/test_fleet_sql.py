"""What the fleet's statements do when the server answers one with an error: which errors
end the sharing (the server refuses it for good) and which concern one statement, and
that a named lock a failed statement may have left is never left on the connection.

The server is a script: each statement gets the answer the test gives it, in order, as
BackendConnection.query / query_rows would return or raise it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from mysqlgate.errors import ServerError
from mysqlgate.fleet_sql import CannotShare, FleetSql, Park
from mysqlgate.protocol.messages import ERR

THREAD = 41


def err(code: int) -> ServerError:
    return ServerError(ERR(code, f"error {code}"))


class ScriptedBackend:
    """Answers each statement with the next of `answers` that matches its start."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.sent: list[str] = []
        self.closed = False
        self.aborted = False
        self.thread_id = THREAD
        self.session = SimpleNamespace(values=None)

    async def _answer(self, sql: bytes) -> Any:
        text = sql.decode()
        self.sent.append(text)
        await asyncio.sleep(0)
        for start, queue in self.answers.items():
            if text.startswith(start) and queue:
                answer = queue.pop(0)
                if isinstance(answer, BaseException):
                    raise answer
                return answer
        return []

    async def query_rows(self, sql: bytes) -> Any:
        return await self._answer(sql)

    async def query(self, sql: bytes) -> Any:
        return await self._answer(sql)

    def abort(self) -> None:
        self.aborted = self.closed = True


def census_rows() -> list[list[str | None]]:
    return [[str(THREAD), "Query", "0", None], ["7", "Sleep", "30", None]]


@pytest.mark.parametrize("code", [1053, 1317, 3024, 1969])
async def test_an_error_of_one_statement_leaves_the_sharing_on_and_no_lock(code: int) -> None:
    """A restart's 1053, a KILL QUERY, a statement time limit (MySQL 3024, MariaDB 1969):
    the error goes on as itself, and the grow lock the GET_LOCK before it took is
    released on the spot."""
    sql = FleetSql("app", mariadb=False)
    backend = ScriptedBackend({"SELECT GET_LOCK": [[["1"]]], "SELECT ID": [err(code)]})
    with pytest.raises(ServerError) as raised:
        await sql.locked_census(backend, (), release=False)  # type: ignore[arg-type]
    assert not isinstance(raised.value, CannotShare) and raised.value.err.code == code
    assert f"DO RELEASE_LOCK({sql.grow_lock})" in backend.sent
    assert not backend.aborted


@pytest.mark.parametrize("code", [1227, 1142, 1146, 1305])
async def test_a_refusal_ends_the_sharing(code: int) -> None:
    sql = FleetSql("app", mariadb=True)
    backend = ScriptedBackend({"SELECT ID": [err(code)]})
    with pytest.raises(CannotShare):
        await sql.count(backend, ())  # type: ignore[arg-type]


async def test_a_lock_that_cannot_be_released_ends_the_connection() -> None:
    sql = FleetSql("app", mariadb=True)
    backend = ScriptedBackend({"SELECT GET_LOCK": [[["1"]]], "SELECT ID": [err(1053)],
                               "DO RELEASE_LOCK": [err(1053)]})
    with pytest.raises(ServerError):
        await sql.locked_census(backend, (), release=True)  # type: ignore[arg-type]
    assert backend.aborted  # the server releases a closed connection's locks


async def test_a_take_whose_look_fails_releases_the_door() -> None:
    sql = FleetSql("app", mariadb=True)
    backend = ScriptedBackend({"SELECT GET_LOCK": [[["1"]]], "SELECT COUNT": [err(1317)]})
    park = Park(thread=7, kind="spare", gate="other:1", have=2, waiting=0)
    with pytest.raises(ServerError):
        await sql.take(backend, park)  # type: ignore[arg-type]
    door = f"'{sql.door_prefix}7'"
    assert f"DO RELEASE_LOCK({door})" in backend.sent
    assert not any(text.startswith("KILL") for text in backend.sent)


async def test_a_count_that_works_is_read() -> None:
    """The script is sound: a count that succeeds sees the other thread."""
    sql = FleetSql("app", mariadb=True)
    backend = ScriptedBackend({"SELECT GET_LOCK": [[["1"]]], "SELECT ID": [census_rows()]})
    census = await sql.locked_census(backend, (), release=True)  # type: ignore[arg-type]
    assert census is not None and (census.total, census.mine, census.others) == (2, 1, 1)
    assert backend.sent[-1] == f"DO RELEASE_LOCK({sql.grow_lock})"
