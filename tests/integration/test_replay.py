"""What mysqlgate sends ahead of a client's statement when the client moves to another
upstream connection (its session replayed): never an error for a statement that ran,
nothing the server changes on its own replayed, no trace the client can see (issue 14).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pymysql
import pytest
from harness import Gate, ScratchDb, fetch_rows, wait_until


def test_alternating_inserts_are_each_written_once_and_answered(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """Three autocommit clients take turns with single-row INSERTs through a pool of two,
    so each statement may run on a connection another client used last. On MySQL every
    reply reports the read-only statement_id; replayed as part of the session it failed
    (1238) while the INSERT behind it ran: an error for a row that was written."""
    with contextlib.closing(db.connect()) as direct:
        fetch_rows(direct, "CREATE TABLE t (id INT PRIMARY KEY, client INT NOT NULL)")
    gate = gate_factory("--pool-size", "2")
    clients = [gate.connect(ssl_disabled=True) for _ in range(3)]
    errors: list[str] = []
    try:
        for n in range(60):
            client = clients[n % 3]
            try:
                with client.cursor() as cursor:
                    cursor.execute("INSERT INTO t (id, client) VALUES (%s, %s)", (n, n % 3))
                    assert cursor.rowcount == 1
            except pymysql.err.MySQLError as exc:
                errors.append(f"insert {n}: {exc!r}")
    finally:
        for client in clients:
            client.close()
    with contextlib.closing(db.connect()) as direct:
        rows = fetch_rows(direct, "SELECT id, client FROM t ORDER BY id")
    assert errors == []
    assert rows == tuple((n, n % 3) for n in range(60))


# A session variable that an account may set only with a privilege, and the privilege.
PRIVILEGED = {
    "mariadb": ("sql_log_bin", "BINLOG ADMIN"),
    "mysql": ("sql_log_bin", "SYSTEM_VARIABLES_ADMIN"),
}


def _grant(db: ScratchDb, verb: str, privilege: str) -> None:
    preposition = "TO" if verb == "GRANT" else "FROM"
    with contextlib.closing(db.root()) as root, root.cursor() as cursor:
        for host in ("%", "localhost"):
            cursor.execute(f"{verb} {privilege} ON *.* {preposition} %s@%s", (db.user, host))


@pytest.mark.parametrize("statement", [
    "INSERT INTO t (id) VALUES (1)",
    "UPDATE t SET id = id + 1",
])
def test_a_refused_restore_keeps_a_write_from_running(
    gate_factory: Callable[..., Gate], db: ScratchDb, statement: str
) -> None:
    """A client sets a variable its account may set; the privilege is revoked and the
    pool's connections replaced; the client's next write lands on a new connection where
    replaying its setting is refused (1227). The write must not run: the client is told
    so, and the table shows it did not."""
    variable, privilege = PRIVILEGED[db.server.flavour]
    with contextlib.closing(db.connect()) as direct:
        fetch_rows(direct, "CREATE TABLE t (id INT PRIMARY KEY)")
        if statement.startswith("UPDATE"):
            fetch_rows(direct, "INSERT INTO t (id) VALUES (10)")
    _grant(db, "GRANT", privilege)
    gate = gate_factory("--pool-size", "2")
    with contextlib.closing(gate.connect(ssl_disabled=True)) as client:
        fetch_rows(client, f"SET SESSION {variable} = 0")
        assert fetch_rows(client, f"SELECT @@SESSION.{variable}") == ((0,),)
        _grant(db, "REVOKE", privilege)
        db.kill_user_connections()  # the pool opens new ones, without the privilege
        wait_until(lambda: db.processlist_count() == 0, "the killed connections to go")
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            fetch_rows(client, statement)
        code, message = excinfo.value.args
        assert code == 1227, excinfo.value.args
        assert message.startswith("mysqlgate: could not restore this client's session"), message
        assert "the statement was not run" in message, message
    with contextlib.closing(db.connect()) as direct:
        assert fetch_rows(direct, "SELECT id FROM t ORDER BY id") == (
            ((10,),) if statement.startswith("UPDATE") else ())
    assert "restoring its session on upstream" in gate.log_text()


def test_a_replayed_set_leaves_no_warning(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A sql_mode that the server accepts with a warning (MySQL: 3135, NO_ZERO_DATE
    without strict mode) is replayed on the client's next connection: the client's SHOW
    WARNINGS there shows nothing of it, as directly, where that warning was cleared by a
    statement that used a table. SHOW WARNINGS is the client's first statement on the
    new connection: MySQL empties the diagnostics area at every other statement, MariaDB
    at one that uses a table."""
    mode = "NO_ZERO_DATE"
    steps = (f"SET SESSION sql_mode = '{mode}'", "SELECT COUNT(*) FROM t")
    with contextlib.closing(db.connect(ssl_disabled=True)) as direct:
        fetch_rows(direct, "CREATE TABLE t (id INT)")
        for sql in steps:
            fetch_rows(direct, sql)
        expected = fetch_rows(direct, "SHOW WARNINGS"), \
            fetch_rows(direct, "SELECT 1, @@SESSION.sql_mode")
    gate = gate_factory("--pool-size", "2")
    with contextlib.closing(gate.connect(ssl_disabled=True)) as client, \
            contextlib.closing(gate.connect(ssl_disabled=True)) as other:
        for sql in steps:
            fetch_rows(client, sql)
        ((before,),) = fetch_rows(client, "SELECT CONNECTION_ID()")
        # The other client takes the connection the first one used last, in a
        # transaction; the first one's next statement runs on the other connection,
        # behind the replay of its sql_mode.
        other.begin()
        fetch_rows(other, "SELECT 1")
        got = fetch_rows(client, "SHOW WARNINGS"), \
            fetch_rows(client, "SELECT 1, @@SESSION.sql_mode")
        ((after,),) = fetch_rows(client, "SELECT CONNECTION_ID()")  # where both ran
        assert after != before, "the client did not move: nothing was replayed"
        other.rollback()
    assert got == expected


class _WithoutDatabase(ScratchDb):
    """The scratch account, with an upstream URL that names no database."""

    def __init__(self, db: ScratchDb) -> None:  # noqa: D107 - shares db's account
        self.__dict__.update(db.__dict__)

    @property
    def upstream_url(self) -> str:
        return super().upstream_url.rsplit("/", 1)[0] + "/"


def test_a_client_without_a_database_never_finds_another_clients(
    gate_factory: Callable[..., Gate], db: ScratchDb, db_factory: Callable[..., ScratchDb]
) -> None:
    """Issue 16: behind an upstream URL without a database, a client that connected
    without one found itself in the database the previous client of its connection
    selected (no command deselects a database). As directly, DATABASE() is NULL."""
    other = db_factory()
    with contextlib.closing(db.root()) as root, root.cursor() as cursor:
        for host in ("%", "localhost"):
            cursor.execute(f"GRANT ALL ON `{other.database}`.* TO %s@%s", (db.user, host))
    gate = gate_factory("--pool-size", "1", db=_WithoutDatabase(db))
    for _ in range(3):
        with contextlib.closing(gate.connect(database=None, ssl_disabled=True)) as a:
            assert fetch_rows(a, "SELECT DATABASE()") == ((None,),)
            fetch_rows(a, f"USE `{other.database}`")
            ((a_id,),) = fetch_rows(a, "SELECT CONNECTION_ID()")
        with contextlib.closing(gate.connect(database=None, ssl_disabled=True)) as b:
            assert fetch_rows(b, "SELECT DATABASE(), CONNECTION_ID()") == ((None, a_id),)
        with contextlib.closing(gate.connect(ssl_disabled=True)) as c:  # names one
            assert fetch_rows(c, "SELECT DATABASE()") == ((db.database,),)
