"""The admin console (issue 7) through PyMySQL and the mariadb CLI: its numbers checked
against a known load, PAUSE/RESUME, SET of a reloadable setting seen in SHOW CONFIG and
in behaviour, RELOAD, KILL CLIENT, SHUTDOWN, its login rules, and `mysqlgate status`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors
import pytest
from harness import Gate, ScratchDb, fetch_rows, free_port, wait_until
from harness.gate import REPO_ROOT, GateError
from pymysql.constants import CR


def admin(gate: Gate, **kwargs: Any) -> pymysql.connections.Connection:
    params: dict[str, Any] = {"host": "127.0.0.1", "port": gate.admin_port, "user": "admin",
                              "cursorclass": pymysql.cursors.DictCursor}
    params.update(kwargs)
    return pymysql.connect(**params)


def show(conn: pymysql.connections.Connection, what: str) -> list[dict[str, Any]]:
    with conn.cursor() as cursor:
        cursor.execute(what)
        return list(cursor.fetchall())


class Background:
    """A statement run in a thread: it may wait for a connection."""

    def __init__(self, conn: pymysql.connections.Connection, sql: str) -> None:
        self.result: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(conn, sql))
        self.thread.start()

    def _run(self, conn: pymysql.connections.Connection, sql: str) -> None:
        try:
            self.result.append(fetch_rows(conn, sql))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.result.append(exc)

    def join(self, timeout: float = 15) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the statement did not finish"
        return self.result[0]


@pytest.fixture
def table(db: ScratchDb) -> None:
    with contextlib.closing(db.connect()) as direct:
        fetch_rows(direct, "CREATE TABLE t (v INT) ENGINE=InnoDB")
        fetch_rows(direct, "INSERT INTO t VALUES (1)")


@pytest.fixture
def closing() -> Iterator[list[pymysql.connections.Connection]]:
    conns: list[pymysql.connections.Connection] = []
    yield conns
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.close()


def test_known_load(gate_factory: Callable[..., Gate], table: None,
                    closing: list[pymysql.connections.Connection]) -> None:
    """Pool of 2: one client pinned by a user variable, one in a transaction, a third
    waiting for a connection."""
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "30")
    console = admin(gate)
    closing.append(console)
    pinned = gate.connect(ssl_disabled=True)
    in_tx = gate.connect(autocommit=False, ssl_disabled=True)
    third = gate.connect(autocommit=False, ssl_disabled=True)
    closing += [pinned, in_tx, third]
    fetch_rows(pinned, "SET @x = 1")
    assert fetch_rows(in_tx, "SELECT v FROM t") == ((1,),)
    waiting = Background(third, "SELECT v FROM t")
    wait_until(lambda: show(console, "SHOW POOLS")[0]["waiting"] == 1, "a waiting client")
    time.sleep(0.2)

    (pool,) = show(console, "SHOW POOLS")
    assert pool["pool"].startswith(gate.db.user + "@")
    assert (pool["size"], pool["effective_size"], pool["in_use"], pool["idle"],
            pool["waiting"], pool["clients"], pool["pinned"], pool["in_transaction"],
            pool["paused"], pool["status"]) == (2, 2, 2, 0, 1, 3, 1, 1, 0, "ok"), pool
    assert isinstance(pool["longest_wait_s"], float) and pool["longest_wait_s"] >= 0.2

    clients = {row["id"]: row for row in show(console, "SHOW CLIENTS")}
    assert set(clients) == {pinned.thread_id(), in_tx.thread_id(), third.thread_id()}
    assert clients[pinned.thread_id()]["state"] == "pinned"
    assert clients[pinned.thread_id()]["pins"] == "user_variables"
    assert clients[in_tx.thread_id()]["state"] == "idle in transaction"
    assert clients[in_tx.thread_id()]["pins"] is None
    # Autocommit off, the driver's choice here: why it holds a connection (issue 15).
    assert clients[in_tx.thread_id()]["autocommit"] == 0
    assert clients[pinned.thread_id()]["autocommit"] == 1
    assert clients[third.thread_id()]["state"] == "waiting"
    assert clients[third.thread_id()]["statement"] == "SELECT v FROM t"
    assert clients[third.thread_id()]["upstream_thread"] is None
    assert all(row["user"] == gate.db.user for row in clients.values())
    assert clients[in_tx.thread_id()]["idle_s"] >= 0.2

    servers = show(console, "SHOW SERVERS")
    assert sorted(row["client"] for row in servers) == sorted(
        [pinned.thread_id(), in_tx.thread_id()])
    assert {row["thread_id"] for row in servers} == {
        clients[pinned.thread_id()]["upstream_thread"],
        clients[in_tx.thread_id()]["upstream_thread"]}
    assert all(row["state"] == "in_use" for row in servers)
    with contextlib.closing(gate.db.root()) as root:  # the threads are the server's own
        ids = {row[0] for row in fetch_rows(root, "SELECT ID FROM information_schema.PROCESSLIST "
                                             f"WHERE USER = '{gate.db.user}'")}
    assert {row["thread_id"] for row in servers} <= ids

    in_tx.commit()  # its connection goes to the waiting client
    assert waiting.join() == ((1,),)
    (pool,) = show(console, "SHOW POOLS")
    assert (pool["waiting"], pool["in_use"], pool["in_transaction"]) == (0, 2, 1)
    stats = {row["stat"]: row for row in show(console, "SHOW STATS")}
    assert stats["queue_waits"]["total"] >= 1
    assert stats["pins"]["total"] == 1
    assert stats["clients_accepted"]["total"] >= 3
    assert stats["commands"]["per_second_average"] > 0


def test_mariadb_cli(gate_factory: Callable[..., Gate], table: None,
                     closing: list[pymysql.connections.Connection]) -> None:
    gate = gate_factory("--pool-size", "2")
    holder = gate.connect(autocommit=False, ssl_disabled=True)
    closing.append(holder)
    fetch_rows(holder, "SELECT v FROM t")
    cli = shutil.which("mariadb") or shutil.which("mysql")
    assert cli is not None, "the test needs the mariadb client (scripts/test.sh installs it)"

    def run(sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, "-h", "127.0.0.1", "-P", str(gate.admin_port), "-u",
                               "admin", "--batch", "-e", sql],
                              capture_output=True, text=True, timeout=30)

    done = run("SHOW POOLS")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    pool = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert (pool["in_use"], pool["idle"], pool["waiting"], pool["in_transaction"]) == \
        ("1", "0", "0", "1")
    done = run("SHOW VERSION; SHOW HELP")
    assert done.returncode == 0 and "mysqlgate" in done.stdout and "KILL CLIENT" in done.stdout
    done = run("SHOW NONSENSE")
    assert done.returncode == 1
    assert "ERROR 1105" in done.stderr, done.stderr
    assert "unknown SHOW 'NONSENSE'; accepted: SHOW POOLS, SHOW CLIENTS" in done.stderr


def test_pause_holds_statements_and_resume_releases_them(
        gate_factory: Callable[..., Gate], db: ScratchDb, table: None,
        closing: list[pymysql.connections.Connection]) -> None:
    gate = gate_factory("--pool-size", "2", "--pool-queue-timeout", "2")
    console = admin(gate)
    client = gate.connect(ssl_disabled=True)
    in_tx = gate.connect(autocommit=False, ssl_disabled=True)
    closing += [console, client, in_tx]
    assert fetch_rows(client, "SELECT v FROM t") == ((1,),)
    assert fetch_rows(in_tx, "SELECT v FROM t") == ((1,),)

    with console.cursor() as cursor:
        cursor.execute("PAUSE")
    (pool,) = show(console, "SHOW POOLS")
    assert (pool["paused"], pool["idle"], pool["in_use"]) == (1, 0, 1), pool
    # The transaction in progress goes on and ends; then no connection of the pool is
    # left on the server (the point of PAUSE before a server restart).
    fetch_rows(in_tx, "INSERT INTO t VALUES (2)")
    in_tx.commit()
    wait_until(lambda: db.processlist_count() == 0, "no upstream connection left")
    # New statements wait, longer than the queue timeout, without an error.
    held = [Background(client, "SELECT COUNT(*) FROM t"), Background(in_tx, "SELECT 7")]
    time.sleep(3)
    assert all(b.thread.is_alive() for b in held)
    states = {row["id"]: row["state"] for row in show(console, "SHOW CLIENTS")}
    assert states == {client.thread_id(): "waiting", in_tx.thread_id(): "waiting"}
    with console.cursor() as cursor:
        cursor.execute("RESUME")
    assert held[0].join() == ((2,),)
    assert held[1].join() == ((7,),)
    (pool,) = show(console, "SHOW POOLS")
    assert (pool["paused"], pool["waiting"]) == (0, 0)


def test_set_and_reload(gate_factory: Callable[..., Gate], table: None, tmp_path: Path,
                        closing: list[pymysql.connections.Connection]) -> None:
    config = tmp_path / "mysqlgate.toml"
    config.write_text("[pool]\nqueue_timeout = 20\n")
    gate = gate_factory("--pool-size", "1", "--config", str(config))
    console = admin(gate)
    holder = gate.connect(autocommit=False, ssl_disabled=True)
    other = gate.connect(ssl_disabled=True)
    closing += [console, holder, other]

    def setting(name: str) -> str:
        return {r["setting"]: r["value"] for r in show(console, "SHOW CONFIG")}[name]

    assert setting("pool.queue_timeout") == "20.0"
    with console.cursor() as cursor:
        cursor.execute("SET pool.queue_timeout = 1")
    assert setting("pool.queue_timeout") == "1.0"
    # In behaviour: a client waiting behind a held connection gives up after 1 s.
    fetch_rows(holder, "SELECT v FROM t")
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        fetch_rows(other, "SELECT 1")
    waited = time.monotonic() - started
    assert 0.8 < waited < 5, waited
    assert "mysqlgate:" in excinfo.value.args[1] and "pool.queue_timeout" in \
        excinfo.value.args[1]
    holder.rollback()

    with console.cursor() as cursor:  # a setting that needs a restart is refused
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cursor.execute("SET pool.size = 5")
        assert refused.value.args == (
            1105, "mysqlgate admin: pool.size cannot change without a restart; SET takes: "
            "pool.queue_timeout, pool.idle_timeout, pool.max_lifetime, pool.ping_after, "
            "pool.idle_transaction_timeout, log.level (edit the file and restart for the "
            "others)")
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cursor.execute("SET pool.queue_timeout = soon")
        assert refused.value.args[1] == (
            "mysqlgate admin: pool.queue_timeout: 'soon' is not a number; accepted: seconds, "
            "a number of 0 or more (e.g. 2.5)")
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cursor.execute("SHOW FOO")
        assert refused.value.args == (
            1105, "mysqlgate admin: unknown SHOW 'FOO'; accepted: SHOW POOLS, SHOW CLIENTS, "
            "SHOW SERVERS, SHOW STATS, SHOW CONFIG, SHOW VERSION, SHOW HELP")
    assert setting("pool.size") == "1"

    config.write_text("[pool]\nqueue_timeout = 3\n[limits]\nmax_clients = 50\n")
    with console.cursor() as cursor:
        cursor.execute("RELOAD")
        message = cursor._result.message.decode()  # the OK packet's info
    assert "changed: pool.queue_timeout" in message, message
    assert "needing a restart (ignored): limits.max_clients" in message, message
    assert setting("pool.queue_timeout") == "3.0"
    assert setting("limits.max_clients") == "10000"  # needs a restart: unchanged
    config.write_text("[pool]\nqueue_timeout = never\n")
    with console.cursor() as cursor:
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cursor.execute("RELOAD")
    assert "reload refused" in refused.value.args[1]
    assert setting("pool.queue_timeout") == "3.0"


def test_kill_client_and_shutdown(gate_factory: Callable[..., Gate], db: ScratchDb,
                                  table: None,
                                  closing: list[pymysql.connections.Connection]) -> None:
    gate = gate_factory("--pool-size", "2")
    console = admin(gate)
    victim = gate.connect(autocommit=False, ssl_disabled=True)
    bystander = gate.connect(ssl_disabled=True)
    closing += [console, victim, bystander]
    fetch_rows(victim, "INSERT INTO t VALUES (3)")  # in a transaction, not committed
    with console.cursor() as cursor:
        assert cursor.execute(f"KILL CLIENT {victim.thread_id()}") == 1
        with pytest.raises(pymysql.err.OperationalError) as unknown:
            cursor.execute("KILL CLIENT 999999")
        assert unknown.value.args[0] == 1094
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        fetch_rows(victim, "SELECT 1")
    assert excinfo.value.args[0] in (CR.CR_SERVER_LOST, CR.CR_SERVER_GONE_ERROR)
    ids = [row["id"] for row in show(console, "SHOW CLIENTS")]
    assert victim.thread_id() not in ids and bystander.thread_id() in ids
    assert fetch_rows(bystander, "SELECT COUNT(*) FROM t") == ((1,),)  # its insert rolled back

    with console.cursor() as cursor:
        cursor.execute("SHUTDOWN")
    assert gate.wait(timeout=40) == 0
    assert "SHUTDOWN by admin" in gate.log_text()


def test_login_rules(gate_factory: Callable[..., Gate], tmp_path: Path) -> None:
    # No admin.password: this OS user only, over loopback TCP or the unix socket.
    socket_path = str(tmp_path / "admin.sock")
    gate = gate_factory("--admin-listen", f"unix:{socket_path}")
    assert os.stat(socket_path).st_mode & 0o777 == 0o600
    with contextlib.closing(admin(gate, host=None, unix_socket=socket_path)) as conn:
        assert show(conn, "SELECT @@version_comment LIMIT 1") == [
            {"@@version_comment": "mysqlgate admin console"}]
    with pytest.raises(pymysql.err.OperationalError) as excinfo:
        admin(gate, host=None, unix_socket=socket_path, user="root")
    assert excinfo.value.args[0] == 1045 and "admin.user" in excinfo.value.args[1]

    # With a password, from a file: the right user and password only.
    secret = tmp_path / "admin-password"
    secret.write_text("s3cret\n")
    port = free_port()
    gate = gate_factory("--admin-listen", f"127.0.0.1:{port}", "--admin-password-file",
                        str(secret), "--admin-user", "ops")
    with contextlib.closing(admin(gate, port=port, user="ops", password="s3cret")) as conn:
        assert show(conn, "SHOW POOLS")[0]["status"] == "ok"
    for user, password in (("ops", "wrong"), ("ops", ""), ("admin", "s3cret")):
        with pytest.raises(pymysql.err.OperationalError) as excinfo:
            admin(gate, port=port, user=user, password=password)
        assert excinfo.value.args[0] == 1045, (user, password)
        assert excinfo.value.args[1].startswith("mysqlgate:")
    assert "login of 'ops' from" in gate.log_text()


def test_other_os_users_are_refused_without_a_password(
        gate_factory: Callable[..., Gate]) -> None:
    """Peer identity is what guards a console without a password: a client running as
    another OS user is refused, over loopback TCP."""
    if os.getuid() != 0:
        pytest.skip("needs root to run a client as another OS user")
    gate = gate_factory()
    script = (
        "import encodings.idna, os, pymysql  # imported while still root\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        f"    pymysql.connect(host='127.0.0.1', port={gate.admin_port}, user='admin')\n"
        "    print('admitted')\n"
        "except pymysql.err.OperationalError as exc:\n"
        "    print(exc.args[0], exc.args[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, cwd="/")
    assert done.stdout.startswith("1045 mysqlgate:"), (done.stdout, done.stderr)
    assert ("admin.password is not set, so only OS user root may log in, over the console's "
            "unix socket or loopback, not OS user nobody; set admin.password to admit others"
            ) in done.stdout, done.stdout


def test_admin_listen_checks(gate_factory: Callable[..., Gate]) -> None:
    with pytest.raises(GateError) as excinfo:  # never unauthenticated beyond loopback
        gate_factory("--admin-listen", "0.0.0.0:16032", "--listen-allow-remote", "true")
    assert "admin.password" in str(excinfo.value)
    first = gate_factory()
    with pytest.raises(GateError) as excinfo:  # a port in use is said plainly
        gate_factory("--admin-listen", f"127.0.0.1:{first.admin_port}")
    assert "admin.listen: cannot listen on" in str(excinfo.value)
    off = gate_factory("--admin-listen", "off")
    with pytest.raises(pymysql.err.OperationalError):
        admin(off)


def test_status_command(gate_factory: Callable[..., Gate], table: None,
                        closing: list[pymysql.connections.Connection]) -> None:
    gate = gate_factory("--pool-size", "2")
    client = gate.connect(autocommit=False, ssl_disabled=True)
    closing.append(client)
    fetch_rows(client, "SELECT v FROM t")
    command = [sys.executable, "-m", "mysqlgate", "status", "--admin",
               f"127.0.0.1:{gate.admin_port}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "POOLS (1)" in text and "CLIENTS (1)" in text and "SERVERS (1)" in text
    assert "idle in transaction" in text and gate.db.user in text
    # Such a holder is pointed out, with what to do about it (issue 15).
    assert (f"1 client(s) ({client.thread_id()}) hold an upstream connection idle in a "
            "transaction with autocommit off") in text, text
    assert "Turn autocommit on in the driver (autocommit=True), or commit after reads too" \
        in text
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["pools"][0]["in_use"] == 1 and facts["pools"][0]["in_transaction"] == 1
    assert facts["clients"][0]["id"] == client.thread_id()
    assert facts["clients"][0]["autocommit"] == 0
    # `mysqlgate status --json | head`: a reader that goes away early (here before the first
    # byte: the read end is closed already) gets no traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([*command, "--json"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=REPO_ROOT)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")
    # The console's address from the environment, as the daemon reads it.
    env = {**os.environ, "MYSQLGATE_ADMIN_LISTEN": f"127.0.0.1:{gate.admin_port}"}
    done = subprocess.run([sys.executable, "-m", "mysqlgate", "status", "--json"],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["pools"][0]["in_use"] == 1
    gate.stop()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 1
    assert f"cannot read the admin console at 127.0.0.1:{gate.admin_port}: (2003) " \
        in done.stderr
    assert "is mysqlgate running, with this admin.listen? Give its --config, or the " \
        "console's address with --admin host:port or unix:/path" in done.stderr
    done = subprocess.run([*command[:-1], "127.0.0.1"], capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)
    assert (done.returncode, done.stderr) == (
        2, "mysqlgate status: --admin: '127.0.0.1' has no port; accepted: host:port or "
        "unix:/path\n")
