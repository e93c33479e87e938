"""Several mysqlgates on one account, as issue 18 runs them (bench/fleet.py and
tests/integration/test_fleet.py): busy clients on each gate, a sampler of the account's
connections on the server, each gate's own view of its share, and a person logging in
directly with the command-line client.

The clients run short transactions: BEGIN, SELECT SLEEP(hold), COMMIT, so a gate's rate
follows the connections it holds. The person logs in without a database, the gates and
the outsider with one: the sampler tells their connections apart by PROCESSLIST.DB.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql

from .database import ScratchDb
from .gate import Gate
from .mysql_dist import mysql_dist

BUCKET = 0.25  # seconds per bucket of the statement counts


@dataclass
class GateLoad:
    """Busy clients on one gate."""

    gate: Gate
    clients: int
    hold: float
    started: float
    counts: dict[int, int] = field(default_factory=dict)  # bucket -> transactions
    errors: list[str] = field(default_factory=list)
    quiet: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, now: float) -> None:
        bucket = int((now - self.started) / BUCKET)
        with self.lock:
            self.counts[bucket] = self.counts.get(bucket, 0) + 1

    def between(self, start: float, end: float) -> int:
        """Transactions committed between `start` and `end` (seconds into the run)."""
        first, last = int(start / BUCKET), int(end / BUCKET)
        with self.lock:
            return sum(n for b, n in self.counts.items() if first <= b < last)


@dataclass
class Sample:
    at: float  # seconds into the run
    total: int  # the account's connections
    gates: int  # ... of them with a database (gates and outsider, not the person)


@dataclass
class Share:
    at: float
    shares: list[int | None]  # each gate's connections (SHOW POOLS share); None: down
    account: list[int | None]  # what each gate last counted of the account


@dataclass
class Login:
    at: float
    ok: bool
    detail: str


class FleetRun:
    """Start with `start()`, stop with `stop()`; in between, quiet and wake gates,
    kill one, hold outsider connections. Times are seconds since start()."""

    def __init__(self, db: ScratchDb, gates: Sequence[Gate], clients: int = 30,
                 hold: float = 0.02, sample_every: float = 0.05,
                 login_every: float = 0.5) -> None:
        self.db = db
        self.gates = list(gates)
        self.clients = clients
        self.hold = hold
        self.sample_every = sample_every
        self.login_every = login_every
        self.started = 0.0
        self.loads: list[GateLoad] = []
        self.samples: list[Sample] = []
        self.shares: list[Share] = []
        self.logins: list[Login] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._outsiders: list[pymysql.connections.Connection] = []
        self._down: set[int] = set()

    def now(self) -> float:
        return time.monotonic() - self.started

    # -- life -----------------------------------------------------------------------

    def start(self, warm: bool = True) -> None:
        """`warm`: each gate serves one statement first, one after the other, so that
        each holds a connection when the load starts (a gate holding none logs in before
        it can count, and may find the account full that moment: fleet.py, measured
        apart in the bench's "gate 2 back")."""
        if warm:
            for gate in self.gates:
                with contextlib.closing(gate.connect()) as conn, conn.cursor() as cur:
                    cur.execute("SELECT 1")
        self.started = time.monotonic()
        self.loads = [GateLoad(gate, self.clients, self.hold, self.started)
                      for gate in self.gates]
        # One client of each gate in turn: the apps on every host start together, and
        # no gate fills the account before the others have their first statement.
        for index in range(self.clients):
            for load in self.loads:
                self._thread(self._client, load, index)
        self._thread(self._sample)
        self._thread(self._watch_shares)
        self._thread(self._person)

    def stop(self) -> None:
        self._stop.set()
        for load in self.loads:
            load.quiet.clear()
        for thread in self._threads:
            thread.join(30)
        self.release_outsider()

    def _thread(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- what the test does -----------------------------------------------------------

    def set_quiet(self, index: int, quiet: bool) -> None:
        """Gate `index`'s clients stop sending (they stay connected), or go on."""
        (self.loads[index].quiet.set if quiet else self.loads[index].quiet.clear)()

    def kill(self, index: int) -> None:
        """SIGKILL gate `index`; its clients stop."""
        self._down.add(index)
        self.loads[index].quiet.set()
        self.gates[index].kill()

    def hold_outsider(self, connections: int, timeout: float = 10.0) -> list[float]:
        """A script holding `connections` of the account directly (with a database).
        It tries again while the server says the account is full (the gates give one
        back when a program holds the reserve); returns when each got in."""
        got: list[float] = []
        deadline = time.monotonic() + timeout
        while len(got) < connections:
            try:
                self._outsiders.append(self.db.connect())
                got.append(self.now())
            except pymysql.err.OperationalError as exc:
                if exc.args[0] != 1226 or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        return got

    def release_outsider(self) -> None:
        for conn in self._outsiders:
            with contextlib.suppress(pymysql.err.MySQLError):
                conn.close()
        self._outsiders.clear()

    # -- the threads ------------------------------------------------------------------

    def _client(self, load: GateLoad, index: int) -> None:
        conn: pymysql.connections.Connection | None = None
        while not self._stop.is_set():
            if load.quiet.is_set():
                time.sleep(0.05)
                continue
            try:
                if conn is None:
                    conn = load.gate.connect(read_timeout=60, write_timeout=60,
                                             connect_timeout=30)
                with conn.cursor() as cur:
                    conn.begin()
                    cur.execute("SELECT SLEEP(%s)", (self.hold,))
                    cur.fetchall()
                    conn.commit()
                load.count(time.monotonic())
            except (pymysql.err.MySQLError, OSError) as exc:
                if self.gates.index(load.gate) in self._down:
                    conn = None
                    continue  # killed on purpose: its clients' errors are expected
                load.errors.append(f"{self.now():.2f}s client {index}: {exc!r}")
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                time.sleep(0.1)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _sample(self) -> None:
        try:
            with contextlib.closing(self.db.root()) as conn, conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute(
                        "SELECT COUNT(*), COUNT(NULLIF(DB, '')) FROM "
                        "information_schema.PROCESSLIST WHERE USER = %s", (self.db.user,))
                    total, gates = cur.fetchone()
                    self.samples.append(Sample(self.now(), int(total), int(gates)))
                    self._stop.wait(self.sample_every)
        except Exception as exc:  # reported by the caller
            self.errors.append(f"sampler: {exc!r}")

    def _watch_shares(self) -> None:
        consoles: dict[int, pymysql.connections.Connection] = {}
        try:
            while not self._stop.is_set():
                shares: list[int | None] = []
                account: list[int | None] = []
                for index, gate in enumerate(self.gates):
                    if index in self._down:
                        shares.append(None)
                        account.append(None)
                        continue
                    try:
                        if index not in consoles:
                            consoles[index] = pymysql.connect(
                                host="127.0.0.1", port=gate.admin_port, user="admin",
                                password="", cursorclass=pymysql.cursors.DictCursor)
                        with consoles[index].cursor() as cur:
                            cur.execute("SHOW POOLS")
                            row = cur.fetchone()
                        shares.append(row["share"])
                        account.append(row["account_connections"])
                    except pymysql.err.MySQLError:
                        consoles.pop(index, None)
                        shares.append(None)
                        account.append(None)
                self.shares.append(Share(self.now(), shares, account))
                self._stop.wait(0.1)
        finally:
            for conn in consoles.values():
                with contextlib.suppress(Exception):
                    conn.close()

    def _person(self) -> None:
        argv, env = person_client(self.db)
        while not self._stop.wait(self.login_every):
            at = self.now()
            try:
                result = subprocess.run(argv, env=env, capture_output=True, text=True,
                                        timeout=20, check=False)
                ok = result.returncode == 0 and result.stdout.strip() == "1"
                self.logins.append(Login(at, ok, result.stderr.strip()[:200]))
            except subprocess.TimeoutExpired:
                self.logins.append(Login(at, False, "timed out"))

    # -- figures --------------------------------------------------------------------

    def rate(self, indexes: Sequence[int], start: float, end: float) -> float:
        """Transactions per second of gates `indexes` between start and end."""
        return sum(self.loads[i].between(start, end) for i in indexes) / (end - start)

    def shares_of_statements(self, start: float, end: float) -> list[float]:
        counts = [load.between(start, end) for load in self.loads]
        total = sum(counts) or 1
        return [count / total for count in counts]

    def max_connections(self, start: float = 0.0, end: float = 1e9,
                        without_person: bool = True) -> int:
        return max((s.gates if without_person else s.total for s in self.samples
                    if start <= s.at < end), default=0)

    def client_errors(self) -> list[str]:
        return [e for load in self.loads for e in load.errors]

    def held_by(self, indexes: Sequence[int], at_least: int, since: float,
                steady: float = 1.0) -> float | None:
        """When, after `since`, gates `indexes` first held `at_least` connections between
        them (by their own count) for `steady` seconds; None if they never did."""
        start: float | None = None
        for share in self.shares:
            if share.at < since:
                continue
            held = sum(share.shares[i] or 0 for i in indexes)
            if held >= at_least:
                start = share.at if start is None else start
                if share.at - start >= steady:
                    return start
            else:
                start = None
        return None


def person_client(db: ScratchDb) -> tuple[list[str], dict[str, str] | None]:
    """The command-line client of the server's own kind, logging in directly over TCP
    as the account, without a database, to run SELECT 1."""
    args = ["--no-defaults", "--protocol=TCP", f"--host={db.host}", f"--port={db.port}",
            f"--user={db.user}", f"--password={db.password}", "--batch",
            "--skip-column-names", "-e", "SELECT 1"]
    if db.server.is_mysql:
        dist = mysql_dist()
        return [*dist.command("mysql"), *args], dist.env()
    cli = shutil.which("mariadb") or shutil.which("mysql")
    assert cli is not None, "the mariadb command-line client is not installed"
    return [cli, *args], None
