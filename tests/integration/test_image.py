"""The container image (issue 7): the Dockerfile builds, and the image serves clients as a
non-root user, reports its health through Docker's HEALTHCHECK (GET /healthz), answers
`docker exec <c> mysqlgate status`, and on `docker stop` lets a running query finish and
exits 0.

Opt-in, as building takes minutes: MYSQLGATE_TEST_IMAGE=1 .venv/bin/python -m pytest -q
tests/integration/test_image.py (as root, on a machine with the Debian mirror). Where no
container registry is reachable, the image is built on a local stand-in for
python:3.11-slim, made by ../shared/container/base-image.sh when it is missing (which also
installs docker.io and starts dockerd if needed). Environment:

    MYSQLGATE_TEST_IMAGE=1          run this module at all
    MYSQLGATE_BASE_IMAGE            base image (default local/python-venv:3.11-bookworm)
    MYSQLGATE_BASE_IMAGE_SCRIPT     the script that makes it (default: the first of
                                    <repo>/../shared/container/base-image.sh and
                                    /work/shared/container/base-image.sh that exists)
    MYSQLGATE_DOCKER                the docker CLI (default /usr/bin/docker: Debian's 20.10
                                    uses the daemon's built-in BuildKit; a newer CLI without
                                    buildx falls back to the legacy builder, which rejects
                                    RUN --mount)

Containers run with --network host (the daemon made by base-image.sh has no bridge), so
every port is a free port of this host. Timings go to stderr (pytest -s or -rP shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
from harness import ScratchDb, free_port

if os.environ.get("MYSQLGATE_TEST_IMAGE") != "1":
    pytest.skip(
        "builds and runs the container image (minutes): "
        "MYSQLGATE_TEST_IMAGE=1 .venv/bin/python -m pytest -q tests/integration/test_image.py",
        allow_module_level=True,
    )

# Building the base image (about 90 s) and the project's image take most of this.
pytestmark = pytest.mark.timeout(1800)

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("MYSQLGATE_DOCKER", "/usr/bin/docker")
BASE_IMAGE = os.environ.get("MYSQLGATE_BASE_IMAGE", "local/python-venv:3.11-bookworm")
IMAGE = "mysqlgate:test"
UID = 10001  # the Dockerfile's USER

BASE_IMAGE_SCRIPT_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "container" / "base-image.sh",
    Path("/work/shared/container/base-image.sh"),
)


def _log(message: str) -> None:
    print(f"[test_image] {message}", file=sys.stderr, flush=True)


def docker(*args: str, timeout: float = 60, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _docker_has(image: str) -> bool:
    if not os.access(DOCKER, os.X_OK):
        return False
    try:
        return docker("image", "inspect", image, check=False, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def base_image_script() -> Path:
    configured = os.environ.get("MYSQLGATE_BASE_IMAGE_SCRIPT")
    candidates = (Path(configured),) if configured else BASE_IMAGE_SCRIPT_CANDIDATES
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    pytest.fail(
        f"the base image {BASE_IMAGE} is missing and the script that builds it is not at "
        f"{' or '.join(str(c) for c in candidates)}; set MYSQLGATE_BASE_IMAGE_SCRIPT to "
        f"base-image.sh (see ../shared/container/README.md), or MYSQLGATE_BASE_IMAGE to an "
        f"image that has python 3.11+ with pip on PATH",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def image() -> str:
    """mysqlgate:test, built from the working tree on the local base image."""
    if os.geteuid() != 0:
        pytest.fail("building and running images here needs root (docker, base-image.sh)",
                    pytrace=False)
    if not _docker_has(BASE_IMAGE):
        script = base_image_script()
        _log(f"{BASE_IMAGE} is missing: running {script}")
        started = time.monotonic()
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                              timeout=1200, stdin=subprocess.DEVNULL)
        _log(f"base image built in {time.monotonic() - started:.1f} s")
        if done.returncode != 0 or not _docker_has(BASE_IMAGE):
            pytest.fail(f"{script} exited {done.returncode} without making {BASE_IMAGE}:\n"
                        f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}", pytrace=False)
        for line in done.stdout.splitlines():
            if "took" in line or "dockerd" in line or "base image ready" in line:
                _log(f"  {line}")
    started = time.monotonic()
    done = subprocess.run(
        [DOCKER, "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
         "-t", IMAGE, "."],
        cwd=REPO_ROOT, env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True,
        text=True, timeout=1200, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        pytest.fail(f"docker build exited {done.returncode}:\n{done.stderr[-6000:]}",
                    pytrace=False)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    _log(f"{IMAGE} built in {time.monotonic() - started:.1f} s, {size / 1e6:.0f} MB")
    return IMAGE


@dataclass
class Container:
    name: str
    db: ScratchDb
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)

    def inspect(self, template: str) -> str:
        return docker("inspect", "--format", template, self.name).stdout.strip()

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *command, check=False, timeout=timeout)

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        params: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "user": self.db.user,
            "password": self.db.password, "database": self.db.database,
            "autocommit": True, "connect_timeout": 10,
        }
        return pymysql.connect(**{**params, **kwargs})

    def healthz(self) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.inspect("{{.State.Running}}") != "true":
                raise AssertionError(f"the container stopped while waiting for {what}:\n"
                                     f"{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.logs()[-4000:]}")
            time.sleep(0.2)

    def health(self) -> str:
        return self.inspect("{{.State.Health.Status}}")


@pytest.fixture
def run_container(image: str) -> Iterator[Callable[..., Container]]:
    """run_container(db, upstream=None) -> a started container of the image in front of
    `db` (or of the URL `upstream`), with the health check every second. All are removed
    after the test; their logs are printed (pytest shows them when the test fails)."""
    started: list[Container] = []

    def run(db: ScratchDb, upstream: str | None = None, retries: int = 3) -> Container:
        container = Container(f"mysqlgate-test-{secrets.token_hex(4)}", db)
        started.append(container)
        docker(
            "run", "-d", "--name", container.name, "--network", "host",
            "-e", f"MYSQLGATE_UPSTREAM={upstream or db.upstream_url}",
            "-e", f"MYSQLGATE_LISTEN=127.0.0.1:{container.port}",
            "-e", f"MYSQLGATE_METRICS_LISTEN=127.0.0.1:{container.metrics_port}",
            "-e", f"MYSQLGATE_ADMIN_LISTEN=127.0.0.1:{container.admin_port}",
            # The image checks every 10 s after a 10 s start period; a test has no time.
            "--health-interval", "1s", "--health-start-period", "1s",
            "--health-retries", str(retries),
            image,
        )
        return container

    try:
        yield run
    finally:
        for container in started:
            print(f"--- docker logs {container.name} ---\n{container.logs()[-6000:]}")
            docker("rm", "-f", "-v", container.name, check=False)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


# -- the tests --------------------------------------------------------------------------------


def test_image_serves_clients_as_non_root_and_reports_health(
    db: ScratchDb, run_container: Callable[..., Container]
) -> None:
    started = time.monotonic()
    gate = run_container(db)
    gate.wait_until("listener", lambda: _accepts(gate.port), timeout=30)
    _log(f"container accepts clients {time.monotonic() - started:.1f} s after docker run")

    # Clients log in with the upstream account's own name and password, and queries run.
    with contextlib.closing(gate.connect()) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT CURRENT_USER(), DATABASE()")
        assert cursor.fetchone() == (f"{db.user}@%", db.database)
        cursor.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        cursor.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        cursor.execute("SELECT v FROM t ORDER BY id")
        assert cursor.fetchall() == (("one",), ("two",))
    with pytest.raises(pymysql.err.OperationalError) as refused:
        gate.connect(password="wrong").close()
    assert refused.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR, as the server says it
    # The image carries the compiled row stepping (its build stage has a compiler).
    assert "result rows stepped over by compiled code" in gate.logs(), gate.logs()[-4000:]

    # Not root: the image's user, for `docker exec` and for mysqlgate itself (PID 1).
    assert gate.inspect("{{.Config.User}}") == f"{UID}:{UID}"
    done = gate.exec("id", "-u")
    assert (done.returncode, done.stdout.strip()) == (0, str(UID)), done.stderr
    pid = int(gate.inspect("{{.State.Pid}}"))
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [str(UID)] * 4, status
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert any(part.endswith(b"mysqlgate") for part in cmdline[:2]), cmdline

    # Docker's health check (GET /healthz from inside) says healthy; so does /healthz.
    gate.wait_until("healthy status", lambda: gate.health() == "healthy", timeout=30)
    assert gate.healthz() == (200, "ok\n")
    log = json.loads(gate.inspect("{{json .State.Health.Log}}"))
    assert log and log[-1]["ExitCode"] == 0 and log[-1]["Output"].startswith("200 ok"), log
    _log(f"healthy {time.monotonic() - started:.1f} s after docker run")

    # `docker exec <c> mysqlgate status`: the admin console on the container's loopback
    # admits the same OS user without a password.
    done = gate.exec("mysqlgate", "status", "--json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    pools = facts["pools"]
    assert len(pools) == 1, pools
    assert pools[0]["pool"] == f"{db.user}@{db.host}:{db.port}"
    assert pools[0]["status"] == "ok" and pools[0]["size"] >= 1, pools
    stats = {row["stat"]: row["total"] for row in facts["stats"]}
    assert stats["clients_accepted"] >= 1 and stats["auth_failures"] == 1, stats
    done = gate.exec("mysqlgate", "status")
    assert done.returncode == 0 and "POOLS (1)" in done.stdout, (done.stdout, done.stderr)
    # Another OS user (not root) in the same container is refused the passwordless console.
    done = docker("exec", "--user", "12345", gate.name, "mysqlgate", "status", check=False)
    assert done.returncode == 1 and "cannot read the admin console" in done.stderr, done
    assert "only OS user mysqlgate" in done.stderr, done.stderr


def test_image_health_check_fails_while_the_server_is_unreachable(
    db: ScratchDb, run_container: Callable[..., Container]
) -> None:
    nobody = free_port()  # nothing listens there
    gate = run_container(
        db, upstream=f"mysql://{db.user}:{db.password}@127.0.0.1:{nobody}/{db.database}",
        retries=1,
    )
    gate.wait_until("listener", lambda: _accepts(gate.port), timeout=30)
    code, body = gate.healthz()
    assert code == 503 and "upstream unreachable" in body, (code, body)
    gate.wait_until("unhealthy status", lambda: gate.health() == "unhealthy", timeout=30)
    log = json.loads(gate.inspect("{{json .State.Health.Log}}"))
    assert log[-1]["ExitCode"] == 1, log
    assert log[-1]["Output"].startswith("503 upstream unreachable"), log


def test_docker_stop_lets_a_running_query_finish_and_exits_0(
    db: ScratchDb, run_container: Callable[..., Container]
) -> None:
    gate = run_container(db)
    gate.wait_until("listener", lambda: _accepts(gate.port), timeout=30)
    result: dict[str, object] = {}

    def slow_query() -> None:
        try:
            with contextlib.closing(gate.connect(read_timeout=30)) as conn, \
                    conn.cursor() as cursor:
                cursor.execute("SELECT SLEEP(3), 42")
                result["rows"] = cursor.fetchall()
        except Exception as exc:  # reported by the assertion below
            result["error"] = repr(exc)

    client = threading.Thread(target=slow_query, daemon=True)
    client.start()
    # Stop only once the server is running the query.
    deadline = time.monotonic() + 15
    while not db.server.query(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO LIKE %s",
        (db.user, "SELECT SLEEP(3)%"),
    ):
        assert time.monotonic() < deadline, "the query never reached the server"
        time.sleep(0.05)
    in_flight = time.monotonic()
    docker("stop", "-t", "35", gate.name, timeout=60)
    stopped_after = time.monotonic() - in_flight
    client.join(30)
    _log(f"docker stop with SELECT SLEEP(3) in flight took {stopped_after:.1f} s")

    assert result == {"rows": ((0, 42),)}, result
    assert 1.5 < stopped_after < 30, stopped_after  # waited for the query, not the deadline
    state = json.loads(gate.inspect("{{json .State}}"))
    assert (state["Running"], state["ExitCode"], state["OOMKilled"]) == (False, 0, False), state
    logs = gate.logs()
    assert "shutting down" in logs and "stopped; totals:" in logs, logs[-4000:]

