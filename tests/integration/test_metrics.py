"""Metrics and health (issue 7): /metrics in Prometheus' text format says what a known
load is doing (connections in use, clients waiting, pins, wait times, errors sent), and
/healthz answers 200 while mysqlgate serves and 503 with the reason once its server
cannot be reached."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
from harness import DbServer, Gate, ScratchDb, fetch_rows, free_port, wait_until
from harness.gate import REPO_ROOT
from harness.metrics import http_get, sample, scrape


def test_metrics_describe_a_known_load(gate_factory: Callable[..., Gate], db: ScratchDb) -> None:
    port = free_port()
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "20",
                        "--metrics-listen", f"127.0.0.1:{port}")
    # The gate_factory returns once mysqlgate reported READY=1, which it does after the
    # metrics listener too is open; the harness made no connection to find that out.
    idle = scrape(port)
    assert sample(idle, "mysqlgate_client_connections") == 0
    pools = [dict(labels)["pool"] for name, labels in idle if name == "mysqlgate_pool_size"]
    assert len(pools) == 1 and pools[0].startswith(db.user + "@"), pools
    pool = pools[0]  # user@host:port
    assert sample(idle, "mysqlgate_pool_size", pool=pool) == 2
    assert sample(idle, "mysqlgate_upstream_reachable", pool=pool) == 1

    with contextlib.closing(db.connect()) as direct:
        fetch_rows(direct, "CREATE TABLE t (v INT) ENGINE=InnoDB")
    holders = [gate.connect(autocommit=False, ssl_disabled=True) for _ in range(2)]
    pinned = gate.connect(ssl_disabled=True)
    waiter_done = threading.Event()
    try:
        for conn in holders:  # two transactions hold both upstream connections
            fetch_rows(conn, "SELECT v FROM t")
        result: list[Any] = []

        def third() -> None:
            try:
                result.append(fetch_rows(pinned, "SELECT GET_LOCK('metrics', 0)"))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                result.append(exc)
            waiter_done.set()

        thread = threading.Thread(target=third)
        thread.start()
        wait_until(lambda: sample(scrape(port), "mysqlgate_queue_length", pool=pool) == 1,
                  "a client waiting for a connection")
        busy = scrape(port)
        assert sample(busy, "mysqlgate_client_connections") == 3
        assert sample(busy, "mysqlgate_upstream_connections", pool=pool, state="in_use") == 2
        assert sample(busy, "mysqlgate_upstream_connections", pool=pool, state="idle") == 0
        assert not waiter_done.is_set()

        time.sleep(0.3)
        holders[0].commit()  # its connection goes to the waiting client
        thread.join(10)
        assert result == [((1,),)], result
        served = scrape(port)
        assert sample(served, "mysqlgate_queue_length", pool=pool) == 0
        assert sample(served, "mysqlgate_clients_pinned") == 1  # the named lock
        assert sample(served, "mysqlgate_pins_total", reason="named_locks") == 1
        # The waiter's 0.3 s or more is in the histogram, above the 0.1 s bucket.
        assert sample(served, "mysqlgate_queue_wait_seconds_count", pool=pool) >= 4
        assert sample(served, "mysqlgate_queue_wait_seconds_bucket", pool=pool,
                       le="0.1") < sample(served, "mysqlgate_queue_wait_seconds_bucket",
                                            pool=pool, le="+Inf")
        assert sample(served, "mysqlgate_queue_wait_seconds_sum", pool=pool) >= 0.3
        assert (sample(served, "mysqlgate_commands_total")
                >= sample(idle, "mysqlgate_commands_total") + 4)
        assert sample(served, "mysqlgate_upstream_connects_total", pool=pool) >= 2
    finally:
        for conn in (*holders, pinned):
            with contextlib.suppress(Exception):
                conn.close()

    # An error mysqlgate itself sends is counted by its code.
    with pytest.raises(pymysql.err.OperationalError):
        gate.connect(password="wrong", ssl_disabled=True)
    wait_until(lambda: sample(scrape(port), "mysqlgate_auth_failures_total") == 1,
              "the failed login in the metrics")


def test_healthz_follows_the_server(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    port = free_port()
    gate = gate_factory("--pool-size", "2", "--metrics-listen", f"127.0.0.1:{port}",
                        "--pool-queue-timeout", "2")  # (how long clients wait for it)
    url = f"http://127.0.0.1:{port}/healthz"
    assert http_get(url)[0] == 200
    assert _health_command(port) == (0, "200 ok")
    assert http_get(f"http://127.0.0.1:{port}/nothing")[0] == 404

    private_server.stop()
    with pytest.raises(pymysql.err.OperationalError):
        gate.connect(ssl_disabled=True)  # mysqlgate learns the server is gone
    status, _, body = http_get(url)
    assert status == 503 and "unreachable" in body, (status, body)
    code, said = _health_command(port)  # the container image's HEALTHCHECK
    assert code == 1 and said.startswith("503 upstream unreachable"), said
    scraped = scrape(port)
    reachable = [value for (name, _), value in scraped.items()
                 if name == "mysqlgate_upstream_reachable"]
    assert reachable == [0]
    # The outage: how long so far, and how many.
    (unreachable_for,) = [value for (name, _), value in scraped.items()
                          if name == "mysqlgate_upstream_unreachable_seconds"]
    assert unreachable_for > 0
    assert [value for (name, _), value in scraped.items()
            if name == "mysqlgate_upstream_outages_total"] == [1]

    private_server.start()
    wait_until(lambda: http_get(url)[0] == 200, "health once the server is back", timeout=30)
    assert [value for (name, _), value in scrape(port).items()
            if name == "mysqlgate_upstream_unreachable_seconds"] == [0]
    with contextlib.closing(gate.connect(ssl_disabled=True)) as conn:
        assert fetch_rows(conn, "SELECT 1") == ((1,),)


def _health_command(port: int) -> tuple[int, str]:
    """`mysqlgate health`, finding /healthz through metrics.listen in the environment."""
    env = {**os.environ, "MYSQLGATE_METRICS_LISTEN": f"127.0.0.1:{port}"}
    done = subprocess.run([sys.executable, "-m", "mysqlgate", "health"], capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, env=env)
    return done.returncode, done.stdout.strip()


def test_metrics_listen_is_checked_at_startup(gate_factory: Callable[..., Gate]) -> None:
    from harness.gate import GateError

    with pytest.raises(GateError) as excinfo:
        gate_factory("--metrics-listen", "unix:/tmp/metrics.sock")
    assert "metrics.listen" in str(excinfo.value)
