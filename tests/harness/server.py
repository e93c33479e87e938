"""A throwaway database server for tests: its own data dir, port and socket, started and
stopped by the test run. `DbServer` is what the tests use; mariadb.py and mysql.py say
how each flavour is installed and started.

The server runs with grants on (accounts, passwords and per-account limits behave as in
production) and with settings that make it start in about a second: a small redo log,
no binary log, no name resolution, relaxed flushing. Nothing here is tuned for durability.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pymysql

from .dialect import DIALECTS, Dialect
from .process import Managed, kill, terminate

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ServerError(RuntimeError):
    """The test server could not be set up, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def option_args(options: Mapping[str, Any]) -> list[str]:
    """Turn {"wait_timeout": 2, "skip_log_bin": True} into ["--wait-timeout=2", "--skip-log-bin"].

    True gives a bare flag; False gives the flag's --skip- form.
    """
    args = []
    for name, value in options.items():
        flag = name.replace("_", "-")
        if value is True:
            args.append(f"--{flag}")
        elif value is False:
            args.append(f"--skip-{flag}")
        else:
            args.append(f"--{flag}={value}")
    return args


def normalize(options: Mapping[str, Any]) -> dict[str, Any]:
    return {name.replace("-", "_"): value for name, value in options.items()}


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class DbServer(Managed):
    """One server process with a throwaway data dir, on 127.0.0.1 and a unix socket.

    `start()` initializes the data dir on first use and (re)starts the server on the same
    port, socket and data, so tests can stop, kill and restart it. `close()` stops it and
    deletes everything. Usable as a context manager. Root logs in without a password
    (over the socket, or TCP from 127.0.0.1).
    """

    host = "127.0.0.1"
    flavour: ClassVar[str]  # "mariadb" or "mysql"
    # Options every server of the flavour gets; a caller's options override these by name.
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: Mapping[str, Any] | None = None, *,
                 startup_timeout: float = 60.0) -> None:
        self.options = {**self.default_options, **normalize(options or {})}
        self.startup_timeout = startup_timeout
        # A short path under /tmp: unix socket paths are limited to 107 bytes.
        self.basedir = Path(tempfile.mkdtemp(prefix=f"mysqlgate-{self.flavour}-"))
        self.datadir = self.basedir / "data"
        self.socket = str(self.basedir / "mysqld.sock")
        self.pid_file = self.basedir / "mysqld.pid"
        self.error_log = self.basedir / "error.log"
        self.stderr_log = self.basedir / "stderr.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def dialect(self) -> Dialect:
        return DIALECTS[self.flavour]

    @property
    def offers_tls(self) -> bool:
        """Whether its greeting offers TLS (MySQL makes certificates at initialize and
        does by default; MariaDB only with ssl_cert and ssl_key)."""
        return offers_tls(self.host, self.port)

    @property
    def is_mysql(self) -> bool:
        return self.flavour == "mysql"

    @property
    def is_mariadb(self) -> bool:
        return self.flavour == "mariadb"

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the server (initializing the data dir the first time) and wait until it
        accepts connections."""
        if self.running:
            raise ServerError("the server is already running")
        if not self.datadir.exists():
            self._install_datadir()
        argv = [
            *self._command(),
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            *self._user_args(),
            *self._flavour_args(),
            *option_args(self.options),
        ]
        with open(self.stderr_log, "ab") as stderr:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=self._env(),
                start_new_session=True,  # a ^C to pytest should not reach the server first
            )
        self._wait_ready()

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down gracefully (SIGTERM) and wait; SIGKILL if it takes longer than timeout."""
        if self._process is not None:
            terminate(self._process, timeout)
        self._reap()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would; the next start() recovers."""
        kill(self._process)
        self._reap()

    def close(self) -> None:
        """Stop the server and delete its data dir."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    # -- talking to it ------------------------------------------------------------------------

    def root_connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection as root (no password), autocommit on unless given; over the
        unix socket when it answers, else over TCP."""
        params: dict[str, Any] = {"user": "root", "password": "", "autocommit": True}
        params.update(kwargs)
        sock = self._connect_unix_socket(params.get("connect_timeout", 10))
        if sock is None:
            return pymysql.connect(host=self.host, port=self.port, **params)
        conn = pymysql.connect(unix_socket=self.socket, defer_connect=True, **params)
        conn.connect(sock)  # closes sock if the login fails
        return conn

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as root on a fresh connection and return all rows."""
        with contextlib.closing(self.root_connect()) as conn, conn.cursor() as cursor:
            cursor.execute(sql, args)
            return list(cursor.fetchall())

    def get_global(self, name: str) -> Any:
        """The value of global variable `name`."""
        _check_identifier(name)
        return self.query(f"SELECT @@GLOBAL.{name}")[0][0]

    def set_global(self, name: str, value: Any) -> Any:
        """SET GLOBAL name = value; returns the previous value, for restoring it later.

        Most variables, wait_timeout among them, apply to connections opened afterwards.
        """
        _check_identifier(name)
        with contextlib.closing(self.root_connect()) as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT @@GLOBAL.{name}")
            row = cursor.fetchone()
            assert row is not None
            cursor.execute(f"SET GLOBAL {name} = %s", (value,))
            return row[0]

    def error_log_tail(self, lines: int = 40) -> str:
        return (
            f"--- {self.error_log} ---\n{tail(self.error_log, lines)}\n"
            f"--- {self.stderr_log} ---\n{tail(self.stderr_log, lines)}"
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {self.socket} {state}>"

    # -- what each flavour says ---------------------------------------------------------------

    def _command(self) -> list[str]:
        """argv that runs the server binary."""
        raise NotImplementedError

    def _flavour_args(self) -> list[str]:
        return []

    def _env(self) -> dict[str, str] | None:
        return None

    def _install_datadir(self) -> None:
        raise NotImplementedError

    def _user_args(self) -> list[str]:
        # The server refuses to run as root unless told to; as anyone else --user is not
        # needed.
        return ["--user=root"] if os.geteuid() == 0 else []

    # -- internals ----------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._reap()
                raise ServerError(
                    f"{self.flavour} exited with code {code} during startup\n"
                    f"{self.error_log_tail()}"
                )
            try:
                conn = self.root_connect(connect_timeout=2)
            except pymysql.err.MySQLError as exc:
                last_error = exc
            else:
                conn.close()
                return
            time.sleep(0.05)
        self.kill()
        raise ServerError(
            f"{self.flavour} did not accept connections within {self.startup_timeout:.0f} s "
            f"(last error: {last_error})\n{self.error_log_tail()}"
        )

    def _connect_unix_socket(self, timeout: float) -> socket.socket | None:
        """A socket connected to the server's unix socket, or None if nothing listens there.

        We connect it ourselves because PyMySQL leaks its socket (a ResourceWarning, an error
        under our pytest settings) when a unix-socket connect is refused."""
        if not os.path.exists(self.socket):
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.socket)
        except OSError:
            sock.close()
            return None
        return sock

    def _reap(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            self._process = None


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a variable name: {name!r}")


def offers_tls(host: str, port: int) -> bool:
    """Whether the server's greeting on host:port offers TLS (CLIENT_SSL)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        header = _read_exactly(sock, 4)
        greeting = _read_exactly(sock, int.from_bytes(header[:3], "little"))
    # protocol version, version string NUL, thread id (4), scramble part 1 (8), filler,
    # then the lower two bytes of the capability flags.
    at = greeting.index(b"\0", 1) + 1 + 4 + 8 + 1
    capabilities = int.from_bytes(greeting[at:at + 2], "little")
    return bool(capabilities & 0x0800)


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ServerError("the server closed the connection during its greeting")
        data += chunk
    return data
