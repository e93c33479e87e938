"""Several mysqlgates on one account share its limit through the server (issue 18,
fleet.py), run as they will run: three gates, each a process with its own port, in
front of one account limited to 6 with pool.reserve 1; 15 busy clients on each; a
sampler of the account's connections on the server; a person logging in directly with
the command-line client every 0.5 s. bench/fleet.py is the longer run, with figures.

A shorter scenario than the bench's, about 50 s per server:
1. equal load: no client error, the gates never hold more than 5, the person always
   gets in, each gate serves about a third (within 10 %);
2. one gate goes quiet: within 5 s the other two serve at the rate of 5 connections;
3. it comes back: it had none, so its first connection is counted after it logged in;
   the reserve may be in use for that moment (it is bounded here and measured in the
   bench), and no client sees an error;
4. an outsider takes 2 connections: the gates give back what it takes of the reserve,
   then share the other 3, and the reserve stays free;
5. a gate is killed (SIGKILL): its connections and locks vanish, the others take over.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import DbServer, Gate, ScratchDb, fetch_rows, free_port, wait_until
from harness.fleet_load import FleetRun
from harness.metrics import sample, scrape

LIMIT = 6
BUDGET = LIMIT - 1  # pool.reserve 1


def _checks(run: FleetRun, start: float, end: float) -> list[str]:
    """The guarantees that hold throughout: gates within the budget, the person in."""
    problems = []
    most = run.max_connections(start, end)
    if most > BUDGET:
        over = [round(s.at, 2) for s in run.samples if start <= s.at < end and s.gates > BUDGET]
        problems.append(f"{start:.0f}-{end:.0f} s: the account had {most} connections "
                        f"besides the person's (at {over[:10]})")
    failed = [login for login in run.logins if start <= login.at < end and not login.ok]
    if failed:
        problems.append(f"{start:.0f}-{end:.0f} s: the person's login failed "
                        f"{len(failed)} times: {failed[0].detail}")
    return problems


@pytest.mark.db_options(max_user_connections=LIMIT)
def test_three_gates_share_the_account(gate_factory: Callable[..., Gate],
                                       db: ScratchDb) -> None:
    gates = [gate_factory("--pool-reserve", "1") for _ in range(3)]
    # Each transaction holds its connection for 50 ms: a gate's rate follows the
    # connections it holds more than the CPU it gets (with 20 ms, and 30 clients a gate,
    # a busy machine's 2-3 s of starvation looked like a take-over that never came).
    run = FleetRun(db, gates, clients=15, hold=0.05)
    problems: list[str] = []
    run.start()
    try:
        # 1. Equal load. The shares are counted over 17 s: 5 connections cannot split
        # evenly among 3 gates at any moment, and the odd one moves about once a second;
        # over 9 s on a busy machine one gate's share reached 0.369-0.374 in three of ten
        # runs of the suite, two before 2a9bf2f (bench/fleet.py measures over minutes).
        time.sleep(20)
        t1 = run.now()
        problems += _checks(run, 0, t1)
        shares = run.shares_of_statements(3, t1)
        if any(abs(share - 1 / 3) > 0.1 / 3 for share in shares):
            problems.append(f"equal load: shares of the statements {shares}, each should "
                            "be within 10 % of a third")
        full_rate = run.rate([0, 1, 2], 3, t1)

        # 2. Gate 2 goes quiet: the other two take its connections.
        run.set_quiet(2, True)
        time.sleep(7)
        t2 = run.now()
        problems += _checks(run, t1, t2)
        took_over = next((t for t in _seconds(t1, t2 - 1)
                          if run.rate([0, 1], t, t + 1) >= 0.85 * full_rate), None)
        if took_over is None or took_over - t1 > 5:
            problems.append(f"gate 2 quiet: gates 0 and 1 served "
                            f"{run.rate([0, 1], t2 - 2, t2):.0f}/s in the last 2 s, "
                            f"{full_rate:.0f}/s with all 5 connections; reached 85 % at "
                            f"{'never' if took_over is None else f'{took_over - t1:.1f} s'}; "
                            + _timeline(run, [0, 1], t1, t2))

        # 3. It comes back.
        run.set_quiet(2, False)
        time.sleep(5)
        t3 = run.now()
        over = sum(1 for s in run.samples if t2 <= s.at < t3 and s.gates > BUDGET)
        if over * run.sample_every > 1.0:
            problems.append(f"gate 2 back: the reserve was in use for {over} samples")
        if run.rate([2], t3 - 2, t3) == 0:
            problems.append("gate 2 back: its clients were not served")

        # 4. An outsider holds 2 of the account's connections. The first takes the
        # reserve: the gates give one back (after OVER_GRACE, 0.3 s), then the second
        # gets in, and so on.
        got = run.hold_outsider(2)
        time.sleep(6)
        t4 = run.now()
        if got[1] - got[0] > 3:
            problems.append(f"outsider: its second connection got in {got[1] - got[0]:.1f} s "
                            "after its first")
        problems += _checks(run, got[1] + 1.5, t4)
        held = [sum(n or 0 for n in s.shares) for s in run.shares if t4 - 3 <= s.at < t4]
        if not held or sum(held) / len(held) > BUDGET - 2 + 0.2:
            problems.append(f"outsider: the gates held {held} beside its 2")
        if any(run.rate([i], t4 - 3, t4) == 0 for i in range(3)):
            problems.append("outsider: a gate served nothing: "
                            f"{[run.rate([i], t4 - 3, t4) for i in range(3)]}")
        run.release_outsider()

        # 5. Gate 1 is killed: its connections (and locks) go with it.
        threads = {row["thread_id"] for row in gates[1].admin("SHOW SERVERS")}
        run.kill(1)
        killed_at = run.now()
        gone = _wait(lambda: not threads & set(db.connection_ids()), 5)
        time.sleep(6)
        t5 = run.now()
        problems += _checks(run, t4, t5)
        if not gone:
            problems.append(f"killed gate: its connections {threads} outlived it")
        with contextlib.closing(db.root()) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID IN "
                        f"({','.join(str(t) for t in threads) or '0'})")
            assert cur.fetchone() == (0,)
        took_over = next((t for t in _seconds(killed_at, t5 - 1)
                          if run.rate([0, 2], t, t + 1) >= 0.85 * full_rate), None)
        if took_over is None or took_over - killed_at > 5:
            problems.append(f"killed gate: gates 0 and 2 served "
                            f"{run.rate([0, 2], t5 - 2, t5):.0f}/s in the last 2 s, "
                            f"{full_rate:.0f}/s before; " + _timeline(run, [0, 2], killed_at, t5))
    finally:
        run.stop()
    problems += [f"client error: {error}" for error in run.client_errors()[:5]]
    problems += run.errors
    stats = [{row["stat"]: row["total"] for row in gate.admin("SHOW STATS")}
             for gate in (gates[0], gates[2])]
    assert problems == [], "\n".join(problems) + f"\nfleet stats: {stats}"


def _timeline(run: FleetRun, indexes: list[int], start: float, end: float) -> str:
    """Per second: the gates' statements and the connections they held (SHOW POOLS,
    parked ones not counted), to tell a take-over that did not come from a machine that
    starved the clients."""
    parts = []
    for at in _seconds(start, end - 1, 1.0):
        held = [sum(s.shares[i] or 0 for i in indexes) for s in run.shares
                if at <= s.at < at + 1]
        parts.append(f"{at - start:.0f}s {run.rate(indexes, at, at + 1):.0f}/s "
                     f"held {min(held, default=0)}-{max(held, default=0)}")
    return "per second: " + ", ".join(parts)


def _seconds(start: float, end: float, step: float = 0.25) -> list[float]:
    return [start + i * step for i in range(int((end - start) / step) + 1)]


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.db_options(max_user_connections=LIMIT)
def test_a_gate_alone_opens_at_once_while_its_connections_are_held(
        gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    """With nothing to count on (its connections held in open transactions), a gate
    still opens one for a new client at once, as before issue 18: it counts on the new
    connection before lending it. The metrics say what SHOW POOLS says."""
    port = free_port()
    gate = gate_factory("--metrics-listen", f"127.0.0.1:{port}")
    holders = [gate.connect() for _ in range(2)]
    try:
        for conn in holders:
            conn.begin()
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        with contextlib.closing(gate.connect()) as third, third.cursor() as cur:
            started = time.monotonic()
            cur.execute("SELECT 3")
            assert cur.fetchone() == (3,)
            assert time.monotonic() - started < 2
        assert db.processlist_count() == 3
        (pools,) = gate.admin("SHOW POOLS")
        assert pools["fleet"] == "alone" and pools["account_connections"] == 3, pools
        assert pools["account_limit"] == LIMIT and pools["reserve"] == 1
        samples = scrape(port)
        pool = pools["pool"]
        assert sample(samples, "mysqlgate_fleet_sharing", pool=pool) == 0  # alone
        assert sample(samples, "mysqlgate_fleet_account_connections", pool=pool) == 3
        assert sample(samples, "mysqlgate_fleet_account_limit", pool=pool) == LIMIT
        assert sample(samples, "mysqlgate_fleet_reserve", pool=pool) == 1
        assert sample(samples, "mysqlgate_fleet_share", pool=pool) == 3
        assert sample(samples, "mysqlgate_fleet_queries_total", pool=pool) >= 3  # a count each
    finally:
        for conn in holders:
            conn.rollback()
            conn.close()


@pytest.mark.db_options(max_user_connections=LIMIT)
def test_a_program_that_takes_the_reserve_gets_it_back(
        gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    """One busy gate holds the account's 5; a script then takes 2 connections directly:
    the first takes the reserve, the gate gives one back (nobody else would), the second
    gets in, the gate gives another back, and the reserve is free again."""
    gate = gate_factory()
    run = FleetRun(db, [gate], clients=20)
    problems: list[str] = []
    run.start()
    try:
        time.sleep(3)
        t1 = run.now()
        got = run.hold_outsider(2, timeout=8)
        time.sleep(4)
        t2 = run.now()
        if got[1] - t1 > 4:
            problems.append(f"the script's connections got in at {got} (from {t1:.1f} s)")
        problems += _checks(run, got[1] + 1.5, t2)
        held = [s.shares[0] or 0 for s in run.shares if t2 - 2 <= s.at < t2]
        if not held or max(held) > BUDGET - 2:
            problems.append(f"the gate held {held} beside the script's 2")
    finally:
        run.stop()
    problems += [f"client error: {error}" for error in run.client_errors()[:5]]
    assert problems == [], "\n".join(problems)


@pytest.mark.db_options(max_user_connections=LIMIT)
def test_a_gate_that_cannot_see_the_account_goes_on_alone(
        gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    """Where the server does not show a gate its own connections, the gate cannot share
    the account through it: here behind another pooler (a second mysqlgate), whose
    connection ids are not the server's, so the PROCESSLIST never shows the thread the
    gate counts on. It says why once (log, SHOW POOLS, metrics) and serves its clients as
    a pool alone does: 40 clients, no error, its 3 connections opened for them."""
    inner = gate_factory("--pool-size", "3")
    port = free_port()
    outer = gate_factory(
        "--pool-size", "3", "--metrics-listen", f"127.0.0.1:{port}",
        upstream=f"mysql://{db.user}:{db.password}@{inner.host}:{inner.port}/{db.database}")
    errors: list[str] = []

    def client(number: int) -> None:
        try:
            with contextlib.closing(outer.connect()) as conn, conn.cursor() as cur:
                for _ in range(5):
                    cur.execute("SELECT %s, SLEEP(0.02)", (number,))
                    assert cur.fetchone() == (number, 0)
        except Exception as exc:  # every failure is a finding
            errors.append(f"client {number}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [], errors[:5]
    assert len(outer.admin("SHOW SERVERS")) == 3, "the pool did not grow as alone"
    (pools,) = outer.admin("SHOW POOLS")
    assert pools["fleet"].startswith("off: ") and "PROCESSLIST" in pools["fleet"], pools
    said = [line for line in outer.log_text().splitlines()
            if "cannot share the account with other mysqlgates" in line]
    assert len(said) == 1, said
    assert sample(scrape(port), "mysqlgate_fleet_sharing", pool=pools["pool"]) == -1


@pytest.mark.db_options(max_user_connections=LIMIT)
def test_a_restart_and_a_pause_with_the_sharing_on(
        private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    """While the server cannot be reached, or the pool is paused, the sharing has nothing
    to count on and waits. It once returned at once with nothing due, and its loop spun
    without yielding: mysqlgate stopped whole (no client served, no log line, the
    server's return unseen), found by the fault soak. Here clients wait out a restart and
    a PAUSE and are served after each, and the gate answers its console meanwhile."""
    gate = gate_factory("--pool-queue-timeout", "20")
    with contextlib.closing(gate.connect(read_timeout=30)) as conn:
        assert fetch_rows(conn, "SELECT 1") == ((1,),)
        (pools,) = gate.admin("SHOW POOLS")
        assert pools["fleet"] == "alone", pools  # the sharing is on
        private_server.stop()
        with ThreadPoolExecutor(1) as executor:
            waiting = executor.submit(fetch_rows, conn, "SELECT 2")
            wait_until(lambda: gate.admin("SHOW POOLS")[0]["status"] != "ok",
                       "the outage noticed", timeout=10)
            time.sleep(1)  # the sharing's loop has met the outage
            assert gate.admin("SHOW POOLS")[0]["waiting"] == 1  # the console answers
            private_server.start()
            assert waiting.result(timeout=20) == ((2,),)
        # A statement of the sharing's that met the restart (MySQL answers 1053 while
        # it stops) concerned that statement only: the sharing is still on.
        assert not gate.admin("SHOW POOLS")[0]["fleet"].startswith("off"), \
            gate.admin("SHOW POOLS")
        gate.admin("PAUSE")
        with ThreadPoolExecutor(1) as executor:
            waiting = executor.submit(fetch_rows, conn, "SELECT 3")
            time.sleep(1)
            assert gate.admin("SHOW POOLS")[0]["waiting"] == 1
            gate.admin("RESUME")
            assert waiting.result(timeout=20) == ((3,),)
