"""Large results (issue 8, target 3): MB/s of one big SELECT, direct vs through mysqlgate.

Usage:  python bench/large_result.py [--rounds 5] [--rows 200000] [--readers 1,4]
        [--client mariadb|mysqldb] [--quick] [--pool-size 4] [--gate-args "..."]

A throwaway MariaDB gets one table whose full SELECT is about 200 MB on the wire
(200,000 rows of a 1,000-byte VARCHAR, loaded with INSERT ... SELECT from the sequence
engine). Readers fetch all of it, direct (A) and through mysqlgate (B), alternating A B A B
for each number of concurrent readers; each round's B/A ratio of MB/s is computed and the
median reported, with mysqlgate's CPU seconds per 100 MB forwarded.

Readers are separate processes, so that they do not share a GIL with this script or each
other. By default (`--client raw`) each one logs in on a raw socket and reads the result
looking only at packet headers (bench/mysql_wire.py), which keeps up with the server;
`--client mariadb` (the command-line client, `--quick --batch --raw` to /dev/null) and
`--client mysqldb` (mysqlclient's unbuffered SSCursor) are there for comparison: both
spend a core on formatting or converting rows and become the bottleneck.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import mysql_wire
from common import (
    DB_NAME,
    DB_PASSWORD,
    DB_USER,
    OTHER_CPU_WARN_SHARE,
    Bench,
    CpuMark,
    GateProcess,
    create_account,
    environment,
    find_tool,
    fmt_spread,
    log,
    mariadb_client,
    process_peak_rss_kib,
    quiet_rounds,
    report_result,
    run_main,
    start_gate,
    start_mariadb,
    warn_if_not_quiet,
    write_result,
)

TABLE = "big"
READ_TIMEOUT_S = 600
CLIENTS = ("raw", "mariadb", "mysqldb")


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int
    rows: int
    row_bytes: int
    readers: list[int]
    client: str
    pool_size: int
    gate_args: list[str]
    warmup: bool
    keep_logs: bool


@dataclasses.dataclass(frozen=True)
class Run:
    label: str  # "A" direct, "B" through mysqlgate
    round: int  # 0: warm-up
    readers: int
    wire_bytes: int  # result bytes all readers received (packets, headers included)
    seconds: float  # first reader started to last reader done
    mb_per_s: float  # 1 MB = 10**6 bytes
    gate_cpu_s: float | None
    server_cpu_s: float
    client_cpu_s: float  # the readers' processes
    other_cpu_share: float


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Compare reading one large result direct vs through mysqlgate.",
        epilog='Pass gate arguments that start with a dash as --gate-args="--flag value".',
    )
    parser.add_argument("--rounds", type=int, default=5, help="A/B pairs per reader count")
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the table")
    parser.add_argument("--row-bytes", type=int, default=1000, help="payload bytes per row")
    parser.add_argument("--readers", default="1,4",
                        help="concurrent readers, comma-separated (default 1,4)")
    parser.add_argument("--client", choices=CLIENTS, default="raw",
                        help="reader: raw (bench/mysql_wire.py: walks packet headers only, "
                        "default), mariadb (command-line client) or mysqldb (SSCursor)")
    parser.add_argument("--quick", action="store_true",
                        help="20,000 rows (~20 MB), 2 rounds: a smoke test")
    parser.add_argument("--pool-size", type=int, default=4, help="mysqlgate upstream pool size")
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up reads")
    parser.add_argument("--gate-args", default="", help="extra arguments for mysqlgate")
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy server and gate logs to bench/results/"
    )
    ns = parser.parse_args(argv)
    readers = [int(x) for x in ns.readers.split(",") if x.strip()]
    if ns.rounds < 1 or ns.rows < 1 or ns.row_bytes < 1 or not readers or min(readers) < 1:
        parser.error("--rounds, --rows, --row-bytes and --readers must be positive")
    return Settings(
        rounds=2 if ns.quick else ns.rounds,
        rows=min(ns.rows, 20_000) if ns.quick else ns.rows,
        row_bytes=ns.row_bytes,
        readers=readers,
        client=ns.client,
        pool_size=ns.pool_size,
        gate_args=shlex.split(ns.gate_args),
        warmup=not ns.no_warmup,
        keep_logs=ns.keep_logs,
    )


# --- the table ----------------------------------------------------------------------------


def lenenc_size(n: int) -> int:
    return 1 if n < 251 else 3 if n < 1 << 16 else 4 if n < 1 << 24 else 9


def rows_wire_bytes(rows: int, row_bytes: int) -> int:
    """Bytes of the row packets of `SELECT id, payload` (text protocol): per row a 4-byte
    header, the id as a length-prefixed decimal string and the payload, length-prefixed.
    (Column definitions and the final EOF/OK add a few hundred bytes, left out.)"""
    total = 0
    digits = 1
    low = 1
    while low <= rows:
        high = min(rows, 10**digits - 1)
        total += (high - low + 1) * (4 + 1 + digits)
        low, digits = high + 1, digits + 1
    return total + rows * (lenenc_size(row_bytes) + row_bytes)


def create_table(bench: Bench, settings: Settings) -> None:
    log(f"loading {settings.rows} rows of {settings.row_bytes} bytes")
    started = time.monotonic()
    mariadb_client(
        bench,
        f"USE {DB_NAME}; CREATE TABLE {TABLE} (id INT PRIMARY KEY, "
        f"payload VARCHAR({settings.row_bytes}) NOT NULL) ENGINE=InnoDB CHARSET=latin1; "
        f"INSERT INTO {TABLE} SELECT seq, REPEAT(CHAR(65 + seq MOD 26), "
        f"{settings.row_bytes}) FROM seq_1_to_{settings.rows}",
    )
    log(f"loaded in {time.monotonic() - started:.1f} s")


# --- readers ------------------------------------------------------------------------------


SQL = f"SELECT id, payload FROM {TABLE}"


def reader_argv(client: str, port: int) -> list[str]:
    if client == "mariadb":
        # --quick: row by row (mysql_use_result), nothing buffered; --raw: no escaping.
        return [
            find_tool("mariadb"), "--no-defaults", "--host=127.0.0.1", f"--port={port}",
            f"--user={DB_USER}", f"--password={DB_PASSWORD}", "--quick", "--batch", "--raw",
            "--skip-column-names", f"--database={DB_NAME}", "-e", SQL,
        ]
    return [sys.executable, __file__, "_read", client, str(port)]


def python_reader(client: str, port: int) -> int:
    """Hidden mode: read the whole result once; print rows, bytes (raw: as received;
    mysqldb: None) and the monotonic clock (system-wide on Linux) just before the query
    and after its last row, as JSON."""
    if client == "raw":
        sock = mysql_wire.connect(port, DB_USER, DB_PASSWORD, DB_NAME)
        started = time.monotonic()
        rows, received = mysql_wire.query_count(sock, SQL)
        ended = time.monotonic()
        sock.close()
        print(json.dumps({"rows": rows, "bytes": received, "start": started, "end": ended}))
        return 0
    import MySQLdb
    import MySQLdb.cursors

    conn = MySQLdb.connect(host="127.0.0.1", port=port, user=DB_USER, password=DB_PASSWORD,
                           database=DB_NAME, cursorclass=MySQLdb.cursors.SSCursor)
    cursor = conn.cursor()
    started = time.monotonic()
    cursor.execute(SQL)
    rows = 0
    while batch := cursor.fetchmany(10_000):
        rows += len(batch)
    ended = time.monotonic()
    cursor.close()
    conn.close()
    print(json.dumps({"rows": rows, "bytes": None, "start": started, "end": ended}))
    return 0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_once(bench: Bench, settings: Settings, label: str, round_no: int, readers: int,
              gate: GateProcess) -> Run:
    port = bench.db_port if label == "A" else gate.port
    assert bench.db_proc is not None
    pids = [bench.db_proc.pid, gate.proc.pid]
    client_before = children_cpu()
    before = CpuMark.take(pids)
    procs = [
        subprocess.Popen(reader_argv(settings.client, port), stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL if settings.client == "mariadb"
                         else subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(readers)
    ]
    errors = []
    reports = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=READ_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            errors.append(f"reader hung past {READ_TIMEOUT_S} s")
            continue
        if proc.returncode != 0:
            errors.append(f"reader exited {proc.returncode}: {err.decode(errors='replace')[-500:]}")
        elif out is not None:
            report = json.loads(out)
            reports.append(report)
            if report["rows"] != settings.rows:
                errors.append(f"reader got {report['rows']} rows of {settings.rows}")
    seconds = time.monotonic() - before.at  # the mariadb client: process start to exit
    after = CpuMark.take(pids)
    if errors:
        raise RuntimeError(f"{'direct' if label == 'A' else 'through mysqlgate'}, {readers} "
                           f"readers: {'; '.join(errors)}")
    wire = readers * rows_wire_bytes(settings.rows, settings.row_bytes)
    if reports:  # Python readers: from the first query sent to the last row read
        seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
        if all(r["bytes"] is not None for r in reports):
            wire = sum(r["bytes"] for r in reports)
    return Run(
        label=label,
        round=round_no,
        readers=readers,
        wire_bytes=wire,
        seconds=round(seconds, 4),
        mb_per_s=round(wire / 1e6 / seconds, 2),
        gate_cpu_s=before.cpu_of(gate.proc.pid, after) if label == "B" else None,
        server_cpu_s=before.cpu_of(bench.db_proc.pid, after),
        client_cpu_s=round(children_cpu() - client_before, 4),
        other_cpu_share=before.other_share(after),
    )


# --- results ------------------------------------------------------------------------------


def summarise(runs: list[Run], readers: int) -> dict[str, Any]:
    mine = [r for r in runs if r.readers == readers and r.round > 0]
    direct = {r.round: r for r in mine if r.label == "A"}
    through = {r.round: r for r in mine if r.label == "B"}
    rounds = sorted(direct)
    ratios = [through[n].mb_per_s / direct[n].mb_per_s for n in rounds]
    b_bytes = sum(r.wire_bytes for r in through.values())
    b_cpu = sum(r.gate_cpu_s or 0.0 for r in through.values())
    quiet = quiet_rounds(direct, through)
    return {
        "readers": readers,
        "mb_per_s_ratio_median": round(statistics.median(ratios), 4),
        "mb_per_s_ratios": [round(x, 4) for x in ratios],
        "direct_mb_per_s": [direct[n].mb_per_s for n in rounds],
        "through_mb_per_s": [through[n].mb_per_s for n in rounds],
        "gate_cpu_s_per_100_mb": round(b_cpu / (b_bytes / 1e8), 4) if b_bytes else None,
        "client_cpu_s_per_100_mb_direct": round(
            sum(r.client_cpu_s for r in direct.values())
            / (sum(r.wire_bytes for r in direct.values()) / 1e8), 4),
        "server_cpu_s_per_100_mb_direct": round(
            sum(r.server_cpu_s for r in direct.values())
            / (sum(r.wire_bytes for r in direct.values()) / 1e8), 4),
        "quiet_rounds": quiet,
        "quiet_ratios": [round(ratios[rounds.index(n)], 4) for n in quiet],
        "max_other_cpu_share": max(r.other_cpu_share for r in mine),
    }


def print_report(runs: list[Run], summaries: list[dict[str, Any]], settings: Settings) -> None:
    mb = rows_wire_bytes(settings.rows, settings.row_bytes) / 1e6
    print(f"SELECT of {settings.rows} rows x {settings.row_bytes} bytes = {mb:.1f} MB per reader,"
          f" reader: {settings.client}, pool of {settings.pool_size}")
    print(f"{'run':<26}{'MB/s':>9}{'s':>8}{'gate CPU s':>12}{'server CPU':>12}"
          f"{'client CPU':>12}{'other CPU':>11}")
    for r in runs:
        name = (f"{'A direct' if r.label == 'A' else 'B mysqlgate'} x{r.readers} "
                f"{'warm-up' if r.round == 0 else '#' + str(r.round)}")
        gate = f"{r.gate_cpu_s:.2f}" if r.gate_cpu_s is not None else "-"
        print(f"{name:<26}{r.mb_per_s:>9.1f}{r.seconds:>8.2f}{gate:>12}{r.server_cpu_s:>12.2f}"
              f"{r.client_cpu_s:>12.2f}{r.other_cpu_share:>11.0%}")
    print()
    for s in summaries:
        print(f"{s['readers']} reader(s): direct {fmt_spread(s['direct_mb_per_s'], 1)} MB/s, "
              f"through mysqlgate {fmt_spread(s['through_mb_per_s'], 1)} MB/s; "
              f"ratio median {fmt_spread(s['mb_per_s_ratios'], 3)}; mysqlgate CPU "
              f"{s['gate_cpu_s_per_100_mb']:.3f} s per 100 MB")
        if s["quiet_ratios"]:
            print(f"  rounds with other CPU <= {OTHER_CPU_WARN_SHARE:.0%} "
                  f"({len(s['quiet_ratios'])}): ratio {fmt_spread(s['quiet_ratios'], 3)}")
        warn_if_not_quiet(s["max_other_cpu_share"], indent="  ")


# --- main ---------------------------------------------------------------------------------


def body(bench: Bench, settings: Settings) -> int:
    start_mariadb(bench)
    create_account(bench)
    create_table(bench, settings)
    gate = start_gate(bench, bench.db_port, settings.pool_size, settings.gate_args)
    log(f"mysqlgate listening on 127.0.0.1:{gate.port} (pool size {settings.pool_size})")
    runs: list[Run] = []
    if settings.warmup:
        for label in ("A", "B"):
            log(f"warm-up {label}")
            runs.append(read_once(bench, settings, label, 0, 1, gate))
    for readers in settings.readers:
        for round_no in range(1, settings.rounds + 1):
            for label in ("A", "B"):
                log(f"{readers} reader(s), round {round_no}/{settings.rounds}: {label}")
                runs.append(read_once(bench, settings, label, round_no, readers, gate))
    peak_rss = process_peak_rss_kib(gate.proc.pid)
    totals = gate.stop()
    summaries = [summarise(runs, n) for n in settings.readers]
    print_report(runs, summaries, settings)
    print(f"mysqlgate peak RSS {peak_rss} KiB; totals: clients {totals.clients}, commands "
          f"{totals.commands}, upstream connects {totals.upstream_connects}, lost {totals.lost}")
    problems = []
    if totals.lost or totals.retried:
        problems.append(f"mysqlgate lost {totals.lost} upstream connections")
    document = {
        "settings": dataclasses.asdict(settings),
        "workload": {"sql": SQL, "rows": settings.rows, "row_bytes": settings.row_bytes,
                     "wire_bytes_per_reader": rows_wire_bytes(settings.rows, settings.row_bytes)},
        "environment": environment(bench, ("mariadbd", "mariadb")),
        "runs": [dataclasses.asdict(r) for r in runs],
        "summary": summaries,
        "gate": {"totals": dataclasses.asdict(totals), "peak_rss_kib": peak_rss},
        "gate_log_problems": gate.problems()[:50],
        "failures": problems,
    }
    path = write_result("large_result", document, f"-{settings.client}")
    return report_result(bench, path, problems, settings.keep_logs)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_read"]:
        return python_reader(args[1], int(args[2]))
    settings = parse_args(args)
    return run_main(lambda bench: body(bench, settings), "large_result")


if __name__ == "__main__":
    sys.exit(main())
