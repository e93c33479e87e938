"""MariaDB for the tests: Debian's mariadb-server (scripts/test.sh installs it), or the
mariadbd that $MYSQLGATE_TEST_MARIADBD names."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .mysql_dist import cache_dir, made_once
from .server import DbServer, ServerError, option_args

ENV_MARIADBD = "MYSQLGATE_TEST_MARIADBD"


def find_mariadbd() -> str:
    """The mariadbd binary: $MYSQLGATE_TEST_MARIADBD, else the one on PATH, else Debian's."""
    configured = os.environ.get(ENV_MARIADBD)
    if configured:
        return configured
    return shutil.which("mariadbd") or "/usr/sbin/mariadbd"


class MariaDBServer(DbServer):
    flavour = "mariadb"
    default_options: dict[str, Any] = {
        "innodb_buffer_pool_size": "64M",
        "innodb_log_file_size": "8M",
        "innodb_flush_log_at_trx_commit": 2,
        "innodb_doublewrite": 0,
        "skip_log_bin": True,
        "skip_name_resolve": True,
        # Debian's packaged defaults, which --no-defaults would otherwise drop (latin1).
        "character_set_server": "utf8mb4",
        "collation_server": "utf8mb4_general_ci",
        # Room for tests of packets larger than the protocol's 16 MiB frame.
        "max_allowed_packet": "64M",
        # On restart the old listening socket may linger; wait for it instead of failing.
        "port_open_timeout": 10,
    }

    def __init__(self, *args: Any, mariadbd: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mariadbd = mariadbd or find_mariadbd()

    def _command(self) -> list[str]:
        if not os.access(self.mariadbd, os.X_OK):
            raise ServerError(
                f"mariadbd not found at {self.mariadbd}; install mariadb-server "
                f"or set {ENV_MARIADBD}"
            )
        return [self.mariadbd]

    def _install_datadir(self) -> None:
        # mariadb-install-db takes seconds, and the suite starts a server per test that
        # sets server options: it runs once per installation and set of install options,
        # into a template each server copies (as for MySQL, harness/mysql.py).
        binary = Path(self.mariadbd).resolve()
        install_db = _find_install_db(binary)
        argv = [
            install_db,
            "--no-defaults",
            "--auth-root-authentication-method=normal",  # root@localhost without a password
            "--skip-test-db",
            *self._user_args(),
        ]
        if os.environ.get(ENV_MARIADBD):
            # A build outside /usr: let the script find mariadbd and its share/ files.
            argv.append(f"--basedir={binary.parent.parent}")
        # Options the bootstrap server must share with later starts (the redo log size).
        argv += option_args(
            {k: v for k, v in self.options.items() if k.startswith("innodb_log_file")}
        )
        template = _template(argv, binary)
        shutil.copytree(template, self.datadir, symlinks=True)


def _template(argv: list[str], mariadbd: Path) -> Path:
    """A data dir made by `argv` (mariadb-install-db without --datadir), once for this
    mariadbd build: parallel test runs (pytest -n) wait for the first to make it."""
    stat = mariadbd.stat()
    key = hashlib.sha1(repr((argv, str(mariadbd), stat.st_size, stat.st_mtime_ns))
                       .encode()).hexdigest()[:12]
    home = cache_dir() / f"mariadb-datadir-{key}"
    return made_once(home, lambda home: _install(argv, home)) / "data"


def _install(argv: list[str], home: Path) -> None:
    failure = ""
    for _attempt in range(2):  # a loaded machine has made the bootstrap fail once
        shutil.rmtree(home / "data", ignore_errors=True)
        result = subprocess.run(
            [*argv, f"--datadir={home / 'data'}"], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        failure = (f"{' '.join(argv)} failed with exit code {result.returncode}:\n"
                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    raise ServerError(failure)


def _find_install_db(mariadbd: Path) -> str:
    """mariadb-install-db from the same installation as mariadbd, else from PATH."""
    for directory in (
        mariadbd.parent,
        mariadbd.parent.parent / "bin",
        mariadbd.parent.parent / "scripts",
    ):
        candidate = directory / "mariadb-install-db"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    if found is None:
        raise ServerError("mariadb-install-db not found; install mariadb-server")
    return found
