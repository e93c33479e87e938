"""Isolation between clients that share upstream connections (SPEC sections 2 and 7).

Many clients multiplexed over a small pool must each see only their own results,
variables, temporary tables, transactions and session settings; no write may be lost
or doubled; a connection whose session was changed is reset before another client
gets it; and a client that changed nothing does not hold on to its connection.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pymysql
import pytest
from harness import Gate, ScratchDb
from pymysql.constants import ER

CLIENTS = 100
STEPS = 30
POOL_SIZE = 3
# Clients that hold unmovable state (user variables, temporary tables) keep an upstream
# connection until they disconnect; at most this many at a time, so that the others
# always have a connection left to share.
MAX_PINNED = POOL_SIZE - 1

# sql_mode flags a client may combine into its own mode. Left out: the ones that change
# how PyMySQL's escaped statements parse (ANSI_QUOTES, NO_BACKSLASH_ESCAPES, ORACLE...).
SQL_MODE_FLAGS = (
    "REAL_AS_FLOAT",
    "PIPES_AS_CONCAT",
    "ONLY_FULL_GROUP_BY",
    "NO_UNSIGNED_SUBTRACTION",
    "NO_DIR_IN_CREATE",
    "NO_ZERO_IN_DATE",
    "NO_ZERO_DATE",
    "ALLOW_INVALID_DATES",
    "ERROR_FOR_DIVISION_BY_ZERO",
    "HIGH_NOT_PRECEDENCE",
    "NO_ENGINE_SUBSTITUTION",
    "STRICT_TRANS_TABLES",
    "STRICT_ALL_TABLES",
)
# ... and the flags only one of the servers has.
SQL_MODE_FLAGS_OF = {
    "mariadb": ("NO_AUTO_CREATE_USER", "SIMULTANEOUS_ASSIGNMENT", "TIME_ROUND_FRACTIONAL"),
    "mysql": ("TIME_TRUNCATE_FRACTIONAL",),
}


def _one(conn: pymysql.connections.Connection, sql: str, args: object = None) -> object:
    with conn.cursor() as cursor:
        cursor.execute(sql, args)
        row = cursor.fetchone()
    assert row is not None, sql
    return row[0]


def _close(conn: pymysql.connections.Connection) -> None:
    if conn.open:
        conn.close()


@contextlib.contextmanager
def _connected(
    factory: Callable[[], pymysql.connections.Connection],
) -> Iterator[pymysql.connections.Connection]:
    conn = factory()
    try:
        yield conn
    finally:
        _close(conn)


@dataclass
class TortureClient:
    """One client of the torture test, with everything it expects to see."""

    index: int
    gate: Gate
    seed: int
    defaults: tuple[object, object]  # a fresh session's (time_zone, sql_mode)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    committed: int = 0  # rows with its tag it has committed
    errors: list[str] = field(default_factory=list)
    steps_done: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Unique per client: '+01:00' .. '+09:11'.
        self.time_zone = f"+{1 + self.index % 9:02d}:{self.index // 9:02d}"
        flags = SQL_MODE_FLAGS + SQL_MODE_FLAGS_OF[self.gate.db.server.flavour]
        self.sql_mode_set = ",".join(self.rng.sample(flags, 6))
        self.sql_mode_expected = ""  # filled in from a direct connection
        self.conn: pymysql.connections.Connection | None = None

    # -- the expectations that follow the session ------------------------------------

    def _new_session(self) -> None:
        if self.conn is not None:
            _close(self.conn)
        self.conn = self.gate.connect()
        self.expect_time_zone, self.expect_sql_mode = self.defaults
        self.last_insert_id = 0

    def check(self, what: str, got: object, expected: object) -> None:
        if got != expected:
            self.errors.append(
                f"client {self.index} step {self.steps_done} ({what}): got {got!r}, "
                f"expected {expected!r}"
            )

    def pause(self) -> None:
        time.sleep(self.rng.random() * 0.003)

    def query(self, sql: str, args: object = None) -> tuple[tuple[object, ...], ...]:
        assert self.conn is not None
        with self.conn.cursor() as cursor:
            cursor.execute(sql, args)
            return tuple(cursor.fetchall())

    def count(self) -> object:
        return self.query("SELECT COUNT(*) FROM shared WHERE tag = %s", (self.token,))[0][0]

    def insert(self) -> int:
        assert self.conn is not None
        with self.conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO shared (tag, client) VALUES (%s, %s)", (self.token, self.index)
            )
            rowid = cursor.lastrowid
        self.last_insert_id = rowid
        self.check(
            "LAST_INSERT_ID() after insert", self.query("SELECT LAST_INSERT_ID()")[0][0], rowid
        )
        return rowid

    # -- steps ----------------------------------------------------------------------------

    def step_select_token(self) -> None:
        self.check("SELECT token", self.query("SELECT %s", (self.token,)), ((self.token,),))

    def step_insert(self) -> None:
        self.insert()
        self.committed += 1
        self.check("count after insert", self.count(), self.committed)

    def step_count(self) -> None:
        self.check("count", self.count(), self.committed)

    def step_last_insert_id(self) -> None:
        self.check(
            "LAST_INSERT_ID()", self.query("SELECT LAST_INSERT_ID()")[0][0], self.last_insert_id
        )

    def step_time_zone(self) -> None:
        if self.rng.random() < 0.5:
            self.query("SET SESSION time_zone = %s", (self.time_zone,))
            self.expect_time_zone = self.time_zone
            self.pause()
        self.check(
            "@@session.time_zone",
            self.query("SELECT @@session.time_zone")[0][0],
            self.expect_time_zone,
        )

    def step_sql_mode(self) -> None:
        if self.rng.random() < 0.5:
            self.query("SET SESSION sql_mode = %s", (self.sql_mode_set,))
            self.expect_sql_mode = self.sql_mode_expected
            self.pause()
        self.check(
            "@@session.sql_mode",
            self.query("SELECT @@session.sql_mode")[0][0],
            self.expect_sql_mode,
        )

    def step_settings(self) -> None:
        """Both settings read back together: neither may be another client's."""
        self.check(
            "@@session.time_zone, @@session.sql_mode",
            self.query("SELECT @@session.time_zone, @@session.sql_mode")[0],
            (self.expect_time_zone, self.expect_sql_mode),
        )

    def step_nothing_left_behind(self) -> None:
        """Outside its pinned episodes a client has no user variable and no temporary
        table; finding one means it got another client's session."""
        self.check("@v outside a pinned episode", self.query("SELECT @v"), ((None,),))
        try:
            rows = self.query("SELECT v FROM tmp_pinned")
        except pymysql.err.ProgrammingError as exc:
            self.check("temporary table outside a pinned episode", exc.args[0], ER.NO_SUCH_TABLE)
        else:
            self.check("temporary table outside a pinned episode", rows, "error 1146")

    def step_transaction(self) -> None:
        assert self.conn is not None
        self.conn.begin()
        inserted = self.rng.randint(1, 3)
        for _ in range(inserted):
            self.insert()
            self.pause()
        self.check("count inside transaction", self.count(), self.committed + inserted)
        self.step_select_token()
        self.pause()
        if self.rng.random() < 0.5:
            self.conn.commit()
            self.committed += inserted
        else:
            self.conn.rollback()
        self.check("count after transaction", self.count(), self.committed)

    def step_pinned(self, pinned: threading.Semaphore) -> None:
        """User variable and temporary table: state that pins the client to its upstream
        connection until it disconnects (which this step does at its end)."""
        with pinned:
            kind = self.rng.choice(("variable", "temporary", "both"))
            if kind in ("variable", "both"):
                self.query("SET @v = %s", (self.token,))
            if kind in ("temporary", "both"):
                self.query("CREATE TEMPORARY TABLE tmp_pinned (v CHAR(32))")
                self.query("INSERT INTO tmp_pinned VALUES (%s)", (self.token,))
            connection_id = self.query("SELECT CONNECTION_ID()")[0][0]
            for _ in range(self.rng.randint(1, 4)):
                self.pause()
                step = self.rng.choice(self.movable_steps)
                if step != self.step_nothing_left_behind:  # it has something left now
                    step()
                self.steps_done += 1
            self.pause()
            if kind in ("variable", "both"):
                self.check("@v", self.query("SELECT @v"), ((self.token,),))
            if kind in ("temporary", "both"):
                self.check(
                    "temporary table", self.query("SELECT v FROM tmp_pinned"), ((self.token,),)
                )
            self.check(
                "CONNECTION_ID() while pinned",
                self.query("SELECT CONNECTION_ID()")[0][0],
                connection_id,
            )
            assert self.conn is not None
            self.conn.close()  # ends the pin; the next steps run in a new session
        self._new_session()

    @property
    def movable_steps(self) -> list[Callable[[], None]]:
        return [
            self.step_select_token,
            self.step_insert,
            self.step_count,
            self.step_last_insert_id,
            self.step_time_zone,
            self.step_sql_mode,
            self.step_settings,
            self.step_transaction,
            self.step_nothing_left_behind,
        ]

    def run(self, start: threading.Barrier, pinned: threading.Semaphore) -> None:
        try:
            start.wait()
            self._new_session()
            self.step_settings()
            self.step_nothing_left_behind()
            while self.steps_done < STEPS:
                self.pause()
                if self.rng.random() < 0.08:
                    self.step_pinned(pinned)
                else:
                    self.rng.choice(self.movable_steps)()
                self.steps_done += 1
        except Exception as exc:  # reported with the others at the end
            self.errors.append(f"client {self.index} step {self.steps_done}: {exc!r}")
        finally:
            if self.conn is not None:
                _close(self.conn)


def test_many_clients_see_only_their_own_results_and_state(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    with _connected(db.connect) as direct, direct.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE shared (id INT AUTO_INCREMENT PRIMARY KEY, tag CHAR(32) NOT NULL,"
            " client INT NOT NULL, KEY (tag)) ENGINE=InnoDB"
        )
    gate = gate_factory("--pool-size", str(POOL_SIZE), "--pool-queue-timeout", "60")
    default_sql_mode, default_time_zone = _direct_defaults(db)
    clients = [
        TortureClient(i, gate, seed=1000 + i, defaults=(default_time_zone, default_sql_mode))
        for i in range(CLIENTS)
    ]
    # What the server makes of each client's sql_mode (it normalizes the order).
    with _connected(db.connect) as direct, direct.cursor() as cursor:
        for client in clients:
            cursor.execute("SET SESSION sql_mode = %s", (client.sql_mode_set,))
            cursor.execute("SELECT @@session.sql_mode")
            client.sql_mode_expected = cursor.fetchone()[0]

    start = threading.Barrier(CLIENTS)
    pinned = threading.Semaphore(MAX_PINNED)
    threads = [
        threading.Thread(target=client.run, args=(start, pinned), name=f"client-{client.index}")
        for client in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(thread.is_alive() for thread in threads), "clients hung"

    errors = [error for client in clients for error in client.errors]
    assert not errors, f"{len(errors)} errors, the first ones:\n" + "\n".join(errors[:30])
    assert all(client.steps_done >= STEPS for client in clients)

    # No write lost or doubled, no rolled-back row visible.
    with _connected(db.connect) as direct, direct.cursor() as cursor:
        cursor.execute("SELECT tag, COUNT(*), COUNT(DISTINCT client) FROM shared GROUP BY tag")
        counts = {tag: (count, owners) for tag, count, owners in cursor.fetchall()}
    for client in clients:
        if client.committed:
            assert counts.pop(client.token) == (client.committed, 1), client.index
    assert counts == {}, "rows with tags of clients that committed none"


def _direct_defaults(db: ScratchDb) -> tuple[object, ...]:
    with _connected(db.connect) as fresh, fresh.cursor() as cursor:
        cursor.execute("SELECT @@session.sql_mode, @@session.time_zone")
        row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def test_changed_session_is_reset_before_another_client_gets_it(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A leaves state that cannot move (a user variable, a temporary table, a named
    lock) and disconnects; B, on the same upstream connection, must find none of it.

    A changes nothing movable (no session variable, no schema), so B's state replay
    has no reason of its own to reset the connection: only the reset of a pinned
    client's connection when it leaves (SPEC section 2) stands between B and A's
    session. B's CONNECTION_ID() must be A's: with a pool of 1 the connection is
    reset and reused, and another connection would prove nothing."""
    gate = gate_factory("--pool-size", "1")
    lock = f"lock_{db.database}"

    with _connected(db.connect) as direct:
        with _connected(gate.connect) as a, a.cursor() as cursor:
            cursor.execute("SET @secret = 'A'")
            cursor.execute("CREATE TEMPORARY TABLE secret_tmp (v INT)")
            cursor.execute("INSERT INTO secret_tmp VALUES (42)")
            cursor.execute("SELECT GET_LOCK(%s, 0)", (lock,))
            assert cursor.fetchone() == (1,)
            cursor.execute("SELECT CONNECTION_ID(), @secret, (SELECT v FROM secret_tmp)")
            a_id, secret, v = cursor.fetchone()
            assert (secret, v) == ("A", 42)
            assert _one(direct, "SELECT IS_USED_LOCK(%s)", (lock,)) == a_id

        with _connected(gate.connect) as b, b.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID(), @secret")
            b_id, secret = cursor.fetchone()
            assert b_id == a_id, "B ran on another upstream connection: the test proves nothing"
            assert secret is None, "B sees A's user variable"
            with pytest.raises(pymysql.err.ProgrammingError) as excinfo:
                cursor.execute("SELECT v FROM secret_tmp")
            assert excinfo.value.args[0] == ER.NO_SUCH_TABLE  # 1146: not A's temporary table
            # A's named lock went with A's session (B's connection still holds it otherwise).
            assert _one(direct, "SELECT IS_FREE_LOCK(%s)", (lock,)) == 1


def test_changed_settings_are_undone_before_another_client_gets_the_connection(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A changes movable settings only (sql_mode, time_zone: no pin) and disconnects;
    B, on the same upstream connection, must see a fresh session's values."""
    default_sql_mode, default_time_zone = _direct_defaults(db)
    assert default_sql_mode != "ANSI" and default_time_zone != "+05:00"
    gate = gate_factory("--pool-size", "1")

    with _connected(gate.connect) as a, a.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = 'ANSI'")
        cursor.execute("SET SESSION time_zone = '+05:00'")
        cursor.execute("SELECT CONNECTION_ID(), @@session.time_zone")
        a_id, time_zone = cursor.fetchone()
        assert time_zone == "+05:00"

    with _connected(gate.connect) as b, b.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID(), @@session.sql_mode, @@session.time_zone")
        b_id, sql_mode, time_zone = cursor.fetchone()
        assert b_id == a_id, "B ran on another upstream connection: the test proves nothing"
        assert sql_mode == default_sql_mode
        assert time_zone == default_time_zone


def test_moved_settings_do_not_reach_a_client_that_did_not_set_them(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A's sql_mode and time_zone are movable (no pin): A stays connected and idle while
    B uses the same upstream connection, then A gets its settings back."""
    default_sql_mode, default_time_zone = _direct_defaults(db)
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "5")
    with _connected(gate.connect) as a, _connected(gate.connect) as b:
        with a.cursor() as cursor:
            cursor.execute("SET SESSION sql_mode = 'ANSI', time_zone = '+05:00'")
            cursor.execute("SELECT CONNECTION_ID()")
            (a_id,) = cursor.fetchone()
        for _ in range(3):
            with b.cursor() as cursor:
                cursor.execute("SELECT CONNECTION_ID(), @@session.sql_mode, @@session.time_zone")
                assert cursor.fetchone() == (a_id, default_sql_mode, default_time_zone)
            with a.cursor() as cursor:
                cursor.execute("SELECT CONNECTION_ID(), @@session.sql_mode, @@session.time_zone")
                b_id, sql_mode, time_zone = cursor.fetchone()
                assert b_id == a_id
                assert "ANSI_QUOTES" in sql_mode.split(",")
                assert time_zone == "+05:00"


def test_client_without_session_changes_does_not_pin(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    # A pinned client would keep the only connection; the other would time out waiting.
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "3")
    with _connected(gate.connect) as first, _connected(gate.connect) as second:
        ids = set()
        for round_ in range(20):
            for index, conn in enumerate((first, second)):
                with conn.cursor() as cursor:
                    cursor.execute("SELECT %s, CONNECTION_ID()", (f"{index}-{round_}",))
                    value, connection_id = cursor.fetchone()
                assert value == f"{index}-{round_}"
                ids.add(connection_id)
        assert len(ids) == 1, f"upstream connection ids {ids}: the pool of 1 was replaced"
