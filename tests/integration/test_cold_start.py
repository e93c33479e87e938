"""Cold start (issue 7): mysqlgate starts and listens while its server is still down, as
a sidecar or a service started before its database would. While the server is down,
clients' statements wait for it up to pool.queue_timeout (issue 16), then get a clear
mysqlgate: error; they are served as soon as it answers, without restarting mysqlgate;
SIGTERM ends it promptly meanwhile."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable

import pymysql
import pytest
from harness import DbServer, Gate, LoginOnly, ScratchDb
from pymysql.constants import ER

WAIT = 2.0  # pool.queue_timeout here: how long clients wait for the server


def test_server_started_after_mysqlgate(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    private_server.stop()
    # returns once mysqlgate listens
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", str(WAIT))
    # A driver that runs a statement at connect (PyMySQL's SET NAMES) waits for the
    # server as long as pool.queue_timeout, then is told.
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        gate.connect(ssl_disabled=True)
    assert WAIT * 0.9 <= time.monotonic() - started < WAIT + 3
    code, message = excinfo.value.args
    assert code == ER.SERVER_SHUTDOWN and message.startswith("mysqlgate:"), message  # 1053
    assert "cannot be reached" in message
    assert "unreachable" in gate.log_text()
    # One that logs in only is in; its statements wait as long, get the error while the
    # server stays down, and run once it answers. Its pings are answered: its connection
    # to mysqlgate works (a failed ping would make drivers and pools throw it away).
    early = LoginOnly(host=gate.host, port=gate.port, user=db.user, password=db.password,
                      database=db.database, autocommit=None)
    with contextlib.closing(early):
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            with early.cursor() as cursor:
                cursor.execute("SELECT 1")
        assert excinfo.value.args[0] == ER.SERVER_SHUTDOWN
        early.ping(reconnect=False)
        private_server.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                with early.cursor() as cursor:
                    cursor.execute("SELECT DATABASE(), 42")
                    assert cursor.fetchone() == (db.database, 42)
                break
            except pymysql.err.OperationalError:
                assert time.monotonic() < deadline, "not served after the server came up"
                time.sleep(0.2)
    # A new client gets the server's own greeting now.
    with contextlib.closing(gate.connect(ssl_disabled=True)) as late, \
            contextlib.closing(db.connect(ssl_disabled=True)) as direct:
        assert late.get_server_info() == direct.get_server_info()
        with late.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)


def test_sigterm_while_the_server_is_down(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    private_server.stop()
    gate = gate_factory()
    started = time.monotonic()
    gate.send_signal(signal.SIGTERM)
    assert gate.wait(timeout=10) == 0
    assert time.monotonic() - started < 5


def test_a_server_that_never_answers_costs_clients_the_wait_not_a_connect_each(
    private_server: DbServer, gate_factory: Callable[..., Gate], db: ScratchDb
) -> None:
    """A host that accepts connections while its server never speaks (hung, or a port
    forward with nothing behind it) costs each connect the whole connect_timeout. Once
    mysqlgate knows the server is unreachable, clients wait pool.queue_timeout for it
    (one connect at a time looks for the server meanwhile), not each a connect_timeout
    of its own."""
    private_server.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind((db.host, db.port))
        silent.listen(128)  # the kernel completes connects; nothing is ever sent
        connect_timeout = 3.0
        gate = gate_factory("--upstream-connect-timeout", str(connect_timeout),
                            "--pool-queue-timeout", "1")
        client = LoginOnly(host=gate.host, port=gate.port, user=db.user,
                           password=db.password, database=db.database, autocommit=None,
                           read_timeout=4 * connect_timeout)
        with contextlib.closing(client):
            for _ in range(4):
                started = time.monotonic()
                with pytest.raises(pymysql.err.OperationalError) as excinfo:
                    with client.cursor() as cursor:
                        cursor.execute("SELECT 1")
                took = time.monotonic() - started
                code, message = excinfo.value.args
                assert code == ER.SERVER_SHUTDOWN and "cannot be reached" in message, message
                assert 0.9 <= took < connect_timeout / 2, (
                    f"the error took {took:.1f}s: pool.queue_timeout is 1s")
