"""Differential test: random sessions see through mysqlgate exactly what they see on a
direct connection, while other clients keep the small pool busy (issue 6, "Tests" item
1; shared/SPEC.md section 2).

Hypothesis generates sessions: connection options (autocommit, CLIENT_FOUND_ROWS,
CLIENT_MULTI_STATEMENTS, character set, default database) and a list of steps drawn
from a profile. Each session runs twice on freshly reset tables: directly against
MariaDB, then through mysqlgate with a pool of POOL_SIZE while BACKGROUND_CLIENTS other
clients run short transactions with session settings of their own through the same
gate, so that the session's consecutive statements land on different upstream
connections. Every step's outcome must be identical: result sets (column metadata and
values), affected rows, lastrowid, the warning count, the status flags a client can see,
error codes and messages. Only the values of CONNECTION_ID() may differ; the test
records them to check that sessions do move between upstream connections (otherwise the
test would silently degrade into "always the same connection").

The profiles that never pin (no user variables, temporary tables, locks or prepared
statements) are the point: a pinned session stays on one connection and hides what
multiplexing gets wrong. A divergence fails with the session, the step where the
results parted and both outcomes; hypothesis shrinks it first. The background clients
check their own view too (their session settings, LAST_INSERT_ID(), ROW_COUNT(), SHOW
WARNINGS, no error they did not cause): what a session under test leaves on a shared
connection shows up there, and fails the test after the examples ran.

One test per profile: `pytest tests/integration/test_differential.py -k transactions`.
mysql-connector-python sends COM_PING whenever a cursor is created, so the
prepared_binary profile's sessions ping between their statements, as that driver does.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import mysql.connector
import pymysql
import pytest
from harness import Gate, ScratchDb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysql.constants import CLIENT, FIELD_TYPE, SERVER_STATUS

POOL_SIZE = 2
BACKGROUND_CLIENTS = 3
MAX_ITEMS = 20  # steps or step patterns per session
MAX_EXAMPLES = 60  # per profile, the same ones every run
# MYSQLGATE_DIFFERENTIAL_EXAMPLES=500: that many random sessions per profile instead, new
# ones every run (to hunt, not for CI).
EXPLORE = int(os.environ.get("MYSQLGATE_DIFFERENTIAL_EXAMPLES", "0"))

# Status flags a client can see and that must match: IN_TRANS, AUTOCOMMIT,
# NO_BACKSLASH_ESCAPES, IN_TRANS_READONLY and MariaDB's ANSI_QUOTES. The others say how
# the server ran the statement (NO_INDEX_USED, QUERY_WAS_SLOW, ...), not what it did.
STATUS_MASK = 0x0001 | 0x0002 | 0x0200 | 0x2000 | 0x8000

# Errors after which a connection is unusable: the rest of the session is not run.
LOST_CONNECTION_CODES = frozenset({2006, 2013, 2014, 2055})

PROBE_SQL = "SELECT CONNECTION_ID()"
# Replaced by a named lock of the run's own (so the statements name it with AS: a
# column name must not differ).
LOCK_PLACEHOLDER = "{lock}"

# The tables each run starts from; `s` also exists in the second database, with other
# rows and ids from 1000, so that a statement run in the wrong database shows.
TABLE_S = (
    "CREATE TABLE {db}.s (id INT AUTO_INCREMENT PRIMARY KEY, k INT, v VARCHAR(20), n INT,"
    " ts TIMESTAMP NULL DEFAULT NULL, UNIQUE KEY uk (k))"
    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 AUTO_INCREMENT={auto_increment}"
)


# -- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing a session does. kind:

    query       a COM_QUERY (PyMySQL cursor.execute, mysql-connector's plain cursor)
    probe       SELECT CONNECTION_ID(): compared as a placeholder, its value recorded
    prepared    mysql-connector only: execute `sql` with `args` on the session's prepared
                cursor for that text (COM_STMT_PREPARE once, then COM_STMT_EXECUTE)
    close       mysql-connector only: close the prepared cursor of `sql` (COM_STMT_CLOSE)
    autocommit  the driver's own autocommit switch, args = (on,)
    begin, commit, rollback, ping
                the driver's own calls (BEGIN / COMMIT / ROLLBACK / COM_PING)
    select_db   COM_INIT_DB, args = (database,)
    """

    kind: str
    sql: str = ""
    args: tuple[Any, ...] = ()

    def __repr__(self) -> str:
        if self.kind == "query":
            return repr(self.sql)
        if self.kind == "probe":
            return "probe: SELECT CONNECTION_ID()"
        if self.kind == "prepared":
            return f"prepared {self.sql!r} {self.args!r}"
        if self.kind == "close":
            return f"close prepared {self.sql!r}"
        if self.args:
            return f"{self.kind}({', '.join(map(repr, self.args))})"
        return f"{self.kind}()"


@dataclass(frozen=True)
class ConnectOptions:
    autocommit: bool | None = True  # None: the driver sends nothing about it
    found_rows: bool = False
    multi_statements: bool = False
    charset: str = "utf8mb4"
    database: str = "main"  # or "other"


@dataclass(frozen=True)
class Session:
    options: ConnectOptions
    steps: tuple[Step, ...]

    def __repr__(self) -> str:
        lines = [f"Session({self.options!r}, steps=["]
        lines += [f"    {step!r}," for step in self.steps]
        return "\n".join([*lines, "])"])

    @property
    def uses_lock(self) -> bool:
        return any(LOCK_PLACEHOLDER in step.sql for step in self.steps)


# -- outcomes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultSet:
    columns: tuple[tuple[Any, ...], ...] | None  # the driver's cursor.description
    rows: tuple[tuple[Any, ...], ...]
    rowcount: int
    lastrowid: int | None
    warnings: int

    def __repr__(self) -> str:
        text = f"rows={self.rows!r} rowcount={self.rowcount} lastrowid={self.lastrowid}"
        text += f" warnings={self.warnings}"
        if self.columns is not None:
            text += f" columns={list(self.columns)!r}"
        return text


@dataclass(frozen=True)
class Outcome:
    results: tuple[ResultSet, ...] = ()
    error: tuple[int, str] | None = None
    status: int | None = None  # server status flags & STATUS_MASK, or in_transaction
    lost: bool = False  # the connection is unusable afterwards

    def __repr__(self) -> str:
        parts = [repr(result) for result in self.results]
        if self.error is not None:
            parts.append(f"ERROR {self.error[0]} {self.error[1]!r}")
        if not parts:
            parts.append("ok")
        text = " ; ".join(parts)
        if self.status is not None:
            text += f" [status {self.status:#06x}]"
        return text + (" [connection lost]" if self.lost else "")


@dataclass
class Run:
    """What one run of a session saw."""

    connect_error: tuple[int, str] | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    connection_ids: list[int] = field(default_factory=list)  # of the probes, in order


def _error(exc: BaseException) -> tuple[int, str]:
    args = exc.args
    if len(args) >= 2 and isinstance(args[0], int):
        return args[0], str(args[1])
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int):
        return errno, str(getattr(exc, "msg", exc))
    return -1, f"{type(exc).__name__}: {exc}"


def _is_lost(exc: BaseException, code: int) -> bool:
    return code in LOST_CONNECTION_CODES or isinstance(
        exc, pymysql.err.InterfaceError | mysql.connector.errors.InterfaceError
    )


# -- drivers ----------------------------------------------------------------------------------


def _decimal(value: bytes | str) -> Decimal:
    return Decimal(value.decode() if isinstance(value, bytes) else value)


# PyMySQL's converters, for values that arrive as bytes (use_unicode=False).
CONVERSIONS = {
    **pymysql.converters.conversions,
    FIELD_TYPE.DECIMAL: _decimal,
    FIELD_TYPE.NEWDECIMAL: _decimal,
}


class PyMySQLClient:
    """Runs steps on a PyMySQL connection (text protocol)."""

    def __init__(self, connect: Callable[..., pymysql.connections.Connection],
                 options: ConnectOptions, database: str) -> None:
        flags = (CLIENT.FOUND_ROWS if options.found_rows else 0) | (
            CLIENT.MULTI_STATEMENTS if options.multi_statements else 0
        )
        self.conn = connect(
            database=database,
            autocommit=options.autocommit,
            client_flag=flags,
            charset=options.charset,
            use_unicode=False,  # strings as bytes: any character set decodes
            conv=CONVERSIONS,
            ssl_disabled=True,
            connect_timeout=10,
            read_timeout=15,  # longer than the pool's 10 s queue timeout
            write_timeout=15,
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def _status(self) -> int:
        return int(self.conn.server_status) & STATUS_MASK

    @staticmethod
    def _result(cursor: pymysql.cursors.Cursor) -> ResultSet:
        rows = tuple(tuple(row) for row in cursor.fetchall())
        columns = tuple(tuple(column) for column in cursor.description or ()) or None
        return ResultSet(columns, rows, cursor.rowcount, cursor.lastrowid,
                         cursor.warning_count)

    def run(self, step: Step, lock: str) -> tuple[Outcome, int | None]:
        conn = self.conn
        if step.kind in ("query", "probe"):
            sql = (PROBE_SQL if step.kind == "probe" else step.sql).replace(
                LOCK_PLACEHOLDER, lock)
            results: list[ResultSet] = []
            cursor = conn.cursor()
            try:
                cursor.execute(sql)
                results.append(self._result(cursor))
                while cursor.nextset():
                    results.append(self._result(cursor))
            except pymysql.err.MySQLError as exc:
                code, message = _error(exc)
                return Outcome(tuple(results), (code, message), self._status(),
                               _is_lost(exc, code)), None
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()
            if step.kind == "probe":
                connection_id = int(results[0].rows[0][0])
                probe = ResultSet(results[0].columns, (("CONNECTION_ID",),),
                                  results[0].rowcount, results[0].lastrowid,
                                  results[0].warnings)
                return Outcome((probe,), None, self._status()), connection_id
            return Outcome(tuple(results), None, self._status()), None
        try:
            if step.kind == "autocommit":
                conn.autocommit(step.args[0])
            elif step.kind == "begin":
                conn.begin()
            elif step.kind == "commit":
                conn.commit()
            elif step.kind == "rollback":
                conn.rollback()
            elif step.kind == "ping":
                conn.ping(reconnect=False)
            elif step.kind == "select_db":
                conn.select_db(step.args[0])
            else:
                raise AssertionError(f"PyMySQL cannot run {step!r}")
        except pymysql.err.MySQLError as exc:
            code, message = _error(exc)
            return Outcome((), (code, message), self._status(), _is_lost(exc, code)), None
        return Outcome((), None, self._status()), None


class ConnectorClient:
    """Runs steps on a mysql-connector-python connection: `prepared` steps through the
    binary protocol (one prepared cursor per statement text, kept open until a `close`
    step), the others as text."""

    def __init__(self, host: str, port: int, db: ScratchDb, options: ConnectOptions,
                 database: str) -> None:
        self.conn: Any = mysql.connector.connect(
            host=host,
            port=port,
            user=db.user,
            password=db.password,
            database=database,
            autocommit=bool(options.autocommit),
            charset=options.charset,
            ssl_disabled=True,
            use_pure=True,
            connection_timeout=15,
        )
        self.prepared: dict[str, Any] = {}

    def close(self) -> None:
        for cursor in self.prepared.values():
            with contextlib.suppress(Exception):
                cursor.close()
        with contextlib.suppress(Exception):
            self.conn.close()

    def _status(self) -> int:
        return int(bool(self.conn.in_transaction))

    @staticmethod
    def _result(cursor: Any) -> ResultSet:
        rows: tuple[tuple[Any, ...], ...] = ()
        if cursor.description is not None:
            rows = tuple(tuple(row) for row in cursor.fetchall())
        columns = tuple(tuple(column) for column in cursor.description or ()) or None
        return ResultSet(columns, rows, cursor.rowcount, cursor.lastrowid,
                         cursor.warning_count)

    def run(self, step: Step, lock: str) -> tuple[Outcome, int | None]:
        sql = (PROBE_SQL if step.kind == "probe" else step.sql).replace(LOCK_PLACEHOLDER, lock)
        connection_id = None
        results: tuple[ResultSet, ...] = ()
        try:
            if step.kind in ("query", "probe"):
                cursor = self.conn.cursor(buffered=True)
                try:
                    cursor.execute(sql)
                    result = self._result(cursor)
                finally:
                    cursor.close()
                if step.kind == "probe":
                    connection_id = int(result.rows[0][0])
                    result = ResultSet(result.columns, (("CONNECTION_ID",),), result.rowcount,
                                       result.lastrowid, result.warnings)
                results = (result,)
            elif step.kind == "prepared":
                cursor = self.prepared.get(sql)
                if cursor is None:
                    cursor = self.prepared[sql] = self.conn.cursor(prepared=True)
                try:
                    cursor.execute(sql, step.args)
                    results = (self._result(cursor),)
                except mysql.connector.Error:
                    # Start over with a new cursor: the failed one may be half prepared.
                    with contextlib.suppress(Exception):
                        self.prepared.pop(sql).close()
                    raise
            elif step.kind == "close":
                cursor = self.prepared.pop(sql, None)
                if cursor is not None:
                    cursor.close()
            elif step.kind == "autocommit":
                self.conn.autocommit = step.args[0]
            elif step.kind == "begin":
                self.conn.start_transaction()
            elif step.kind == "commit":
                self.conn.commit()
            elif step.kind == "rollback":
                self.conn.rollback()
            elif step.kind == "ping":
                self.conn.ping()
            else:
                raise AssertionError(f"mysql-connector cannot run {step!r}")
        except mysql.connector.Error as exc:
            code, message = _error(exc)
            return Outcome((), (code, message), self._status(), _is_lost(exc, code)), None
        return Outcome(results, None, self._status()), connection_id


# -- the environment: databases, tables, runs -------------------------------------------------


class Environment:
    """The scratch database, a second database the same account may use, and a direct
    connection that resets their tables before each run."""

    def __init__(self, db: ScratchDb, other: ScratchDb) -> None:
        self.db = db
        # The statements below are MariaDB's; each is said in the server's own words.
        self.translate = db.server.dialect.translate
        self.main = db.database
        self.other = other.database
        with contextlib.closing(db.root()) as root, root.cursor() as cursor:
            for host in ("%", "localhost"):
                cursor.execute(f"GRANT ALL ON `{self.other}`.* TO %s@%s", (db.user, host))
        self.setup = db.connect(ssl_disabled=True)
        with self.setup.cursor() as cursor:
            # A table that a session's upstream connection still holds (a transaction or
            # LOCK TABLES the gate kept after the client left) fails the reset, not hangs.
            cursor.execute("SET SESSION lock_wait_timeout = 5")
        self.runs = 0

    def close(self) -> None:
        self.setup.close()

    def database(self, options: ConnectOptions) -> str:
        return self.main if options.database == "main" else self.other

    def reset_tables(self) -> None:
        main, other = f"`{self.main}`", f"`{self.other}`"
        try:
            with self.setup.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS {main}.s, {main}.u, {other}.s")
                cursor.execute(TABLE_S.format(db=main, auto_increment=1))
                cursor.execute(f"INSERT INTO {main}.s (k, v, n) VALUES "
                               "(1, 'a', 10), (2, 'b', 20), (3, 'c', 30)")
                cursor.execute(f"CREATE TABLE {main}.u (a INT PRIMARY KEY) ENGINE=InnoDB")
                cursor.execute(f"INSERT INTO {main}.u VALUES (1), (2)")
                cursor.execute(TABLE_S.format(db=other, auto_increment=1000))
                cursor.execute(f"INSERT INTO {other}.s (k, v, n) VALUES "
                               "(1, 'B1', 100), (2, 'B2', 200)")
        except pymysql.err.MySQLError as exc:
            raise AssertionError(
                f"resetting the tables for the next run failed: {exc!r}; an upstream "
                "connection still holds them after the previous client left?"
            ) from exc

    def next_lock(self) -> str:
        self.runs += 1
        return f"lk_{self.main}_{self.runs}"

    def lock_is_free(self, name: str, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self.setup.cursor() as cursor:
                cursor.execute("SELECT IS_FREE_LOCK(%s)", (name,))
                row = cursor.fetchone()
            if row is not None and row[0] == 1:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def run_session(driver: str, session: Session, env: Environment,
                target: Gate | None) -> Run:
    """Run the session directly (target None) or through the gate."""
    run = Run()
    lock = env.next_lock()
    database = env.database(session.options)
    client: PyMySQLClient | ConnectorClient
    try:
        if driver == "pymysql":
            connect = target.connect if target is not None else env.db.connect
            client = PyMySQLClient(connect, session.options, database)
        else:
            host, port = (target.host, target.port) if target is not None else (
                env.db.host, env.db.port)
            client = ConnectorClient(host, port, env.db, session.options, database)
    except (pymysql.err.MySQLError, mysql.connector.Error) as exc:
        run.connect_error = _error(exc)
        return run
    try:
        # A new session's FOUND_ROWS() is whatever its server thread counted last (MariaDB
        # hands a finished connection's thread to the next one, measured): a first SELECT
        # makes both sides start from the same value. Its outcome is not compared.
        client.run(Step(kind="query", sql="SELECT 1", args=()), lock)
        for step in session.steps:
            outcome, connection_id = client.run(replace(step, sql=env.translate(step.sql)),
                                                lock)
            run.outcomes.append(outcome)
            if connection_id is not None:
                run.connection_ids.append(connection_id)
            if outcome.lost:
                break
    finally:
        client.close()
    if target is not None and session.uses_lock and not env.lock_is_free(lock):
        raise AssertionError(
            f"{session!r}\nthe session's named lock {lock!r} is still held 3 s after the "
            "client disconnected from mysqlgate"
        )
    return run


def divergence_report(profile: str, session: Session, direct: Run, gate: Run) -> str:
    if direct.connect_error != gate.connect_error:
        return (f"profile {profile}: connecting with {session.options!r} differs:\n"
                f"  direct: {direct.connect_error}\n  gate:   {gate.connect_error}")
    index = next(
        (i for i, (a, b) in enumerate(zip(direct.outcomes, gate.outcomes, strict=False))
         if a != b),
        min(len(direct.outcomes), len(gate.outcomes)),
    )
    lines = [
        f"profile {profile}: through mysqlgate step #{index} differs from a direct connection",
        f"options: {session.options!r}",
        f"upstream connection ids seen by the gate run's probes: {gate.connection_ids}",
        "steps:",
    ]
    for i, step in enumerate(session.steps):
        mark = ">>" if i == index else "  "
        lines.append(f"{mark} #{i:<2} {step!r}")
        a = direct.outcomes[i] if i < len(direct.outcomes) else None
        b = gate.outcomes[i] if i < len(gate.outcomes) else None
        if i > index or (a is None and b is None):
            continue
        if a == b:
            lines.append(f"         both:   {a!r}")
        else:
            lines.append(f"         direct: {a!r}")
            lines.append(f"         gate:   {b!r}")
    return "\n".join(lines)


# -- background clients -----------------------------------------------------------------------

# Each background client's own session settings, unlike a fresh session's: a session under
# test that is served by a connection still holding them shows it in its results.
BACKGROUND_SETTINGS: tuple[tuple[str, ...], ...] = (
    ("SET SESSION time_zone = '+09:00'", "SET SESSION sql_mode = 'ANSI'", "SET NAMES latin1",
     "SET SESSION sql_select_limit = 1", "SET SESSION auto_increment_increment = 7"),
    ("SET time_zone = '-07:00'", "SET sql_mode = 'TRADITIONAL,PIPES_AS_CONCAT'",
     "SET SESSION div_precision_increment = 12", "SET SESSION group_concat_max_len = 4",
     "SET max_statement_time = 50"),
    ("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'", "SET lc_time_names = 'fr_FR'",
     "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", "SET autocommit = 0",
     "SET SESSION sql_safe_updates = 1"),
)
BACKGROUND_STATE = (
    "SELECT @@session.time_zone, @@session.sql_mode, @@character_set_client,"
    " @@character_set_results, @@sql_select_limit, @@auto_increment_increment,"
    " @@div_precision_increment, @@group_concat_max_len, @@max_statement_time,"
    " @@lc_time_names, @@tx_isolation, @@autocommit, @@sql_safe_updates, DATABASE(),"
    " @@in_transaction"
)


class Background:
    """Clients that keep the gate's pool busy with short transactions and statements of
    their own, each checking that it only ever sees its own session (anomalies)."""

    def __init__(self, connect: Callable[..., pymysql.connections.Connection],
                 env: Environment, count: int) -> None:
        self.connect = connect
        self.env = env
        self.count = count
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.anomalies: list[str] = []
        self.statements = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Background:
        with self.env.setup.cursor() as cursor:
            for index in range(self.count):
                cursor.execute(f"DROP TABLE IF EXISTS bg{index}")
                cursor.execute(f"CREATE TABLE bg{index} (id INT AUTO_INCREMENT PRIMARY KEY,"
                               " n INT NOT NULL DEFAULT 0) ENGINE=InnoDB")
                cursor.execute(f"INSERT INTO bg{index} (id, n) VALUES (1, 0)")
        for index in range(self.count):
            thread = threading.Thread(target=self._client, args=(index,),
                                      name=f"background-{index}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _anomaly(self, index: int, text: str) -> None:
        with self._lock:
            if len(self.anomalies) < 50:
                self.anomalies.append(f"background client {index}: {text}")

    def _client(self, index: int) -> None:
        rng = random.Random(index)
        while not self.stop.is_set():
            try:
                conn = self.connect(ssl_disabled=True, autocommit=True, read_timeout=30,
                                    write_timeout=30)
            except pymysql.err.MySQLError as exc:
                self._anomaly(index, f"connect failed: {exc!r}")
                time.sleep(0.2)
                continue
            try:
                self._session(conn, index, rng)
            except pymysql.err.MySQLError as exc:
                self._anomaly(index, f"unexpected error: {exc!r}")
            except Exception as exc:  # noqa: BLE001 - reported, the thread goes on
                self._anomaly(index, f"crashed: {exc!r}")
            finally:
                with contextlib.suppress(Exception):
                    conn.close()

    def _session(self, conn: pymysql.connections.Connection, index: int,
                 rng: random.Random) -> None:
        table = f"bg{index}"
        autocommit = True

        names: list[str] = []  # the last result's column names

        def rows(sql: str) -> tuple[tuple[Any, ...], ...]:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                result = tuple(cursor.fetchall())
                names[:] = [column[0] for column in cursor.description or ()]
            with self._lock:
                self.statements += 1
            return result

        def expect(sql: str, expected: tuple[tuple[Any, ...], ...],
                   given_up: tuple[tuple[Any, ...], ...] | None = None) -> None:
            """`given_up`: what mysqlgate answers once it gave the client's diagnostics
            up because another client waited 200 ms for the connection (README, "Known
            limits"): a loaded machine can leave that long between two statements. Never
            another client's."""
            got = rows(sql)
            if got == expected or given_up is not None and got == given_up:
                return
            if len(got) == len(expected) == 1 and len(got[0]) == len(expected[0]) == len(names):
                # One row: name the columns that differ.
                diff = ", ".join(f"{name} = {a!r}, expected {b!r}" for name, a, b
                                 in zip(names, got[0], expected[0], strict=True) if a != b)
                self._anomaly(index, f"{sql[:60]!r}...: {diff}")
            else:
                self._anomaly(index, f"{sql!r} returned {got!r}, expected {expected!r}")

        def failing(sql: str, code: int) -> None:
            try:
                rows(sql)
            except pymysql.err.MySQLError as exc:
                if exc.args[0] != code:
                    self._anomaly(index, f"{sql!r} failed with {exc.args!r}, not {code}")
            else:
                self._anomaly(index, f"{sql!r} did not fail with {code}")

        for sql in BACKGROUND_SETTINGS[index % len(BACKGROUND_SETTINGS)]:
            rows(self.env.translate(sql))
            if sql == "SET autocommit = 0":
                autocommit = False
        state_sql = self.env.translate(BACKGROUND_STATE)
        state = rows(state_sql)
        for _ in range(rng.randint(10, 60)):
            if self.stop.is_set():
                return
            action = rng.randrange(8)
            if action == 0:
                expect(state_sql, state)
            elif action == 1:
                conn.begin()
                with conn.cursor() as cursor:
                    cursor.execute(f"INSERT INTO {table} (n) VALUES (1)")
                    inserted = cursor.lastrowid
                expect("SELECT LAST_INSERT_ID()", ((inserted,),))
                if not conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS:
                    self._anomaly(index, "not in a transaction after BEGIN and INSERT")
                if self.env.db.server.is_mariadb:
                    expect("SELECT @@in_transaction", ((1,),))
                conn.commit()
            elif action == 2:
                expect("SELECT CAST('1x' AS SIGNED) AS i", ((1,),))
                expect("SHOW WARNINGS",
                       (("Warning", 1292, "Truncated incorrect INTEGER value: '1x'"),),
                       given_up=())
            elif action == 3:
                failing(f"SELECT * FROM no_such_table_{index}", 1146)
                expect("SHOW COUNT(*) ERRORS", ((1,),), given_up=((0,),))
            elif action == 4:
                expect(f"UPDATE {table} SET n = n + 1 WHERE id = 1", ())
                expect("SELECT ROW_COUNT()", ((1,),))
            elif action == 5:
                conn.begin()
                rows(f"INSERT INTO {table} (n) VALUES (2)")
                rows("DO SLEEP(0.003)")
                if rng.random() < 0.5:
                    conn.rollback()
                else:
                    conn.commit()
            elif action == 6 and rng.random() < 0.3:
                # Leave in the middle of a transaction, with warnings behind.
                conn.begin()
                rows(f"INSERT INTO {table} (n) VALUES (3)")
                rows("SELECT CAST('2x' AS SIGNED) AS i")
                return
            else:
                rows(f"SELECT COUNT(*) FROM {table}")
            if not autocommit:
                conn.commit()


# -- statements -------------------------------------------------------------------------------

Items = st.SearchStrategy[tuple[Step, ...]]
KEYS = st.integers(1, 6)


def _q(*sqls: str) -> Items:
    """Any one of these queries."""
    return st.sampled_from([(Step("query", sql),) for sql in sqls])


def _with_key(template: str) -> Items:
    return KEYS.map(lambda k: (Step("query", template.format(k=k)),))


def _qk(*templates: str) -> Items:
    """Any one of these queries with {k} a key value from KEYS."""
    return st.one_of([_with_key(template) for template in templates])


def _seq(*steps: Step | str) -> tuple[Step, ...]:
    return tuple(Step("query", s) if isinstance(s, str) else s for s in steps)


def _api(kind: str, *args: Any) -> Step:
    return Step(kind, args=args)


def _patterns(*patterns: tuple[Step, ...]) -> Items:
    return st.sampled_from(list(patterns))


PROBE: Items = st.just((Step("probe"),))

SESSION_VARIABLES = _q(
    "SET SESSION sql_mode = ''",
    "SET SESSION sql_mode = 'TRADITIONAL'",
    "SET sql_mode = 'ANSI'",
    "SET @@session.sql_mode = 'PIPES_AS_CONCAT,NO_BACKSLASH_ESCAPES'",
    "SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'",
    "SET sql_mode = 'ONLY_FULL_GROUP_BY,ERROR_FOR_DIVISION_BY_ZERO'",
    "SET SESSION sql_mode = DEFAULT",
    "SET sql_mode = CONCAT(@@sql_mode, ',PIPES_AS_CONCAT')",
    "SET sql_mode = 'NO_SUCH_MODE'",
    "SET time_zone = '+00:00'",
    "SET SESSION time_zone = '+05:30'",
    "SET @@time_zone = '-03:00'",
    "SET time_zone = 'SYSTEM'",
    "SET time_zone = 'Mars/Olympus_Mons'",
    "SET time_zone = DEFAULT",
    "SET NAMES utf8mb4",
    "SET NAMES latin1",
    "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
    "SET CHARACTER SET latin1",
    "SET NAMES no_such_charset",
    "SET SESSION max_statement_time = 10",
    "SET max_statement_time = 0",
    "SET @@session.max_statement_time = 100.5",
    "SET SESSION div_precision_increment = 2",
    "SET div_precision_increment = 9",
    "SET SESSION group_concat_max_len = 5",
    "SET SESSION sql_select_limit = 2",
    "SET sql_select_limit = DEFAULT",
    "SET lc_time_names = 'de_DE'",
    "SET SESSION auto_increment_increment = 5",
    "SET SESSION sql_safe_updates = 1",
    "SET sql_safe_updates = 0",
    "SET SESSION wait_timeout = 3600",
    "SET time_zone = '+01:00', sql_mode = 'TRADITIONAL'",
    "SET SESSION sql_mode = 'ANSI', time_zone = 'no/such_zone'",
    "SET STATEMENT time_zone = '+09:00' FOR SELECT FROM_UNIXTIME(0) AS t",
    "SET STATEMENT sql_select_limit = 1 FOR SELECT k FROM s ORDER BY k",
)
AUTOCOMMIT = st.one_of(
    _q("SET autocommit = 0", "SET autocommit = 1", "SET @@autocommit = OFF",
       "SET SESSION autocommit = ON"),
    st.sampled_from([(_api("autocommit", False),), (_api("autocommit", True),)]),
)
STATE_READS = _q(
    "SELECT @@session.sql_mode",
    "SELECT @@time_zone, @@session.autocommit",
    "SELECT @@character_set_client, @@character_set_connection, @@character_set_results,"
    " @@collation_connection",
    "SELECT @@max_statement_time, @@div_precision_increment, @@group_concat_max_len",
    "SELECT @@sql_select_limit, @@lc_time_names, @@auto_increment_increment",
    "SELECT @@sql_safe_updates, @@session.wait_timeout",
    "SELECT DATABASE()",
    "SELECT @@tx_isolation, @@tx_read_only, @@in_transaction",
)
# Statements whose results depend on the session's variables.
SETTING_EFFECTS = _q(
    "SELECT 1/3 AS a, 2/7 AS b",
    "SELECT GROUP_CONCAT(v ORDER BY id) AS g FROM s",
    "SELECT 'a' || 'b' AS c",
    'SELECT "k" AS q FROM s ORDER BY id LIMIT 1',
    "SELECT CHAR_LENGTH('\u00e9') AS n, HEX('\u00e9') AS h, COLLATION('\u00e9') AS c",
    "SELECT 'a\\\\b' AS s, HEX('a\\\\b') AS h",
    "SELECT FROM_UNIXTIME(86400) AS t, UNIX_TIMESTAMP('2020-01-01 00:00:00') AS u",
    "SELECT ts, UNIX_TIMESTAMP(ts) AS u FROM s WHERE ts IS NOT NULL ORDER BY id",
    "SELECT DATE_FORMAT('2020-03-01', '%M %W') AS d",
    "SELECT v, COUNT(*) AS c FROM s GROUP BY k ORDER BY k",
    "SELECT CAST('2020-02-30' AS DATE) AS d",
    "SELECT k FROM s ORDER BY k",
)


def _schema(env: Environment) -> Items:
    return st.sampled_from([
        (Step("query", f"USE `{env.other}`"),),
        (Step("query", f"USE `{env.main}`"),),
        (_api("select_db", env.other),),
        (_api("select_db", env.main),),
        (Step("query", "USE no_such_database"),),
    ])


DATA = st.one_of(
    _qk(
        "INSERT INTO s (k, v, n) VALUES ({k}, 'x{k}', {k})",
        "INSERT IGNORE INTO s (k, v, n) VALUES ({k}, 'i{k}', 0)",
        "INSERT INTO s (k, n) VALUES ({k}, 'x')",
        "INSERT INTO s (k, v, n) VALUES ({k}, 'd', 1) ON DUPLICATE KEY UPDATE n = n + 1",
        "REPLACE INTO s (k, v, n) VALUES ({k}, 'r', 7)",
        "INSERT INTO s (k, ts) VALUES ({k}, '2020-06-01 12:00:00')",
        "INSERT INTO s (k, v) VALUES ({k}, '\u00e9')",
        "INSERT INTO s (k, n) VALUES ({k}, 1/0)",
        "INSERT INTO s (k, v) VALUES ({k}, 'a string longer than twenty')",
        "UPDATE s SET n = n + 1 WHERE k = {k}",
        "UPDATE s SET n = n WHERE k <= {k}",
        "DELETE FROM s WHERE k = {k}",
        "SELECT k FROM s WHERE k > {k} ORDER BY k",
    ),
    _q(
        "INSERT INTO s (v, n) VALUES ('m', 1), ('m', 2)",
        "UPDATE s SET n = n + 1",
        "SELECT id, k, v, n, ts FROM s ORDER BY id",
        "SELECT COUNT(*), SUM(n), MAX(id) FROM s",
        "SELECT LAST_INSERT_ID()",
    ),
)
DIAGNOSTIC_VALUES = st.one_of(
    _q("SELECT ROW_COUNT()", "SELECT FOUND_ROWS()",
       "SELECT ROW_COUNT(), FOUND_ROWS(), LAST_INSERT_ID()"),
    _qk("SELECT SQL_CALC_FOUND_ROWS k FROM s ORDER BY k LIMIT {k}"),
)
WARNINGS_AND_ERRORS = st.one_of(
    _q(
        "SELECT 1/0",
        "DO 1/0",
        "SELECT CAST('x' AS INT) AS i",
        "SELECT CAST('1x' AS SIGNED) AS i",
        "SELECT 'a' + 1 AS d",
        "SELECT * FROM no_such_table",
        "SELECT zz FROM s",
        "SELEC 1",
        "DROP TABLE IF EXISTS no_such_table",
        "SELECT 1 - CAST(2 AS UNSIGNED)",
        "SELECT 1; SELECT 2",
        "INSERT INTO s (k) VALUES (1); SELECT ROW_COUNT()",
    ),
    _qk(
        "SIGNAL SQLSTATE '01000' SET MESSAGE_TEXT = 'warning {k}'",
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'error {k}', MYSQL_ERRNO = 300{k}",
        "INSERT INTO s (k, v, n) VALUES ({k}, 'dup', 1)",
    ),
)
DIAGNOSTIC_READS = _q(
    "SHOW WARNINGS",
    "SHOW ERRORS",
    "SHOW COUNT(*) WARNINGS",
    "SHOW COUNT(*) ERRORS",
    "SELECT @@warning_count, @@error_count",
    "SHOW WARNINGS LIMIT 1",
)
TRANSACTIONS = st.one_of(
    _q(
        "BEGIN",
        "START TRANSACTION",
        "START TRANSACTION READ ONLY",
        "START TRANSACTION READ WRITE",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        "COMMIT",
        "ROLLBACK",
        "COMMIT AND CHAIN",
        "ROLLBACK WORK",
        "SET TRANSACTION READ ONLY",
        "SET TRANSACTION READ WRITE",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
        "SET SESSION TRANSACTION READ ONLY",
        "SET SESSION TRANSACTION READ WRITE",
        "SELECT @@in_transaction",
        "SELECT @@tx_isolation, @@tx_read_only",
    ),
    st.sampled_from([(_api("begin"),), (_api("commit"),), (_api("rollback"),),
                     (_api("ping"),)]),
)
SAVEPOINTS = _q(
    "SAVEPOINT s1", "SAVEPOINT s2", "ROLLBACK TO SAVEPOINT s1", "ROLLBACK TO s2",
    "RELEASE SAVEPOINT s1", "RELEASE SAVEPOINT s2",
)
# Sequences that random lists would rarely put together.
TRANSACTION_PATTERNS = _patterns(
    _seq(_api("autocommit", False), "SAVEPOINT s1", "INSERT INTO s (k) VALUES (5)",
         "ROLLBACK TO SAVEPOINT s1", "SELECT k FROM s ORDER BY k", _api("commit")),
    _seq("SET autocommit = 0", "SAVEPOINT s1", "RELEASE SAVEPOINT s1"),
    _seq("SET autocommit = 0", "SAVEPOINT s1", "SELECT 1", "ROLLBACK TO SAVEPOINT s1"),
    _seq("START TRANSACTION READ ONLY", "UPDATE s SET n = n + 1 WHERE k = 1", "COMMIT"),
    _seq("SET TRANSACTION READ ONLY", "BEGIN", "UPDATE s SET n = 0 WHERE k = 2", "ROLLBACK"),
    _seq("SET TRANSACTION READ ONLY", "UPDATE s SET n = 0 WHERE k = 3"),
    _seq("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "BEGIN",
         "SELECT @@in_transaction, @@tx_read_only", "COMMIT"),
    _seq("BEGIN", "INSERT INTO s (k) VALUES (6)", "SAVEPOINT s2",
         "DELETE FROM s WHERE k = 6", "ROLLBACK TO s2", "SELECT COUNT(*) FROM s", "COMMIT"),
    # SET TRANSACTION applies to the next transaction: a statement that touches no table
    # does not start one, and a write refused with 1792 does not end it.
    _seq("SET TRANSACTION READ ONLY", "SELECT 1", "UPDATE s SET n = 0 WHERE k = 1",
         "UPDATE s SET n = 0 WHERE k = 1"),
    # Unqualified @@autocommit: MariaDB's session tracker does not report it.
    _seq("SET @@autocommit = OFF", "INSERT INTO s (k) VALUES (6)", "ROLLBACK",
         "SELECT COUNT(*) FROM s"),
)
DIAGNOSTIC_PATTERNS = _patterns(
    _seq("SELECT 1/0", "SHOW WARNINGS"),
    _seq("SELECT * FROM no_such_table", "SHOW WARNINGS"),
    _seq("SELECT zz FROM s", "SELECT @@warning_count, @@error_count"),
    _seq("INSERT IGNORE INTO s (k) VALUES (1)", "SHOW WARNINGS", "SHOW COUNT(*) WARNINGS"),
    _seq("INSERT INTO s (k) VALUES (4)", "SELECT ROW_COUNT()", "SELECT LAST_INSERT_ID()"),
    _seq("SELECT k FROM s", "SELECT ROW_COUNT(), FOUND_ROWS()"),
    _seq("SELECT SQL_CALC_FOUND_ROWS k FROM s ORDER BY k LIMIT 1", "SELECT FOUND_ROWS()"),
    _seq("UPDATE s SET n = n WHERE k < 3", "SELECT ROW_COUNT()"),
    _seq("SELECT 1; SELECT 2", "SHOW ERRORS"),
    # A statement that touches no table and raises no condition (SET, SELECT 1, DO,
    # USE, COMMIT, COM_PING) leaves the previous statement's diagnostics in place.
    _seq("SELECT 1/0", "SELECT 1", "SHOW WARNINGS"),
    _seq("SELECT * FROM no_such_table", "SET time_zone = '+01:00'",
         "SELECT @@warning_count, @@error_count"),
    _seq("SELECT zz FROM s", _api("ping"), "SHOW ERRORS"),
    _seq("DO 1", "SELECT FOUND_ROWS()"),
    _seq("SELECT 1 UNION SELECT 2; SELECT FOUND_ROWS()"),
)
SESSION_PATTERNS = _patterns(
    # MariaDB's session tracker does not report SET @@x (without SESSION).
    _seq("SET @@time_zone = '-03:00'", "SELECT 1", "SELECT @@time_zone"),
    _seq("SET @@autocommit = OFF", "SELECT 1", "SELECT @@autocommit"),
    _seq("SET NAMES latin1", "SELECT CHAR_LENGTH('\u00e9') AS n", "SET NAMES utf8mb4",
         "SELECT CHAR_LENGTH('\u00e9') AS n"),
)
# State that cannot move to another connection: only in the pinning profile.
PINNING = st.one_of(
    _qk("SET @u = {k}", "SELECT k INTO @u FROM s WHERE k >= {k} ORDER BY k LIMIT 1",
        "INSERT INTO tt VALUES ({k})", "EXECUTE p USING {k}", "SELECT LAST_INSERT_ID({k})"),
    _q(
        "SELECT @u",
        "SELECT @u := IFNULL(@u, 0) + 1 AS u",
        "CREATE TEMPORARY TABLE tt (a INT)",
        "CREATE TEMPORARY TABLE IF NOT EXISTS s2 AS SELECT k, v FROM s",
        "SELECT * FROM tt ORDER BY a",
        "SELECT COUNT(*) FROM s2",
        "DROP TEMPORARY TABLE IF EXISTS tt",
        "SELECT GET_LOCK('{lock}', 0) AS got",
        "SELECT RELEASE_LOCK('{lock}') AS released",
        "SELECT IS_FREE_LOCK('{lock}') AS free, IS_USED_LOCK('{lock}') IS NOT NULL AS used",
        "SELECT RELEASE_ALL_LOCKS()",
        "LOCK TABLES s WRITE",
        "LOCK TABLES s READ",
        "SELECT a FROM u",
        "UNLOCK TABLES",
        "PREPARE p FROM 'SELECT k FROM s WHERE k > ? ORDER BY k'",
        "DEALLOCATE PREPARE p",
        "GET DIAGNOSTICS @n = NUMBER",
        "SELECT @n",
    ),
)
PINNING_PATTERNS = _patterns(
    _seq("SELECT 1/0", "GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT", "SELECT @m"),
    _seq("SELECT GET_LOCK('{lock}', 0) AS got", "SELECT 1",
         "SELECT RELEASE_LOCK('{lock}') AS released",
         "SELECT ROW_COUNT()"),
    _seq("LOCK TABLES s WRITE", "INSERT INTO s (k) VALUES (4)", "SELECT a FROM u",
         "UNLOCK TABLES"),
)

# mysql-connector-python, prepared statements through the binary protocol.
PREPARED_STATEMENTS = st.one_of(
    KEYS.map(lambda k: (Step("prepared", "SELECT k, v, n FROM s WHERE k > ? ORDER BY k",
                             (k,)),)),
    KEYS.map(lambda k: (Step("prepared", "SELECT COUNT(*), SUM(n) FROM s WHERE k <= ?",
                             (k,)),)),
    KEYS.map(lambda k: (Step("prepared", "INSERT INTO s (k, v, n) VALUES (?, ?, ?)",
                             (k, f"p{k}", k)),)),
    KEYS.map(lambda k: (Step("prepared", "INSERT IGNORE INTO s (k, v, n) VALUES (?, 'pi', 0)",
                             (k,)),)),
    KEYS.map(lambda k: (Step("prepared", "UPDATE s SET n = n + ? WHERE k = ?", (1, k)),)),
    KEYS.map(lambda k: (Step("prepared", "DELETE FROM s WHERE k = ?", (k,)),)),
    KEYS.map(lambda k: (Step("prepared", "SELECT ? / 0", (k,)),)),
    KEYS.map(lambda k: (Step("prepared", "SELECT FROM_UNIXTIME(?), @@time_zone",
                             (86400 * k,)),)),
    KEYS.map(lambda k: (Step("prepared", "SELECT * FROM no_such_table WHERE k = ?", (k,)),)),
    st.sampled_from([
        (Step("prepared", "SELECT CAST(? AS SIGNED)", ("1x",)),),
        (Step("prepared", "SELECT LAST_INSERT_ID(), ROW_COUNT()"),),
        (Step("prepared", "SELECT @@in_transaction, @@autocommit"),),
        (Step("prepared", "SHOW WARNINGS"),),
        (Step("close", "SELECT k, v, n FROM s WHERE k > ? ORDER BY k"),),
        (Step("close", "INSERT INTO s (k, v, n) VALUES (?, ?, ?)"),),
        (Step("close", "SELECT ? / 0"),),
    ]),
)
PREPARED_TEXT = _q(
    "SET time_zone = '+05:30'",
    "SET time_zone = '+00:00'",
    "SET sql_mode = 'TRADITIONAL'",
    "SET sql_mode = ''",
    "BEGIN",
    "START TRANSACTION READ ONLY",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s1",
    "ROLLBACK TO SAVEPOINT s1",
    "SHOW WARNINGS",
    "SELECT ROW_COUNT()",
    "SELECT @@warning_count, @@error_count",
    "SELECT k, n FROM s ORDER BY k",
)
PREPARED_API = st.sampled_from([
    (_api("autocommit", False),), (_api("autocommit", True),), (_api("begin"),),
    (_api("commit"),), (_api("rollback"),), (_api("ping"),),
])


# -- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    driver: str  # "pymysql" or "connector"
    pins: bool  # whether its sessions may hold state that pins them to a connection
    items: Callable[[Environment], Sequence[tuple[int, Items]]]  # (weight, strategy)


def _session_state_items(env: Environment) -> list[tuple[int, Items]]:
    return [(6, SESSION_VARIABLES), (2, AUTOCOMMIT), (3, STATE_READS), (4, SETTING_EFFECTS),
            (2, _schema(env)), (2, DATA), (2, SESSION_PATTERNS), (2, PROBE)]


def _transaction_items(env: Environment) -> list[tuple[int, Items]]:
    return [(5, TRANSACTIONS), (3, SAVEPOINTS), (2, AUTOCOMMIT), (4, DATA),
            (1, _schema(env)), (2, TRANSACTION_PATTERNS), (2, PROBE)]


def _diagnostic_items(env: Environment) -> list[tuple[int, Items]]:
    return [(4, WARNINGS_AND_ERRORS), (4, DIAGNOSTIC_READS), (3, DIAGNOSTIC_VALUES),
            (3, DATA), (1, AUTOCOMMIT), (1, TRANSACTIONS), (1, SESSION_VARIABLES),
            (2, DIAGNOSTIC_PATTERNS), (2, PROBE)]


def _everything_unpinned(env: Environment) -> list[tuple[int, Items]]:
    return [*_session_state_items(env), *_transaction_items(env), *_diagnostic_items(env)]


def _pinning_items(env: Environment) -> list[tuple[int, Items]]:
    return [*_everything_unpinned(env), (12, PINNING), (4, PINNING_PATTERNS)]


def _prepared_items(env: Environment) -> list[tuple[int, Items]]:
    return [(6, PREPARED_STATEMENTS), (3, PREPARED_TEXT), (2, PREPARED_API), (1, PROBE)]


PROFILES = [
    Profile("session_state", "pymysql", False, _session_state_items),
    Profile("transactions", "pymysql", False, _transaction_items),
    Profile("diagnostics", "pymysql", False, _diagnostic_items),
    Profile("unpinned_mix", "pymysql", False, _everything_unpinned),
    Profile("pinning", "pymysql", True, _pinning_items),
    Profile("prepared_binary", "connector", True, _prepared_items),
]


def sessions(profile: Profile, env: Environment) -> st.SearchStrategy[Session]:
    weighted: list[Items] = []
    for weight, items in profile.items(env):
        weighted += [items] * weight
    one_item = st.one_of(weighted)
    if profile.driver == "pymysql":
        options = st.builds(
            ConnectOptions,
            autocommit=st.sampled_from([True, False, None]),
            found_rows=st.booleans(),
            multi_statements=st.booleans(),
            charset=st.sampled_from(["utf8mb4", "latin1"]),
            database=st.sampled_from(["main", "other"]),
        )
    else:
        options = st.builds(ConnectOptions, autocommit=st.booleans())

    @st.composite
    def session(draw: st.DrawFn) -> Session:
        chosen = draw(options)
        # A probe at the end, and often one at the start: gate runs record connection ids.
        first: tuple[Step, ...] = (Step("probe"),) if draw(st.booleans()) else ()
        items = draw(st.lists(one_item, min_size=1, max_size=MAX_ITEMS))
        steps = first + tuple(step for item in items for step in item) + (Step("probe"),)
        return Session(chosen, steps)

    return session()


# -- the test ---------------------------------------------------------------------------------


@dataclass
class SwitchStats:
    """How often a gate run's probes saw more than one upstream connection."""

    sessions: int = 0  # gate runs with two probes or more
    switched: int = 0  # ... that saw two connection ids or more
    probe_pairs: int = 0  # consecutive probes
    pair_switches: int = 0  # ... on different connections

    def add(self, ids: list[int]) -> None:
        if len(ids) < 2:
            return
        self.sessions += 1
        self.switched += len(set(ids)) > 1
        self.probe_pairs += len(ids) - 1
        self.pair_switches += sum(a != b for a, b in zip(ids, ids[1:], strict=False))

    def __str__(self) -> str:
        return (f"{self.switched} of {self.sessions} sessions with 2+ probes moved between "
                f"upstream connections; {self.pair_switches} of {self.probe_pairs} "
                "consecutive probe pairs were on different connections")


@contextlib.contextmanager
def _environment(db: ScratchDb, db_factory: Callable[..., ScratchDb]) -> Iterator[Environment]:
    env = Environment(db, db_factory())
    try:
        yield env
    finally:
        env.close()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("profile", PROFILES, ids=[profile.name for profile in PROFILES])
def test_sessions_see_what_a_direct_connection_sees(
    profile: Profile,
    db: ScratchDb,
    db_factory: Callable[..., ScratchDb],
    gate_factory: Callable[..., Gate],
) -> None:
    stats = SwitchStats()
    unusable: list[str] = []
    with _environment(db, db_factory) as env:
        gate = gate_factory("--pool-size", str(POOL_SIZE))
        with Background(gate.connect, env, BACKGROUND_CLIENTS) as background:

            @settings(
                max_examples=EXPLORE or MAX_EXAMPLES,
                deadline=None,
                derandomize=not EXPLORE,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(session=sessions(profile, env))
            def check(session: Session) -> None:
                if unusable:
                    # Every example would fail the same way, slowly: fail at once.
                    raise AssertionError(unusable[0])
                env.reset_tables()
                direct = run_session(profile.driver, session, env, None)
                env.reset_tables()
                through = run_session(profile.driver, session, env, gate)
                stats.add(through.connection_ids)
                if (direct.connect_error, direct.outcomes) != (
                    through.connect_error, through.outcomes
                ):
                    report = divergence_report(profile.name, session, direct, through)
                    if through.connect_error is not None and direct.connect_error is None:
                        unusable.append(f"mysqlgate refused a connection:\n{report}")
                    if background.anomalies:
                        report += "\nmeanwhile, background clients saw:\n" + "\n".join(
                            background.anomalies[:5])
                    raise AssertionError(report)

            check()
        statements = background.statements
        anomalies = list(background.anomalies)
    print(f"{profile.name}: {stats}; background clients ran {statements} statements")
    assert not anomalies, "background clients saw what was not theirs:\n" + "\n".join(
        anomalies)
    assert statements > 0, "the background clients never ran"
    if not profile.pins:
        # The point of the test: consecutive statements of a session ran on different
        # upstream connections, at least sometimes.
        assert stats.switched >= max(1, stats.sessions // 10), (
            f"sessions hardly moved between upstream connections: {stats}")
