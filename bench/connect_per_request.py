"""A connection per request: connect + SELECT 1 + close, direct vs through mysqlgate.

Usage:  python bench/connect_per_request.py [--rounds 5] [--time 10] [--quick]
        [--workers 4] [--pool-size 4] [--delay-ms 1] [--handshake-delay]
        [--variants relay,loopback] [--gate-args "--some-flag value"]

What PHP, CGI and Django's default CONN_MAX_AGE = 0 do. `--workers` PyMySQL threads
(ssl_disabled=True; autocommit left at PyMySQL's default, so each connect also sends
`SET NAMES utf8mb4` and `SET AUTOCOMMIT = 0`) each open a connection, run SELECT 1 and
close it, back to back. Two network set-ups:

- relay: the server behind bench/relay.py, which delays every chunk by --delay-ms in
  each direction (with --handshake-delay, also a new connection by the 3 one-way delays
  of TCP's handshake, which a real link of that delay would cost). Direct clients and
  mysqlgate's upstream connections both go through it; clients reach mysqlgate over
  loopback, as an app reaches a local sidecar.
- loopback: no relay (for reference; the server is as near as it can be).

Runs alternate direct (A) and through mysqlgate (B); each round's B/A ratio of
connections per second is computed, and the median and range over rounds reported.
Each variant has its own mysqlgate (pool of --pool-size), stopped with SIGTERM after its
runs so that its totals line (clients, commands answered locally, upstream connects,
pins) can be reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import pymysql
from common import (
    DB_NAME,
    DB_PASSWORD,
    DB_USER,
    OTHER_CPU_WARN_SHARE,
    Bench,
    CpuMark,
    GateTotals,
    LoopResult,
    closed_loop,
    create_account,
    environment,
    fmt_spread,
    log,
    percentile,
    quiet_rounds,
    report_result,
    run_main,
    start_gate,
    start_mariadb,
    start_relay,
    stop_process,
    warn_if_not_quiet,
    write_result,
)

VARIANTS = ("relay", "loopback")
# port -> the request one worker runs, back to back
RequestFactory = Callable[[int], Callable[[int], None]]
TARGET_RATIO = 3.5  # issue 6: connect-per-request through mysqlgate >= 3.5x direct


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int
    run_seconds: float
    warmup_seconds: float
    workers: int
    pool_size: int
    delay_ms: float
    handshake_delay: bool
    variants: list[str]
    gate_args: list[str]
    keep_logs: bool


@dataclasses.dataclass(frozen=True)
class Run:
    variant: str
    label: str  # "A" direct, "B" through mysqlgate
    round: int  # 0: warm-up
    requests: int
    errors: int
    rate: float  # requests (connections) per second
    median_ms: float
    p95_ms: float
    gate_cpu_us_per_request: float | None
    relay_cpu_us_per_request: float | None
    client_cpu_us_per_request: float | None  # this process: the worker threads
    server_cpu_us_per_request: float | None  # mariadbd
    other_cpu_share: float
    first_errors: list[str]


def parse_args(
    argv: Sequence[str] | None,
    description: str = "connect + SELECT 1 + close, direct vs through mysqlgate.",
    default_variants: str = "relay,loopback",
) -> Settings:
    parser = argparse.ArgumentParser(
        description=description,
        epilog='Pass gate arguments that start with a dash as --gate-args="--flag value".',
    )
    parser.add_argument("--rounds", type=int, default=5, help="A/B pairs per variant (5)")
    parser.add_argument("--time", type=float, default=10, help="seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds per warm-up run (3)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 s, 1 s warm-ups")
    parser.add_argument("--workers", type=int, default=4, help="client threads (4)")
    parser.add_argument("--pool-size", type=int, default=4, help="mysqlgate pool size (4)")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="relay delay each way (1)")
    parser.add_argument(
        "--handshake-delay",
        action="store_true",
        help="the relay also delays a new connection by a TCP handshake (3 one-way delays)",
    )
    parser.add_argument(
        "--variants", default=default_variants,
        help=f"relay, loopback or both (default {default_variants})",
    )
    parser.add_argument("--gate-args", default="", help="extra arguments for mysqlgate")
    parser.add_argument("--keep-logs", action="store_true", help="copy logs to bench/results/")
    ns = parser.parse_args(argv)
    variants = [v.strip() for v in ns.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        parser.error(f"--variants: a comma-separated subset of {', '.join(VARIANTS)}")
    if ns.rounds < 1 or ns.time <= 0 or ns.warmup < 0 or ns.workers < 1 or ns.pool_size < 1:
        parser.error("--rounds, --time, --workers and --pool-size must be positive")
    return Settings(
        rounds=2 if ns.quick else ns.rounds,
        run_seconds=3 if ns.quick else ns.time,
        warmup_seconds=min(1, ns.warmup) if ns.quick else ns.warmup,
        workers=ns.workers,
        pool_size=ns.pool_size,
        delay_ms=ns.delay_ms,
        handshake_delay=ns.handshake_delay,
        variants=variants,
        gate_args=shlex.split(ns.gate_args),
        keep_logs=ns.keep_logs,
    )


# --- the request ------------------------------------------------------------------------


def connect(port: int) -> Any:
    # autocommit is left at PyMySQL's default (False): it sends SET AUTOCOMMIT = 0.
    return pymysql.connect(
        host="127.0.0.1",
        port=port,
        user=DB_USER,
        password=DB_PASSWORD,
        database=DB_NAME,
        ssl_disabled=True,
        connect_timeout=20,
        read_timeout=30,
        write_timeout=30,
    )


def request_on(port: int) -> Callable[[int], None]:
    def request(_worker: int) -> None:
        conn = connect(port)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                row = cursor.fetchone()
            if row != (1,):
                raise RuntimeError(f"SELECT 1 returned {row!r}")
        finally:
            conn.close()

    return request


def query_ms(port: int, samples: int = 200) -> float:
    """Median time of SELECT 1 on an open connection: one round trip to the server plus
    the client's and server's work (mysqlgate answers COM_PING itself, so not that)."""
    conn = connect(port)
    try:
        times = []
        with conn.cursor() as cursor:
            for _ in range(samples):
                started = time.perf_counter()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                times.append(1000 * (time.perf_counter() - started))
        return statistics.median(times)
    finally:
        conn.close()


def connect_ms(port: int, samples: int = 50) -> float:
    """Median time of a connect + close alone (login and PyMySQL's two SETs)."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        connect(port).close()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


# --- runs -------------------------------------------------------------------------------


def measure(
    variant: str,
    label: str,
    round_no: int,
    seconds: float,
    port: int,
    settings: Settings,
    watched: dict[str, int],
    make_request: RequestFactory,
) -> Run:
    before = CpuMark.take(watched.values())
    result: LoopResult = closed_loop(settings.workers, seconds, make_request(port))
    after = CpuMark.take(watched.values())
    lat = result.latencies_ms or [0.0]

    def us_per_request(name: str) -> float | None:
        if name not in watched or not result.requests:
            return None
        return round(1e6 * before.cpu_of(watched[name], after) / result.requests, 1)

    return Run(
        variant=variant,
        label=label,
        round=round_no,
        requests=result.requests,
        errors=result.errors,
        rate=round(result.rate, 2),
        median_ms=round(statistics.median(lat), 3),
        p95_ms=round(percentile(lat, 95), 3),
        gate_cpu_us_per_request=us_per_request("gate") if label == "B" else None,
        relay_cpu_us_per_request=us_per_request("relay"),
        client_cpu_us_per_request=round(1e6 * (after.self_cpu - before.self_cpu)
                                        / result.requests, 1) if result.requests else None,
        server_cpu_us_per_request=us_per_request("mariadbd"),
        other_cpu_share=before.other_share(after),
        first_errors=result.first_errors,
    )


def run_variant(
    bench: Bench, variant: str, settings: Settings, make_request: RequestFactory
) -> tuple[list[Run], GateTotals, dict[str, Any]]:
    watched: dict[str, int] = {}
    assert bench.db_proc is not None
    watched["mariadbd"] = bench.db_proc.pid
    info: dict[str, Any] = {"variant": variant}
    relay = None
    if variant == "relay":
        relay = start_relay(bench, bench.db_port, settings.delay_ms, settings.handshake_delay)
        watched["relay"] = relay.proc.pid
        server_port = relay.port
        info["relay"] = {"delay_ms": settings.delay_ms, "handshake_delay": relay.handshake_delay}
    else:
        server_port = bench.db_port
    gate = start_gate(bench, server_port, settings.pool_size, settings.gate_args,
                      name=f"mysqlgate-{variant}")
    watched["gate"] = gate.proc.pid
    log(f"{variant}: server at :{server_port}, mysqlgate at :{gate.port}")
    # What one round trip costs on each path, and a connect alone, measured one at a time.
    info["select1_ms_loopback_server"] = round(query_ms(bench.db_port), 3)
    for label, port in (("direct", server_port), ("through_gate", gate.port)):
        info[f"select1_ms_{label}"] = round(query_ms(port), 3)
        info[f"connect_ms_{label}"] = round(connect_ms(port), 3)
    log(
        f"{variant}: one at a time: SELECT 1 {info['select1_ms_direct']:.2f} ms direct, "
        f"{info['select1_ms_through_gate']:.2f} ms through mysqlgate; connect "
        f"{info['connect_ms_direct']:.2f} ms direct, {info['connect_ms_through_gate']:.2f} ms "
        "through mysqlgate"
    )
    runs: list[Run] = []
    ports = {"A": server_port, "B": gate.port}
    if settings.warmup_seconds > 0:
        for label in ("A", "B"):
            log(f"{variant}: warm-up {label}, {settings.warmup_seconds:g} s")
            runs.append(measure(variant, label, 0, settings.warmup_seconds, ports[label],
                                settings, watched, make_request))
    for round_no in range(1, settings.rounds + 1):
        for label in ("A", "B"):
            run = measure(variant, label, round_no, settings.run_seconds, ports[label],
                          settings, watched, make_request)
            log(
                f"{variant}: {label} round {round_no}: {run.rate:.0f}/s, median "
                f"{run.median_ms:.2f} ms, p95 {run.p95_ms:.2f} ms, errors {run.errors}"
            )
            runs.append(run)
    totals = gate.stop()
    info["gate_log_problems"] = gate.problems()[:50]
    if relay is not None:
        stop_process(relay.proc)
    return runs, totals, info


def summarise(runs: list[Run], totals: GateTotals) -> dict[str, Any]:
    measured = [r for r in runs if r.round > 0]
    direct = {r.round: r for r in measured if r.label == "A"}
    through = {r.round: r for r in measured if r.label == "B"}
    rounds = sorted(direct)
    ratios = [through[n].rate / direct[n].rate if direct[n].rate else 0.0 for n in rounds]
    # Rounds in which other processes left both runs alone: the fairest comparisons on a
    # shared machine (the through path is CPU-bound, the direct one is not).
    quiet = quiet_rounds(direct, through)
    b_requests = sum(r.requests for r in runs if r.label == "B")
    return {
        "rate_ratio_median": round(statistics.median(ratios), 3),
        "rate_ratios": [round(x, 3) for x in ratios],
        "quiet_rounds": quiet,
        "quiet_rate_ratios": [round(ratios[rounds.index(n)], 3) for n in quiet],
        "direct_rate_median": statistics.median(direct[n].rate for n in rounds),
        "through_rate_median": statistics.median(through[n].rate for n in rounds),
        "direct_median_ms_median": statistics.median(direct[n].median_ms for n in rounds),
        "through_median_ms_median": statistics.median(through[n].median_ms for n in rounds),
        "direct_p95_ms_median": statistics.median(direct[n].p95_ms for n in rounds),
        "through_p95_ms_median": statistics.median(through[n].p95_ms for n in rounds),
        "errors": sum(r.errors for r in runs),
        "max_other_cpu_share": max(r.other_cpu_share for r in measured),
        "gate_totals": dataclasses.asdict(totals),
        # Requests through the gate (warm-up included) vs what its totals counted.
        "through_requests_total": b_requests,
    }


def print_variant(variant: str, runs: list[Run], summary: dict[str, Any],
                  info: dict[str, Any], settings: Settings, what: str) -> None:
    measured = [r for r in runs if r.round > 0]
    if variant == "relay":
        handshake = "with" if settings.handshake_delay else "without"
        title = (f"relay: +{settings.delay_ms:g} ms each way ({handshake} TCP handshake delay); "
                 f"SELECT 1 takes {info['select1_ms_direct']:.2f} ms via the relay, "
                 f"{info['select1_ms_loopback_server']:.2f} ms on loopback")
    else:
        title = f"loopback: no relay; SELECT 1 takes {info['select1_ms_direct']:.2f} ms"
    print(f"\n== {title}")
    print(f"one client alone: connect {info['connect_ms_direct']:.2f} ms direct, "
          f"{info['connect_ms_through_gate']:.2f} ms through mysqlgate; SELECT 1 on an open "
          f"connection {info['select1_ms_direct']:.2f} ms direct, "
          f"{info['select1_ms_through_gate']:.2f} ms through mysqlgate")
    print(f"{settings.workers} {what}; mysqlgate pool of {settings.pool_size}")
    print(f"{'':<16}{'':>9}{'':>11}{'':>9}{'CPU µs per request':^32}")
    print(f"{'run':<16}{'conn/s':>9}{'median ms':>11}{'p95 ms':>9}{'client':>8}{'gate':>8}"
          f"{'relay':>8}{'server':>8}{'other CPU':>11}{'errors':>8}")
    for r in measured:
        name = f"{'A direct' if r.label == 'A' else 'B mysqlgate'} #{r.round}"
        cpu = "".join(
            f"{'-' if x is None else f'{x:.0f}':>8}"
            for x in (r.client_cpu_us_per_request, r.gate_cpu_us_per_request,
                      r.relay_cpu_us_per_request, r.server_cpu_us_per_request)
        )
        print(f"{name:<16}{r.rate:>9.1f}{r.median_ms:>11.2f}{r.p95_ms:>9.2f}{cpu}"
              f"{r.other_cpu_share:>11.0%}{r.errors:>8}")
    a = [r for r in measured if r.label == "A"]
    b = [r for r in measured if r.label == "B"]
    print(f"connections/s   direct {fmt_spread([r.rate for r in a], 0)}   "
          f"through {fmt_spread([r.rate for r in b], 0)}   (median (min-max) of rounds)")
    print(f"latency median  direct {fmt_spread([r.median_ms for r in a])} ms   "
          f"through {fmt_spread([r.median_ms for r in b])} ms")
    print(f"latency p95     direct {fmt_spread([r.p95_ms for r in a])} ms   "
          f"through {fmt_spread([r.p95_ms for r in b])} ms")
    ratios = summary["rate_ratios"]
    target = f" (issue 6 target >= {TARGET_RATIO}x)" if variant == "relay" else ""
    print(f"ratio through/direct, median of {len(ratios)} rounds: "
          f"{summary['rate_ratio_median']:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"
          f"{target}")
    quiet = summary["quiet_rate_ratios"]
    if quiet:
        print(f"  rounds where other CPU stayed <= {OTHER_CPU_WARN_SHARE:.0%} on both runs "
              f"({len(quiet)}): median {statistics.median(quiet):.2f}x "
              f"(rounds {min(quiet):.2f}-{max(quiet):.2f})")
    else:
        print(f"  (no round had other CPU <= {OTHER_CPU_WARN_SHARE:.0%} on both runs)")
    t = summary["gate_totals"]
    pins = ", ".join(f"{k} {v}" for k, v in sorted(t["pins"].items())) or "none"
    print(f"mysqlgate totals: clients {t['clients']}, commands {t['commands']}, answered "
          f"locally {t['answered_locally']}, upstream connects {t['upstream_connects']}, "
          f"resets {t['resets']}, pins [{pins}], lost {t['lost']}")
    warn_if_not_quiet(summary["max_other_cpu_share"])


def body(
    bench: Bench,
    settings: Settings,
    name: str,
    make_request: RequestFactory,
    what: str,
    prepare: Callable[[Bench], None] | None = None,
) -> int:
    """Start MariaDB, run every variant, print and write the results; 1 on failures."""
    start_mariadb(bench)
    create_account(bench)
    if prepare is not None:
        prepare(bench)
    document: dict[str, Any] = {
        "settings": dataclasses.asdict(settings), "client": what, "variants": {},
    }
    problems: list[str] = []
    for variant in settings.variants:
        runs, totals, info = run_variant(bench, variant, settings, make_request)
        summary = summarise(runs, totals)
        print_variant(variant, runs, summary, info, settings, what)
        document["variants"][variant] = {
            **info, "runs": [dataclasses.asdict(r) for r in runs], "summary": summary,
        }
        if summary["errors"]:
            first = next(r.first_errors for r in runs if r.errors)
            problems.append(f"{variant}: {summary['errors']} failed requests, e.g. {first}")
        if totals.lost or totals.retried:
            problems.append(f"{variant}: mysqlgate lost {totals.lost} upstream connections")
        # Every B request is one client of the gate (plus the COM_PING probe's).
        if totals.clients < summary["through_requests_total"]:
            problems.append(f"{variant}: gate counted {totals.clients} clients for "
                            f"{summary['through_requests_total']} requests")
    document["environment"] = environment(bench)
    document["failures"] = problems
    return report_result(bench, write_result(name, document), problems, settings.keep_logs)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    what = "PyMySQL threads, connect + SELECT 1 + close"
    return run_main(
        lambda bench: body(bench, settings, "connect_per_request", request_on, what),
        "connect_per_request",
    )


if __name__ == "__main__":
    sys.exit(main())
