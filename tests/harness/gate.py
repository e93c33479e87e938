"""A mysqlgate process for tests: started on a free port and a unix socket in front of a
scratch database, with its log captured to a file.

Ready means every listener is open: the client ones, the admin console and metrics (a
test scrapes /metrics or logs in to the console right after start). mysqlgate says so
itself, as it tells systemd: READY=1 on $NOTIFY_SOCKET once all of them listen, so the
harness waits for that message rather than probing ports it would have to guess from
the arguments."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from .database import ScratchDb
from .process import Managed, kill, terminate
from .server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

DEFAULT_COMMAND = (sys.executable, "-m", "mysqlgate")


class GateError(RuntimeError):
    """mysqlgate did not start, or did not stop when asked."""


class Gate(Managed):
    """One mysqlgate process listening on 127.0.0.1:`port` and `socket`, upstream `db`.

    `command` replaces `python -m mysqlgate` (the harness's own tests use a stand-in,
    which sends READY=1 too);
    `extra_args` follow the standard --upstream/--listen arguments; `env` is added to the
    environment, which also gets MYSQLGATE_LOG_LEVEL=debug. stdout and stderr go to
    `log_path` (in `workdir`, a fresh temp dir unless given). `upstream` replaces the
    db's server as mysqlgate's upstream (the db's account still logs in through it).
    """

    def __init__(
        self,
        db: ScratchDb,
        *extra_args: str,
        workdir: Path | None = None,
        command: Sequence[str] = DEFAULT_COMMAND,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 20.0,
        upstream: str | None = None,
    ) -> None:
        self.db = db
        self.upstream = upstream if upstream is not None else db.upstream_url
        self.extra_args = tuple(extra_args)
        self.command = tuple(command)
        self.extra_env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.host = "127.0.0.1"
        self.port = free_port()
        # The admin console's default port (6032) would be shared by every gate of a test.
        self.admin_port = free_port()
        # The socket gets its own short dir: unix socket paths are limited to 107 bytes and
        # pytest's tmp_path can be long.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="mysqlgate-gate-"))
        self.socket = str(self._socket_dir / "gate.sock")
        self.workdir = workdir if workdir is not None else self._socket_dir
        self.log_path = self.workdir / "gate.log"
        self._process: subprocess.Popen[bytes] | None = None
        # sd_notify's socket: the process reports READY=1 (and STOPPING=1) here. It stays
        # open for the process's life, so a later message does not fail (and log) there.
        self._notify_path = str(self._socket_dir / "notify.sock")
        self._notify: socket.socket | None = None

    @property
    def argv(self) -> list[str]:
        return [
            *self.command,
            "--upstream",
            self.upstream,
            "--listen",
            f"{self.host}:{self.port}",
            "--listen",
            f"unix:{self.socket}",
            *self.extra_args,
        ]

    @property
    def pid(self) -> int:
        if self._process is None:
            raise GateError("mysqlgate has not been started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended, else None."""
        return self._process.poll() if self._process is not None else None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and wait until it reports every listener open (READY=1).

        The ports were free when chosen; on a busy machine (two test runs, or the
        suite's two workers) another process can bind one before mysqlgate does. A first
        start that fails so takes new ports and tries again; a restart keeps its own."""
        first = self._process is None
        for attempt in range(3):
            try:
                self._start()
                return
            except GateError as exc:
                if not first or attempt == 2 or not self._lost_a_port(str(exc)):
                    raise
                self.port, self.admin_port = free_port(), free_port()

    def _lost_a_port(self, failure: str) -> bool:
        return "address already in use" in failure and any(
            f"{self.host}:{port}" in failure for port in (self.port, self.admin_port))

    def _start(self) -> None:
        if self.running:
            raise GateError("mysqlgate is already running")
        if self._notify is None:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(self._notify_path)
            self._notify.setblocking(False)
        else:  # a restart: what the last run said is old news
            self._notify_messages()
        env = {
            **os.environ,
            "MYSQLGATE_LOG_LEVEL": "debug",
            "PYTHONUNBUFFERED": "1",  # log lines reach the file as they are written
            "MYSQLGATE_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}",
            **self.extra_env,
            "NOTIFY_SOCKET": self._notify_path,
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"### {' '.join(self.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=env,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Until the process says READY=1: every listener it was given is open."""
        assert self._process is not None and self._notify is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if "READY=1" in self._notify_messages():
                return
            if self._process.poll() is not None:
                raise GateError(
                    f"mysqlgate exited with code {self._process.returncode} during startup\n"
                    f"{self.log_tail()}"
                )
            select.select([self._notify], [], [], 0.05)
        self.stop()
        raise GateError(
            f"mysqlgate did not report READY=1 (all listeners open) within "
            f"{self.ready_timeout:.0f} s\n{self.log_tail()}"
        )

    def _notify_messages(self) -> list[str]:
        """The sd_notify lines received since the last call."""
        assert self._notify is not None
        lines: list[str] = []
        while True:
            try:
                data = self._notify.recv(4096)
            except BlockingIOError:
                return lines
            lines.extend(data.decode(errors="replace").splitlines())

    def send_signal(self, signum: int) -> None:
        """Send a signal (e.g. SIGHUP to reload) to the running process."""
        if not self.running:
            raise GateError("mysqlgate is not running")
        assert self._process is not None
        self._process.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        if self._process is None:
            raise GateError("mysqlgate has not been started")
        return self._process.wait(timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code (negative:
        killed by that signal), None if it was never started."""
        if self._process is None:
            return None
        return terminate(self._process, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        kill(self._process)

    def close(self) -> None:
        """Stop the process and remove the socket dir (and the log, if it lives there)."""
        try:
            self.stop()
        finally:
            if self._notify is not None:
                self._notify.close()
                self._notify = None
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # -- using it -----------------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL connection through mysqlgate over TCP as the db's user, autocommit on.

        Pass unix_socket=gate.socket to go through the unix listener instead.
        """
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.db.user,
            "password": self.db.password,
            "database": self.db.database,
            "autocommit": True,
        }
        params.update(kwargs)
        return pymysql.connect(**params)

    def admin(self, sql: str) -> list[dict[str, Any]]:
        """The rows of one admin console command (SHOW POOLS, SHOW STATS...), as dicts."""
        with contextlib.closing(pymysql.connect(
                host="127.0.0.1", port=self.admin_port, user="admin", password="",
                cursorclass=pymysql.cursors.DictCursor)) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())

    def log_text(self) -> str:
        """Everything mysqlgate has written to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"--- {self.log_path} (last {lines} lines) ---\n{tail}"

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<Gate {self.host}:{self.port} pid={self._process and self._process.pid} {state}>"
