"""Several upstream accounts in one mysqlgate (issue 6): each with a pool of its own,
chosen by the user name a client logs in with, and COM_CHANGE_USER between them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import mysql.connector
import MySQLdb
import pymysql
import pytest
from harness import Gate, ScratchDb


def _rows(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _pymysql(gate: Gate, db: ScratchDb, **kwargs: Any) -> pymysql.connections.Connection:
    params: dict[str, Any] = {"host": gate.host, "port": gate.port, "user": db.user,
                              "password": db.password, "database": db.database,
                              "ssl_disabled": True, "autocommit": True}
    params.update(kwargs)
    return pymysql.connect(**params)


@pytest.mark.db_options(max_user_connections=3)
def test_each_account_has_its_own_pool(
    gate_factory: Callable[..., Gate], db: ScratchDb, db_factory: Callable[..., ScratchDb]
) -> None:
    """Two accounts behind one listener: each client is served by its own account's
    connections (CURRENT_USER(), its database), each pool sized from its own limit."""
    other = db_factory(max_user_connections=5)
    gate = gate_factory("--upstream", other.upstream_url)
    with contextlib.ExitStack() as stack:
        clients = []
        for account, count in ((db, 2), (other, 4)):  # each account's auto pool size
            for _ in range(count):
                conn = stack.enter_context(contextlib.closing(_pymysql(gate, account)))
                conn.begin()
                clients.append((account, conn))
        for account, conn in clients:  # each holds a connection of its account's pool
            assert _rows(conn, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), DATABASE()") \
                == [(account.user, account.database)]
        assert db.processlist_count() == 2  # auto size: max_user_connections - 1
        assert other.processlist_count() == 4
        for _, conn in clients:
            conn.commit()
    # A password is checked against the account the user names.
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        _pymysql(gate, other, password=db.password)
    assert excinfo.value.args[0] == 1045


def test_change_user_between_accounts(
    gate_factory: Callable[..., Gate], db: ScratchDb, db_factory: Callable[..., ScratchDb]
) -> None:
    """COM_CHANGE_USER (mysql-connector and mysqlclient) moves a client to another
    account and starts a new session there, as the server does: its user variables,
    transaction and statements are gone. A wrong password is refused."""
    other = db_factory()
    gate = gate_factory("--upstream", other.upstream_url, "--pool-size", "2")
    conn = mysql.connector.connect(host=gate.host, port=gate.port, user=db.user,
                                   password=db.password, database=db.database,
                                   use_pure=True, ssl_disabled=True)
    try:
        _rows(conn, "SET @mine = 1")
        conn.cmd_change_user(username=other.user, password=other.password,
                             database=other.database)
        assert _rows(conn, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), DATABASE(), @mine")\
            == [(other.user, other.database, None)]
        conn.cmd_change_user(username=db.user, password=db.password, database=db.database)
        assert _rows(conn, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), DATABASE()") == [
            (db.user, db.database)]
        with pytest.raises(mysql.connector.Error) as excinfo:
            conn.cmd_change_user(username=other.user, password="wrong", database=None)
        assert excinfo.value.errno == 1045
    finally:
        with contextlib.suppress(mysql.connector.Error):
            conn.close()

    my = MySQLdb.connect(host=gate.host, port=gate.port, user=db.user, password=db.password,
                         database=db.database)
    try:
        my.change_user(other.user, other.password, other.database)
        assert _rows(my, "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), DATABASE()") == [
            (other.user, other.database)]
    finally:
        my.close()
