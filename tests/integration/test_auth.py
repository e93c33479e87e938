"""Client authentication at mysqlgate (SPEC sections 2 and 6): the account's own user and
password, mysql_native_password and caching_sha2_password (fast path, auth switch), 1045
for bad credentials without touching the upstream, and real clients logging in."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from harness import Gate, LoginOnly, ScratchDb
from pymysql.constants import ER

PLUGINS = ("mysql_native_password", "caching_sha2_password")

# How long after the refusals we keep watching for an upstream login they might cause.
# An observation window, not synchronisation: a correct gate opens nothing at all.
WATCH_AFTER_REFUSALS = 0.5

# The server's per-account login counter: MariaDB's information_schema.USER_STATISTICS,
# kept while userstat is on (the tests that read it turn it on for themselves); MySQL's
# performance_schema.accounts, always.
COUNT_LOGINS = pytest.mark.server_options(userstat={"mariadb": 1})
LOGINS_SQL = {
    "mariadb": "SELECT TOTAL_CONNECTIONS FROM information_schema.USER_STATISTICS"
               " WHERE USER = %s",
    "mysql": "SELECT SUM(TOTAL_CONNECTIONS) FROM performance_schema.accounts WHERE USER = %s",
}


def _upstream_logins(db: ScratchDb) -> int:
    """How many times `db`'s account has logged in to the server since counting began. A
    counter, unlike a processlist snapshot: a connection opened and closed between two
    looks is counted too."""
    rows = db.server.query(LOGINS_SQL[db.server.flavour], (db.user,))
    return int(rows[0][0] or 0) if rows else 0


def _pool_opens(gate: Gate) -> int:
    """Upstream connections the gate's pool has opened (its debug log says so)."""
    return gate.log_text().count(": opened upstream ")


def _gate_idle(gate_factory: Callable[..., Gate], upstream: ScratchDb, *args: str) -> Gate:
    """A gate whose startup probe connection has gone, so the user has no connections."""
    gate = gate_factory(*args, db=upstream)
    assert upstream.wait_processlist_count(0) == 0, "the gate kept an upstream connection at start"
    return gate


def _login_refused(gate: Gate, **kwargs: Any) -> pymysql.err.OperationalError:
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        gate.connect(connect_timeout=10, **kwargs)
    return excinfo.value


def _query_works(conn: pymysql.connections.Connection, db: ScratchDb) -> None:
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER(), DATABASE(), 6 * 7")
            assert cursor.fetchone() == (f"{db.user}@%", db.database, 42)
    finally:
        conn.close()


@COUNT_LOGINS
@pytest.mark.parametrize("plugin", PLUGINS)
def test_wrong_password_is_refused_without_an_upstream_connection(
    gate_factory: Callable[..., Gate], db: ScratchDb, plugin: str
) -> None:
    """A client that has not logged in never touches an upstream connection (SPEC
    section 2): not during its refusal, nor later. Counted, not sampled: the account's
    server logins and the pool's opens, over all attempts and a short window after."""
    gate = _gate_idle(gate_factory, db, "--auth-plugin", plugin)
    logins = _upstream_logins(db)  # the gate's startup probe
    assert _pool_opens(gate) == 0
    for attempt in range(5):
        error = _login_refused(gate, password=f"wrong-{attempt}")
        code, message = error.args
        assert code == ER.ACCESS_DENIED_ERROR, error  # 1045
        assert message.startswith("mysqlgate:"), message
        assert db.user in message
        assert db.password not in message
        assert _upstream_logins(db) == logins, f"attempt {attempt} opened an upstream connection"
    time.sleep(WATCH_AFTER_REFUSALS)
    assert _upstream_logins(db) == logins, "an upstream connection opened after the refusals"
    assert _pool_opens(gate) == 0, "the pool opened a connection for a refused client"

    # The right password still works after the failures, and its one upstream login is
    # seen by both counts: they would have seen one for a refused client too.
    _query_works(gate.connect(), db)
    assert _upstream_logins(db) == logins + 1
    assert _pool_opens(gate) == 1


@COUNT_LOGINS
def test_wrong_user_and_missing_password_are_refused(
    gate_factory: Callable[..., Gate], db: ScratchDb, db_factory: Callable[..., ScratchDb]
) -> None:
    gate = _gate_idle(gate_factory, db)
    other = db_factory()  # a real account on the server, but not the gate's
    logins = _upstream_logins(db)

    for kwargs in (
        {"user": "nobody_here", "password": db.password},
        {"user": other.user, "password": other.password, "database": other.database},
        {"password": ""},
    ):
        error = _login_refused(gate, **kwargs)
        code, message = error.args
        assert code == ER.ACCESS_DENIED_ERROR, (kwargs, error)
        assert message.startswith("mysqlgate:"), message
        assert db.password not in message and other.password not in message
    time.sleep(WATCH_AFTER_REFUSALS)
    assert _upstream_logins(db) == logins
    assert _upstream_logins(other) == 0
    assert _pool_opens(gate) == 0


@pytest.mark.parametrize("plugin", PLUGINS)
def test_pymysql_logs_in_with_the_plugin_the_greeting_names(
    gate_factory: Callable[..., Gate], db: ScratchDb, plugin: str
) -> None:
    gate = gate_factory("--auth-plugin", plugin)
    for _ in range(2):  # caching_sha2_password: the second login is the cached fast path too
        conn = gate.connect()
        assert conn._auth_plugin_name == plugin  # PyMySQL answers with the greeting's plugin
        _query_works(conn, db)
    _query_works(gate.connect(unix_socket=gate.socket), db)


def _mariadb_cli(
    gate: Gate, db: ScratchDb, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    cli = shutil.which("mariadb") or shutil.which("mysql")
    assert cli is not None, "the mariadb command-line client is not installed"
    return subprocess.run(
        [
            cli,
            "--no-defaults",
            f"--host={gate.host}",
            f"--port={gate.port}",
            "--protocol=TCP",
            f"--user={db.user}",
            f"--password={db.password if password is None else password}",
            "--batch",
            "--skip-column-names",
            *args,
            "-e",
            "SELECT CURRENT_USER(), DATABASE(), 6 * 7",
            db.database,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    "gate_plugin,client_args",
    [
        ("caching_sha2_password", ["--default-auth=mysql_native_password"]),
        ("caching_sha2_password", []),
        ("mysql_native_password", []),
    ],
    ids=["sha2-gate-native-client", "sha2-gate-default-client", "native-gate-default-client"],
)
def test_mariadb_cli_logs_in(
    gate_factory: Callable[..., Gate], db: ScratchDb, gate_plugin: str, client_args: list[str]
) -> None:
    gate = gate_factory("--auth-plugin", gate_plugin)
    result = _mariadb_cli(gate, db, *client_args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0].split("\t") == [f"{db.user}@%", db.database, "42"]

    refused = _mariadb_cli(gate, db, *client_args, password="not-the-password")
    assert refused.returncode != 0
    assert "ERROR 1045" in refused.stderr and "mysqlgate:" in refused.stderr, refused.stderr


@pytest.mark.parametrize("gate_plugin", PLUGINS)
@pytest.mark.parametrize("client_plugin", PLUGINS)
def test_mysql_connector_logs_in(
    gate_factory: Callable[..., Gate], db: ScratchDb, gate_plugin: str, client_plugin: str
) -> None:
    import mysql.connector as connector
    gate = gate_factory("--auth-plugin", gate_plugin)
    params = {
        "host": gate.host,
        "port": gate.port,
        "user": db.user,
        "database": db.database,
        "auth_plugin": client_plugin,
        "ssl_disabled": True,
        "use_pure": True,
        "connection_timeout": 10,
    }
    for _ in range(2):
        conn = connector.connect(password=db.password, **params)
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT CURRENT_USER(), DATABASE(), 6 * 7")
            assert cursor.fetchall() == [(f"{db.user}@%", db.database, 42)]
            cursor.close()
        finally:
            conn.close()

    with pytest.raises(connector.Error) as excinfo:
        connector.connect(password="not-the-password", **params)
    assert excinfo.value.errno == ER.ACCESS_DENIED_ERROR
    assert "mysqlgate:" in str(excinfo.value.msg)


@COUNT_LOGINS
@pytest.mark.parametrize("plugin", PLUGINS)
def test_account_with_empty_password(
    gate_factory: Callable[..., Gate], db_factory: Callable[..., ScratchDb], plugin: str
) -> None:
    empty = db_factory(password="")
    with empty.connect(password="") as direct, direct.cursor() as cursor:  # as on the server
        cursor.execute("SELECT CURRENT_USER()")
        assert cursor.fetchone() == (f"{empty.user}@%",)
    gate = _gate_idle(gate_factory, empty, "--auth-plugin", plugin)

    logins = _upstream_logins(empty)
    for password in ("something", "x"):
        error = _login_refused(gate, password=password)
        assert error.args[0] == ER.ACCESS_DENIED_ERROR, error
        assert error.args[1].startswith("mysqlgate:"), error
    time.sleep(WATCH_AFTER_REFUSALS)
    assert _upstream_logins(empty) == logins
    assert _pool_opens(gate) == 0

    for _ in range(2):
        _query_works(gate.connect(password=""), empty)


def test_database_named_at_login_is_checked_at_login(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A database the account cannot use fails the login with the server's own error,
    code and text, as on a direct connection; one it can use works, and so does a
    second login with it (answered from what the server said the first time)."""
    with db.root() as root, root.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{db.database}_2`")
        for host in ("%", "localhost"):
            cursor.execute(f"GRANT ALL ON `{db.database}_2`.* TO %s@%s", (db.user, host))
    try:
        gate = gate_factory()
        for name in ("does_not_exist", "mysql", f"{db.database}_2"):
            try:
                direct_conn = db.connect(database=name, ssl_disabled=True)
            except pymysql.err.MySQLError as exc:
                with pytest.raises(pymysql.err.MySQLError) as excinfo:
                    gate.connect(database=name, ssl_disabled=True)
                assert excinfo.value.args == exc.args
                assert type(excinfo.value) is type(exc)
                # A client that sends nothing after its login (PyMySQL sends SET NAMES,
                # whose replay would fail the same way): the login itself must fail.
                with pytest.raises(pymysql.err.MySQLError) as login_only:
                    LoginOnly(host=gate.host, port=gate.port, user=db.user,
                              password=db.password, database=name, autocommit=None)
                assert login_only.value.args == exc.args
                continue
            direct_conn.close()
            for _ in range(2):
                conn = gate.connect(database=name, ssl_disabled=True)
                try:
                    with conn.cursor() as cursor:
                        cursor.execute("SELECT DATABASE()")
                        assert cursor.fetchone() == (name,)
                finally:
                    conn.close()
    finally:
        with db.root() as root, root.cursor() as cursor:
            cursor.execute(f"DROP DATABASE `{db.database}_2`")
