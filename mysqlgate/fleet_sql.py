"""What the fleet (fleet.py) says to the server and reads back: the account's threads
counted, the named locks, the parked statements other mysqlgates see, the KILL that
takes one of them. Every statement here runs on a connection the caller holds and has
not lent to a client, and leaves no lock behind when the caller gives it back.

Names of the locks: `mysqlgate.<16 hex of the account's user>.grow` (the mutex around
"count, then connect") and `...door.<thread id>` (the claim on a parked thread before
it is killed). The server keeps named locks for the whole server, so the user's digest
keeps accounts apart; 64 characters at most (MySQL's limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import time
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from typing import Any

from .backend import BackendConnection
from .errors import ServerError
from .upstream_session import upstream_of

LOCK_WAIT = 2  # seconds GET_LOCK waits for another mysqlgate's count-then-connect
ACTIVE_WITHIN = 2  # an account thread idle less than this many seconds is active
MARK = "/* mysqlgate-fleet "
MARKER = re.compile(r"/\* mysqlgate-fleet (spare|offer|want) gate=(\S+) have=(\d+) "
                    r"waiting=(\d+) \*/")
INTERRUPTED = 1317  # MariaDB's answer to a KILLed SLEEP (MySQL's SLEEP returns 1)
UNKNOWN_THREAD = 1094
# The server refuses what sharing needs, for good: access denied (to a database, a
# table, a privilege such as PROCESS on some hosts), no such table or function, not
# supported. Any other error (1053 during a shutdown, a KILL QUERY, a statement time
# limit) concerns one statement on one connection: the fleet goes on.
REFUSALS = frozenset({1044, 1142, 1143, 1227, 1146, 1305, 1235, 1095})

Rows = list[list[str | None]]


class CannotShare(Exception):
    """The server does not let mysqlgates see each other this way."""


@dataclass(frozen=True)
class Park:
    """Another mysqlgate's parked connection, as the PROCESSLIST showed it."""

    thread: int
    kind: str  # spare, offer or want
    gate: str
    have: int  # that mysqlgate's connections, the parked one included
    waiting: int  # its clients waiting then


@dataclass
class Census:
    """The account's threads on the server, counted once."""

    at: float
    total: int
    mine: int
    others_active: int  # other programs' threads that ran something lately
    parks: list[Park]

    @property
    def others(self) -> int:
        return self.total - self.mine

    @property
    def shared(self) -> bool:
        """Another mysqlgate (or program) uses the account now."""
        return self.others_active > 0 or bool(self.parks)


def gate_name() -> str:
    """How this mysqlgate signs its parked connections (for people reading PROCESSLIST)."""
    return f"{socket.gethostname().split('.')[0][:24]}:{os.getpid()}"


def marker(kind: str, gate: str, have: int, waiting: int) -> str:
    return f"{MARK}{kind} gate={gate} have={have} waiting={waiting} */"


class FleetSql:
    """The statements, for the account of `user`; `queries` counts them."""

    def __init__(self, user: str, mariadb: bool) -> None:
        digest = hashlib.sha1(user.encode()).hexdigest()[:16]
        self.grow_lock = quoted(f"mysqlgate.{digest}.grow")
        self.door_prefix = f"mysqlgate.{digest}.door."
        # information_schema.PROCESSLIST is the server's list of threads, as the limit
        # counts them. MySQL warns on each read (deprecated), so a `DO 0` follows, which
        # clears the warning before any client can see it. Its performance_schema
        # .processlist says no warning, but was measured to miss a thread being opened or
        # closed now and then (2 counts in 2,000 under churn): a gate would grow into a
        # slot still taken.
        self.table = "information_schema.PROCESSLIST"
        self.table_warns = not mariadb
        self.queries = 0

    def _census_sql(self) -> str:
        return (f"SELECT ID, COMMAND, TIME, IF(INFO LIKE '{MARK}%', LEFT(INFO, 160), NULL) "
                f"FROM {self.table} WHERE USER = SUBSTRING_INDEX(USER(), '@', 1)")

    async def locked_census(self, backend: BackendConnection, mine: Collection[int],
                            release: bool) -> Census | None:
        """Count under the `grow` lock; None if another mysqlgate held it too long.
        With `release` false the lock stays until release_grow() (after growing)."""
        (locked,), rows = await self._locking(
            backend, self.grow_lock, f"SELECT GET_LOCK({self.grow_lock}, {LOCK_WAIT})",
            self._census_sql())
        if locked[0] != "1":
            return None
        try:
            census = self._read(backend, rows, mine)
        finally:
            if release:
                await self.release_grow(backend)
        return census

    async def release_grow(self, backend: BackendConnection) -> None:
        if not backend.closed:
            await self.query(backend, f"DO RELEASE_LOCK({self.grow_lock})")

    async def _locking(self, backend: BackendConnection, lock: str,
                       *statements: str) -> list[Rows]:
        """Statements that begin by taking `lock`. If one after the GET_LOCK fails, the
        lock may be held: it is released (or, if even that fails, the connection ended,
        which releases it) before the error goes on, so it never reaches a connection
        that serves a client."""
        try:
            return await self.query(backend, *statements)
        except asyncio.CancelledError:
            backend.abort()
            raise
        except Exception:
            if not backend.closed:
                try:
                    await self.query(backend, f"DO RELEASE_LOCK({lock})")
                except Exception:
                    backend.abort()
            raise

    async def count(self, backend: BackendConnection, mine: Collection[int]) -> Census:
        (rows,) = await self.query(backend, self._census_sql())
        return self._read(backend, rows, mine)

    def _read(self, backend: BackendConnection, rows: Rows, mine: Collection[int]) -> Census:
        if not any(int(row[0] or 0) == backend.thread_id for row in rows):
            raise CannotShare(f"{self.table} does not show the account's own threads")
        mine = {*mine, backend.thread_id}  # a new one is not in the pool's lists yet
        count_mine = active = 0
        parks = []
        for ident, command, seconds, info in rows:
            thread = int(ident or 0)
            if thread in mine:
                count_mine += 1
                continue
            if command != "Sleep" or int(seconds or 0) < ACTIVE_WITHIN:
                active += 1
            found = MARKER.match(info or "")
            if found:
                kind, gate, have, waiting = found.groups()
                parks.append(Park(thread, kind, gate, int(have), int(waiting)))
        return Census(time.monotonic(), len(rows), count_mine, active, parks)

    async def park(self, backend: BackendConnection, mark: str, seconds: float) -> bool:
        """Run the parked statement for `seconds`; False when a KILL ended it (the
        connection is gone then)."""
        try:
            (result,) = await self.query(backend, f"{mark} SELECT SLEEP({seconds})")
        except ServerError as exc:
            if exc.err.code == INTERRUPTED:
                return False
            raise
        except (ConnectionError, OSError):
            return False
        return result[0][0] != "1"

    async def door_free(self, backend: BackendConnection) -> bool:
        """Whether no other mysqlgate claimed this parked connection: asked on the
        connection itself before it serves a client again."""
        door = quoted(f"{self.door_prefix}{backend.thread_id}")
        (got,), _ = await self._locking(backend, door, f"SELECT GET_LOCK({door}, 0)",
                                        f"DO RELEASE_LOCK({door})")
        return got[0] == "1"

    async def take(self, backend: BackendConnection, park: Park) -> bool:
        """End another mysqlgate's parked connection, if it is still parked: claim its
        door, look again, KILL (an account may end its own threads). The owner looks at
        the door before it lends that connection again, so a KILL never meets a
        client's statement."""
        door = quoted(f"{self.door_prefix}{park.thread}")
        claimed, still = await self._locking(
            backend, door, f"SELECT GET_LOCK({door}, 0)",
            f"SELECT COUNT(*) FROM {self.table} WHERE ID = {park.thread} AND "
            f"INFO LIKE '{MARK}%' AND INFO NOT LIKE '{MARK}want%'")
        if claimed[0][0] != "1":
            return False
        try:
            if still[0][0] == "0":
                return False
            try:
                await self.query(backend, f"KILL {park.thread}")
            except ServerError as exc:
                if exc.err.code != UNKNOWN_THREAD:
                    raise
                return False
        finally:
            await self.query(backend, f"DO RELEASE_LOCK({door})")
        return True

    async def query(self, backend: BackendConnection, *statements: str) -> list[Rows]:
        """Send the statements in one write (each starts before the next is sent, in
        order); each one's rows (none for DO and KILL)."""
        asked = len(statements)
        if self.table_warns and any(self.table in sql for sql in statements):
            statements = (*statements, "DO 0")  # clears MySQL's deprecation warning
        selects = [sql.startswith(("SELECT", MARK)) for sql in statements]
        calls: list[Coroutine[Any, Any, Any]] = [
            backend.query_rows(sql.encode()) if select else backend.query(sql.encode())
            for sql, select in zip(statements, selects, strict=True)]
        self.queries += len(statements)
        results = await asyncio.gather(*calls, return_exceptions=True)
        upstream_of(backend).values = None  # ROW_COUNT(), FOUND_ROWS() are the fleet's
        rows: list[Rows] = []
        for result, select in zip(results, selects, strict=True):
            if isinstance(result, ServerError) and result.err.code in REFUSALS:
                raise CannotShare(str(result)) from result
            if isinstance(result, BaseException):
                raise result
            rows.append(result if select else [])
        return rows[:asked]


def quoted(text: str) -> str:
    """A string literal (the names here hold only [0-9a-z.] anyway)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
