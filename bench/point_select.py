"""Point-select throughput and latency: direct to MariaDB vs through mysqlgate, in one run.

Usage:  python bench/point_select.py [--rounds 3] [--time 20] [--quick] [--pool-size 4]
        [--threads 16] [--gate-args "--some-flag value"]

Everything it needs is started here and torn down again: a throwaway MariaDB in a temp
directory, sysbench's tables, and mysqlgate as a subprocess. Runs alternate direct (A) and
through mysqlgate (B), A B A B ..., so that drift on the machine (thermal, page cache,
neighbours) hits both sides alike; each round's B/A ratio is computed and the median
reported. See bench/README.md for how to read the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"

DB_USER = "sbtest"
DB_PASSWORD = "sbtest"
DB_NAME = "sbtest"
TABLES = 4
TABLE_SIZE = 10_000

SERVER_START_TIMEOUT_S = 60.0
GATE_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SYSBENCH_GRACE_S = 60
# Above this share of the machine's CPU taken by other processes during a run, the
# report warns: on 2 cores a neighbour's test suite moves the ratios by tens of percent.
OTHER_CPU_WARN_SHARE = 0.05


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int
    run_seconds: int
    warmup_seconds: int
    threads: int
    pool_size: int
    gate_args: list[str]
    self_test: bool
    keep_logs: bool


@dataclasses.dataclass(frozen=True)
class RunResult:
    label: str  # "A" direct, "B" through mysqlgate
    round: int  # 1-based; 0 for warm-up
    queries: int
    qps: float
    p95_ms: float
    max_ms: float
    ignored_errors: int
    reconnects: int
    gate_cpu_s: float | None  # CPU used by the B-side process during this run
    # Share of the machine's CPU used by processes other than ours during the run: another
    # workload on the machine makes A and B incomparable, so it is measured, not assumed.
    other_cpu_share: float


@dataclasses.dataclass
class Bench:
    """Processes and paths of one benchmark session (see bench_session for teardown)."""

    workdir: Path
    db_port: int = 0
    gate_port: int = 0
    db_proc: subprocess.Popen[bytes] | None = None
    gate_proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "mariadb.sock"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Compare sysbench oltp_point_select direct vs through mysqlgate.",
        epilog='Pass gate arguments that start with a dash as --gate-args="--flag value".',
    )
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs to run (default 3)")
    parser.add_argument("--time", type=int, default=20, help="seconds per run (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds per warm-up run")
    parser.add_argument("--quick", action="store_true", help="5 s runs, 2 s warm-ups")
    parser.add_argument("--threads", type=int, default=16, help="sysbench client threads")
    parser.add_argument("--pool-size", type=int, default=4, help="mysqlgate upstream pool size")
    parser.add_argument("--gate-args", default="", help="extra arguments for mysqlgate")
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy server and gate logs to bench/results/"
    )
    # Hidden: B goes straight to the server too, so the harness itself can be checked
    # (ratio ~1.0) before mysqlgate exists. CPU is then measured on mariadbd instead.
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.time < 1 or ns.warmup < 0 or ns.threads < 1 or ns.pool_size < 1:
        parser.error("--rounds, --time, --threads and --pool-size must be positive")
    return Settings(
        rounds=ns.rounds,
        run_seconds=5 if ns.quick else ns.time,
        warmup_seconds=min(2, ns.warmup) if ns.quick else ns.warmup,
        threads=ns.threads,
        pool_size=ns.pool_size,
        gate_args=shlex.split(ns.gate_args),
        self_test=ns.self_test,
        keep_logs=ns.keep_logs,
    )


# --- small helpers ------------------------------------------------------------------------


def log(message: str) -> None:
    # Progress goes to stderr so stdout carries only the result tables.
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def find_tool(name: str) -> str:
    # mariadbd lives in /usr/sbin, which a non-login root shell may not have on PATH.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
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


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log_path: Path) -> None:
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


def start_process(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        # A session of its own: Ctrl-C in the terminal reaches only us, and we stop the
        # servers in a known order (gate first, then the database) from the cleanup path.
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
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
    subprocess.run(
        [
            find_tool("mariadb"),
            "--no-defaults",
            f"--socket={bench.socket_path}",
            "--user=root",
            "--batch",
            "-e",
            "; ".join(statements),
        ],
        stdin=subprocess.DEVNULL,
        check=True,
    )


# --- sysbench -----------------------------------------------------------------------------


def sysbench_argv(port: int, command: str, extra: Sequence[str] = ()) -> list[str]:
    return [
        find_tool("sysbench"),
        "oltp_point_select",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={port}",
        f"--mysql-user={DB_USER}",
        f"--mysql-password={DB_PASSWORD}",
        f"--mysql-db={DB_NAME}",
        f"--tables={TABLES}",
        f"--table-size={TABLE_SIZE}",
        *extra,
        command,
    ]


def sysbench_prepare(bench: Bench) -> None:
    log(f"sysbench prepare: {TABLES} tables x {TABLE_SIZE} rows")
    subprocess.run(
        sysbench_argv(bench.db_port, "prepare"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        check=True,
    )


def sysbench_run(port: int, seconds: int, threads: int) -> str:
    extra = [
        f"--threads={threads}",
        f"--time={seconds}",
        # Text protocol: prepared statements would be pinned or re-prepared by a pooler;
        # the first benchmark measures plain COM_QUERY forwarding.
        "--db-ps-mode=disable",
        "--report-interval=0",
        "--percentile=95",
    ]
    try:
        result = subprocess.run(
            sysbench_argv(port, "run", extra),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            # sysbench waits for statements in flight when its time is up; a proxy that
            # stopped answering would hang the benchmark for good without this.
            timeout=seconds + SYSBENCH_GRACE_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"sysbench against port {port} hung past its {seconds} s") from exc
    if result.returncode != 0:
        raise RuntimeError(
            f"sysbench run against port {port} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result.stdout


_QUERIES = re.compile(r"^\s*queries:\s+(\d+)\s+\(([\d.]+) per sec\.\)", re.M)
_P95 = re.compile(r"^\s*95th percentile:\s+([\d.]+)", re.M)
_MAX = re.compile(r"^\s*max:\s+([\d.]+)", re.M)
_IGNORED = re.compile(r"^\s*ignored errors:\s+(\d+)", re.M)
_RECONNECTS = re.compile(r"^\s*reconnects:\s+(\d+)", re.M)


def _match(pattern: re.Pattern[str], text: str) -> re.Match[str]:
    found = pattern.search(text)
    if found is None:
        raise RuntimeError(f"sysbench output lacks {pattern.pattern!r}:\n{text}")
    return found


def parse_sysbench(text: str) -> dict[str, Any]:
    queries = _match(_QUERIES, text)
    return {
        "queries": int(queries.group(1)),
        "qps": float(queries.group(2)),
        "p95_ms": float(_match(_P95, text).group(1)),
        "max_ms": float(_match(_MAX, text).group(1)),
        "ignored_errors": int(_match(_IGNORED, text).group(1)),
        "reconnects": int(_match(_RECONNECTS, text).group(1)),
    }


# --- mysqlgate ----------------------------------------------------------------------------


def start_gate(bench: Bench, settings: Settings) -> None:
    if settings.self_test:
        # Stand-in for B: the server itself. Its CPU is what gets measured for "B".
        bench.gate_port = bench.db_port
        log("self-test: B goes straight to MariaDB (no mysqlgate)")
        return
    bench.gate_port = free_port()
    upstream = f"mysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{bench.db_port}/{DB_NAME}"
    gate_log = bench.workdir / "mysqlgate.log"
    argv = [
        sys.executable,
        "-m",
        "mysqlgate",
        "--upstream",
        upstream,
        "--listen",
        f"127.0.0.1:{bench.gate_port}",
        "--pool-size",
        str(settings.pool_size),
        *settings.gate_args,
    ]
    bench.gate_proc = start_process(argv, gate_log)
    wait_for_port(bench.gate_port, bench.gate_proc, GATE_START_TIMEOUT_S, gate_log)
    log(f"mysqlgate listening on 127.0.0.1:{bench.gate_port} (pool size {settings.pool_size})")


def measured_pid(bench: Bench) -> int:
    proc = bench.gate_proc or bench.db_proc  # self-test has no gate process
    assert proc is not None
    return proc.pid


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    machine: float  # every process on the machine
    ours: float  # this script, its finished children (sysbench), mariadbd and the gate
    measured: float  # the B-side process: mysqlgate (mariadbd in self-test)

    @classmethod
    def take(cls, bench: Bench) -> CpuSnapshot:
        # RUSAGE_CHILDREN counts children once they have been waited for: each sysbench
        # run, never the still-running servers, which are read from /proc instead.
        usage = [
            resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        ]
        servers = [p.pid for p in (bench.db_proc, bench.gate_proc) if p is not None]
        return cls(
            machine=machine_busy_seconds(),
            ours=sum(u.ru_utime + u.ru_stime for u in usage)
            + sum(process_cpu_seconds(pid) for pid in servers),
            measured=process_cpu_seconds(measured_pid(bench)),
        )


def run_one(bench: Bench, label: str, round_no: int, seconds: int, threads: int) -> RunResult:
    port = bench.db_port if label == "A" else bench.gate_port
    before = CpuSnapshot.take(bench)
    output = sysbench_run(port, seconds, threads)
    after = CpuSnapshot.take(bench)
    others = (after.machine - before.machine) - (after.ours - before.ours)
    return RunResult(
        label=label,
        round=round_no,
        gate_cpu_s=round(after.measured - before.measured, 3) if label == "B" else None,
        other_cpu_share=round(max(0.0, others) / (seconds * (os.cpu_count() or 1)), 4),
        **parse_sysbench(output),
    )


def run_all(bench: Bench, settings: Settings) -> list[RunResult]:
    if settings.warmup_seconds > 0:
        # Warm both paths (buffer pool, the gate's upstream pool, Python's caches) first.
        for label in ("A", "B"):
            log(f"warm-up {label}: {settings.warmup_seconds} s")
            run_one(bench, label, 0, settings.warmup_seconds, settings.threads)
    results: list[RunResult] = []
    total = 2 * settings.rounds
    for round_no in range(1, settings.rounds + 1):
        for label in ("A", "B"):
            log(
                f"run {len(results) + 1}/{total}: {label} round {round_no}, "
                f"{settings.run_seconds} s"
            )
            results.append(run_one(bench, label, round_no, settings.run_seconds, settings.threads))
    return results


# --- results ------------------------------------------------------------------------------


def summarise(results: list[RunResult]) -> dict[str, Any]:
    """Median over rounds of each round's B/A ratio; pairing adjacent runs cancels drift."""
    direct = {r.round: r for r in results if r.label == "A"}
    through = {r.round: r for r in results if r.label == "B"}
    rounds = sorted(direct)
    qps_ratios = [through[n].qps / direct[n].qps for n in rounds]
    p95_ratios = [through[n].p95_ms / direct[n].p95_ms for n in rounds]
    b_queries = sum(r.queries for r in through.values())
    b_cpu = sum(r.gate_cpu_s or 0.0 for r in through.values())
    return {
        "qps_ratio_median": statistics.median(qps_ratios),
        "p95_ratio_median": statistics.median(p95_ratios),
        # The spread shows how far to trust the medians on this machine.
        "qps_ratios": [round(x, 4) for x in qps_ratios],
        "p95_ratios": [round(x, 4) for x in p95_ratios],
        "direct_qps_median": statistics.median(direct[n].qps for n in rounds),
        "through_qps_median": statistics.median(through[n].qps for n in rounds),
        "direct_p95_ms_median": statistics.median(direct[n].p95_ms for n in rounds),
        "through_p95_ms_median": statistics.median(through[n].p95_ms for n in rounds),
        "gate_cpu_us_per_query": 1e6 * b_cpu / b_queries if b_queries else None,
        "errors_or_reconnects": sum(r.ignored_errors + r.reconnects for r in results),
        "max_other_cpu_share": max(r.other_cpu_share for r in results),
    }


def print_report(results: list[RunResult], summary: dict[str, Any], settings: Settings) -> None:
    b_name = "B (self-test: direct)" if settings.self_test else "B mysqlgate"
    cpu_name = "mariadbd" if settings.self_test else "mysqlgate"
    print(
        f"{'run':<24}{'qps':>10}{'p95 ms':>9}{'max ms':>9}{cpu_name + ' µs/q':>17}{'other CPU':>11}"
    )
    for r in results:
        name = f"{'A direct' if r.label == 'A' else b_name} #{r.round}"
        cpu = f"{1e6 * r.gate_cpu_s / r.queries:.1f}" if r.gate_cpu_s is not None else "-"
        print(
            f"{name:<24}{r.qps:>10.1f}{r.p95_ms:>9.2f}{r.max_ms:>9.2f}{cpu:>17}"
            f"{r.other_cpu_share:>11.0%}"
        )
    print()
    for name, key in (("throughput", "qps"), ("p95 latency", "p95")):
        ratios = summary[f"{key}_ratios"]
        print(
            f"{name} through/direct, median of {len(ratios)} rounds: "
            f"{summary[f'{key}_ratio_median']:.3f}  (rounds: {min(ratios):.3f}-{max(ratios):.3f})"
        )
    if summary["gate_cpu_us_per_query"] is not None:
        print(f"{cpu_name} CPU per query during B runs: {summary['gate_cpu_us_per_query']:.1f} µs")
    if summary["max_other_cpu_share"] > OTHER_CPU_WARN_SHARE:
        print(
            f"WARNING: other processes used up to {summary['max_other_cpu_share']:.0%} of the "
            "CPUs during a run; the machine was not quiet and the ratios are not reliable"
        )
    if summary["errors_or_reconnects"]:
        print(f"WARNING: sysbench saw {summary['errors_or_reconnects']} errors/reconnects")
    if settings.self_test:
        print("(self-test: B went straight to MariaDB; ratios near 1.0 mean the harness is fair)")


def utc_stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def tool_version(argv: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else ""
    return ""


def environment() -> dict[str, Any]:
    # Read-only git queries: which code was measured, and whether it had local edits.
    commit = tool_version(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    dirty = bool(tool_version(["git", "-C", str(REPO_ROOT), "status", "--porcelain"]))
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sysbench": tool_version([find_tool("sysbench"), "--version"]),
        "mariadbd": tool_version([find_tool("mariadbd"), "--version"]),
    }


def write_json(
    results: list[RunResult], summary: dict[str, Any], settings: Settings, extra: dict[str, Any]
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    path = RESULTS_DIR / f"{stamp}{'-selftest' if settings.self_test else ''}.json"
    document = {
        "benchmark": "point_select",
        "timestamp": stamp,
        "settings": dataclasses.asdict(settings),
        "workload": {"tables": TABLES, "table_size": TABLE_SIZE, "db_ps_mode": "disable"},
        "environment": environment(),
        "runs": [dataclasses.asdict(r) for r in results],
        "summary": summary,
        **extra,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def save_logs(bench: Bench, result_path: Path) -> list[str]:
    """Copy the start-up and server logs next to result_path (<stamp>.mariadbd.log, ...)."""
    saved = []
    for name in ("install-db.log", "mariadbd.log", "mysqlgate.log"):
        source = bench.workdir / name
        if source.exists():
            RESULTS_DIR.mkdir(parents=True, exist_ok=True)
            target = result_path.with_suffix(f".{name}")
            shutil.copy(source, target)
            saved.append(str(target.relative_to(REPO_ROOT)))
    return saved


# --- main ---------------------------------------------------------------------------------


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP take the same cleanup path as Ctrl-C.
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_session() -> Iterator[Bench]:
    """A Bench whose servers are stopped and temp dir removed however we leave."""
    bench = Bench(workdir=Path(tempfile.mkdtemp(prefix="mysqlgate-bench-")))
    try:
        yield bench
    finally:
        stop_process(bench.gate_proc)
        stop_process(bench.db_proc)
        shutil.rmtree(bench.workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # An inherited SIG_IGN (nohup) is a wish to keep running; respect it.
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise_interrupt)
    try:
        with bench_session() as bench:
            try:
                start_mariadb(bench)
                create_account(bench)
                sysbench_prepare(bench)
                start_gate(bench, settings)
                results = run_all(bench, settings)
            except (RuntimeError, subprocess.CalledProcessError):
                # The temp dir goes away with the servers; keep their logs for a post-mortem.
                saved = save_logs(bench, RESULTS_DIR / f"{utc_stamp()}-failed.json")
                log(f"server and gate logs kept in {', '.join(saved) or '(none)'}")
                raise
            summary = summarise(results)
            extra = {
                # Which process the CPU and memory figures belong to (mariadbd in self-test).
                "measured_process": "mariadbd" if settings.self_test else "mysqlgate",
                "measured_peak_rss_kib": process_peak_rss_kib(measured_pid(bench)),
            }
            print_report(results, summary, settings)
            path = write_json(results, summary, settings, extra)
            if settings.keep_logs:
                save_logs(bench, path)
            print(f"\nresult written to {path.relative_to(REPO_ROOT)}")
    except KeyboardInterrupt:
        log("interrupted; servers stopped, temp files removed")
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
