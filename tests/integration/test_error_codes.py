"""mysqlgate's own errors as each client library shows and classifies them (issue 15
part 1; SPEC section 4; the table in README.md, "Troubleshooting: errors mysqlgate
sends").

Each error is made to happen for real through a running mysqlgate: the upstream
connection killed on the server in the middle of a statement (outside and inside a
transaction), the server stopped, the pool's queue timeout, pool.idle_transaction_timeout
ending a transaction or a pinned session. Each client then must:

- show the code, the SQLSTATE and mysqlgate's own message: never a client-range code,
  which libmariadb (mysqlclient, the `mariadb` client) would turn into 2027 "Malformed
  packet", the message lost;
- raise the DB-API class the README's table says;
- not take the connection for dead (SQLAlchemy's is_disconnect for the driver is False;
  SQLAlchemy's pool and Django keep the connection), since mysqlgate keeps it usable;
- go on, on the same connection.

Clients: PyMySQL, mysqlclient (libmariadb), mysql-connector-python pure and with its C
extension (in a process of its own: connector_cext_client.py says why), aiomysql,
asyncmy, the `mariadb` command-line client and MySQL's own `mysql` (9.7, from the test
harness), and two applications' views: SQLAlchemy's pool and Django, both on mysqlclient.
Every client lives in a thread of its own (Django's connections and an asyncio driver's
loop belong to one thread), so that the test can start a statement and make the fault
while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomysql
import asyncmy
import mysql.connector
import MySQLdb
import pymysql
import pytest
from harness import DbServer, Gate, ScratchDb, fetch_rows, wait_until
from harness.mysql_dist import mysql_dist
from sqlalchemy import URL, Connection, create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine

# Codes of the client libraries' own: an ERR packet with one is "malformed" to libmariadb
# (MariaDB's ERR_Packet documentation; ma_net_safe_read). Written out here rather than
# taken from mysqlgate.errors: the test states the rule itself.
CLIENT_CODES = (range(2000, 3000), range(5000, 6000))
TIMEOUT = 60.0  # for any one step; a hang fails the step, not the whole run
CEXT_CLIENT = Path(__file__).with_name("connector_cext_client.py")
Rows = list[tuple[str, ...]]


# -- what each error must look like -----------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    code: int
    sqlstate: str
    words: tuple[str, ...]  # in the message, which starts with "mysqlgate: "
    category: str = "OperationalError"  # the DB-API class (the wrappers keep its name)
    # Connector/Python picks the class by SQLSTATE class: 40 is InternalError.
    connector_category: str = "OperationalError"
    # Whether SQLAlchemy's pool keeps the connection: it classifies none of these errors
    # as a disconnect, and the ROLLBACK it sends on a connection it gets back, with no
    # transaction open, is answered by mysqlgate without the server (so it does not fail
    # while the server is unreachable).
    sqlalchemy_keeps: bool = True


LOST = Expected(1158, "08S01", ("the upstream MySQL connection was lost while the statement ran",
                                "may or may not have run", "still usable"))
LOST_IN_TRANSACTION = Expected(1158, "08S01", ("lost while the statement ran",
                                               "transaction was rolled back",
                                               "nothing of it was committed"))
UNREACHABLE = Expected(1053, "08S01", ("cannot be reached", "keeps trying"))
POOL_FULL = Expected(1040, "08004", ("no upstream connection became free",))
IDLE_TRANSACTION = Expected(1213, "40001", ("transaction was rolled back",
                                            "pool.idle_transaction_timeout"),
                            connector_category="InternalError")
IDLE_PINNED = Expected(1158, "08S01", ("session state (user_variables) was dropped",
                                       "pool.idle_transaction_timeout"))


class Seen(Exception):
    """An error as a client showed it."""

    def __init__(self, client: str, code: int, sqlstate: str | None, message: str,
                 category: str | None, disconnect: bool | None, shown: str) -> None:
        super().__init__(f"{client}: {shown}")
        self.client = client
        self.code = code
        self.sqlstate = sqlstate
        self.message = message
        self.category = category  # the exception's class name; None for a CLI
        self.disconnect = disconnect  # SQLAlchemy's is_disconnect; None: not asked
        self.shown = shown  # what the user reads


def _text(value: Any) -> str:
    """A value as the command-line clients print it, so that all clients compare alike."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray):
        return value.decode()
    return str(value)


def _rows(rows: Any) -> Rows:
    return [tuple(_text(v) for v in row) for row in rows or ()]


@functools.cache
def _dialect(driver: str) -> Any:
    """SQLAlchemy's dialect for `driver` (no connection made): its is_disconnect decides
    whether an app's pool throws the connection away."""
    if driver in ("aiomysql", "asyncmy"):
        return create_async_engine(f"mysql+{driver}://").sync_engine.dialect
    return create_engine(f"mysql+{driver}://").dialect


# -- clients ----------------------------------------------------------------------------------


class Client:
    """One client connection through the gate, driven from a thread of its own."""

    name = ""
    shows_sqlstate = True  # Django's and SQLAlchemy's exceptions carry none

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.db = gate.db
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=self.name)

    def connect(self) -> None:
        self._thread.submit(self._connect).result(TIMEOUT)

    def start(self, sql: str) -> Future[Rows]:
        """Send `sql`; the future has its rows, or raises Seen."""
        return self._thread.submit(self._run, sql)

    def run(self, sql: str) -> Rows:
        return self.start(sql).result(TIMEOUT)

    def app_keeps_connection(self) -> bool | None:
        """After an error: whether the application's pool keeps this connection (None: a
        bare driver, no pool to ask)."""
        return None

    def close(self) -> None:
        try:
            self._thread.submit(self._close).result(TIMEOUT)
        finally:
            self._thread.shutdown()

    def _connect(self) -> None:
        raise NotImplementedError

    def _run(self, sql: str) -> Rows:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {"host": self.gate.host, "port": self.gate.port, "user": self.db.user,
                "password": self.db.password}


class DriverClient(Client):
    """A Python DB-API driver: its exception, and what SQLAlchemy's dialect makes of it."""

    dialect = ""

    def _seen(self, exc: BaseException, code: int, sqlstate: str | None, message: str
              ) -> Seen:
        return Seen(self.name, code, sqlstate, message, type(exc).__name__,
                    bool(_dialect(self.dialect).is_disconnect(exc, None, None)),
                    f"{type(exc).__name__}: {exc}")


class PyMySQLClient(DriverClient):
    name = dialect = "pymysql"

    def _connect(self) -> None:
        self.conn = pymysql.connect(**self._params(), database=self.db.database,
                                    autocommit=True, read_timeout=TIMEOUT)

    def _run(self, sql: str) -> Rows:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql)
                return _rows(cursor.fetchall())
        except pymysql.err.MySQLError as exc:
            raise self._seen(exc, exc.args[0], exc.sqlstate, exc.args[1]) from exc

    def _close(self) -> None:
        if self.conn.open:
            self.conn.close()


class MysqlclientClient(DriverClient):
    """mysqlclient (MySQLdb) on libmariadb 3.3: the library that rejects client codes."""

    name = "mysqlclient"
    dialect = "mysqldb"

    def _connect(self) -> None:
        self.conn = MySQLdb.connect(**self._params(), database=self.db.database,
                                    autocommit=True, read_timeout=int(TIMEOUT))

    def _run(self, sql: str) -> Rows:
        cursor = self.conn.cursor()
        try:
            cursor.execute(sql)
            return _rows(cursor.fetchall())
        except MySQLdb.Error as exc:
            raise self._seen(exc, exc.args[0], self.conn.sqlstate(), exc.args[1]) from exc
        finally:
            cursor.close()

    def _close(self) -> None:
        with contextlib.suppress(MySQLdb.Error):
            self.conn.close()


class ConnectorPureClient(DriverClient):
    name = "connector-pure"
    dialect = "mysqlconnector"

    def _connect(self) -> None:
        self.conn = mysql.connector.connect(
            **self._params(), database=self.db.database, autocommit=True, use_pure=True,
            ssl_disabled=True, connection_timeout=int(TIMEOUT))

    def _run(self, sql: str) -> Rows:
        try:
            cursor = self.conn.cursor()  # it pings the server first
            try:
                cursor.execute(sql)
                return _rows(cursor.fetchall() if cursor.with_rows else [])
            finally:
                cursor.close()
        except mysql.connector.Error as exc:
            raise self._seen(exc, exc.errno, exc.sqlstate, exc.msg) from exc

    def _close(self) -> None:
        self.conn.close()


class _Lines:
    """The lines a child process writes, read by a thread so that a wait can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self) -> str | None:
        """The next line; None once the process closed its output."""
        return self._lines.get(timeout=TIMEOUT)

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it exited: its output says why
            self.proc.stdin.write(text)
            self.proc.stdin.flush()

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            self.proc.wait(TIMEOUT)
        finally:
            self._reader.join(TIMEOUT)
            self.proc.stdout.close()


class ConnectorCClient(Client):
    """mysql-connector-python with its C extension (MySQL's libmysqlclient)."""

    name = "connector-c"

    def _connect(self) -> None:
        params = {**self._params(), "database": self.db.database, "autocommit": True,
                  "ssl_disabled": True, "connection_timeout": int(TIMEOUT)}
        proc = subprocess.Popen([sys.executable, str(CEXT_CLIENT), json.dumps(params)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines = _Lines(proc)
        self._call({"op": "connect"})

    def _run(self, sql: str) -> Rows:
        return self._call({"op": "run", "sql": sql})

    def _close(self) -> None:
        self.lines.write(json.dumps({"op": "close"}) + "\n")
        self.lines.close()

    def _call(self, request: dict[str, str]) -> Rows:
        self.lines.write(json.dumps(request) + "\n")
        line = self.lines.next()
        assert line is not None, f"{self.name} exited (code {self.lines.proc.poll()})"
        reply = json.loads(line)
        error = reply.get("error")
        if error is not None:
            raise Seen(self.name, error["errno"], error["sqlstate"], error["msg"],
                       error["category"], error["disconnect"],
                       f"{error['category']}: {error['errno']} ({error['sqlstate']}): "
                       f"{error['msg']}")
        return [tuple(row) for row in reply["rows"]]


class AsyncClient(DriverClient):
    """An asyncio driver, on a loop of its own in the client's thread."""

    def _connect(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(self._open())

    async def _open(self) -> Any:
        raise NotImplementedError

    def _run(self, sql: str) -> Rows:
        async def execute() -> Rows:
            async with self.conn.cursor() as cursor:
                await cursor.execute(sql)
                return _rows(await cursor.fetchall())

        try:
            return self.loop.run_until_complete(asyncio.wait_for(execute(), TIMEOUT))
        except pymysql.err.MySQLError as exc:  # aiomysql's errors are PyMySQL's
            raise self._seen(exc, exc.args[0], exc.sqlstate, exc.args[1]) from exc
        except asyncmy.errors.MySQLError as exc:
            raise self._seen(exc, exc.args[0], exc.sqlstate, exc.args[1]) from exc

    def _close(self) -> None:
        try:
            self.loop.run_until_complete(self.conn.ensure_closed())
        except (OSError, pymysql.err.MySQLError, asyncmy.errors.MySQLError):
            self.conn.close()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


class AiomysqlClient(AsyncClient):
    name = dialect = "aiomysql"

    async def _open(self) -> Any:
        return await aiomysql.connect(**self._params(), db=self.db.database, autocommit=True,
                                      connect_timeout=TIMEOUT)


class AsyncmyClient(AsyncClient):
    name = dialect = "asyncmy"

    async def _open(self) -> Any:
        return await asyncmy.connect(**self._params(), database=self.db.database,
                                     autocommit=True, connect_timeout=TIMEOUT)


_CLI_ERROR = re.compile(r"^ERROR (\d+) \((\w{5})\)(?: at line \d+)?: (.*)$")
_CLI_WARNING = re.compile(r"^\S+: \[Warning\] ")  # MySQL's: "a password on the command line"
_CLI_ECHO = "-" * 14  # the mariadb client prints a failing statement between two of these
MARKER_BASE = 900_000_000  # KILL of an id no client has: mysqlgate answers it itself


class CliClient(Client):
    """A command-line client reading statements from a pipe, as from a script: batch mode,
    --force (it goes on after an error). Each statement is followed by a marker,
    `KILL <an id no client has>`, which mysqlgate refuses by itself (1094, the id in
    the message) also while every statement fails: its error line ends the statement's
    output. Errors come in the same pipe as results, in order."""

    def program(self) -> tuple[list[str], dict[str, str] | None]:
        """argv (up to its options) and environment that run the client."""
        raise NotImplementedError

    def _connect(self) -> None:
        argv, env = self.program()
        argv += ["--no-defaults", "--protocol=TCP", f"--host={self.gate.host}",
                 f"--port={self.gate.port}", f"--user={self.db.user}",
                 f"--password={self.db.password}", "--batch", "--skip-column-names",
                 "--force", "--unbuffered", self.db.database]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        self.lines = _Lines(proc)
        self.statements = 0
        assert self._run("SELECT 'logged in'") == [("logged in",)]

    def _run(self, sql: str) -> Rows:
        self.statements += 1
        marker = MARKER_BASE + self.statements
        self.lines.write(f"{sql};\nKILL {marker};\n")
        output: list[str] = []
        while True:
            line = self.lines.next()
            if line is None or line.endswith(f"Unknown thread id: {marker}"):
                break
            if line == _CLI_ECHO:  # skip the echo: the statement, the dashes, a blank
                while self.lines.next() not in (_CLI_ECHO, None):
                    pass
                self.lines.next()
            elif not _CLI_WARNING.match(line):
                output.append(line)
        for text in output:
            error = _CLI_ERROR.match(text)
            if error is not None:
                raise Seen(self.name, int(error[1]), error[2], error[3], None, None, text)
        assert line is not None, f"{self.name} exited: {output}"
        return [tuple(text.split("\t")) for text in output]

    def _close(self) -> None:
        self.lines.close()


class MariadbCliClient(CliClient):
    name = "mariadb-cli"

    def program(self) -> tuple[list[str], dict[str, str] | None]:
        path = shutil.which("mariadb")
        assert path is not None, "the mariadb command-line client is not installed"
        return [path], None


class MysqlCliClient(CliClient):
    """MySQL's own client (libmysqlclient), from the MySQL build the harness uses."""

    name = "mysql-cli"

    def program(self) -> tuple[list[str], dict[str, str] | None]:
        dist = mysql_dist()
        return dist.command("mysql"), dist.env()


class SqlAlchemyClient(Client):
    """An application on SQLAlchemy's pool (mysqlclient, autocommit as mysqlgate advises):
    DBAPIError.connection_invalidated says whether the pool threw the connection away."""

    name = "sqlalchemy"
    shows_sqlstate = False

    def _connect(self) -> None:
        url = URL.create("mysql+mysqldb", username=self.db.user, password=self.db.password,
                         host=self.gate.host, port=self.gate.port, database=self.db.database)
        self.engine = create_engine(url, pool_size=1, max_overflow=0,
                                    isolation_level="AUTOCOMMIT",
                                    connect_args={"read_timeout": int(TIMEOUT)})
        self.conn: Connection = self.engine.connect()
        self.dbapi_connection = self.conn.connection.dbapi_connection

    def _run(self, sql: str) -> Rows:
        try:
            result = self.conn.exec_driver_sql(sql)
            return _rows(result.fetchall() if result.returns_rows else [])
        except sa_exc.DBAPIError as exc:
            orig: Any = exc.orig
            raise Seen(self.name, orig.args[0], None, orig.args[1], type(exc).__name__,
                       exc.connection_invalidated, f"{type(exc).__name__}: {exc}") from exc

    def app_keeps_connection(self) -> bool:
        return bool(self._thread.submit(self._checkout_again).result(TIMEOUT))

    def _checkout_again(self) -> bool:
        """Give the connection back to the pool and take one: the same, if it was kept."""
        try:
            self.conn.close()  # the end of the app's `with engine.connect()` block
        except sa_exc.OperationalError as exc:  # its ROLLBACK must not fail: answered locally
            raise AssertionError(f"the pool's ROLLBACK failed: {exc}") from exc
        self.conn = self.engine.connect()
        return self.conn.connection.dbapi_connection is self.dbapi_connection

    def _close(self) -> None:
        self.conn.close()
        self.engine.dispose()


# Django is configured once per process: the same way as test_django.py does (whichever
# module comes first), so that both work in one run. This module uses `default` only.
DJANGO_ALIASES = ("default", "other", "direct", "direct_other")


def _django_connections() -> Any:
    import django
    from django.conf import settings
    from django.db import connections

    if not settings.configured:
        placeholder = {"ENGINE": "django.db.backends.mysql", "NAME": "unset",
                       "HOST": "127.0.0.1", "PORT": "9", "USER": "unset", "PASSWORD": ""}
        settings.configure(
            DATABASES={alias: dict(placeholder) for alias in DJANGO_ALIASES},
            INSTALLED_APPS=[], USE_TZ=True, DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            SECRET_KEY="mysqlgate-tests")
        django.setup()
    return connections


class DjangoClient(Client):
    """An application on Django (mysqlclient) with persistent connections
    (CONN_MAX_AGE = None): what it does at the end of a request that had an error
    (close_if_unusable_or_obsolete) says whether it keeps the connection."""

    name = "django"
    shows_sqlstate = False

    def _connect(self) -> None:
        self.connections = _django_connections()
        settings = self.connections.settings["default"]
        self.saved = dict(settings)
        # The wrappers keep a reference to this very dict: update it in place.
        settings.update(HOST=self.gate.host, PORT=str(self.gate.port), NAME=self.db.database,
                        USER=self.db.user, PASSWORD=self.db.password, CONN_MAX_AGE=None,
                        OPTIONS={"read_timeout": int(TIMEOUT)})
        self.wrapper = self.connections["default"]
        self.wrapper.ensure_connection()
        self.raw = self.wrapper.connection

    def _run(self, sql: str) -> Rows:
        from django.db import Error as DjangoError

        try:
            with self.wrapper.cursor() as cursor:
                cursor.execute(sql)
                return _rows(cursor.fetchall() if cursor.description else [])
        except DjangoError as exc:
            raise Seen(self.name, exc.args[0], None, exc.args[1], type(exc).__name__, None,
                       f"{type(exc).__name__}: {exc}") from exc

    def app_keeps_connection(self) -> bool:
        def end_of_request() -> bool:
            self.wrapper.close_if_unusable_or_obsolete()
            return self.wrapper.connection is self.raw

        return bool(self._thread.submit(end_of_request).result(TIMEOUT))

    def _close(self) -> None:
        try:
            self.wrapper.close()
        finally:
            self.connections.settings["default"].clear()
            self.connections.settings["default"].update(self.saved)


CLIENTS: dict[str, type[Client]] = {
    client.name: client for client in (
        PyMySQLClient, MysqlclientClient, ConnectorPureClient, ConnectorCClient,
        AiomysqlClient, AsyncmyClient, MariadbCliClient, MysqlCliClient, SqlAlchemyClient,
        DjangoClient)
}


@pytest.fixture(params=list(CLIENTS))
def client_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@contextlib.contextmanager
def _connected(name: str, gate: Gate) -> Iterator[Client]:
    client = CLIENTS[name](gate)
    try:
        client.connect()
        yield client
    finally:
        client.close()


# -- checks and faults ------------------------------------------------------------------------


def _check(client: Client, seen: Seen, expected: Expected) -> None:
    """What the client showed, how it classified it, and whether the app keeps the
    connection."""
    assert not any(seen.code in codes for codes in CLIENT_CODES), seen
    sqlstate = expected.sqlstate if client.shows_sqlstate else None
    assert (seen.code, seen.sqlstate) == (expected.code, sqlstate), seen
    assert seen.message.startswith("mysqlgate: "), seen
    for words in expected.words:
        assert words in seen.message, (words, seen)
    if seen.category is not None:
        category = expected.connector_category if client.name.startswith("connector") \
            else expected.category
        assert seen.category == category, seen
    if seen.disconnect is not None:
        assert seen.disconnect is False, f"{seen}: taken for a dead connection"
    keeps = client.app_keeps_connection()
    if keeps is not None:
        wanted = expected.sqlalchemy_keeps if client.name == "sqlalchemy" else True
        assert keeps is wanted, f"{client.name} kept the connection: {keeps}"


def _error_of(client: Client, sql: str) -> Seen:
    with pytest.raises(Seen) as excinfo:
        client.run(sql)
    return excinfo.value


def _killed_mid_statement(client: Client, db: ScratchDb, sql: str) -> Seen:
    """Start `sql` on the client; once the server runs it, KILL its connection there."""
    running = client.start(sql)
    found: list[Any] = []

    def on_the_server() -> bool:
        found[:] = db.server.query(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO = %s",
            (db.user, sql))
        return bool(found) or running.done()

    wait_until(on_the_server, f"{sql} running on the server", timeout=TIMEOUT)
    assert found, f"{sql} ended before it was killed: {running.result()}"
    db.server.query(f"KILL {int(found[0][0])}")
    with pytest.raises(Seen) as excinfo:
        running.result(TIMEOUT)
    return excinfo.value


def _idle_timeouts(gate: Gate) -> int:
    """pool.idle_transaction_timeout's count so far (the admin console's SHOW STATS)."""
    with contextlib.closing(pymysql.connect(host="127.0.0.1", port=gate.admin_port,
                                            user="admin")) as console:
        for name, total, *_ in fetch_rows(console, "SHOW STATS"):
            if name == "idle_transaction_timeouts":
                return int(total)
    raise AssertionError("SHOW STATS has no idle_transaction_timeouts")


@pytest.fixture
def table(db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as direct:
        fetch_rows(direct, "CREATE TABLE t (v INT) ENGINE=InnoDB")


# -- one test per error, each run by every client --------------------------------------------


def test_upstream_killed_mid_statement(client_name: str, gate_factory: Callable[..., Gate],
                                       db: ScratchDb) -> None:
    """A statement that may write (DO is never retried) loses its upstream connection
    while it runs: the client is told it may or may not have run, and goes on."""
    gate = gate_factory("--pool-size", "2")
    with _connected(client_name, gate) as client:
        assert client.run("SELECT 'before'") == [("before",)]
        seen = _killed_mid_statement(client, db, "DO SLEEP(60)")
        _check(client, seen, LOST)
        assert client.run("SELECT 'after'") == [("after",)]


def test_upstream_killed_mid_transaction(client_name: str, gate_factory: Callable[..., Gate],
                                         db: ScratchDb, table: None) -> None:
    """The same inside a transaction: the client is told the transaction is gone (the
    server rolled it back), and its connection goes on outside any transaction."""
    gate = gate_factory("--pool-size", "2")
    with _connected(client_name, gate) as client:
        client.run("BEGIN")
        client.run("INSERT INTO t VALUES (1)")
        seen = _killed_mid_statement(client, db, "DO SLEEP(60)")
        _check(client, seen, LOST_IN_TRANSACTION)
        assert client.run("SELECT COUNT(*) FROM t") == [("0",)]


def test_upstream_server_stopped(client_name: str, private_server: DbServer,
                                 gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    """The server stops: the client's statement waits out pool.queue_timeout for it (a
    restart costs a delay, not an error), then is refused (it did not run), and runs on
    the same client connection once the server is back. (A short queue timeout: these
    waits are the test's whole time.)"""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "2")
    with _connected(client_name, gate) as client:
        assert client.run("SELECT 'before'") == [("before",)]
        private_server.stop()
        _check(client, _error_of(client, "SELECT 'while stopped'"), UNREACHABLE)
        # Again, now that mysqlgate knows the server is down (Connector/Python pings
        # before each statement: the ping must not fail, or its users see "MySQL
        # Connection not available" instead).
        again = _error_of(client, "SELECT 'still stopped'")
        assert again.code == UNREACHABLE.code and "cannot be reached" in again.message, again
        private_server.start()
        served: list[Rows] = []

        def served_again() -> bool:
            try:
                served.append(client.run("SELECT 'after'"))
            except Seen as seen:
                assert seen.code == UNREACHABLE.code, seen
                return False
            return True

        wait_until(served_again, "the statement served after the server came back",
                   timeout=TIMEOUT)
        assert served == [[("after",)]]


def test_pool_queue_timeout(client_name: str, gate_factory: Callable[..., Gate],
                            db: ScratchDb) -> None:
    """Another client holds the pool's only connection in a transaction for longer than
    pool.queue_timeout: the statement did not run; the client goes on once it is free."""
    gate = gate_factory("--pool-size", "1", "--pool-queue-timeout", "1")
    with _connected(client_name, gate) as client, \
            contextlib.closing(gate.connect()) as holder:
        assert client.run("SELECT 'before'") == [("before",)]
        holder.begin()
        fetch_rows(holder, "SELECT 1")  # in its transaction: holds the connection
        seen = _error_of(client, "SELECT 'waits'")
        # Given back first: SQLAlchemy's pool rolls back a connection it gets back, and
        # that ROLLBACK too would wait for the pool's only connection.
        holder.rollback()
        _check(client, seen, POOL_FULL)
        assert client.run("SELECT 'after'") == [("after",)]


def test_idle_transaction_rolled_back(client_name: str, gate_factory: Callable[..., Gate],
                                      db: ScratchDb, table: None) -> None:
    """pool.idle_transaction_timeout ends a transaction the client left open: its next
    statement is refused with 1213 (nothing of the transaction was committed, restart
    it), and the client goes on."""
    gate = gate_factory("--pool-size", "2", "--pool-idle-transaction-timeout", "1")
    with _connected(client_name, gate) as client:
        client.run("BEGIN")
        client.run("INSERT INTO t VALUES (1)")
        wait_until(lambda: _idle_timeouts(gate) >= 1, "the idle transaction rolled back",
                   timeout=TIMEOUT)
        _check(client, _error_of(client, "SELECT 'next'"), IDLE_TRANSACTION)
        assert client.run("SELECT COUNT(*) FROM t") == [("0",)]


def test_idle_pinned_session_dropped(client_name: str, gate_factory: Callable[..., Gate],
                                     db: ScratchDb) -> None:
    """The same for a client pinned by session state (a user variable) and idle: its
    session is dropped, its next statement refused; then it goes on in a fresh one."""
    gate = gate_factory("--pool-size", "2", "--pool-idle-transaction-timeout", "1")
    with _connected(client_name, gate) as client:
        client.run("SET @pinned = 42")
        wait_until(lambda: _idle_timeouts(gate) >= 1, "the idle session dropped",
                   timeout=TIMEOUT)
        _check(client, _error_of(client, "SELECT @pinned"), IDLE_PINNED)
        assert client.run("SELECT @pinned") == [("NULL",)]
