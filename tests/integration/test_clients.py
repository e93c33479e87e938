"""Real client libraries through mysqlgate: PyMySQL, mysqlclient (MySQLdb) and the `mariadb`
command-line client, against the real MariaDB server the fixtures start (SPEC sections 2, 7).

Every test asserts what the client saw; where a direct connection is the reference, the
same statement is run on one and the answers are compared."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import MySQLdb
import MySQLdb.constants.CLIENT
import pymysql
import pymysql.cursors
import pytest
from harness import Gate, ScratchDb
from pymysql.constants import CLIENT

MiB = 1024 * 1024

MARIADB_CLI = shutil.which("mariadb") or shutil.which("mysql")


# -- helpers ----------------------------------------------------------------------------------


def _close(conn: Any) -> None:
    """Close a PyMySQL or MySQLdb connection that may already have been closed."""
    if isinstance(conn, pymysql.connections.Connection):
        if conn.open:
            conn.close()
        return
    with contextlib.suppress(MySQLdb.Error):
        conn.close()


@contextlib.contextmanager
def _closing_all() -> Iterator[list[Any]]:
    """A list to put connections in; all are closed at the end of the block."""
    conns: list[Any] = []
    try:
        yield conns
    finally:
        for conn in reversed(conns):
            _close(conn)


def _mysqldb_connect(gate: Gate, **kwargs: Any) -> Any:
    """A mysqlclient (MySQLdb) connection through mysqlgate over TCP, autocommit on."""
    params: dict[str, Any] = {
        "host": gate.host,
        "port": gate.port,
        "user": gate.db.user,
        "password": gate.db.password,
        "database": gate.db.database,
        "autocommit": True,
    }
    params.update(kwargs)
    if "unix_socket" in params:
        params.pop("host")
        params.pop("port")
    return MySQLdb.connect(**params)


def _one(conn: Any, sql: str, args: Any = None) -> tuple[Any, ...]:
    """Run `sql` and return its single row."""
    cur = conn.cursor()
    try:
        cur.execute(sql, args)
        rows = cur.fetchall()
    finally:
        cur.close()
    assert len(rows) == 1, f"{sql!r} returned {len(rows)} rows"
    return tuple(rows[0])


def _all_result_sets(cur: Any) -> list[tuple[Any, tuple[tuple[Any, ...], ...]]]:
    """Every result of the statement just executed on `cur`: (column names or None, rows)."""
    results = []
    while True:
        names = None if cur.description is None else tuple(d[0] for d in cur.description)
        results.append((names, tuple(tuple(row) for row in cur.fetchall())))
        if not cur.nextset():
            return results


def _error_of(conn: Any, sql: str) -> tuple[int, str]:
    """The (code, message) of the error `sql` raises on `conn`."""
    cur = conn.cursor()
    try:
        with pytest.raises((pymysql.err.MySQLError, MySQLdb.Error)) as excinfo:
            cur.execute(sql)
    finally:
        cur.close()
    code, message = excinfo.value.args[0], excinfo.value.args[1]
    return code, message


def _cli(*args: str, db: ScratchDb, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the mariadb command-line client (no option files) as the db's user."""
    assert MARIADB_CLI is not None, "the mariadb command-line client is not installed"
    argv = [
        MARIADB_CLI,
        "--no-defaults",
        f"--user={db.user}",
        f"--password={db.password}",
        "--batch",
        "--skip-column-names",
        *args,
    ]
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False
    )
    if check:
        assert result.returncode == 0, f"{argv[-1]!r}: exit {result.returncode}: {result.stderr}"
    return result


def _tcp(host: str, port: int) -> tuple[str, ...]:
    return ("--protocol=TCP", f"--host={host}", f"--port={port}")


@pytest.fixture
def other_database(db: ScratchDb, db_factory: Callable[..., ScratchDb]) -> str:
    """A second database that `db`'s user may use (dropped after the test)."""
    other = db_factory()
    with contextlib.closing(db.root()) as conn, conn.cursor() as cur:
        for host in ("%", "localhost"):
            cur.execute(f"GRANT ALL ON `{other.database}`.* TO %s@%s", (db.user, host))
    return other.database


# -- simple queries ---------------------------------------------------------------------------


def test_pymysql_simple_queries(gate: Gate, db: ScratchDb) -> None:
    with _closing_all() as conns:
        conn = gate.connect()
        conns.append(conn)
        assert _one(conn, "SELECT 1 + 1, 'abc', NULL") == (2, "abc", None)
        assert _one(conn, "SELECT CURRENT_USER(), DATABASE()") == (f"{db.user}@%", db.database)
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
            assert cur.execute("INSERT INTO t VALUES (1, 'one'), (2, 'twö'), (3, NULL)") == 3
            assert cur.execute("UPDATE t SET v = 'three' WHERE id = 3") == 1
            cur.execute("SELECT id, v FROM t ORDER BY id")
            assert cur.fetchall() == ((1, "one"), (2, "twö"), (3, "three"))
            cur.execute("SELECT id FROM t WHERE id > 10")
            assert cur.fetchall() == ()

        # The same through the unix socket listener.
        sock_conn = gate.connect(unix_socket=gate.socket)
        conns.append(sock_conn)
        assert _one(sock_conn, "SELECT COUNT(*), MAX(v) FROM t") == (3, "twö")

    # What the client wrote reached the server.
    with contextlib.closing(db.connect()) as direct:
        assert _one(direct, "SELECT GROUP_CONCAT(v ORDER BY id) FROM t") == ("one,twö,three",)


def test_mysqldb_simple_queries(gate: Gate, db: ScratchDb) -> None:
    with _closing_all() as conns:
        conn = _mysqldb_connect(gate)
        conns.append(conn)
        assert _one(conn, "SELECT 1 + 1, 'abc', NULL") == (2, "abc", None)
        assert _one(conn, "SELECT DATABASE()") == (db.database,)
        cur = conn.cursor()
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")
        assert cur.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "één", 2, None)) == 2
        cur.execute("SELECT id, v FROM t ORDER BY id")
        assert cur.fetchall() == ((1, "één"), (2, None))
        cur.close()

        sock_conn = _mysqldb_connect(gate, unix_socket=gate.socket)
        conns.append(sock_conn)
        assert _one(sock_conn, "SELECT COUNT(*), DATABASE() FROM t") == (2, db.database)


def test_mariadb_cli_tcp_and_socket(gate: Gate, db: ScratchDb) -> None:
    sql = "SELECT 1 + 1; SELECT DATABASE(); SELECT CONCAT('a', 'b') AS x UNION ALL SELECT 'c'"
    expected = f"2\n{db.database}\nab\nc\n"
    via_tcp = _cli(*_tcp(gate.host, gate.port), db.database, "-e", sql, db=db)
    assert via_tcp.stdout == expected
    via_socket = _cli(f"--socket={gate.socket}", db.database, "-e", sql, db=db)
    assert via_socket.stdout == expected

    # Several statements that write, then a read, in one -e (the client sends them as one
    # multi-statement COM_QUERY).
    _cli(
        f"--socket={gate.socket}",
        db.database,
        "-e",
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x'), (2, 'y');"
        " UPDATE t SET v = 'z' WHERE id = 2",
        db=db,
    )
    out = _cli(*_tcp(gate.host, gate.port), db.database, "-e", "SELECT id, v FROM t", db=db)
    assert out.stdout == "1\tx\n2\tz\n"

    # A server error: the client prints the same line (code, SQLSTATE, message) and exits
    # with the same status as on a direct connection.
    for code, bad_sql in ((1064, "SELEC 1"), (1146, "SELECT * FROM no_such_table")):
        direct = _cli(*_tcp(db.host, db.port), db.database, "-e", bad_sql, db=db, check=False)
        through = _cli(*_tcp(gate.host, gate.port), db.database, "-e", bad_sql, db=db, check=False)
        assert direct.returncode == 1 and f"ERROR {code} " in direct.stderr
        assert (through.returncode, through.stdout, through.stderr) == (
            direct.returncode,
            direct.stdout,
            direct.stderr,
        )


# -- multi-statements and multiple result sets -------------------------------------------------


def test_multi_statements(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    gate = gate_factory("--pool-size", "1")
    batch = (
        "CREATE TABLE {t} (id INT PRIMARY KEY, v INT); "
        "INSERT INTO {t} VALUES (1, 10), (2, 20); "
        "SELECT 1 AS one; "
        "SELECT id, v FROM {t} ORDER BY id; "
        "DO 1; "
        "SELECT 'last' AS l"
    )
    expected = [
        (None, ()),
        (None, ()),
        (("one",), ((1,),)),
        (("id", "v"), ((1, 10), (2, 20))),
        (None, ()),
        (("l",), (("last",),)),
    ]
    with _closing_all() as conns:
        multi = gate.connect(client_flag=CLIENT.MULTI_STATEMENTS)
        conns.append(multi)
        with multi.cursor() as cur:
            cur.execute(batch.format(t="t"))
            assert _all_result_sets(cur) == expected
        assert _one(multi, "SELECT COUNT(*) FROM t") == (2,)

        # A client without CLIENT_MULTI_STATEMENTS, sharing the same single upstream
        # connection, gets the server's syntax error as on a direct connection.
        single = gate.connect()
        conns.append(single)
        with contextlib.closing(db.connect()) as direct:
            assert _error_of(single, "SELECT 1; SELECT 2") == _error_of(
                direct, "SELECT 1; SELECT 2"
            )
        assert _one(single, "SELECT 3") == (3,)

        # An error in the middle of a batch: the results before it, then the error; the
        # connection stays usable.
        with multi.cursor() as cur:
            cur.execute("SELECT 1; SELEC 2; SELECT 3")
            assert cur.fetchall() == ((1,),)
            with pytest.raises(pymysql.err.ProgrammingError) as excinfo:
                cur.nextset()
            assert excinfo.value.args[0] == 1064
        assert _one(multi, "SELECT 4") == (4,)

        # mysqlclient, same batch (on a fresh table name).
        my = _mysqldb_connect(gate, client_flag=MySQLdb.constants.CLIENT.MULTI_STATEMENTS)
        conns.append(my)
        cur = my.cursor()
        cur.execute(batch.format(t="t2"))
        assert _all_result_sets(cur) == expected
        cur.close()
        assert _one(my, "SELECT SUM(v) FROM t2") == (30,)
        assert _one(single, "SELECT 5") == (5,)


def test_stored_procedure_result_sets(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    gate = gate_factory("--pool-size", "1")
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cur:
        cur.execute("CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, n INT)")
        cur.execute(
            "CREATE PROCEDURE three_sets(IN n INT) BEGIN"
            "  INSERT INTO log (n) VALUES (n);"
            "  SELECT n AS a;"
            "  SELECT n * 2 AS b, 'two' AS c;"
            "  SELECT 'three' AS d UNION ALL SELECT 'four';"
            " END"
        )
    expected = [
        (("a",), ((5,),)),
        (("b", "c"), ((10, "two"),)),
        (("d",), (("three",), ("four",))),
        (None, ()),  # the CALL's own final status (OK packet)
    ]
    with _closing_all() as conns:
        conn = gate.connect()
        conns.append(conn)
        other = gate.connect()
        conns.append(other)
        with conn.cursor() as cur:
            cur.execute("CALL three_sets(5)")
            assert _all_result_sets(cur) == expected
        # The single upstream connection is free again and in a clean state.
        assert _one(other, "SELECT 'other'") == ("other",)
        assert _one(conn, "SELECT COUNT(*) FROM log") == (1,)

        my = _mysqldb_connect(gate)
        conns.append(my)
        cur = my.cursor()
        cur.execute("CALL three_sets(5)")
        assert _all_result_sets(cur) == expected
        cur.close()
        assert _one(other, "SELECT 'other again'") == ("other again",)
        assert _one(my, "SELECT COUNT(*) FROM log") == (2,)


# -- large results and packets -----------------------------------------------------------------


def _expected_row(i: int) -> bytes:
    # REPEAT(SHA2(i, 256), 16384): 64 hex digits x 16384 = 1 MiB, different on every row
    # (not MD5: MySQL 9.7 has none).
    return hashlib.sha256(str(i).encode()).hexdigest().encode() * 16384


def test_result_of_64_mib(gate: Gate, db: ScratchDb) -> None:
    rows = 64
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cur:
        cur.execute("CREATE TABLE seq (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO seq (id) VALUES " + ", ".join(f"({i})" for i in range(rows)))
    expected = hashlib.sha256(b"".join(_expected_row(i) for i in range(rows))).hexdigest()
    sql = "SELECT id, REPEAT(SHA2(id, 256), 16384) FROM seq ORDER BY id"

    def check(cursor_class: type[pymysql.cursors.Cursor]) -> None:
        conn = gate.connect(cursorclass=cursor_class)
        try:
            digest = hashlib.sha256()
            total = 0
            ids = []
            with conn.cursor() as cur:
                cur.execute(sql)
                for row_id, value in cur:  # SSCursor: one row at a time off the socket
                    data = value.encode()
                    assert len(data) == MiB
                    digest.update(data)
                    total += len(data)
                    ids.append(row_id)
            assert ids == list(range(rows))
            assert total == rows * MiB
            assert digest.hexdigest() == expected
            assert _one(conn, "SELECT 'after'") == ("after",)
        finally:
            _close(conn)

    check(pymysql.cursors.SSCursor)
    check(pymysql.cursors.Cursor)
    # .ci/run runs the suite twice: with the compiled row stepping, then with
    # MYSQLGATE_PURE_PYTHON=1. The gate says which it ran, so each pass tests its own.
    pure = os.environ.get("MYSQLGATE_PURE_PYTHON", "") not in ("", "0")
    expected_line = ("result rows stepped over by pure Python" if pure
                     else "result rows stepped over by compiled code")
    log = gate.log_path.read_text()
    assert expected_line in log, log[-3000:]


def test_packets_of_16_mib_and_more(gate: Gate, db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cur:
        cur.execute("CREATE TABLE blobs (id INT PRIMARY KEY, b LONGBLOB)")
    conn = gate.connect(max_allowed_packet=64 * MiB)
    try:
        # The harness server allows 64 MiB packets, and the gate reports it.
        assert _one(conn, "SELECT @@max_allowed_packet") == (64 * MiB,)

        # Client to server: one INSERT of > 17 MiB (split into 16 MiB protocol frames).
        blob = os.urandom(17 * MiB + 12345)
        with conn.cursor() as cur:
            assert cur.execute("INSERT INTO blobs VALUES (1, %s)", (blob,)) == 1
        with contextlib.closing(db.connect()) as direct:
            assert _one(direct, "SELECT LENGTH(b), SHA2(b, 256) FROM blobs WHERE id = 1") == (
                len(blob),
                hashlib.sha256(blob).hexdigest(),
            )
        # Server to client: the same blob in one row packet.
        assert _one(conn, "SELECT b FROM blobs WHERE id = 1") == (blob,)

        # Exactly at the frame boundary: a COM_QUERY of 0xFFFFFF payload bytes (followed by an
        # empty frame) and a row of 0xFFFFFF payload bytes (4-byte length prefix + data).
        pad = 0xFFFFFF - 1 - len("SELECT LENGTH('')")
        assert _one(conn, f"SELECT LENGTH('{'q' * pad}')") == (pad,)
        value = _one(conn, "SELECT REPEAT('r', 16777211)")[0]
        assert value == "r" * 16777211

        assert _one(conn, "SELECT 'still fine'") == ("still fine",)
    finally:
        _close(conn)


# -- errors ------------------------------------------------------------------------------------


def test_server_errors_forwarded_unchanged(gate: Gate, db: ScratchDb) -> None:
    statements = {
        1064: "SELEC 1",
        1146: "SELECT * FROM no_such_table",
    }
    with _closing_all() as conns:
        direct = db.connect()
        conns.append(direct)
        py = gate.connect()
        conns.append(py)
        my = _mysqldb_connect(gate)
        conns.append(my)
        my_direct = MySQLdb.connect(
            host=db.host, port=db.port, user=db.user, password=db.password, database=db.database
        )
        conns.append(my_direct)
        for code, sql in statements.items():
            reference = _error_of(direct, sql)
            assert reference[0] == code
            assert _error_of(py, sql) == reference
            assert _error_of(my, sql) == _error_of(my_direct, sql)
            # The connection is fine afterwards.
            assert _one(py, "SELECT 1") == (1,)
            assert _one(my, "SELECT 2") == (2,)


# -- session state follows the client -----------------------------------------------------------

CHARSET_FIELDS = ("character_set_client", "character_set_connection", "character_set_results")
STATE_FIELDS = (
    "database",
    *CHARSET_FIELDS,
    "collation_connection",
    "sql_mode",
    "time_zone",
)
STATE_SQL = (
    "SELECT CONNECTION_ID(), DATABASE(), @@character_set_client, @@character_set_connection,"
    " @@character_set_results, @@collation_connection, @@sql_mode, @@time_zone"
)


def test_session_state_follows_client(
    gate_factory: Callable[..., Gate], db: ScratchDb, other_database: str
) -> None:
    gate = gate_factory("--pool-size", "2")
    with contextlib.closing(db.connect()) as direct:
        default_state = _one(direct, STATE_SQL)[1:]
    defaults = dict(zip(STATE_FIELDS, default_state, strict=True))
    assert defaults["database"] == db.database
    assert defaults["character_set_connection"] == "utf8mb4"

    names = "ABCDE"
    seen: dict[str, set[int]] = {name: set() for name in names}
    lock = threading.Lock()

    with _closing_all() as conns:
        clients = {
            "A": gate.connect(),
            "B": gate.connect(),
            "C": gate.connect(),
            # D asks for latin1 at login, E for a collation that is not its charset's default
            # (PyMySQL sends SET NAMES ... COLLATE ... right after the login).
            "D": gate.connect(charset="latin1"),
            "E": gate.connect(charset="utf8mb4", collation="utf8mb4_unicode_ci"),
        }
        conns += clients.values()
        latin1 = dict.fromkeys(CHARSET_FIELDS, "latin1")
        expected = {
            "A": defaults,
            "B": defaults,
            "C": defaults,
            "D": {**defaults, **latin1, "collation_connection": "latin1_swedish_ci"},
            "E": {**defaults, "collation_connection": "utf8mb4_unicode_ci"},
        }

        def check(name: str) -> None:
            row = _one(clients[name], STATE_SQL)
            with lock:
                seen[name].add(row[0])
            saw = dict(zip(STATE_FIELDS, row[1:], strict=True))
            assert saw == expected[name], f"client {name} saw {saw}, expected {expected[name]}"

        def change(name: str, sql: str, **state: str) -> None:
            """`name` runs `sql`; then every client sees its own state."""
            with clients[name].cursor() as cur:
                cur.execute(sql)
            expected[name] = {**expected[name], **state}
            for other in names:
                check(other)

        for name in names:
            check(name)
        change("A", f"USE `{other_database}`", database=other_database)
        change("A", "SET NAMES latin1", **latin1, collation_connection="latin1_swedish_ci")
        change("A", "SET SESSION sql_mode = 'ANSI_QUOTES'", sql_mode="ANSI_QUOTES")
        change("A", "SET time_zone = '+05:30'", time_zone="+05:30")
        change(
            "C",
            "SET sql_mode = 'STRICT_ALL_TABLES', time_zone = '-03:00'",
            sql_mode="STRICT_ALL_TABLES",
            time_zone="-03:00",
        )
        change(
            "B", "SET NAMES latin1 COLLATE latin1_bin", **latin1, collation_connection="latin1_bin"
        )
        # Back to the defaults (utf8mb4's default collation with it).
        change(
            "B",
            "SET NAMES utf8mb4",
            **{k: defaults[k] for k in (*CHARSET_FIELDS, "collation_connection")},
        )
        assert expected["A"] == {
            "database": other_database,
            **latin1,
            "collation_connection": "latin1_swedish_ci",
            "sql_mode": "ANSI_QUOTES",
            "time_zone": "+05:30",
        }

        # Interleaved, one statement at a time ...
        for _ in range(10):
            for name in "ABCDEBADCE":
                check(name)

        # ... and concurrently, so that both upstream connections serve everyone.
        def worker(name: str) -> None:
            for _ in range(40):
                check(name)

        with ThreadPoolExecutor(len(names)) as pool:
            for future in [pool.submit(worker, name) for name in names]:
                future.result()

        # The state has its effects: A creates a table in other_database with ANSI quotes;
        # E compares with utf8mb4_unicode_ci, where 'ß' = 'ss'; B with utf8mb4's default
        # collation, which is the server's (MariaDB's general_ci: 'ß' <> 'ss'; MySQL's
        # 0900_ai_ci: equal, and 'a' = 'A ' differs).
        with clients["A"].cursor() as cur:
            cur.execute('CREATE TABLE "quoted" (id INT)')
        assert _one(clients["E"], "SELECT 'ß' = 'ss'") == (1,)
        compare = "SELECT 'ß' = 'ss', 'a' = 'A ', COLLATION('x')"
        with contextlib.closing(db.connect()) as direct:
            _one(direct, "SELECT 1")  # PyMySQL sent SET NAMES utf8mb4 at connect
            assert _one(clients["B"], compare) == _one(direct, compare)
        with contextlib.closing(db.connect()) as direct:
            assert _one(
                direct,
                "SELECT TABLE_SCHEMA FROM information_schema.TABLES WHERE TABLE_NAME = 'quoted'",
            ) == (other_database,)

    # The upstream connections were shared: some connection served A and another client.
    others = set().union(*(seen[name] for name in "BCDE"))
    assert seen["A"] & others, f"connection ids seen: {seen}"
    assert len(seen["A"] | others) <= 2, f"more than 2 upstream connections: {seen}"


def test_init_db_ping_and_statistics(
    gate_factory: Callable[..., Gate], db: ScratchDb, other_database: str
) -> None:
    gate = gate_factory("--pool-size", "1")
    with _closing_all() as conns:
        py = gate.connect()
        my = _mysqldb_connect(gate)
        bystander = gate.connect()
        conns += [py, my, bystander]

        # COM_INIT_DB, then the single upstream connection serves another client, and the
        # database stays selected for this one.
        py.select_db(other_database)
        for _ in range(3):
            assert _one(bystander, "SELECT DATABASE()") == (db.database,)
            assert _one(py, "SELECT DATABASE()") == (other_database,)
        my.select_db(other_database)
        for _ in range(3):
            assert _one(bystander, "SELECT DATABASE()") == (db.database,)
            assert _one(my, "SELECT DATABASE()") == (other_database,)
            assert _one(py, "SELECT DATABASE()") == (other_database,)
        py.select_db(db.database)
        assert _one(py, "SELECT DATABASE()") == (db.database,)
        assert _one(my, "SELECT DATABASE()") == (other_database,)

        # COM_INIT_DB of a database the user may not use: the server's error.
        with contextlib.closing(db.connect()) as direct:
            with pytest.raises(pymysql.err.OperationalError) as direct_exc:
                direct.select_db("mysql")
        with pytest.raises(pymysql.err.OperationalError) as gate_exc:
            py.select_db("mysql")
        assert gate_exc.value.args == direct_exc.value.args
        assert _one(py, "SELECT DATABASE()") == (db.database,)

        # COM_PING while idle.
        py.ping(reconnect=False)
        my.ping()
        assert _one(py, "SELECT 'pinged'") == ("pinged",)

        # COM_STATISTICS.
        stat = my.stat()
        assert stat.startswith("Uptime: ") and "Threads: " in stat and "Questions: " in stat
        assert _one(my, "SELECT 'after stat'") == ("after stat",)


# -- transactions ------------------------------------------------------------------------------


def test_autocommit_commit_and_rollback(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    gate = gate_factory("--pool-size", "2")
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB")

    def visible(direct: pymysql.connections.Connection) -> list[int]:
        with direct.cursor() as cur:
            cur.execute("SELECT id FROM t ORDER BY id")
            return [row[0] for row in cur.fetchall()]

    with _closing_all() as conns:
        a = gate.connect(autocommit=False)
        b = gate.connect()
        direct = db.connect()
        conns += [a, b, direct]
        a_ids: set[int] = set()

        assert _one(a, "SELECT @@autocommit") == (0,)
        with a.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (1)")
        assert visible(direct) == []
        assert _one(b, "SELECT COUNT(*) FROM t") == (0,)
        a.commit()
        assert visible(direct) == [1]

        with a.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (2)")
        assert _one(a, "SELECT COUNT(*) FROM t") == (2,)
        a.rollback()
        assert visible(direct) == [1]
        assert _one(a, "SELECT COUNT(*) FROM t") == (1,)

        # autocommit=0 is part of A's session: between transactions other clients use the
        # upstream connections, B even holds the one A used last inside its own transaction,
        # so that A runs on the other one. A's writes must still wait for its COMMIT (or
        # vanish on ROLLBACK).
        last_a_id = _one(a, "SELECT CONNECTION_ID()")[0]
        for n in range(10, 20):
            for _ in range(5):  # whatever order the pool hands connections out in
                b.begin()
                b_id, b_count = _one(b, "SELECT CONNECTION_ID(), COUNT(*) FROM t")
                assert b_count == len(visible(direct))
                if b_id == last_a_id:
                    break
                b.commit()
            conn_id, autocommit = _one(a, "SELECT CONNECTION_ID(), @@autocommit")
            last_a_id = conn_id
            a_ids.add(conn_id)
            assert autocommit == 0
            with a.cursor() as cur:
                cur.execute("INSERT INTO t VALUES (%s)", (n,))
            b.commit()
            assert n not in visible(direct)
            if n % 2:
                a.commit()
                assert n in visible(direct)
            else:
                a.rollback()
                assert n not in visible(direct)
        assert len(a_ids) >= 2, f"A always ran on the same upstream connection {a_ids}"
        assert visible(direct) == [1, 11, 13, 15, 17, 19]

        # Autocommit back on: every statement is committed at once.
        a.autocommit(True)
        with a.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (30)")
        assert 30 in visible(direct)
        # An explicit transaction with autocommit on, rolled back.
        a.begin()
        with a.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (31)")
        assert 31 not in visible(direct)
        a.rollback()
        assert visible(direct) == [1, 11, 13, 15, 17, 19, 30]
        # And off again.
        a.autocommit(False)
        with a.cursor() as cur:
            cur.execute("INSERT INTO t VALUES (32)")
        assert _one(b, "SELECT 1") == (1,)
        a.rollback()
        assert visible(direct) == [1, 11, 13, 15, 17, 19, 30]


def test_last_insert_id_per_client(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    gate = gate_factory("--pool-size", "1")
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, who CHAR(1))")
    with _closing_all() as conns:
        a = gate.connect()
        b = gate.connect()
        c = gate.connect()
        conns += [a, b, c]
        last = {"A": 0, "B": 0}
        conn_ids: dict[str, set[int]] = {"A": set(), "B": set()}
        for round_no in range(10):
            order = ("A", "B") if round_no % 2 == 0 else ("B", "A")
            for name in order:
                conn = a if name == "A" else b
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO t (who) VALUES (%s)", (name,))
                    assert cur.lastrowid > last[name]
                    last[name] = cur.lastrowid
            for name in ("A", "B", "A"):
                conn = a if name == "A" else b
                conn_id, last_id = _one(conn, "SELECT CONNECTION_ID(), LAST_INSERT_ID()")
                conn_ids[name].add(conn_id)
                assert last_id == last[name], f"round {round_no}: client {name}"
            assert _one(c, "SELECT LAST_INSERT_ID()") == (0,)
        # Both clients were served by the single upstream connection.
        assert conn_ids["A"] == conn_ids["B"] and len(conn_ids["A"]) == 1
        # Each id really is the client's own row.
        for name, conn in (("A", a), ("B", b)):
            assert _one(conn, "SELECT who FROM t WHERE id = LAST_INSERT_ID()") == (name,)
