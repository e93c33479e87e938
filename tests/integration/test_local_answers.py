"""Settings statements answered by mysqlgate itself (issue 6, cheap per-request
connections): drivers open every connection with SET statements (PyMySQL's SET
AUTOCOMMIT = 0, Django's SET SESSION TRANSACTION ..., mysqlclient's SET NAMES); once
the server has accepted one, mysqlgate answers it without a round trip, exactly as the
server did, and the setting reaches the server ahead of the client's next statement."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from harness import DbServer, Gate, ScratchDb, fetch_rows
from pymysql.constants import CLIENT, COMMAND

from mysqlgate.protocol.messages import OK


def _raw_answers(conn: pymysql.connections.Connection, sql: str) -> list[bytes]:
    """The payloads of the reply to one COM_QUERY, as they came off the wire."""
    conn._execute_command(COMMAND.COM_QUERY, sql)
    payloads = []
    while True:
        payloads.append(conn._read_packet().get_all_data())
        # A settings statement answers with OK packets only; MORE_RESULTS: another follows.
        if payloads[-1][0] != 0 or not _more_results(payloads[-1]):
            return payloads


def _parsed(payloads: list[bytes]) -> list[Any]:
    """OK packets as their fields; the tracked variables as a set: the server reports
    them in no fixed order (measured: it varies from one connection to the next)."""
    out = []
    for payload in payloads:
        ok = OK.parse(payload, CLIENT.SESSION_TRACK)
        state = ok.session_state
        out.append((ok.header, ok.affected_rows, ok.last_insert_id, ok.status, ok.warnings,
                    ok.info, None if state is None else (frozenset(state.variables),
                                                         state.schema, state.state_changed)))
    return out


def _more_results(ok: bytes) -> bool:
    pos = 1
    for _ in range(2):  # affected rows, last insert id (length-encoded)
        pos += {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(ok[pos], 1)
    return bool(int.from_bytes(ok[pos : pos + 2], "little") & 0x0008)


def _set_statements_run(root: pymysql.connections.Connection) -> int:
    # One root connection for every look: a new one would count its own SET NAMES.
    return int(fetch_rows(root, "SHOW GLOBAL STATUS LIKE 'Com_set_option'")[0][1])


STATEMENTS = (
    "SET AUTOCOMMIT = 0",
    "SET NAMES utf8mb4",
    "SET SESSION sql_mode = 'ANSI', time_zone = '+03:00'",
    "SET SQL_AUTO_IS_NULL = 0; SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "USE information_schema",
)


@pytest.mark.parametrize("sql", STATEMENTS)
def test_local_answer_is_the_servers_answer(
    gate_factory: Callable[..., Gate], db: ScratchDb, sql: str
) -> None:
    """The second client's SET is answered by mysqlgate: the OK packets a direct
    connection gets (status flags, session-tracking data as the client's own tracking
    settings ask), and its session then has the setting."""
    flags = CLIENT.MULTI_STATEMENTS | CLIENT.SESSION_TRACK
    gate = gate_factory("--pool-size", "1")
    state_sql = db.server.dialect.translate(
        "SELECT @@autocommit, @@sql_mode, @@time_zone, @@tx_isolation,"
        " @@character_set_client, DATABASE()")
    with contextlib.closing(db.connect(client_flag=flags, ssl_disabled=True)) as direct:
        expected = _parsed(_raw_answers(direct, sql))
        after = fetch_rows(direct, state_sql)
    with contextlib.closing(gate.connect(client_flag=flags, ssl_disabled=True)) as first:
        assert _parsed(_raw_answers(first, sql)) == expected  # from the server
    with contextlib.closing(gate.connect(client_flag=flags, ssl_disabled=True)) as second:
        assert _parsed(_raw_answers(second, sql)) == expected  # from mysqlgate
        assert fetch_rows(second, state_sql) == after


def test_connection_per_request_sends_the_setting_once(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """PyMySQL connections, each opened with autocommit off (PyMySQL sends SET
    AUTOCOMMIT = 0), one query, closed: after the first, the server runs no SET at all:
    mysqlgate answers it, and the upstream connection already has autocommit off."""
    gate = gate_factory("--pool-size", "1")
    with contextlib.closing(gate.connect(autocommit=False, ssl_disabled=True)) as first:
        assert fetch_rows(first, "SELECT @@autocommit") == ((0,),)  # the server learns the SET
    with contextlib.closing(private_server.root_connect()) as root:
        before = _set_statements_run(root)
        for n in range(20):
            with contextlib.closing(gate.connect(autocommit=False, ssl_disabled=True)) as conn:
                assert conn.get_autocommit() is False
                assert fetch_rows(conn, f"SELECT @@autocommit, {n}") == ((0, n),)
        ran = _set_statements_run(root) - before
    assert ran == 0, f"the server ran {ran} SET statements for the next 20 connections"


def test_a_failing_setting_is_never_answered_locally(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    gate = gate_factory("--pool-size", "1")
    for _ in range(3):
        with contextlib.closing(gate.connect(ssl_disabled=True)) as conn:
            with pytest.raises(pymysql.err.MySQLError) as excinfo:
                fetch_rows(conn, "SET time_zone = 'Not/AZone'")
            assert excinfo.value.args[0] == 1298  # unknown time zone, from the server
            assert fetch_rows(conn, "SELECT 1") == ((1,),)


def test_settings_answered_locally_follow_the_client_to_its_connection(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A and B alternate on a pool of one, each with its own settings answered locally:
    each statement runs with its own client's settings."""
    gate = gate_factory("--pool-size", "1")
    with contextlib.closing(gate.connect(ssl_disabled=True)) as warm:
        fetch_rows(warm, "SET time_zone = '+01:00'")
        fetch_rows(warm, "SET time_zone = '+02:00'")
    with contextlib.closing(gate.connect(ssl_disabled=True)) as a, \
            contextlib.closing(gate.connect(ssl_disabled=True)) as b:
        for _ in range(3):
            fetch_rows(a, "SET time_zone = '+01:00'")
            fetch_rows(b, "SET time_zone = '+02:00'")
            assert fetch_rows(a, "SELECT @@time_zone") == (("+01:00",),)
            assert fetch_rows(b, "SELECT @@time_zone") == (("+02:00",),)


@pytest.mark.parametrize("sql", ["COMMIT", "ROLLBACK", "rollback work"])
def test_a_bare_commit_or_rollback_outside_a_transaction_needs_no_connection(
    gate_factory: Callable[..., Gate], db: ScratchDb, sql: str
) -> None:
    """Pools send ROLLBACK whenever a connection comes back (SQLAlchemy): with no
    transaction open it changes nothing, and is answered at once, as the server would,
    while every upstream connection is taken (it used to wait pool.queue_timeout and
    get 1040)."""
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "2")
    with contextlib.closing(db.connect(client_flag=CLIENT.SESSION_TRACK,
                                       ssl_disabled=True)) as direct:
        expected = _parsed(_raw_answers(direct, sql))
    with contextlib.closing(gate.connect(ssl_disabled=True)) as holder, \
            contextlib.closing(gate.connect(client_flag=CLIENT.SESSION_TRACK,
                                            ssl_disabled=True)) as client:
        holder.begin()
        fetch_rows(holder, "SELECT 1")  # holds the pool's one connection
        assert _parsed(_raw_answers(client, sql)) == expected
        # What starts a transaction goes to the server (and waits its turn).
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            client.begin()
        assert excinfo.value.args[0] == 1040
        holder.rollback()
