"""Many clients (issue 8, target 2): 10,000 idle client connections beside 50 busy ones.

Usage:  python bench/idle_clients.py [--rounds 3] [--time 15] [--idle 10000] [--threads 50]
        [--quick] [--pool-size 4] [--gate-args "..."]

A throwaway MariaDB with sysbench's 4 tables x 10,000 rows and mysqlgate (pool of 4,
limits.max_clients raised to fit). Each round runs sysbench oltp_point_select
(`--db-ps-mode=disable`, 50 threads):

  D  direct to MariaDB (for context),
  A  through mysqlgate, no idle clients,
  B  through mysqlgate while `--idle` other clients are logged in and silent.

Before B a helper process (this script in a hidden mode, asyncio on raw sockets, see
bench/mysql_wire.py) opens the idle connections and logs each one in; after B it closes
them and waits until mysqlgate holds no more of them. The B/A ratios of throughput and
p95 are the target's figures (>= 0.9 and <= 1.1); mysqlgate's RSS and open file
descriptors with the idle clients, and how long opening them took, are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mysql_wire
from common import (
    DB_NAME,
    DB_PASSWORD,
    DB_USER,
    Bench,
    CpuMark,
    GateProcess,
    create_account,
    environment,
    fmt_spread,
    log,
    process_peak_rss_kib,
    report_result,
    run_main,
    start_gate,
    start_mariadb,
    warn_if_not_quiet,
    write_result,
)
from point_select import parse_sysbench, sysbench_prepare, sysbench_run

OPEN_CONCURRENCY = 200  # logins in flight at once from the helper
CLOSE_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int
    run_seconds: int
    warmup_seconds: int
    idle: int
    threads: int
    pool_size: int
    gate_args: list[str]
    direct: bool
    keep_logs: bool


@dataclasses.dataclass(frozen=True)
class Run:
    label: str  # "D" direct, "A" mysqlgate without idle clients, "B" with them
    round: int  # 0: warm-up
    idle_clients: int
    queries: int
    qps: float
    p95_ms: float
    max_ms: float
    errors: int  # sysbench's ignored errors plus reconnects
    gate_cpu_s: float | None
    gate_rss_kib: int | None
    gate_fds: int | None
    other_cpu_share: float


@dataclasses.dataclass(frozen=True)
class Opening:
    round: int
    requested: int
    opened: int
    seconds: float
    error: str | None
    gate_rss_kib_before: int | None
    gate_rss_kib_after: int | None
    gate_fds_after: int | None
    gate_cpu_s: float
    helper_rss_kib: int | None
    closed_by_gate: int = 0  # noticed when closing them after B
    close_seconds: float = 0.0


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description="Busy clients through mysqlgate with and without many idle ones.",
        epilog='Pass gate arguments that start with a dash as --gate-args="--flag value".',
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (D A B each)")
    parser.add_argument("--time", type=int, default=15, help="seconds per sysbench run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds per warm-up run")
    parser.add_argument("--quick", action="store_true",
                        help="5 s runs, 1,000 idle clients, 2 rounds: a smoke test")
    parser.add_argument("--idle", type=int, default=10_000, help="idle client connections")
    parser.add_argument("--threads", type=int, default=50, help="busy sysbench threads")
    parser.add_argument("--pool-size", type=int, default=4, help="mysqlgate upstream pool size")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct runs (D)")
    parser.add_argument("--gate-args", default="",
                        help="extra arguments for mysqlgate (after --limits-max-clients)")
    parser.add_argument(
        "--keep-logs", action="store_true", help="copy server and gate logs to bench/results/"
    )
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.time < 1 or ns.idle < 1 or ns.threads < 1 or ns.pool_size < 1:
        parser.error("--rounds, --time, --idle, --threads and --pool-size must be positive")
    return Settings(
        rounds=2 if ns.quick else ns.rounds,
        run_seconds=5 if ns.quick else ns.time,
        warmup_seconds=min(2, ns.warmup) if ns.quick else ns.warmup,
        idle=min(ns.idle, 1000) if ns.quick else ns.idle,
        threads=ns.threads,
        pool_size=ns.pool_size,
        gate_args=shlex.split(ns.gate_args),
        direct=not ns.no_direct,
        keep_logs=ns.keep_logs,
    )


# --- process facts ------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def raise_nofile(needed: int) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE (inherited by mysqlgate and the helper) to at
    least `needed` where allowed; return the limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # root (CAP_SYS_RESOURCE) may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed, needed
        except (ValueError, OSError):
            pass
    target = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, max(needed, soft)))
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --- the idle clients' helper (hidden mode) -----------------------------------------------


async def _idle_helper(port: int) -> None:
    """Read commands from stdin: `open N` logs N clients in and answers `opened N S` (or
    `failed N S message`: how many were open when the first login failed, and why);
    `close` closes them all and answers `closed K` (K: those the gate had closed
    already); end of input quits."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def login() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            header = await r.readexactly(4)
            greeting = await r.readexactly(int.from_bytes(header[:3], "little"))
            nonce, plugin = mysql_wire.greeting_nonce(greeting)
            w.write(mysql_wire.login_packet(nonce, plugin, DB_USER, DB_PASSWORD, DB_NAME))
            while True:
                header = await r.readexactly(4)
                answer = await r.readexactly(int.from_bytes(header[:3], "little"))
                follow = mysql_wire.auth_reply(answer, header[3], DB_PASSWORD)
                if follow is None:
                    break
                w.write(follow)
        except BaseException:
            w.close()
            raise
        conns.append((r, w))

    while line := (await reader.readline()).decode().split():
        if line[0] == "open":
            wanted = int(line[1])
            started = time.monotonic()
            failure: BaseException | None = None
            semaphore = asyncio.Semaphore(OPEN_CONCURRENCY)

            async def one(sem: asyncio.Semaphore = semaphore) -> None:
                nonlocal failure
                async with sem:
                    if failure is not None:
                        return
                    try:
                        await login()
                    except Exception as exc:  # the first failure is the answer
                        if failure is None:
                            failure = exc
            await asyncio.gather(*(one() for _ in range(wanted - len(conns))))
            elapsed = time.monotonic() - started
            if failure is not None:
                text = f"{type(failure).__name__}: {failure}".replace("\n", " ")
                print(f"failed {len(conns)} {elapsed:.3f} {text}", flush=True)
            else:
                print(f"opened {len(conns)} {elapsed:.3f}", flush=True)
        elif line[0] == "close":
            gone = sum(1 for r, _ in conns if r.at_eof())
            for _, w in conns:
                w.close()
            conns.clear()
            await asyncio.sleep(0)
            print(f"closed {gone}", flush=True)


def idle_helper_main(port: int) -> int:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_idle_helper(port))
    else:
        uvloop.run(_idle_helper(port))
    return 0


@dataclasses.dataclass
class IdleHelper:
    proc: subprocess.Popen[str]

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"idle-client helper died (exit {self.proc.poll()}) on "
                               f"{command!r}")
        return answer.strip()


def start_helper(bench: Bench, port: int) -> IdleHelper:
    proc = subprocess.Popen(
        [sys.executable, __file__, "_idle", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    bench.others.append(proc)
    return IdleHelper(proc)


def wait_for_fds(pid: int, target: int, timeout: float) -> float:
    """Wait until the process holds at most `target` open files; seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        fds = open_fds(pid)
        if fds is None or fds <= target:
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"mysqlgate still holds {open_fds(pid)} files {timeout:.0f} s after the "
                       f"idle clients closed (expected <= {target})")


# --- runs ---------------------------------------------------------------------------------


def run_one(bench: Bench, gate: GateProcess, label: str, round_no: int, seconds: int,
            settings: Settings, idle: int) -> Run:
    assert bench.db_proc is not None
    port = bench.db_port if label == "D" else gate.port
    pids = [bench.db_proc.pid, gate.proc.pid]
    before = CpuMark.take(pids)
    stats = parse_sysbench(sysbench_run(port, seconds, settings.threads))
    after = CpuMark.take(pids)
    return Run(
        label=label,
        round=round_no,
        idle_clients=idle,
        queries=stats["queries"],
        qps=stats["qps"],
        p95_ms=stats["p95_ms"],
        max_ms=stats["max_ms"],
        errors=stats["ignored_errors"] + stats["reconnects"],
        gate_cpu_s=before.cpu_of(gate.proc.pid, after) if label != "D" else None,
        gate_rss_kib=rss_kib(gate.proc.pid),
        gate_fds=open_fds(gate.proc.pid),
        other_cpu_share=before.other_share(after),
    )


def open_idle(bench: Bench, gate: GateProcess, helper: IdleHelper, settings: Settings,
              round_no: int) -> Opening:
    pid = gate.proc.pid
    rss_before = rss_kib(pid)
    cpu_before = CpuMark.take([pid])
    log(f"opening {settings.idle} idle clients")
    answer = helper.ask(f"open {settings.idle}").split(maxsplit=3)
    cpu_after = CpuMark.take([pid])
    opened, seconds = int(answer[1]), float(answer[2])
    error = answer[3] if answer[0] == "failed" else None
    opening = Opening(
        round=round_no, requested=settings.idle, opened=opened, seconds=seconds, error=error,
        gate_rss_kib_before=rss_before, gate_rss_kib_after=rss_kib(pid),
        gate_fds_after=open_fds(pid), gate_cpu_s=cpu_before.cpu_of(pid, cpu_after),
        helper_rss_kib=rss_kib(helper.proc.pid),
    )
    log(f"opened {opened} in {seconds:.1f} s" + (f"; stopped by: {error}" if error else ""))
    return opening


# --- results ------------------------------------------------------------------------------


def summarise(runs: list[Run], openings: list[Opening]) -> dict[str, Any]:
    by = {(r.label, r.round): r for r in runs if r.round > 0}
    rounds = sorted({r.round for r in runs if r.round > 0})
    qps = [by["B", n].qps / by["A", n].qps for n in rounds]
    p95 = [by["B", n].p95_ms / by["A", n].p95_ms for n in rounds]
    through = [r for r in runs if r.round > 0 and r.label in "AB"]
    summary: dict[str, Any] = {
        "qps_ratio_idle_over_no_idle_median": statistics.median(qps),
        "qps_ratios": [round(x, 4) for x in qps],
        "p95_ratio_idle_over_no_idle_median": statistics.median(p95),
        "p95_ratios": [round(x, 4) for x in p95],
        "no_idle_qps": [by["A", n].qps for n in rounds],
        "idle_qps": [by["B", n].qps for n in rounds],
        "no_idle_p95_ms": [by["A", n].p95_ms for n in rounds],
        "idle_p95_ms": [by["B", n].p95_ms for n in rounds],
        "gate_cpu_us_per_query_no_idle": 1e6 * sum(by["A", n].gate_cpu_s or 0 for n in rounds)
        / max(1, sum(by["A", n].queries for n in rounds)),
        "gate_cpu_us_per_query_idle": 1e6 * sum(by["B", n].gate_cpu_s or 0 for n in rounds)
        / max(1, sum(by["B", n].queries for n in rounds)),
        "open_seconds": [o.seconds for o in openings],
        "opened": [o.opened for o in openings],
        "gate_rss_kib_with_idle": [o.gate_rss_kib_after for o in openings],
        "gate_rss_kib_without": [o.gate_rss_kib_before for o in openings],
        "gate_cpu_s_to_open": [o.gate_cpu_s for o in openings],
        "errors_through": sum(r.errors for r in through),
        "max_other_cpu_share": max(r.other_cpu_share for r in runs if r.round > 0),
    }
    if any(("D", n) in by for n in rounds):
        summary["direct_qps"] = [by["D", n].qps for n in rounds]
        summary["no_idle_over_direct"] = [round(by["A", n].qps / by["D", n].qps, 4)
                                          for n in rounds]
        summary["idle_over_direct"] = [round(by["B", n].qps / by["D", n].qps, 4)
                                       for n in rounds]
    return summary


def print_report(runs: list[Run], openings: list[Opening], summary: dict[str, Any],
                 settings: Settings) -> None:
    print(f"oltp_point_select, --db-ps-mode=disable, {settings.threads} busy threads, pool of "
          f"{settings.pool_size}, {settings.idle} idle clients in B")
    print(f"{'run':<22}{'idle':>7}{'qps':>10}{'p95 ms':>9}{'max ms':>9}{'gate µs/q':>11}"
          f"{'gate RSS MiB':>14}{'gate fds':>10}{'other CPU':>11}{'errors':>8}")
    names = {"D": "D direct", "A": "A gate, no idle", "B": "B gate, idle"}
    for r in runs:
        name = f"{names[r.label]} {'warm-up' if r.round == 0 else '#' + str(r.round)}"
        cpu = f"{1e6 * r.gate_cpu_s / r.queries:.1f}" if r.gate_cpu_s is not None else "-"
        rss = f"{r.gate_rss_kib / 1024:.0f}" if r.gate_rss_kib else "-"
        print(f"{name:<22}{r.idle_clients:>7}{r.qps:>10.1f}{r.p95_ms:>9.2f}{r.max_ms:>9.2f}"
              f"{cpu:>11}{rss:>14}{r.gate_fds or 0:>10}{r.other_cpu_share:>11.0%}{r.errors:>8}")
    print()
    for o in openings:
        rate = o.opened / o.seconds if o.seconds else 0
        print(f"round {o.round}: opened {o.opened}/{o.requested} idle clients in "
              f"{o.seconds:.1f} s ({rate:.0f}/s), mysqlgate CPU {o.gate_cpu_s:.1f} s, "
              f"RSS {(o.gate_rss_kib_before or 0) / 1024:.0f} -> "
              f"{(o.gate_rss_kib_after or 0) / 1024:.0f} MiB, {o.gate_fds_after} fds; helper RSS "
              f"{(o.helper_rss_kib or 0) / 1024:.0f} MiB; closed by mysqlgate meanwhile: "
              f"{o.closed_by_gate}; gone from mysqlgate {o.close_seconds:.1f} s after closing"
              + (f"\n  STOPPED BY: {o.error}" if o.error else ""))
    print(f"\nthroughput with/without idle clients, median of {len(summary['qps_ratios'])} rounds:"
          f" {fmt_spread(summary['qps_ratios'], 3)}  (target >= 0.9)")
    print(f"p95 latency with/without idle clients: {fmt_spread(summary['p95_ratios'], 3)}  "
          "(target <= 1.1)")
    print(f"no idle: {fmt_spread(summary['no_idle_qps'], 0)} q/s, p95 "
          f"{fmt_spread(summary['no_idle_p95_ms'])} ms; idle: {fmt_spread(summary['idle_qps'], 0)}"
          f" q/s, p95 {fmt_spread(summary['idle_p95_ms'])} ms")
    if "direct_qps" in summary:
        print(f"direct: {fmt_spread(summary['direct_qps'], 0)} q/s; through/direct without idle "
              f"{fmt_spread(summary['no_idle_over_direct'], 3)}, with idle "
              f"{fmt_spread(summary['idle_over_direct'], 3)}")
    print(f"mysqlgate CPU per query: {summary['gate_cpu_us_per_query_no_idle']:.1f} µs without, "
          f"{summary['gate_cpu_us_per_query_idle']:.1f} µs with idle clients")
    warn_if_not_quiet(summary["max_other_cpu_share"])


# --- main ---------------------------------------------------------------------------------


def body(bench: Bench, settings: Settings) -> int:
    limits = raise_nofile(settings.idle + settings.threads + 256)
    log(f"RLIMIT_NOFILE {limits[0]} (hard {limits[1]})")
    start_mariadb(bench)
    create_account(bench)
    sysbench_prepare(bench)
    max_clients = settings.idle + settings.threads + 64
    gate = start_gate(bench, bench.db_port, settings.pool_size,
                      ["--limits-max-clients", str(max_clients), *settings.gate_args])
    log(f"mysqlgate listening on 127.0.0.1:{gate.port} (pool size {settings.pool_size}, "
        f"max clients {max_clients})")
    helper = start_helper(bench, gate.port)
    runs: list[Run] = []
    openings: list[Opening] = []
    labels = ("D", "A") if settings.direct else ("A",)
    if settings.warmup_seconds:
        for label in labels:
            log(f"warm-up {label}: {settings.warmup_seconds} s")
            runs.append(run_one(bench, gate, label, 0, settings.warmup_seconds, settings, 0))
    baseline_fds = open_fds(gate.proc.pid) or 0
    problems: list[str] = []
    for round_no in range(1, settings.rounds + 1):
        for label in labels:
            log(f"round {round_no}/{settings.rounds}: {label}, {settings.run_seconds} s")
            runs.append(run_one(bench, gate, label, round_no, settings.run_seconds, settings, 0))
        opening = open_idle(bench, gate, helper, settings, round_no)
        log(f"round {round_no}/{settings.rounds}: B with {opening.opened} idle clients, "
            f"{settings.run_seconds} s")
        runs.append(run_one(bench, gate, "B", round_no, settings.run_seconds, settings,
                            opening.opened))
        closing = time.monotonic()
        gone = int(helper.ask("close").split()[1])
        waited = wait_for_fds(gate.proc.pid, baseline_fds + 8, CLOSE_TIMEOUT_S)
        openings.append(dataclasses.replace(opening, closed_by_gate=gone,
                                            close_seconds=round(time.monotonic() - closing, 2)))
        log(f"closed; mysqlgate back to {open_fds(gate.proc.pid)} fds after {waited:.1f} s")
        if opening.error:
            problems.append(f"round {round_no}: only {opening.opened} of {settings.idle} idle "
                            f"clients opened: {opening.error}")
            break
    peak_rss = process_peak_rss_kib(gate.proc.pid)
    totals = gate.stop()
    summary = summarise(runs, openings)
    print_report(runs, openings, summary, settings)
    print(f"mysqlgate peak RSS {peak_rss / 1024 if peak_rss else 0:.0f} MiB; totals: clients "
          f"{totals.clients}, commands {totals.commands}, upstream connects "
          f"{totals.upstream_connects}, lost {totals.lost}")
    if summary["errors_through"]:
        problems.append(f"sysbench saw {summary['errors_through']} errors through mysqlgate")
    if totals.lost or totals.retried:
        problems.append(f"mysqlgate lost {totals.lost} upstream connections")
    if any(o.closed_by_gate for o in openings):
        problems.append("mysqlgate closed idle clients: "
                        f"{[o.closed_by_gate for o in openings]}")
    document = {
        "settings": dataclasses.asdict(settings),
        "rlimit_nofile": list(limits),
        "max_clients": max_clients,
        "environment": environment(bench, ("sysbench", "mariadbd")),
        "runs": [dataclasses.asdict(r) for r in runs],
        "openings": [dataclasses.asdict(o) for o in openings],
        "summary": summary,
        "gate": {"totals": dataclasses.asdict(totals), "peak_rss_kib": peak_rss},
        "gate_log_problems": gate.problems()[:50],
        "failures": problems,
    }
    return report_result(bench, write_result("idle_clients", document), problems,
                         settings.keep_logs)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["_idle"]:
        return idle_helper_main(int(args[1]))
    settings = parse_args(args)
    return run_main(lambda bench: body(bench, settings), "idle_clients")


if __name__ == "__main__":
    sys.exit(main())
