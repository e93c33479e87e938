"""Helpers shared by the benchmarks in bench/.

A throwaway MariaDB (`Bench`, `start_mariadb`, `create_account`), or a server of either
flavour from the test harness (`start_harness_server`: MySQL), mysqlgate as a subprocess
run from a snapshot of its source and stopped with SIGTERM to read its totals line
(`GateProcess`, `GateTotals`), the delaying relay (`RelayProcess`, see relay.py), CPU
accounting, small statistics and result files. The scripts are run as
`python bench/<name>.py`, which puts bench/ on sys.path, so they import this as `common`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
RELAY_SCRIPT = REPO_ROOT / "bench" / "relay.py"

DB_USER = "sbtest"
DB_PASSWORD = "sbtest"
DB_NAME = "sbtest"

SERVER_START_TIMEOUT_S = 60.0
GATE_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# Above this share of the machine's CPU taken by other processes during a run, the
# report warns: on 2 cores a neighbour's test suite moves the ratios by tens of percent.
OTHER_CPU_WARN_SHARE = 0.05


@dataclasses.dataclass
class Bench:
    """Processes and paths of one benchmark session (see bench_session for teardown)."""

    workdir: Path
    db_port: int = 0
    gate_port: int = 0
    db_proc: subprocess.Popen[bytes] | None = None
    gate_proc: subprocess.Popen[bytes] | None = None
    # Anything else to stop at teardown (relays, extra gates), stopped before the database.
    others: list[subprocess.Popen[Any]] = dataclasses.field(default_factory=list)
    gate_source: Path | None = None  # snapshot of mysqlgate/ (see snapshot_gate_source)
    # What the snapshot was taken from: git commit and mysqlgate/ files with local edits.
    gate_source_origin: dict[str, Any] = dataclasses.field(default_factory=dict)
    gate_ref: str | None = None  # snapshot this git revision instead of the working tree
    # A harness.DbServer (see start_harness_server) instead of db_proc; root talks to it
    # through PyMySQL rather than the mariadb client.
    db_server: Any = None

    @property
    def db_pid(self) -> int | None:
        """The database server's process, whichever way it was started."""
        if self.db_server is not None:
            return self.db_server.pid
        return self.db_proc.pid if self.db_proc is not None else None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "mariadb.sock"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"


# --- small helpers ------------------------------------------------------------------------


def log(message: str) -> None:
    # Progress goes to stderr so stdout carries only the result tables.
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def which_tool(name: str) -> str | None:
    # mariadbd and haproxy live in /usr/sbin, which a non-login root shell may not have
    # on PATH.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


def find_tool(name: str) -> str:
    path = which_tool(name)
    if path is None:
        raise SystemExit(f"bench: {name} not found; install mariadb-server and sysbench")
    return path


def free_port() -> int:
    # The port is free when we look; a race with another process is possible but rare,
    # and the start-up check below would then fail loudly rather than measure nonsense.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_port(port: int, proc: subprocess.Popen[Any], timeout: float, log_path: Path) -> None:
    """Return once 127.0.0.1:port accepts TCP; fail early if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited with {proc.returncode} before listening; "
                f"last lines of {log_path.name}:\n{tail(log_path)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not accepting after {timeout:.0f} s:\n{tail(log_path)}")


def start_process(
    argv: list[str], log_path: Path, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        # A session of its own: Ctrl-C in the terminal reaches only us, and we stop the
        # servers in a known order (gate first, then the database) from the cleanup path.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (comm) may contain spaces and parentheses; the fields we want follow the
    # last ')'. After it, utime and stime are the 12th and 13th fields (14 and 15 in proc(5)).
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_peak_rss_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot, from /proc/stat's first line."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class CpuMark:
    """CPU time so far: of the machine, and of this process, its waited-for children and
    the given long-running processes (servers, gate, relay)."""

    at: float
    machine: float
    ours: float
    per_pid: dict[int, float]
    self_cpu: float = 0.0  # this process alone (the benchmark's client threads)

    @classmethod
    def take(cls, pids: Iterable[int]) -> CpuMark:
        usage = [
            resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        ]
        per_pid = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                per_pid[pid] = process_cpu_seconds(pid)
        return cls(
            at=time.monotonic(),
            machine=machine_busy_seconds(),
            ours=sum(u.ru_utime + u.ru_stime for u in usage) + sum(per_pid.values()),
            per_pid=per_pid,
            self_cpu=usage[0].ru_utime + usage[0].ru_stime,
        )

    def other_share(self, later: CpuMark) -> float:
        """Share of the machine's CPU used by processes not ours between the two marks."""
        others = (later.machine - self.machine) - (later.ours - self.ours)
        wall = max(later.at - self.at, 1e-9)
        return round(max(0.0, others) / (wall * (os.cpu_count() or 1)), 4)

    def cpu_of(self, pid: int, later: CpuMark) -> float:
        return round(later.per_pid.get(pid, 0.0) - self.per_pid.get(pid, 0.0), 4)


# --- MariaDB ------------------------------------------------------------------------------


def start_mariadb(bench: Bench) -> None:
    log("initialising a throwaway MariaDB data directory")
    install_log = bench.workdir / "install-db.log"
    with install_log.open("wb") as out:
        result = subprocess.run(
            [
                find_tool("mariadb-install-db"),
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--user=root",
                f"--datadir={bench.datadir}",
                "--skip-test-db",  # nothing uses it; saves a few seconds
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        # Its real error comes first and a long generic help text after it: show it all.
        raise RuntimeError(f"mariadb-install-db failed:\n{tail(install_log, 200)}")

    bench.db_port = free_port()
    server_log = bench.workdir / "mariadbd.log"
    bench.db_proc = start_process(
        [
            find_tool("mariadbd"),
            "--no-defaults",
            "--user=root",
            f"--datadir={bench.datadir}",
            f"--port={bench.db_port}",
            f"--socket={bench.socket_path}",
            f"--pid-file={bench.workdir / 'mariadbd.pid'}",
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=256M",
            "--max-connections=500",
            "--skip-name-resolve",
        ],
        server_log,
    )
    wait_for_port(bench.db_port, bench.db_proc, SERVER_START_TIMEOUT_S, server_log)
    log(f"MariaDB listening on 127.0.0.1:{bench.db_port}")


def start_harness_server(bench: Bench, flavour: str) -> None:
    """A throwaway server of `flavour` ("mariadb" or "mysql") from the test harness, as
    soak.py starts them: the harness knows how to fetch and run MySQL, which Debian 12
    does not ship. Stopped and removed by bench_session."""
    # bench/ is on sys.path, tests/ is not; import as soak.py does.
    tests_dir = str(REPO_ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    from harness import server_class

    log(f"starting a throwaway {flavour} server (test harness)")
    # The harness tunes its servers for tests that start in a second; these are
    # start_mariadb's settings and the servers' own defaults, so that results from the
    # two flavours compare.
    bench.db_server = server_class(flavour)({
        "innodb_buffer_pool_size": "256M",
        "max_connections": 500,
        "innodb_flush_log_at_trx_commit": 1,
        "innodb_doublewrite": "ON",
        **({"innodb_redo_log_capacity": "100M"} if flavour == "mysql" else {}),
    })
    bench.db_server.start()
    bench.db_port = bench.db_server.port
    log(f"{flavour} listening on 127.0.0.1:{bench.db_port}")


def root_statements(bench: Bench, statements: Sequence[str]) -> None:
    """Run `statements` as root: one mariadb client call through the unix socket, or one
    PyMySQL connection to a harness server (MySQL has no mariadb client here)."""
    if bench.db_server is None:
        mariadb_client(bench, "; ".join(statements))
        return
    with contextlib.closing(bench.db_server.root_connect()) as conn, conn.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def server_version(bench: Bench) -> str:
    """The server's VERSION(), e.g. 10.11.6-MariaDB-0+deb12u1 or 9.7.4-2."""
    if bench.db_server is not None:
        return str(bench.db_server.query("SELECT VERSION()")[0][0])
    return _mariadb_batch(bench, "SELECT VERSION()").strip()


def mariadb_client(bench: Bench, sql: str) -> None:
    """Run `sql` as root through the unix socket (the mariadb command-line client)."""
    subprocess.run(
        [
            find_tool("mariadb"),
            "--no-defaults",
            f"--socket={bench.socket_path}",
            "--user=root",
            "--batch",
            "-e",
            sql,
        ],
        stdin=subprocess.DEVNULL,
        check=True,
    )


def _mariadb_batch(bench: Bench, sql: str) -> str:
    """What `sql` prints as root through the unix socket, without column names."""
    return subprocess.run(
        [
            find_tool("mariadb"),
            "--no-defaults",
            f"--socket={bench.socket_path}",
            "--user=root",
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


# MySQL lacks some of MariaDB's status variables but counts the same thing elsewhere.
_MYSQL_STATUS = {
    "Innodb_deadlocks":
        "SELECT COUNT FROM information_schema.INNODB_METRICS WHERE NAME = 'lock_deadlocks'",
}


def server_status(bench: Bench, name: str) -> int:
    """A numeric global status variable of the server (e.g. Innodb_deadlocks), as root
    through the unix socket (PyMySQL on a harness server)."""
    if bench.db_server is not None:
        return _harness_server_status(bench.db_server, name)
    out = _mariadb_batch(bench, f"SHOW GLOBAL STATUS LIKE '{name}'").split()
    return int(out[1]) if len(out) == 2 else 0


def _harness_server_status(server: Any, name: str) -> int:
    mysql_sql = _MYSQL_STATUS.get(name) if server.is_mysql else None
    if mysql_sql is not None:
        rows = server.query(mysql_sql)
    else:
        rows = server.query("SHOW GLOBAL STATUS LIKE %s", (name,))
    return int(rows[0][-1]) if rows else 0


def create_account(bench: Bench) -> None:
    # Both hosts: '%' for TCP through 127.0.0.1, 'localhost' for the unix socket. With
    # --skip-name-resolve only '%' would match TCP, but tools differ, so grant both.
    statements = [f"CREATE DATABASE {DB_NAME}"]
    for host in ("%", "localhost"):
        account = f"'{DB_USER}'@'{host}'"
        statements += [
            f"CREATE USER {account} IDENTIFIED BY '{DB_PASSWORD}'",
            f"GRANT ALL PRIVILEGES ON {DB_NAME}.* TO {account}",
        ]
    root_statements(bench, statements)


# --- mysqlgate ----------------------------------------------------------------------------


def snapshot_gate_source(bench: Bench) -> Path:
    """Copy mysqlgate/ into the session's temp dir once, and run every gate from there.

    Others edit mysqlgate/ while benchmarks run; a snapshot makes one benchmark measure
    one version of the code (its digest is recorded with the results)."""
    if bench.gate_source is None and bench.gate_ref is not None:
        target = bench.workdir / "gate-src"
        commit = tool_version(["git", "-C", str(REPO_ROOT), "rev-parse", "--verify",
                               f"{bench.gate_ref}^{{commit}}"])
        if not commit:
            raise RuntimeError(f"--gate-ref {bench.gate_ref!r} is not a commit")
        target.mkdir(parents=True)
        # Read-only: git archive writes the tree to stdout; nothing in the repository moves.
        archive = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", commit, "mysqlgate"],
            capture_output=True, check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
        bench.gate_source_origin = {
            "git_commit": commit,
            "local_edits": [],
            "sha256_16": gate_source_digest(target),
            "ref": bench.gate_ref,
        }
        bench.gate_source = target
    if bench.gate_source is None:
        target = bench.workdir / "gate-src"
        for _ in range(5):
            # Read-only git queries around the copy: a commit landing meanwhile is retried.
            before = tool_version(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(
                REPO_ROOT / "mysqlgate",
                target / "mysqlgate",
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
            if tool_version(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]) == before:
                break
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "mysqlgate"],
            capture_output=True, text=True, check=False,
        ).stdout.splitlines()
        bench.gate_source_origin = {
            "git_commit": before,
            "local_edits": [line.strip() for line in status],
            "sha256_16": gate_source_digest(target),
        }
        bench.gate_source = target
    return bench.gate_source


def gate_source_digest(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((source / "mysqlgate").rglob("*.py")):
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


_TOTALS = re.compile(
    r"stopped; totals: clients (?P<clients>\d+), commands (?P<commands>\d+), answered locally "
    r"(?P<answered_locally>\d+), pins \[(?P<pins>[^\]]*)\], upstream connects "
    r"(?P<upstream_connects>\d+), resets (?P<resets>\d+), lost (?P<lost>\d+), retried "
    r"(?P<retried>\d+), statements prepared upstream (?P<prepared_upstream>\d+) for "
    r"(?P<executes>\d+) executes, auth failures (?P<auth_failures>\d+)"
)


@dataclasses.dataclass(frozen=True)
class GateTotals:
    """mysqlgate's `stopped; totals: ...` line, parsed."""

    clients: int
    commands: int
    answered_locally: int
    pins: dict[str, int]
    upstream_connects: int
    resets: int
    lost: int
    retried: int
    prepared_upstream: int
    executes: int
    auth_failures: int

    @classmethod
    def parse(cls, text: str) -> GateTotals:
        matches = list(_TOTALS.finditer(text))
        if not matches:
            raise RuntimeError("mysqlgate's log has no 'stopped; totals: ...' line")
        found = matches[-1]  # the last one, should a log hold several
        pins: dict[str, int] = {}
        if found["pins"] != "none":
            for item in found["pins"].split(","):
                reason, _, count = item.strip().rpartition(" ")
                pins[reason] = int(count)
        numbers = {
            k: int(v) for k, v in found.groupdict().items() if k != "pins" and v is not None
        }
        return cls(pins=pins, **numbers)

    @property
    def pin_total(self) -> int:
        return sum(self.pins.values())

    def per_1000_commands(self, count: int) -> float:
        return 1000 * count / self.commands if self.commands else 0.0

    @property
    def prepared_per_1000_executes(self) -> float | None:
        return 1000 * self.prepared_upstream / self.executes if self.executes else None


@dataclasses.dataclass
class GateProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def stop(self) -> GateTotals:
        """SIGTERM, wait, and read the totals line from the log. Fails loudly if the gate
        did not stop within the time, or logged no totals line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S + 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(
                    f"mysqlgate did not stop within {STOP_TIMEOUT_S + 15:.0f} s of SIGTERM:\n"
                    f"{tail(self.log_path)}"
                ) from None
        text = self.log_path.read_text(errors="replace")
        return GateTotals.parse(text)

    def problems(self) -> list[str]:
        """Log lines at WARNING or above, and tracebacks."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [
            line
            for line in lines
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line
            or line.startswith("Traceback")
        ]


def start_gate(
    bench: Bench,
    upstream_port: int,
    pool_size: int | str,
    extra_args: Sequence[str] = (),
    name: str = "mysqlgate",
    nice: int = 0,
    upstream_url: str | None = None,
) -> GateProcess:
    """mysqlgate on a free port in front of 127.0.0.1:upstream_port, run from the snapshot;
    its log is <workdir>/<name>.log. `nice`: its scheduling priority, as `nice -n` takes
    it (below 0 needs root); see set_group_nice. `upstream_url` replaces the benchmark
    account's URL (soak.py's account on a test-harness server); `pool_size` may be
    "auto" (the account's limit minus one)."""
    source = snapshot_gate_source(bench)
    port = free_port()
    upstream = upstream_url or (
        f"mysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{upstream_port}/{DB_NAME}")
    log_path = bench.workdir / f"{name}.log"
    argv = [
        sys.executable,
        "-m",
        "mysqlgate",
        "--upstream",
        upstream,
        "--listen",
        f"127.0.0.1:{port}",
        "--pool-size",
        str(pool_size),
        *extra_args,
    ]
    # cwd first on sys.path with -m: the snapshot wins over the editable install.
    # No admin console: its default port would be shared by every gate running at once
    # (by the environment, which a --gate-ref older than the console ignores).
    env = {**os.environ, "MYSQLGATE_ADMIN_LISTEN": "off"}
    proc = start_process(argv, log_path, cwd=source, env=env)
    bench.others.append(proc)
    if nice:
        set_group_nice(proc.pid, nice)
    wait_for_port(port, proc, GATE_START_TIMEOUT_S, log_path)
    return GateProcess(proc=proc, port=port, log_path=log_path)


def set_group_nice(pid: int, nice: int) -> None:
    """Give process `pid` the scheduling priority `nice`, where it counts.

    Every server here starts in a session of its own, and with the kernel's autogroups
    (kernel.sched_autogroup_enabled, on in most distributions) each session is a group
    that gets a fair share of the CPU against the others: a process's own nice only
    ranks it among the threads of its group, so the group's nice
    (/proc/<pid>/autogroup) is what ranks mysqlgate against the server and sysbench,
    as systemd's CPUWeight= does for services in cgroups of their own."""
    os.setpriority(os.PRIO_PROCESS, pid, nice)
    autogroup = Path(f"/proc/{pid}/autogroup")
    if autogroup.exists():
        autogroup.write_text(str(nice))


# --- the delaying relay -------------------------------------------------------------------


@dataclasses.dataclass
class RelayProcess:
    proc: subprocess.Popen[str]
    port: int
    delay_ms: float
    handshake_delay: bool


def start_relay(
    bench: Bench, target_port: int, delay_ms: float = 1.0, handshake_delay: bool = False
) -> RelayProcess:
    """bench/relay.py in front of 127.0.0.1:target_port (a process of its own, so that its
    work does not share the GIL with the benchmark's client threads)."""
    argv = [
        sys.executable,
        str(RELAY_SCRIPT),
        "--target-port",
        str(target_port),
        "--delay-ms",
        str(delay_ms),
    ]
    if handshake_delay:
        argv.append("--handshake-delay")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    bench.others.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.wait(5)
        raise RuntimeError(f"relay did not start (exit {proc.returncode}): {line!r}")
    return RelayProcess(proc, int(line.split()[1]), delay_ms, handshake_delay)


# --- a C relay for reference ------------------------------------------------------------


@dataclasses.dataclass
class ReferenceRelay:
    proc: subprocess.Popen[bytes]
    port: int


def start_haproxy(bench: Bench, target_port: int) -> ReferenceRelay:
    """HAProxy in TCP mode in front of 127.0.0.1:target_port: a C relay that opens one
    upstream connection per client and reads nothing of the protocol. What two hops
    over loopback cost on this machine with no Python, no parsing and no pool limit:
    the floor under any proxy, measured in the same run as the proxy."""
    port = free_port()
    config = bench.workdir / "haproxy.cfg"
    config.write_text(
        "global\n  maxconn 4096\n"
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10m\n"
        "  timeout server 10m\n"
        f"listen reference\n  bind 127.0.0.1:{port}\n"
        f"  server db 127.0.0.1:{target_port}\n"
    )
    log_path = bench.workdir / "haproxy.log"
    # -db: stay in the foreground, so that stop_process stops it.
    proc = start_process([find_tool("haproxy"), "-db", "-f", str(config)], log_path)
    bench.others.append(proc)
    wait_for_port(port, proc, GATE_START_TIMEOUT_S, log_path)
    return ReferenceRelay(proc, port)


# --- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median_and_range(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt_spread(values: Sequence[float], digits: int = 2) -> str:
    med, low, high = median_and_range(values)
    return f"{med:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


class SharesMachine(Protocol):
    @property
    def other_cpu_share(self) -> float:
        """Share of the CPUs other processes used during the run."""


def quiet_rounds(direct: Mapping[int, SharesMachine],
                 through: Mapping[int, SharesMachine]) -> list[int]:
    """The rounds (keys of both) in which other processes left both runs alone: the
    fairest comparisons on a shared machine."""
    return [n for n in sorted(direct) if max(direct[n].other_cpu_share,
                                             through[n].other_cpu_share) <= OTHER_CPU_WARN_SHARE]


def warn_if_not_quiet(max_other_cpu_share: float, indent: str = "", more: str = "") -> None:
    """Say so when other processes took more than OTHER_CPU_WARN_SHARE during a run."""
    if max_other_cpu_share > OTHER_CPU_WARN_SHARE:
        print(f"{indent}WARNING: other processes used up to {max_other_cpu_share:.0%} of the "
              f"CPUs during a run; the machine was not quiet{more}")


# --- environment and results --------------------------------------------------------------


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def tool_version(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else ""
    return ""


def environment(bench: Bench | None = None, tools: Sequence[str] = ("mariadbd",)) -> dict[str, Any]:
    # Read-only git queries: which code was measured, and whether it had local edits.
    commit = tool_version(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    dirty = bool(tool_version(["git", "-C", str(REPO_ROOT), "status", "--porcelain"]))
    env: dict[str, Any] = {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    if bench is not None and bench.gate_source is not None:
        # The code measured: the snapshot taken when the first gate started.
        env["gate_source"] = bench.gate_source_origin
        env["gate_source_sha256_16"] = bench.gate_source_origin.get("sha256_16")
    for tool in tools:
        env[tool] = tool_version([find_tool(tool), "--version"])
    return env


def write_result(name: str, document: dict[str, Any], suffix: str = "") -> Path:
    """bench/results/<stamp>-<name><suffix>.json"""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    path = RESULTS_DIR / f"{stamp}-{name}{suffix}.json"
    path.write_text(json.dumps({"benchmark": name, "timestamp": stamp, **document}, indent=2)
                    + "\n")
    return path


def save_logs(bench: Bench, result_path: Path) -> list[str]:
    """Copy the start-up, server and gate logs next to result_path (<stamp>.mariadbd.log...)."""
    saved = []
    sources = {source.name: source for source in bench.workdir.glob("*.log")}
    if bench.db_server is not None:
        # A harness server writes its logs into a directory of its own.
        for source in (bench.db_server.error_log, bench.db_server.stderr_log):
            if source.exists():
                sources[f"{bench.db_server.flavour}-{source.name}"] = source
    for name, source in sorted(sources.items()):
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        target = result_path.with_suffix(f".{name}")
        shutil.copy(source, target)
        saved.append(str(target.relative_to(REPO_ROOT)))
    return saved


def report_result(bench: Bench, path: Path, problems: list[str], keep_logs: bool) -> int:
    """After the result file is written: keep the logs beside it when asked or when the
    run failed, say where it is and what failed; the exit status (1: failed)."""
    if keep_logs or problems:
        save_logs(bench, path)
    print(f"\nresult written to {path.relative_to(REPO_ROOT)}")
    for problem in problems:
        print(f"FAILED: {problem}")
    if problems:
        print("logs kept next to the result file")
    return 1 if problems else 0


# --- session ------------------------------------------------------------------------------


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP take the same cleanup path as Ctrl-C.
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # An inherited SIG_IGN (nohup) is a wish to keep running; respect it.
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupt)


@contextlib.contextmanager
def bench_session(prefix: str = "mysqlgate-bench-") -> Iterator[Bench]:
    """A Bench whose processes are stopped and temp dir removed however we leave."""
    import tempfile

    bench = Bench(workdir=Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        yield bench
    finally:
        stop_process(bench.gate_proc)
        for proc in reversed(bench.others):
            stop_process(proc)
        stop_process(bench.db_proc)
        if bench.db_server is not None:
            bench.db_server.close()
        shutil.rmtree(bench.workdir, ignore_errors=True)


def run_main(body: Callable[[Bench], int], failed_name: str) -> int:
    """Run body(bench) in a session; on failure keep the logs and return 1, on Ctrl-C 130."""
    install_signal_handlers()
    try:
        with bench_session() as bench:
            try:
                return body(bench)
            except (RuntimeError, subprocess.CalledProcessError):
                saved = save_logs(bench, RESULTS_DIR / f"{utc_stamp()}-{failed_name}-failed.json")
                log(f"server and gate logs kept in {', '.join(saved) or '(none)'}")
                raise
    except KeyboardInterrupt:
        log("interrupted; servers stopped, temp files removed")
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        return 1


# --- closed-loop request runs (worker threads) --------------------------------------------


@dataclasses.dataclass
class LoopResult:
    """`workers` threads each doing requests back to back for `seconds`."""

    requests: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]
    first_errors: list[str]

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0


MAX_ERRORS_PER_RUN = 50


def closed_loop(
    workers: int,
    seconds: float,
    request: Callable[[int], None],
    setup: Callable[[int], None] | None = None,
) -> LoopResult:
    """Run request(worker) in `workers` threads, back to back, until `seconds` have passed
    (a request started before then finishes). A run with more than MAX_ERRORS_PER_RUN
    failed requests stops early. `setup(worker)` runs in each thread before the clock
    starts."""
    import threading

    latencies: list[list[float]] = [[] for _ in range(workers)]
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(workers + 1)
    stop = threading.Event()
    deadline = [0.0]

    def worker(index: int) -> None:
        if setup is not None:
            setup(index)
        ready.wait()
        mine = latencies[index]
        while not stop.is_set() and time.perf_counter() < deadline[0]:
            started = time.perf_counter()
            try:
                request(index)
            except Exception as exc:  # counted and reported: a benchmark must not hide them
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    if len(errors) > MAX_ERRORS_PER_RUN:
                        stop.set()
                continue
            mine.append(1000 * (time.perf_counter() - started))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds + 1e6  # not yet: wait for setup
    ready.wait()
    started = time.perf_counter()
    deadline[0] = started + seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    flat = [x for per_worker in latencies for x in per_worker]
    return LoopResult(
        requests=len(flat),
        errors=len(errors),
        elapsed_s=elapsed,
        latencies_ms=flat,
        first_errors=errors[:5],
    )
