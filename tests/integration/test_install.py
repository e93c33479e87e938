"""The README's install steps, run as written on a fresh Debian 12 (issue 15): its Quick
start, its systemd service steps (then `systemd-analyze verify` and the unit's command),
and the always-on recipe (deploy/always-on-task.md). Each ends with a client served
through the installed mysqlgate.

The fresh Debian is a root made by debootstrap: Debian's base system (its required and
important packages, what every installed Debian has: systemd, procps...), plus python3,
python3-venv and sudo; no pip, no compiler. It is entered with chroot: no container
registry needed.
It is made once and cached as a tarball (~/.cache/mysqlgate-tests, or
$MYSQLGATE_TEST_CACHE); every test unpacks a copy of its own. The steps run as ordinary
users (sudo for the service's), in a copy of this working tree.

What the test changes in the steps, and why: the server's URL and password (the test's
database), the listeners' ports (free ones instead of 6033 and 6032, which other things
on this machine may use), and the editor calls ("then edit" comments, `nano`), replaced
by writing the file. Where this machine's network needs its own CA for HTTPS (a proxy),
the root gets it in /etc/pip.conf, as such a network's machines would.

Opt-in: it needs root, debootstrap (Debian package) and the network (Debian's mirror,
PyPI); about a minute per test once the root is cached.

    MYSQLGATE_TEST_INSTALL=1 .venv/bin/python -m pytest -q tests/integration/test_install.py
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pymysql
import pytest
from harness import ScratchDb, free_port
from harness.docs import code_blocks, commands
from harness.mysql_dist import cache_dir

if os.environ.get("MYSQLGATE_TEST_INSTALL") != "1":
    pytest.skip(
        "installs mysqlgate on a fresh Debian root (debootstrap, network): "
        "MYSQLGATE_TEST_INSTALL=1 .venv/bin/python -m pytest -q "
        "tests/integration/test_install.py",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(1800)

REPO_ROOT = Path(__file__).resolve().parents[2]

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "sudo")
MIRROR = os.environ.get("MYSQLGATE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
README = (REPO_ROOT / "README.md").read_text()
ALWAYS_ON = (REPO_ROOT / "deploy" / "always-on-task.md").read_text()
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STEP_TIMEOUT = 600.0
READY_TIMEOUT = 60.0


def _log(message: str) -> None:
    print(f"[test_install] {message}", file=sys.stderr, flush=True)


def base_tarball() -> Path:
    """A fresh Debian root (debootstrap's default variant + PACKAGES), made once."""
    tarball = cache_dir() / f"debian-{SUITE}-base-{'-'.join(PACKAGES)}.tar"
    if tarball.exists():
        return tarball
    if os.geteuid() != 0:
        pytest.fail("making a Debian root needs root (debootstrap, chroot)", pytrace=False)
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        pytest.fail("the test needs debootstrap (apt-get install debootstrap)", pytrace=False)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(str(tarball) + ".d")
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run(
        [debootstrap, f"--include={','.join(PACKAGES)}", SUITE,
         str(work), MIRROR],
        capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.fail(f"debootstrap exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                    f"{done.stderr[-3000:]}", pytrace=False)
    partial = Path(str(tarball) + ".partial")
    subprocess.run(["tar", "-C", str(work), "--numeric-owner", "-cf", str(partial), "."],
                   check=True, timeout=600)
    partial.rename(tarball)
    shutil.rmtree(work, ignore_errors=True)
    _log(f"Debian root made in {time.monotonic() - started:.0f} s: {tarball}")
    return tarball


class Root:
    """An unpacked fresh Debian root; commands run in it with chroot, as root or a user."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def run(self, command: str, user: str = "root", check: bool = True,
            timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """`command` by bash in the user's home, with a login's minimal environment."""
        done = subprocess.run(self.argv(command, user), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"as {user}: {command}\nexited {done.returncode}\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def argv(self, command: str, user: str = "root", env: Sequence[str] = ()) -> list[str]:
        home = "/root" if user == "root" else f"/home/{user}"
        return ["chroot", f"--userspec={user}:{user}", str(self.path), "/usr/bin/env", "-i",
                f"HOME={home}", f"USER={user}", f"LOGNAME={user}", f"PATH={PATH}",
                "LANG=C.UTF-8", *env, "/bin/bash", "-c", f"cd ~ && {command}"]

    def add_user(self, user: str, sudo: bool = False) -> None:
        self.run(f"useradd --create-home --shell /bin/bash {user}")
        if sudo:
            sudoers = self.path / "etc/sudoers.d" / user
            sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD: ALL\n")
            sudoers.chmod(0o440)

    def checkout(self, user: str) -> str:
        """A copy of this working tree (what git would check out, with local edits) in the
        user's home, owned by the user."""
        target = f"/home/{user}/mysqlgate"
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"],
                               cwd=REPO_ROOT, capture_output=True, check=True).stdout
        (self.path / target.lstrip("/")).mkdir()
        for name in files.decode().split("\0"):
            if name and (REPO_ROOT / name).is_file():
                destination = self.path / target.lstrip("/") / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / name, destination)
        self.run(f"chown -R {user}:{user} {target}")
        return target


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    if os.geteuid() != 0:
        pytest.fail("the fresh Debian root needs root (chroot)", pytrace=False)
    tarball = base_tarball()
    path = tmp_path / "debian"
    path.mkdir()
    subprocess.run(["tar", "-C", str(path), "--numeric-owner", "-xf", str(tarball)],
                   check=True, timeout=600)
    ca = next((os.environ[name] for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
               if os.environ.get(name) and Path(os.environ[name]).is_file()), None)
    if ca is not None:  # this network's HTTPS proxy, not part of what is tested
        shutil.copy2(ca, path / "etc/network-ca.pem")
        (path / "etc/pip.conf").write_text("[global]\ncert = /etc/network-ca.pem\n")
    # What the installer writes and debootstrap does not: the host name (sudo looks it up).
    with open(path / "etc/hosts", "a") as hosts:
        hosts.write(f"127.0.1.1\t{socket.gethostname()}\n")
    # /proc, as on a booted machine: the admin console tells who connects from it.
    subprocess.run(["mount", "-t", "proc", "proc", str(path / "proc")], check=True, timeout=60)
    try:
        yield Root(path)
    finally:
        unmounted = subprocess.run(["umount", str(path / "proc")], timeout=60).returncode == 0
        if unmounted:  # never delete through a mounted /proc
            shutil.rmtree(path, ignore_errors=True)


class Running:
    """A command started in the root that reports READY=1 on $NOTIFY_SOCKET (mysqlgate,
    as systemd would see it)."""

    def __init__(self, root: Root, command: str, user: str, env: Sequence[str] = ()) -> None:
        self.notify_path = "/tmp/mysqlgate-notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        host_path = root.path / self.notify_path.lstrip("/")
        with contextlib.suppress(FileNotFoundError):
            host_path.unlink()
        self.notify.bind(str(host_path))
        os.chmod(host_path, 0o777)  # the command runs as an ordinary user
        self.notify.settimeout(0.2)
        argv = root.argv(command, user, [*env, f"NOTIFY_SOCKET={self.notify_path}"])
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        self.log = ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                if b"READY=1" in self.notify.recv(4096):
                    return
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode} before READY=1:\n"
                                     f"{self.finish()}")
        os.killpg(self.process.pid, signal.SIGKILL)
        raise AssertionError(f"no READY=1 within {READY_TIMEOUT:g} s:\n{self.finish()}")

    def stop(self) -> int:
        """SIGTERM to its process group (bash, mysqlgate); mysqlgate's exit status."""
        os.killpg(self.process.pid, signal.SIGTERM)
        self.finish()
        return self.process.returncode

    def finish(self) -> str:
        """Wait for the end; its output (kept for messages)."""
        out, _ = self.process.communicate(timeout=60)
        self.notify.close()
        self.log = out.decode(errors="replace")[-6000:]
        return self.log


def _served(port: int, db: ScratchDb) -> None:
    with contextlib.closing(pymysql.connect(host="127.0.0.1", port=port, user=db.user,
                                            password=db.password, database=db.database,
                                            connect_timeout=20)) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT CURRENT_USER(), DATABASE()")
            assert cursor.fetchone() == (f"{db.user}@%", db.database)


def _shell(step: list[str]) -> str:
    return shlex.join(step).replace("'~/", "~/'").replace("'dist/mysqlgate-*.whl'",
                                                          "dist/mysqlgate-*.whl")


# -- the tests ------------------------------------------------------------------------


def test_quick_start(root: Root, db: ScratchDb) -> None:
    """`python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/mysqlgate
    --upstream ...` in a checkout, as an ordinary user."""
    (block,) = code_blocks(README, "## Quick start")[:1]
    steps = commands(block)
    assert len(steps) == 3 and steps[2][1] == "--upstream", steps
    root.add_user("alice")
    checkout = root.checkout("alice")
    started = time.monotonic()
    for step in steps[:2]:
        root.run(f"cd {checkout} && {_shell(step)}", user="alice")
    _log(f"quick start installed in {time.monotonic() - started:.0f} s")
    port, admin = free_port(), free_port()
    run = [*steps[2][:2], db.upstream_url, *steps[2][3:]]
    gate = Running(root, f"cd {checkout} && exec {_shell(run)}", "alice",
                   [f"MYSQLGATE_LISTEN=127.0.0.1:{port}",
                    f"MYSQLGATE_ADMIN_LISTEN=127.0.0.1:{admin}"])
    gate.wait_ready()
    _served(port, db)
    assert gate.stop() == 0, gate.log


def test_systemd_service_steps(root: Root, db: ScratchDb) -> None:
    """README's "As a systemd service", as an operator with sudo; then the unit checked
    by systemd-analyze in that root, and its command run as the unit would run it."""
    (block,) = code_blocks(README, "### As a systemd service")[:1]
    steps = commands(block)
    root.add_user("bob", sudo=True)
    checkout = root.checkout("bob")
    for line in block.replace("\\\n", " ").splitlines():
        command = line.split("#")[0].strip()
        if not command:
            continue
        if "systemctl" in command:
            # No systemd runs in the root: systemctl works offline (daemon-reload has
            # nothing to do, enable makes the links); what --now would start, the unit's
            # command, is started below as systemd would start it.
            for step in commands(line):
                assert step[0] == "systemctl", step
                root.run("SYSTEMD_OFFLINE=1 " + shlex.join(a for a in step if a != "--now"))
            continue
        done = root.run(f"cd {checkout} && {command}", user="bob", check=False)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        if "deploy/mysqlgate.toml.example /etc/mysqlgate/mysqlgate.toml" in command:
            config = root.path / "etc/mysqlgate/mysqlgate.toml"
            text = re.sub(r'(?m)^url = ".*"$',
                          f'url = "mysql://{db.user}@{db.host}:{db.port}/{db.database}"',
                          config.read_text())
            config.write_text(text)  # "then edit"
        if "/etc/mysqlgate/password" in command and "install -m 0600" in command:
            (root.path / "etc/mysqlgate/password").write_text(db.password + "\n")
    assert any(step[0] == "systemctl" for step in steps)

    verify = root.run("systemd-analyze verify /etc/systemd/system/mysqlgate.service",
                      check=False)
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", ""), verify
    assert (root.path / "etc/systemd/system/multi-user.target.wants/mysqlgate.service"
            ).is_symlink()  # enabled

    # The unit's command, as systemd would run it: its password through LoadCredential's
    # copy (here the file itself), a run directory for the unix socket.
    unit = (root.path / "etc/systemd/system/mysqlgate.service").read_text()
    (exec_start,) = re.findall(r"(?m)^ExecStart=(.*)$", unit)
    root.run("install -d -m 0750 /run/mysqlgate")
    port, admin = free_port(), free_port()
    env = [f"MYSQLGATE_LISTEN_ADDRESSES=127.0.0.1:{port}",
           f"MYSQLGATE_ADMIN_LISTEN=127.0.0.1:{admin}",
           "MYSQLGATE_UPSTREAM_PASSWORD_FILE=/etc/mysqlgate/password"]
    gate = Running(root, f"exec {exec_start}", "root", env)
    gate.wait_ready()
    _served(port, db)
    status = root.run(f"sudo mysqlgate status --admin 127.0.0.1:{admin}", user="bob")
    assert "POOLS (1)" in status.stdout, status.stdout
    assert gate.stop() == 0, gate.log

    # A wrong password is exit status 2, which the unit does not restart.
    (root.path / "etc/mysqlgate/password").write_text("wrong\n")
    gate = Running(root, f"exec {exec_start}", "root", env)
    log = gate.finish()
    assert gate.process.returncode == 2, log
    assert "Access denied" in log, log
    assert re.search(r"(?m)^RestartPreventExitStatus=2$", unit)


def test_always_on_recipe(root: Root, db: ScratchDb) -> None:
    """deploy/always-on-task.md: install, password file, wrapper, run, as an ordinary
    user without sudo."""
    install, password, wrapper = code_blocks(ALWAYS_ON)[:3]
    root.add_user("carol")
    root.checkout("carol")
    for step in commands(install):
        root.run(_shell(step), user="carol")
    for step in commands(password):
        if step[0] == "nano":  # the editor: write the file instead
            root.path.joinpath("home/carol/.mysqlgate/password").write_text(db.password + "\n")
            continue
        root.run(_shell(step), user="carol")
    mode = root.run("stat -c %a ~/.mysqlgate/password", user="carol").stdout.strip()
    assert mode == "600"
    port, admin = free_port(), free_port()
    script = re.sub(r"'mysql://[^']*'",
                    f"'mysql://{db.user}@{db.host}:{db.port}/{db.database}'", wrapper)
    script = script.replace("127.0.0.1:6033", f"127.0.0.1:{port}")
    assert script != wrapper and f"127.0.0.1:{port}" in script
    run_sh = root.path / "home/carol/.mysqlgate/run.sh"
    run_sh.write_text(script)  # as carol's editor would save it:
    root.run("chown carol:carol ~carol/.mysqlgate/run.sh")
    root.run("chmod 700 ~/.mysqlgate/run.sh", user="carol")
    gate = Running(root, "exec ~/.mysqlgate/run.sh", "carol",
                   [f"MYSQLGATE_ADMIN_LISTEN=127.0.0.1:{admin}"])
    gate.wait_ready()
    _served(port, db)
    assert gate.stop() == 0, gate.log
