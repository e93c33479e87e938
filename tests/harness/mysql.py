"""MySQL for the tests: Debian sid's build run from a private folder (mysql_dist.py), or
the mysqld that $MYSQLGATE_TEST_MYSQLD names.

`mysqld --initialize-insecure` takes 5-10 s, so a data dir is initialized once per MySQL
version (cached beside the binaries) and copied for each server: a server starts in
about a second.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .mysql_dist import MySQLDist, cache_dir, made_once, mysql_dist
from .server import DbServer, ServerError

# Accounts the template gets besides root@localhost (which --initialize-insecure makes
# without a password): root over TCP from 127.0.0.1, as on the MariaDB test server.
TEMPLATE_SQL = """
CREATE USER 'root'@'127.0.0.1' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER 'root'@'%' IDENTIFIED BY '';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
"""
TEMPLATE_FORMAT = 1  # raise when TEMPLATE_SQL or the initialize options change


class MySQLServer(DbServer):
    flavour = "mysql"
    default_options: dict[str, Any] = {
        "innodb_buffer_pool_size": "64M",
        "innodb_redo_log_capacity": "32M",
        "innodb_flush_log_at_trx_commit": 2,
        "innodb_doublewrite": "OFF",
        "skip_log_bin": True,
        "skip_name_resolve": True,
        "character_set_server": "utf8mb4",
        "max_allowed_packet": "64M",
        "port_open_timeout": 10,
        # MariaDB's default; the LOAD DATA LOCAL tests need it.
        "local_infile": "ON",
        "secure_file_priv": "",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dist: MySQLDist = mysql_dist()

    def _command(self) -> list[str]:
        return self.dist.command("mysqld")

    def _env(self) -> dict[str, str]:
        return self.dist.env()

    def _flavour_args(self) -> list[str]:
        return _paths(self.dist, self.basedir / "tmp") + ["--mysqlx=OFF"]

    def _install_datadir(self) -> None:
        (self.basedir / "tmp").mkdir(exist_ok=True)
        template = _template(self.dist, self._user_args())
        shutil.copytree(template, self.datadir, symlinks=True)


def _paths(dist: MySQLDist, tmpdir: Path) -> list[str]:
    args = [f"--basedir={dist.basedir}", f"--lc-messages-dir={dist.share_dir}",
            f"--character-sets-dir={dist.share_dir / 'charsets'}", f"--tmpdir={tmpdir}"]
    if dist.plugin_dir is not None:
        args.append(f"--plugin-dir={dist.plugin_dir}")
    return args


def _template(dist: MySQLDist, user_args: list[str]) -> Path:
    """An initialized data dir with the test accounts, made once per MySQL version."""
    home = cache_dir() / f"mysql-datadir-{dist.version}-{TEMPLATE_FORMAT}"
    return made_once(home, lambda home: _make_template(dist, user_args, home)) / "data"


def _make_template(dist: MySQLDist, user_args: list[str], home: Path) -> None:
    (home / "tmp").mkdir()
    data = home / "data"
    base = [*dist.command("mysqld"), "--no-defaults", f"--datadir={data}",
            "--secure-file-priv=",
            *_paths(dist, home / "tmp"), *user_args]
    _run(base + ["--initialize-insecure", f"--log-error={home / 'init.log'}"], dist, home)
    # Start it once, on its socket only, to add the accounts; then a clean shutdown.
    sock = home / "s"
    server = subprocess.Popen(
        base + [f"--socket={sock}", "--skip-networking", "--mysqlx=OFF",
                f"--pid-file={home / 'pid'}", f"--log-error={home / 'error.log'}"],
        env=dist.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = [*dist.command("mysql"), "--no-defaults", "-uroot", f"--socket={sock}"]
        _wait_for_socket(client, dist, server, home)
        _run(client, dist, home, stdin=TEMPLATE_SQL)
        _run(client + ["-e", "SHUTDOWN"], dist, home)
        server.wait(60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            if server.poll() is None:
                server.kill()
                server.wait()
    for leftover in ("auto.cnf",):  # each copy makes its own server uuid
        (data / leftover).unlink(missing_ok=True)


def _wait_for_socket(client: list[str], dist: MySQLDist, server: subprocess.Popen[bytes],
                     home: Path) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise ServerError(f"mysqld exited while making the template data dir; see "
                              f"{home / 'error.log'}")
        probe = subprocess.run(client + ["-e", "SELECT 1"], env=dist.env(),
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise ServerError(f"mysqld did not answer while making the template; see {home}")


def _run(argv: list[str], dist: MySQLDist, home: Path, stdin: str | None = None) -> None:
    result = subprocess.run(argv, env=dist.env(), input=stdin, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise ServerError(f"{' '.join(argv[-3:])} failed ({result.returncode}) while making "
                          f"{home}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
