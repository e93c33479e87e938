"""Client connections with particular habits, and small helpers for tests that use
clients."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pymysql


def fetch_rows(conn: pymysql.connections.Connection, sql: str) -> tuple[tuple[Any, ...], ...]:
    """Run `sql` on a PyMySQL connection and return all its rows."""
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return tuple(cursor.fetchall())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll `condition` until it holds; fail the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class LoginOnly(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL without its SET NAMES after the login (pass autocommit=None, or it sends
    SET AUTOCOMMIT too): nothing reaches the server but the login itself."""

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        pass
