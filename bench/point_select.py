"""sysbench throughput and latency: direct to the server vs through mysqlgate, in one run.

Usage:  python bench/point_select.py [--rounds 3] [--time 20] [--quick] [--pool-size 4]
        [--threads 16] [--workload oltp_point_select] [--ps-mode disable]
        [--gate-args "--some-flag value"] [--reference haproxy] [--gate-nice -10]
        [--server mariadb|mysql]

The default is oltp_point_select with --db-ps-mode=disable (plain COM_QUERY);
`--ps-mode auto` makes sysbench use server-side prepared statements, and
`--workload oltp_read_write` runs sysbench's read/write transactions instead.

Everything it needs is started here and torn down again: a throwaway MariaDB in a temp
directory (`--server mysql`: a MySQL from the test harness, tests/harness), sysbench's
tables, and mysqlgate as a subprocess. Runs alternate direct (A) and through mysqlgate
(B), A B A B ..., so that drift on the machine (thermal, page cache,
neighbours) hits both sides alike; each round's B/A ratio is computed and the median
reported. `--reference haproxy` adds a third path (R) in every round: HAProxy relaying
TCP to the server, one upstream connection per client, nothing parsed, no pool: the floor
under any proxy on the same machine in the same hour. See bench/README.md for how to
read the numbers. MySQL results are named and labelled `-mysql` (plot_point_select.py
leaves them out); on MySQL both paths run without TLS, as on MariaDB: sysbench's
libmariadb logs in with the server's RSA key, and mysqlgate is given
--upstream-ssl-mode disabled (--gate-args may say otherwise).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import resource
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import (
    DB_NAME,
    DB_PASSWORD,
    DB_USER,
    OTHER_CPU_WARN_SHARE,
    RESULTS_DIR,
    Bench,
    GateProcess,
    GateTotals,
    ReferenceRelay,
    bench_session,
    create_account,
    environment,
    find_tool,
    install_signal_handlers,
    log,
    machine_busy_seconds,
    process_cpu_seconds,
    process_peak_rss_kib,
    quiet_rounds,
    report_result,
    save_logs,
    server_status,
    server_version,
    start_gate,
    start_haproxy,
    start_harness_server,
    start_mariadb,
    utc_stamp,
    warn_if_not_quiet,
    which_tool,
)

TABLES = 4
TABLE_SIZE = 10_000
SYSBENCH_GRACE_S = 60
WORKLOADS = ("oltp_point_select", "oltp_read_write")
PS_MODES = ("disable", "auto")
SERVERS = ("mariadb", "mysql")
SERVER_PROCESS = {"mariadb": "mariadbd", "mysql": "mysqld"}


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
    workload: str = "oltp_point_select"
    ps_mode: str = "disable"
    strict: bool = False
    gate_ref: str | None = None
    reference: str | None = None  # "haproxy": a C relay measured alongside (label R)
    gate_nice: int = 0  # mysqlgate started under `nice -n gate_nice`
    server: str = "mariadb"  # or "mysql", started by the test harness


@dataclasses.dataclass(frozen=True)
class RunResult:
    label: str  # "A" direct, "B" through mysqlgate, "R" through the reference relay
    round: int  # 1-based; 0 for warm-up
    queries: int
    qps: float
    p95_ms: float
    max_ms: float
    ignored_errors: int
    reconnects: int
    gate_cpu_s: float | None  # CPU used by the B (or R) side's process during this run
    # Share of the machine's CPU used by processes other than ours during the run: another
    # workload on the machine makes A and B incomparable, so it is measured, not assumed.
    other_cpu_share: float
    transactions: int = 0
    # Codes of the errors sysbench ignored (its default list: 1213 deadlock, 1020, 1205),
    # from its "Ignoring error" lines, and the deadlocks the server counted meanwhile.
    ignored_error_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    server_deadlocks: int = 0
    p99_ms: float = 0.0  # from sysbench's latency histogram (issue 8's target is on p99)


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Compare a sysbench OLTP workload direct vs through mysqlgate.",
        epilog='Pass gate arguments that start with a dash as --gate-args="--flag value".',
    )
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs to run (default 3)")
    parser.add_argument("--time", type=int, default=20, help="seconds per run (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds per warm-up run")
    parser.add_argument("--quick", action="store_true", help="5 s runs, 2 s warm-ups")
    parser.add_argument("--threads", type=int, default=16, help="sysbench client threads")
    parser.add_argument("--pool-size", type=int, default=4, help="mysqlgate upstream pool size")
    parser.add_argument(
        "--workload", choices=WORKLOADS, default="oltp_point_select", help="sysbench test"
    )
    parser.add_argument(
        "--ps-mode",
        choices=PS_MODES,
        default="disable",
        help="sysbench --db-ps-mode: disable = text protocol (default), auto = server-side "
        "prepared statements",
    )
    parser.add_argument(
        "--strict", action="store_true",
        help="fail on any error through mysqlgate, deadlocks (1213) included",
    )
    parser.add_argument("--gate-args", default="", help="extra arguments for mysqlgate")
    parser.add_argument(
        "--gate-ref", default=None,
        help="run mysqlgate as of this git commit (read with git archive) instead of the "
        "working tree; older commits may log no totals line",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy server and gate logs to bench/results/"
    )
    parser.add_argument(
        "--reference", choices=("haproxy",), default=None,
        help="also run each round through HAProxy in TCP mode (C, one upstream connection "
        "per client, no parsing, no pool): the floor under any proxy on this machine",
    )
    parser.add_argument(
        "--gate-nice", type=int, default=0,
        help="give mysqlgate (its process and its autogroup) nice N, below 0 needs root: a "
        "single-threaded proxy preempted by the threads it wakes holds up every client",
    )
    parser.add_argument(
        "--server", choices=SERVERS, default="mariadb",
        help="mariadb (default: the installed mariadbd) or mysql (MySQL from the test "
        "harness's cache, tests/harness/mysql_dist.py)",
    )
    # Hidden: B goes straight to the server too, so the harness itself can be checked
    # (ratio ~1.0) before mysqlgate exists. CPU is then measured on the server instead.
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.time < 1 or ns.warmup < 0 or ns.threads < 1 or ns.pool_size < 1:
        parser.error("--rounds, --time, --threads and --pool-size must be positive")
    if ns.reference and which_tool(ns.reference) is None:
        parser.error(f"--reference {ns.reference}: not installed (Debian: apt install haproxy)")
    return Settings(
        rounds=ns.rounds,
        run_seconds=5 if ns.quick else ns.time,
        warmup_seconds=min(2, ns.warmup) if ns.quick else ns.warmup,
        threads=ns.threads,
        pool_size=ns.pool_size,
        gate_args=shlex.split(ns.gate_args),
        self_test=ns.self_test,
        keep_logs=ns.keep_logs,
        workload=ns.workload,
        ps_mode=ns.ps_mode,
        strict=ns.strict,
        gate_ref=ns.gate_ref,
        reference=ns.reference,
        gate_nice=ns.gate_nice,
        server=ns.server,
    )


# --- sysbench -----------------------------------------------------------------------------


def sysbench_argv(
    port: int, command: str, extra: Sequence[str] = (), workload: str = "oltp_point_select"
) -> list[str]:
    return [
        find_tool("sysbench"),
        workload,
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


def sysbench_run(
    port: int,
    seconds: int,
    threads: int,
    workload: str = "oltp_point_select",
    ps_mode: str = "disable",
) -> str:
    extra = [
        f"--threads={threads}",
        f"--time={seconds}",
        # disable: text protocol, plain COM_QUERY forwarding (the first benchmark);
        # auto: server-side prepared statements (COM_STMT_PREPARE / EXECUTE).
        f"--db-ps-mode={ps_mode}",
        "--report-interval=0",
        "--percentile=95",
        "--histogram=on",  # for p99: sysbench prints one percentile only
        # 5 (debug) adds only a line per thread, and one per ignored error with its code.
        "--verbosity=5",
    ]
    try:
        result = subprocess.run(
            sysbench_argv(port, "run", extra, workload),
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
_TRANSACTIONS = re.compile(r"^\s*transactions:\s+(\d+)\s", re.M)
_P95 = re.compile(r"^\s*95th percentile:\s+([\d.]+)", re.M)
_MAX = re.compile(r"^\s*max:\s+([\d.]+)", re.M)
_IGNORED = re.compile(r"^\s*ignored errors:\s+(\d+)", re.M)
_RECONNECTS = re.compile(r"^\s*reconnects:\s+(\d+)", re.M)
_IGNORING = re.compile(r"Ignoring error (\d+) ")
_HISTOGRAM_ROW = re.compile(r"^\s*([\d.]+) \|[* ]*\s(\d+)$", re.M)


def histogram_percentile(text: str, pct: float) -> float:
    """The latency (ms) under which `pct` per cent of sysbench's histogram lies: its
    --percentile works the same way on the same buckets."""
    rows = [(float(v), int(n)) for v, n in _HISTOGRAM_ROW.findall(text)]
    total = sum(n for _, n in rows)
    if not total:
        raise RuntimeError(f"sysbench output lacks a latency histogram:\n{text}")
    seen = 0
    for value, count in rows:
        seen += count
        if seen * 100 >= pct * total:
            return value
    return rows[-1][0]


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
        "transactions": int(_match(_TRANSACTIONS, text).group(1)),
        "p95_ms": float(_match(_P95, text).group(1)),
        "p99_ms": histogram_percentile(text, 99),
        "max_ms": float(_match(_MAX, text).group(1)),
        "ignored_errors": int(_match(_IGNORED, text).group(1)),
        "reconnects": int(_match(_RECONNECTS, text).group(1)),
        "ignored_error_codes": dict(collections.Counter(_IGNORING.findall(text))),
    }


# --- the server ---------------------------------------------------------------------------


def start_server(bench: Bench, settings: Settings) -> dict[str, str]:
    """Start the server with sysbench's account; its flavour and version."""
    if settings.server == "mariadb":
        start_mariadb(bench)
    else:
        start_harness_server(bench, settings.server)
    create_account(bench)
    return {"flavour": settings.server, "version": server_version(bench)}


def server_label(server: dict[str, str]) -> str:
    return f"{'MySQL' if server['flavour'] == 'mysql' else 'MariaDB'} {server['version']}"


# --- mysqlgate ----------------------------------------------------------------------------


def gate_args(settings: Settings) -> list[str]:
    # MySQL offers TLS and mysqlgate would take it (upstream.ssl_mode preferred), while
    # sysbench's libmariadb does not ask for it: B would pay for encryption that A does
    # not. MariaDB here offers none. Given first, so that --gate-args can turn it back on.
    plain = ["--upstream-ssl-mode", "disabled"] if settings.server == "mysql" else []
    return [*plain, *settings.gate_args]


def start_bench_gate(bench: Bench, settings: Settings) -> GateProcess | None:
    if settings.self_test:
        # Stand-in for B: the server itself. Its CPU is what gets measured for "B".
        bench.gate_port = bench.db_port
        log(f"self-test: B goes straight to {SERVER_PROCESS[settings.server]} (no mysqlgate)")
        return None
    # Run from a snapshot of mysqlgate/ (see common.snapshot_gate_source).
    gate = start_gate(bench, bench.db_port, settings.pool_size, gate_args(settings),
                      nice=settings.gate_nice)
    bench.gate_proc, bench.gate_port = gate.proc, gate.port
    log(f"mysqlgate listening on 127.0.0.1:{bench.gate_port} (pool size {settings.pool_size}"
        + (f", nice {settings.gate_nice})" if settings.gate_nice else ")"))
    return gate


def measured_pid(bench: Bench) -> int:
    # Self-test has no gate process.
    pid = bench.gate_proc.pid if bench.gate_proc is not None else bench.db_pid
    assert pid is not None
    return pid


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    machine: float  # every process on the machine
    ours: float  # this script, its finished children (sysbench), the server and the gate
    measured: float  # the B-side process: mysqlgate (the server in self-test)

    @classmethod
    def take(cls, bench: Bench, measured_pid: int, others: Sequence[int] = ()) -> CpuSnapshot:
        # RUSAGE_CHILDREN counts children once they have been waited for: each sysbench
        # run, never the still-running servers, which are read from /proc instead.
        usage = [
            resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        ]
        gate = bench.gate_proc.pid if bench.gate_proc is not None else None
        servers = [pid for pid in (bench.db_pid, gate) if pid is not None]
        return cls(
            machine=machine_busy_seconds(),
            ours=sum(u.ru_utime + u.ru_stime for u in usage)
            + sum(process_cpu_seconds(pid) for pid in [*servers, *others]),
            measured=process_cpu_seconds(measured_pid),
        )


def run_one(
    bench: Bench, label: str, round_no: int, seconds: int, settings: Settings,
    reference: ReferenceRelay | None = None,
) -> RunResult:
    if label == "R":
        assert reference is not None
        port, pid = reference.port, reference.proc.pid
    else:
        port, pid = (bench.db_port if label == "A" else bench.gate_port), measured_pid(bench)
    relays = [reference.proc.pid] if reference is not None else []
    deadlocks = server_status(bench, "Innodb_deadlocks")
    before = CpuSnapshot.take(bench, pid, relays)
    output = sysbench_run(port, seconds, settings.threads, settings.workload, settings.ps_mode)
    after = CpuSnapshot.take(bench, pid, relays)
    deadlocks = server_status(bench, "Innodb_deadlocks") - deadlocks
    others = (after.machine - before.machine) - (after.ours - before.ours)
    return RunResult(
        label=label,
        round=round_no,
        gate_cpu_s=round(after.measured - before.measured, 3) if label != "A" else None,
        other_cpu_share=round(max(0.0, others) / (seconds * (os.cpu_count() or 1)), 4),
        server_deadlocks=deadlocks,
        **parse_sysbench(output),
    )


def run_all(bench: Bench, settings: Settings, reference: ReferenceRelay | None = None
            ) -> tuple[list[RunResult], list[RunResult]]:
    """(warm-up runs, measured runs)."""
    labels = ("A", "B", "R") if reference is not None else ("A", "B")
    warmups: list[RunResult] = []
    if settings.warmup_seconds > 0:
        # Warm every path (buffer pool, the gate's upstream pool, Python's caches) first.
        for label in labels:
            log(f"warm-up {label}: {settings.warmup_seconds} s")
            warmups.append(run_one(bench, label, 0, settings.warmup_seconds, settings,
                                   reference))
    results: list[RunResult] = []
    total = len(labels) * settings.rounds
    for round_no in range(1, settings.rounds + 1):
        for label in labels:
            log(
                f"run {len(results) + 1}/{total}: {label} round {round_no}, "
                f"{settings.run_seconds} s"
            )
            results.append(run_one(bench, label, round_no, settings.run_seconds, settings,
                                   reference))
    return warmups, results


# --- results ------------------------------------------------------------------------------


def unexplained_errors(r: RunResult) -> int:
    """Reconnects, errors logged with a code other than 1213 (deadlock), and ignored
    errors beyond those and the deadlocks the server counted during the run. (sysbench
    does not log every ignored error: a run with 2 server deadlocks and 2 ignored errors
    logged one "Ignoring error 1213" line.)"""
    others = sum(n for code, n in r.ignored_error_codes.items() if code != "1213")
    return r.reconnects + others + max(0, r.ignored_errors - others - r.server_deadlocks)


def error_codes_text(r: RunResult) -> str:
    codes = ", ".join(f"{code} x{n}" for code, n in sorted(r.ignored_error_codes.items()))
    if r.reconnects:
        codes += (", " if codes else "") + f"{r.reconnects} reconnects"
    return codes


def summarise(results: list[RunResult]) -> dict[str, Any]:
    """Median over rounds of each round's B/A ratio; pairing adjacent runs cancels drift."""
    direct = {r.round: r for r in results if r.label == "A"}
    through = {r.round: r for r in results if r.label == "B"}
    rounds = sorted(direct)
    qps_ratios = [through[n].qps / direct[n].qps for n in rounds]
    p95_ratios = [through[n].p95_ms / direct[n].p95_ms for n in rounds]
    p99_ratios = [through[n].p99_ms / direct[n].p99_ms for n in rounds]
    b_queries = sum(r.queries for r in through.values())
    b_cpu = sum(r.gate_cpu_s or 0.0 for r in through.values())
    quiet = quiet_rounds(direct, through)
    return {
        "quiet_rounds": quiet,
        "quiet_qps_ratios": [round(qps_ratios[rounds.index(n)], 4) for n in quiet],
        "qps_ratio_median": statistics.median(qps_ratios),
        "p95_ratio_median": statistics.median(p95_ratios),
        "p99_ratio_median": statistics.median(p99_ratios),
        # The spread shows how far to trust the medians on this machine.
        "qps_ratios": [round(x, 4) for x in qps_ratios],
        "p95_ratios": [round(x, 4) for x in p95_ratios],
        "p99_ratios": [round(x, 4) for x in p99_ratios],
        "direct_qps_median": statistics.median(direct[n].qps for n in rounds),
        "through_qps_median": statistics.median(through[n].qps for n in rounds),
        "direct_p95_ms_median": statistics.median(direct[n].p95_ms for n in rounds),
        "through_p95_ms_median": statistics.median(through[n].p95_ms for n in rounds),
        "direct_p99_ms_median": statistics.median(direct[n].p99_ms for n in rounds),
        "through_p99_ms_median": statistics.median(through[n].p99_ms for n in rounds),
        "gate_cpu_us_per_query": 1e6 * b_cpu / b_queries if b_queries else None,
        "errors_or_reconnects": sum(r.ignored_errors + r.reconnects for r in results),
        "direct_errors_or_reconnects": sum(
            r.ignored_errors + r.reconnects for r in direct.values()
        ),
        "through_errors_or_reconnects": sum(
            r.ignored_errors + r.reconnects for r in through.values()
        ),
        # Errors through mysqlgate that are not deadlocks the server itself counted.
        "through_unexplained_errors": sum(unexplained_errors(r) for r in through.values()),
        # Deadlocks the server counted during the runs each way.
        "through_deadlocks": sum(r.server_deadlocks for r in through.values()),
        "direct_deadlocks": sum(r.server_deadlocks for r in direct.values()),
        "max_other_cpu_share": max(r.other_cpu_share for r in results),
        "reference": reference_summary(results, direct, through),
    }


def reference_summary(results: list[RunResult], direct: dict[int, RunResult],
                      through: dict[int, RunResult]) -> dict[str, Any] | None:
    """The reference relay's rounds against direct, and mysqlgate's against it."""
    reference = {r.round: r for r in results if r.label == "R"}
    if not reference:
        return None
    rounds = sorted(reference)
    ratios = [reference[n].qps / direct[n].qps for n in rounds]
    queries = sum(r.queries for r in reference.values())
    cpu = sum(r.gate_cpu_s or 0.0 for r in reference.values())
    return {
        "qps_ratio_median": statistics.median(ratios),
        "qps_ratios": [round(x, 4) for x in ratios],
        "p99_ms_median": statistics.median(reference[n].p99_ms for n in rounds),
        "cpu_us_per_query": 1e6 * cpu / queries if queries else None,
        "gate_to_reference_qps_median": statistics.median(
            through[n].qps / reference[n].qps for n in rounds),
        "errors_or_reconnects": sum(r.ignored_errors + r.reconnects
                                    for r in reference.values()),
    }


def gate_summary(totals: GateTotals, warmups: list[RunResult],
                 results: list[RunResult]) -> dict[str, Any]:
    """The gate's totals over its whole life (warm-up and measured B runs)."""
    b_queries = sum(r.queries for r in warmups + results if r.label == "B")
    return {
        "totals": dataclasses.asdict(totals),
        "sysbench_queries_through": b_queries,
        "pins_per_1000_commands": round(totals.per_1000_commands(totals.pin_total), 3),
        "prepared_upstream_per_1000_executes": (
            None if totals.prepared_per_1000_executes is None
            else round(totals.prepared_per_1000_executes, 3)
        ),
    }


def print_report(results: list[RunResult], summary: dict[str, Any], settings: Settings,
                 server: dict[str, str]) -> None:
    b_name = "B (self-test: direct)" if settings.self_test else "B mysqlgate"
    cpu_name = SERVER_PROCESS[settings.server] if settings.self_test else "mysqlgate"
    print(
        f"{server_label(server)}: {settings.workload}, --db-ps-mode={settings.ps_mode}, "
        f"{settings.threads} threads, pool of {settings.pool_size}"
        + (f", mysqlgate at nice {settings.gate_nice}" if settings.gate_nice else "")
    )
    print(
        f"{'run':<24}{'qps':>10}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{cpu_name + ' µs/q':>17}"
        f"{'other CPU':>11}{'errors':>8}"
    )
    names = {"A": "A direct", "B": b_name, "R": f"R {settings.reference} (its CPU)"}
    for r in results:
        name = f"{names[r.label]} #{r.round}"
        cpu = f"{1e6 * r.gate_cpu_s / r.queries:.1f}" if r.gate_cpu_s is not None else "-"
        print(
            f"{name:<24}{r.qps:>10.1f}{r.p95_ms:>9.2f}{r.p99_ms:>9.2f}{r.max_ms:>9.2f}{cpu:>17}"
            f"{r.other_cpu_share:>11.0%}{r.ignored_errors + r.reconnects:>8}"
            + (f"  {codes}" if (codes := error_codes_text(r)) else "")
        )
    print()
    for name, key in (("throughput", "qps"), ("p95 latency", "p95"), ("p99 latency", "p99")):
        ratios = summary[f"{key}_ratios"]
        print(
            f"{name} through/direct, median of {len(ratios)} rounds: "
            f"{summary[f'{key}_ratio_median']:.3f}  (rounds: {min(ratios):.3f}-{max(ratios):.3f})"
        )
    print(f"p99 latency, median of rounds: direct {summary['direct_p99_ms_median']:.2f} ms, "
          f"through mysqlgate {summary['through_p99_ms_median']:.2f} ms (issue 8: <= 5 ms)")
    quiet = summary["quiet_qps_ratios"]
    if quiet:
        print(f"  throughput ratio in rounds where other CPU stayed <= "
              f"{OTHER_CPU_WARN_SHARE:.0%} on both runs ({len(quiet)}): median "
              f"{statistics.median(quiet):.3f} (rounds {min(quiet):.3f}-{max(quiet):.3f})")
    if summary["gate_cpu_us_per_query"] is not None:
        print(f"{cpu_name} CPU per query during B runs: {summary['gate_cpu_us_per_query']:.1f} µs")
    reference = summary["reference"]
    if reference is not None:
        ratios = reference["qps_ratios"]
        print(f"reference {settings.reference} (C, one upstream connection per client, no "
              f"parsing, no pool): throughput through/direct {reference['qps_ratio_median']:.3f} "
              f"(rounds {min(ratios):.3f}-{max(ratios):.3f}), p99 "
              f"{reference['p99_ms_median']:.2f} ms, its CPU per query "
              f"{reference['cpu_us_per_query']:.1f} µs; mysqlgate/{settings.reference} "
              f"{reference['gate_to_reference_qps_median']:.3f}")
    warn_if_not_quiet(summary["max_other_cpu_share"], more=" and the ratios are not reliable")
    if summary["direct_errors_or_reconnects"]:
        print(
            f"NOTE: sysbench saw {summary['direct_errors_or_reconnects']} errors/reconnects "
            f"on direct runs (the server counted {summary['direct_deadlocks']} deadlocks)"
        )
    if summary["through_deadlocks"]:
        print(
            f"NOTE: the server counted {summary['through_deadlocks']} deadlocks (1213) during "
            "runs through mysqlgate; sysbench's errors there are no more than those: the "
            "workload's own, as on direct runs (--strict makes them fail the benchmark)"
        )
    if settings.self_test:
        print(f"(self-test: B went straight to {server_label(server)}; ratios near 1.0 mean "
              "the harness is fair)")


def print_gate_summary(gate: dict[str, Any]) -> None:
    totals = gate["totals"]
    pins = ", ".join(f"{k} {v}" for k, v in sorted(totals["pins"].items())) or "none"
    print(
        f"mysqlgate totals (warm-up and B runs): commands {totals['commands']}, "
        f"pins [{pins}] = {gate['pins_per_1000_commands']:.2f} per 1,000 commands, "
        f"upstream connects {totals['upstream_connects']}, resets {totals['resets']}, "
        f"lost {totals['lost']}, retried {totals['retried']}"
    )
    per_1000 = gate["prepared_upstream_per_1000_executes"]
    print(
        f"statements prepared upstream: {totals['prepared_upstream']} for "
        f"{totals['executes']} executes"
        + (f" = {per_1000:.2f} per 1,000 executes" if per_1000 is not None else "")
    )


def write_json(
    results: list[RunResult], summary: dict[str, Any], settings: Settings, extra: dict[str, Any],
    bench: Bench, server: dict[str, str],
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    name = "" if (settings.workload, settings.ps_mode) == ("oltp_point_select", "disable") \
        else f"-{settings.workload}-ps-{settings.ps_mode}"
    # MariaDB's names as they always were: plot_point_select.py and older results use them.
    flavour = "" if settings.server == "mariadb" else f"-{settings.server}"
    path = RESULTS_DIR / (f"{stamp}{name}{flavour}{'-selftest' if settings.self_test else ''}"
                          ".json")
    # The server's own tool version only where the tool is on PATH (MySQL runs from the
    # harness's private folder, and its VERSION() is under "server").
    tools = ("sysbench", "mariadbd") if settings.server == "mariadb" else ("sysbench",)
    document = {
        "benchmark": ("point_select" if not name else f"sysbench{name}") + flavour,
        "timestamp": stamp,
        "server": server,
        "settings": dataclasses.asdict(settings),
        "workload": {
            "sysbench_test": settings.workload,
            "tables": TABLES,
            "table_size": TABLE_SIZE,
            "db_ps_mode": settings.ps_mode,
        },
        "environment": environment(bench, tools),
        "runs": [dataclasses.asdict(r) for r in results],
        "summary": summary,
        **extra,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# --- main ---------------------------------------------------------------------------------


def failures(summary: dict[str, Any], gate: dict[str, Any] | None,
             strict: bool = False) -> list[str]:
    """What makes this run not a valid comparison: errors through mysqlgate (other than
    deadlocks the server counted, unless `strict`), reconnects, lost upstream connections.
    (Errors on direct runs are the server's and only noted.)"""
    found = []
    bad = summary["through_errors_or_reconnects"] if strict \
        else summary["through_unexplained_errors"]
    if bad:
        found.append(
            f"sysbench saw {bad} errors/reconnects through mysqlgate"
            + ("" if strict else " that were not deadlocks counted by the server")
        )
    if gate is not None:
        totals = gate["totals"]
        if totals["lost"] or totals["retried"]:
            found.append(
                f"mysqlgate lost {totals['lost']} upstream connections, retried "
                f"{totals['retried']} commands"
            )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    install_signal_handlers()
    try:
        with bench_session() as bench:
            try:
                bench.gate_ref = settings.gate_ref
                server = start_server(bench, settings)
                sysbench_prepare(bench)
                gate = start_bench_gate(bench, settings)
                reference = start_haproxy(bench, bench.db_port) if settings.reference else None
                warmups, results = run_all(bench, settings, reference)
                extra: dict[str, Any] = {
                    # Which process the CPU and memory figures belong to (the server in
                    # self-test).
                    "measured_process": SERVER_PROCESS[settings.server] if settings.self_test
                    else "mysqlgate",
                    "measured_peak_rss_kib": process_peak_rss_kib(measured_pid(bench)),
                    "warmups": [dataclasses.asdict(r) for r in warmups],
                }
                gate_info = None
                if gate is not None:
                    # SIGTERM: the gate logs its totals (pins, prepares) as it stops.
                    try:
                        gate_info = gate_summary(gate.stop(), warmups, results)
                        extra["gate"] = gate_info
                    except RuntimeError:
                        if settings.gate_ref is None:
                            raise
                        log(f"mysqlgate as of {settings.gate_ref} logged no totals line")
                    extra["gate_log_problems"] = gate.problems()[:50]
            except (RuntimeError, subprocess.CalledProcessError):
                # The temp dir goes away with the servers; keep their logs for a post-mortem.
                saved = save_logs(bench, RESULTS_DIR / f"{utc_stamp()}-failed.json")
                log(f"server and gate logs kept in {', '.join(saved) or '(none)'}")
                raise
            summary = summarise(results)
            problems = failures(summary, gate_info, settings.strict)
            summary["failures"] = problems
            print_report(results, summary, settings, server)
            if gate_info is not None:
                print_gate_summary(gate_info)
            path = write_json(results, summary, settings, extra, bench, server)
            if report_result(bench, path, problems, settings.keep_logs):
                return 1
    except KeyboardInterrupt:
        log("interrupted; servers stopped, temp files removed")
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
