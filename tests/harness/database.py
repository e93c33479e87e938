"""A scratch database and account on a test server: created for one test, dropped after it."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Mapping
from typing import Any

import pymysql
from pymysql.constants import ER

from .server import DbServer

# CREATE USER ... WITH <limit> n; the keys a db_options marker may carry besides `password`.
RESOURCE_LIMITS = {
    "max_user_connections": "MAX_USER_CONNECTIONS",
    "max_connections_per_hour": "MAX_CONNECTIONS_PER_HOUR",
    "max_queries_per_hour": "MAX_QUERIES_PER_HOUR",
    "max_updates_per_hour": "MAX_UPDATES_PER_HOUR",
    "max_statement_time": "MAX_STATEMENT_TIME",
}

# The account exists for both hosts: '%' matches TCP from 127.0.0.1 (names are not resolved),
# 'localhost' matches the unix socket. Per-account limits count each host separately.
ACCOUNT_HOSTS = ("%", "localhost")


class ScratchDb:
    """Database `t_<random>` and user `u_<random>` (ALL on that database) on `server`.

    `create()` makes them, `drop()` kills the user's connections and removes both.
    """

    def __init__(self, server: DbServer, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = set(options) - set(RESOURCE_LIMITS) - {"password"}
        if unknown:
            raise ValueError(
                f"unknown db_options {sorted(unknown)}; "
                f"known: password, {', '.join(RESOURCE_LIMITS)}"
            )
        suffix = secrets.token_hex(6)
        self.server = server
        self.database = f"t_{suffix}"
        self.user = f"u_{suffix}"
        self.password: str = options.pop("password", secrets.token_hex(12))
        self.limits = options

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def socket(self) -> str:
        return self.server.socket

    @property
    def upstream_url(self) -> str:
        """mysql://USER:PASS@127.0.0.1:PORT/DB, what mysqlgate's --upstream takes."""
        return f"mysql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def create(self) -> None:
        for name, value in self.limits.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"db_options {name} must be a number, not {value!r}")
        with_clause = " ".join(f"{RESOURCE_LIMITS[k]} {v}" for k, v in self.limits.items())
        with contextlib.closing(self.server.root_connect()) as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{self.database}`")
            for host in ACCOUNT_HOSTS:
                cursor.execute(
                    f"CREATE USER %s@%s IDENTIFIED BY %s"
                    f"{' WITH ' + with_clause if with_clause else ''}",
                    (self.user, host, self.password),
                )
                cursor.execute(f"GRANT ALL ON `{self.database}`.* TO %s@%s", (self.user, host))

    def drop(self) -> None:
        """Kill the user's connections, then drop the user and the database."""
        self.kill_user_connections()
        with contextlib.closing(self.server.root_connect()) as conn, conn.cursor() as cursor:
            for host in ACCOUNT_HOSTS:
                cursor.execute("DROP USER IF EXISTS %s@%s", (self.user, host))
            cursor.execute(f"DROP DATABASE IF EXISTS `{self.database}`")

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A direct PyMySQL connection to the server as this user over TCP, autocommit on.

        Pass unix_socket=db.socket to use the socket (the user's 'localhost' account).
        """
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "autocommit": True,
        }
        params.update(kwargs)
        return pymysql.connect(**params)

    def root(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection to the server as root (no database selected)."""
        return self.server.root_connect(**kwargs)

    def connection_ids(self) -> list[int]:
        """Server thread ids of this user's connections, as seen by the server now."""
        rows = self.server.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s ORDER BY ID",
            (self.user,),
        )
        return [int(row[0]) for row in rows]

    def processlist_count(self) -> int:
        """How many server connections this user has now."""
        return len(self.connection_ids())

    def wait_processlist_count(
        self, expected: int, timeout: float = 5.0, interval: float = 0.05
    ) -> int:
        """Poll until the user has `expected` connections or `timeout` passes; return the
        last count. Disconnects reach the processlist a little after the client closes."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.processlist_count()
            if count == expected or time.monotonic() >= deadline:
                return count
            time.sleep(interval)

    def kill_user_connections(self) -> int:
        """KILL every server connection of this user; returns how many were killed."""
        if not self.server.running:
            return 0
        killed = 0
        with contextlib.closing(self.server.root_connect()) as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (self.user,)
            )
            for (thread_id,) in cursor.fetchall():
                try:
                    cursor.execute("KILL %s", (int(thread_id),))
                except pymysql.err.OperationalError as exc:
                    if exc.args[0] != ER.NO_SUCH_THREAD:  # it went away by itself meanwhile
                        raise
                else:
                    killed += 1
        return killed

    def __repr__(self) -> str:
        return f"<ScratchDb {self.user}@{self.host}:{self.port}/{self.database}>"
