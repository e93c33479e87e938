"""Session state that the server's trackers report wrongly or not at all, through a pool
smaller than the clients (shared/PROTOCOL-NOTES.md; mysqlgate/sql_effects.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from harness import Gate, ScratchDb, fetch_rows


@pytest.mark.only_on("mariadb", why="SET STATEMENT ... FOR is MariaDB's")
def test_set_statement_values_are_temporary(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """SET STATEMENT ... FOR: the trackers report the statement's temporary values as if
    the session had changed. A must keep its own value, and must not be pinned for it:
    B gets the one connection without waiting for A to leave."""
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "3")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        ((default,),) = fetch_rows(a, "SELECT @@max_statement_time")
        fetch_rows(a, "SET STATEMENT max_statement_time = 5 FOR DO 1")
        fetch_rows(a, "SET STATEMENT max_statement_time = 5 FOR SELECT 1")
        assert fetch_rows(b, "SELECT 2") == ((2,),)
        assert fetch_rows(a, "SELECT @@max_statement_time") == ((default,),)
        assert fetch_rows(b, "SELECT @@max_statement_time") == ((default,),)


@pytest.mark.only_on("mariadb", why="sequences are MariaDB's")
def test_lastval_set_through_a_column_default_stays_with_its_client(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """An INSERT can take a sequence's next value through a column DEFAULT, which neither
    the text nor the trackers show. B's LASTVAL() must not read A's."""
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE s")
        cursor.execute("CREATE TABLE sq (id INT DEFAULT NEXTVAL(s), v INT)")
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "5")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        fetch_rows(a, "INSERT INTO sq (v) VALUES (1)")
        assert fetch_rows(b, "SELECT LASTVAL(s)") == ((None,),)
        assert fetch_rows(b, "SELECT PREVIOUS VALUE FOR s") == ((None,),)
        # A's own LASTVAL(s) is gone with the reset B's read needed (directly it is 1):
        # a difference the README lists.


def test_one_shot_variables_pin_rather_than_move(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """insert_id is used by the next INSERT on the connection and then forgotten,
    unreported: A's must serve A's own INSERT, never B's, and never be replayed."""
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cursor:
        cursor.execute("CREATE TABLE ai (id INT AUTO_INCREMENT PRIMARY KEY, v CHAR(1))")
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "5")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        fetch_rows(a, "SET insert_id = 100")
        b.begin()
        fetch_rows(b, "INSERT INTO ai (v) VALUES ('b')")  # on A's connection, had A let it go
        fetch_rows(a, "INSERT INTO ai (v) VALUES ('a')")
        b.commit()
        fetch_rows(a, "INSERT INTO ai (v) VALUES ('c')")
        assert fetch_rows(a, "SELECT v, id FROM ai ORDER BY v") == (
            ("a", 100), ("b", 1), ("c", 101))
        fetch_rows(a, "SET timestamp = 1000000000")
        assert fetch_rows(a, "SELECT UNIX_TIMESTAMP()") == ((1000000000,),)
        fetch_rows(a, "SET timestamp = DEFAULT")
        ((now,),) = fetch_rows(a, "SELECT UNIX_TIMESTAMP()")
        assert now > 1700000000


@pytest.mark.only_on("mariadb", why="EXECUTE IMMEDIATE is MariaDB's")
def test_named_lock_through_execute_immediate_stays_with_its_client(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """The lock is taken by a statement written in a string: the client must keep the
    connection that holds it, as it keeps a lock taken directly."""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "5")
    with contextlib.closing(gate.connect()) as a, contextlib.closing(gate.connect()) as b:
        fetch_rows(a, "EXECUTE IMMEDIATE 'DO GET_LOCK(''job'', 0)'")
        b.begin()
        fetch_rows(b, "SELECT 1")  # B takes the connection A used last, had A let it go
        assert fetch_rows(a, "SELECT IS_USED_LOCK('job') = CONNECTION_ID()") == ((1,),)
        assert fetch_rows(b, "SELECT IS_USED_LOCK('job') = CONNECTION_ID()") == ((0,),)
        b.commit()
