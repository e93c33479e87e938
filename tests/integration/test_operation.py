"""Operating a running mysqlgate (SPEC section 5): SIGHUP reloads settings without
dropping clients; SIGTERM lets a running transaction finish, then stops cleanly."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest
from harness import Gate, ScratchDb, wait_until


def _queue_wait(gate: Gate) -> float:
    """Seconds a second client waits for the pool of 1 while another holds it."""
    with contextlib.closing(gate.connect()) as holder, contextlib.closing(gate.connect()) as waiter:
        holder.begin()
        holder.cursor().execute("SELECT 1")
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as caught:
            waiter.cursor().execute("SELECT 2")
        elapsed = time.monotonic() - started
        assert caught.value.args[0] == 1040, caught.value
        assert caught.value.args[1].startswith("mysqlgate:"), caught.value
        holder.rollback()
    return elapsed


def test_sighup_reloads_settings_and_keeps_clients(
    gate_factory: Callable[..., Gate], db: ScratchDb, tmp_path: Path
) -> None:
    config = tmp_path / "mysqlgate.toml"
    config.write_text("[pool]\nsize = 1\nqueue_timeout = 1\n")
    gate = gate_factory("--config", str(config))
    with contextlib.closing(gate.connect()) as bystander:
        bystander.cursor().execute("SET time_zone = '+03:00'")  # moves, does not pin
        assert 0.8 < _queue_wait(gate) < 2.5

        config.write_text("[pool]\nsize = 1\nqueue_timeout = 3\n")
        gate.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "configuration reloaded" not in gate.log_text():
            assert time.monotonic() < deadline, gate.log_tail()
            time.sleep(0.05)
        assert gate.running

        assert 2.8 < _queue_wait(gate) < 5.0
        with bystander.cursor() as cursor:  # connected all along, state intact
            cursor.execute("SELECT @@session.time_zone")
            assert cursor.fetchone() == ("+03:00",)


def test_sighup_with_a_broken_file_keeps_the_running_settings(
    gate_factory: Callable[..., Gate], db: ScratchDb, tmp_path: Path
) -> None:
    config = tmp_path / "mysqlgate.toml"
    config.write_text("[pool]\nsize = 1\nqueue_timeout = 1\n")
    gate = gate_factory("--config", str(config))
    config.write_text("[pool]\nsize = \n")
    gate.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reload refused" not in gate.log_text():
        assert time.monotonic() < deadline, gate.log_tail()
        time.sleep(0.05)
    assert gate.running
    assert 0.8 < _queue_wait(gate) < 2.5


def test_sigterm_lets_a_transaction_finish(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    gate = gate_factory()
    with contextlib.closing(db.connect()) as direct:
        direct.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY)")
    conn = gate.connect()
    conn.begin()
    conn.cursor().execute("INSERT INTO t VALUES (1)")
    stopped: list[int | None] = []
    stopper = threading.Thread(target=lambda: stopped.append(gate.stop(timeout=20)))
    stopper.start()
    wait_until(lambda: "stopping: waiting up to" in gate.log_text(), "the drain to begin")
    assert gate.running  # waiting for the transaction
    conn.cursor().execute("INSERT INTO t VALUES (2)")
    conn.commit()
    stopper.join(25)
    assert stopped == [0], gate.log_tail()
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cursor:
        cursor.execute("SELECT id FROM t ORDER BY id")
        assert cursor.fetchall() == ((1,), (2,))
    with pytest.raises(pymysql.err.OperationalError):  # the gate is gone now
        conn.cursor().execute("SELECT 1")
    if conn.open:
        conn.close()


def test_stopping_says_what_it_waits_for_and_a_second_signal_ends_the_wait(
    gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """Ctrl-C with a client idle in a transaction: the drain names the client and how long
    it has been idle, says how long it will wait and how to stop at once; a second signal
    stops at once, and the transaction is rolled back (issue 15)."""
    gate = gate_factory()
    with contextlib.closing(db.connect()) as direct:
        direct.cursor().execute("CREATE TABLE t (id INT PRIMARY KEY)")
    conn = gate.connect()
    conn.begin()
    conn.cursor().execute("INSERT INTO t VALUES (1)")
    first = time.monotonic()
    gate.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping: waiting up to" in gate.log_text(), "the drain to begin")
    log = gate.log_text()
    assert "shutting down (SIGINT (Ctrl-C)): no new clients; those holding an upstream " \
        "connection may finish for up to 30 s" in log, gate.log_tail()
    assert re.search(
        rf"stopping: waiting up to \d+ s more for 1 client\(s\) holding an upstream connection "
        rf"to finish: client {conn.thread_id()} \({db.user}@127\.0\.0\.1:\d+\) idle in "
        rf"transaction for \d+ s\. Another SIGTERM or Ctrl-C stops at once, rolling their "
        rf"transactions back", log), gate.log_tail()
    assert gate.running

    gate.send_signal(signal.SIGTERM)
    assert gate.wait(timeout=60) == 0, gate.log_tail()
    # Stopped on the second signal, not at the end of the 30 s drain.
    assert time.monotonic() - first < 30, gate.log_tail()
    log = gate.log_text()
    assert "SIGTERM again: stopping now; transactions still open are rolled back" in log
    assert f"not waiting for 1 client(s): client {conn.thread_id()} " in log
    assert "the most a stop waits" not in log
    with contextlib.closing(db.connect()) as direct, direct.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM t")
        assert cursor.fetchone() == (0,)  # rolled back
    if conn.open:
        conn.close()
