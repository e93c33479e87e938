"""MySQL server binaries for the tests on a Debian 12 machine, which ships none.

Debian's unstable distribution (sid) packages MySQL (`mysql-server-core`,
`mysql-client-core`, 9.x). Its packages need sid's C library, so they are never
installed: their .deb files and those of the libraries they load are downloaded with
apt through a private configuration (the system's sources and state are not touched),
unpacked into a folder of their own, and the binaries run through that folder's own
dynamic loader. The folder is cached (~/.cache/mysqlgate-tests/mysql-sid, or
$MYSQLGATE_TEST_CACHE), so only the first run needs the network.

    python tests/harness/mysql_dist.py          # set up (idempotent); prints the version

A machine with MySQL installed can name its mysqld in MYSQLGATE_TEST_MYSQLD instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_MYSQLD = "MYSQLGATE_TEST_MYSQLD"
ENV_CACHE = "MYSQLGATE_TEST_CACHE"
ROOT_PACKAGES = ("mysql-server-core", "mysql-client-core")
# Perl comes with the client package's scripts; mysqld and mysql do not load it.
NOT_NEEDED = re.compile(r"^(perl|libperl)")
MULTIARCH = "x86_64-linux-gnu"


class MySQLSetupError(RuntimeError):
    """The MySQL binaries could not be obtained or do not run."""


def cache_dir() -> Path:
    configured = os.environ.get(ENV_CACHE)
    base = Path(configured) if configured else Path.home() / ".cache" / "mysqlgate-tests"
    return base


@dataclass(frozen=True)
class MySQLDist:
    """How to run a MySQL binary: `command("mysqld")` gives the argv prefix."""

    root: Path | None  # the private sid folder; None: binaries of the system
    mysqld: Path
    version: str

    def command(self, program: str) -> list[str]:
        """argv that runs `program` (mysqld, mysql, mysql_tzinfo_to_sql) of this dist."""
        if self.root is None:
            path = self.mysqld if program == "mysqld" else shutil.which(program)
            if path is None:
                raise MySQLSetupError(f"{program} not found beside {self.mysqld}")
            return [str(path)]
        binary = _find_binary(self.root, program)
        return [str(self.root / "usr/lib64/ld-linux-x86-64.so.2"), "--library-path",
                _library_path(self.root), "--argv0", str(binary), str(binary)]

    def env(self) -> dict[str, str]:
        """Environment for its binaries: iconv modules and OpenSSL providers from the
        same folder as its C library and OpenSSL, not the system's."""
        if self.root is None:
            return dict(os.environ)
        lib = self.root / "usr/lib" / MULTIARCH
        return {**os.environ, "GCONV_PATH": str(lib / "gconv"),
                "OPENSSL_MODULES": str(lib / "ossl-modules")}

    @property
    def share_dir(self) -> Path:
        base = self.root / "usr" if self.root is not None else self.mysqld.parent.parent
        return base / "share" / "mysql"

    @property
    def plugin_dir(self) -> Path | None:
        if self.root is None:
            return None
        return self.root / "usr/lib/mysql/plugin"

    @property
    def basedir(self) -> Path:
        return self.root / "usr" if self.root is not None else self.mysqld.parent.parent


def _library_path(root: Path) -> str:
    return f"{root}/lib/{MULTIARCH}:{root}/usr/lib/{MULTIARCH}"


def _find_binary(root: Path, program: str) -> Path:
    for directory in ("usr/sbin", "usr/bin"):
        candidate = root / directory / program
        if candidate.exists():
            return candidate
    raise MySQLSetupError(f"no {program} in {root}")


def mysql_dist() -> MySQLDist:
    """The MySQL to test against: $MYSQLGATE_TEST_MYSQLD, else the cached sid folder
    (set up on first use)."""
    configured = os.environ.get(ENV_MYSQLD)
    if configured:
        path = Path(configured)
        result = subprocess.run([str(path), "--no-defaults", "--version"],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise MySQLSetupError(f"{ENV_MYSQLD}={configured} does not run: {result.stderr}")
        return MySQLDist(None, path, _version(result.stdout))
    return SidFolder(cache_dir() / "mysql-sid").ensure()


class SidFolder:
    """The private folder of sid packages: debs/ (downloads), root/ (unpacked), apt/
    (the private apt configuration and package lists)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "root"
        self.debs = home / "debs"
        self.apt = home / "apt"
        self.stamp = home / "version"

    def ensure(self) -> MySQLDist:
        self.home.mkdir(parents=True, exist_ok=True)
        with _locked(self.home / ".lock"):  # parallel test runs set it up once
            if not self._ready():
                self._setup()
            return MySQLDist(self.root, self.root / "usr/sbin/mysqld",
                             self.stamp.read_text().strip())

    def _ready(self) -> bool:
        return self.stamp.exists() and (self.root / "usr/sbin/mysqld").exists() and \
            (self.root / "usr/lib64/ld-linux-x86-64.so.2").exists()

    def _setup(self) -> None:
        started = time.monotonic()
        _say(f"setting up MySQL from Debian sid in {self.home} (once; about a minute)")
        self._configure_apt()
        self._apt("update")
        packages = self._closure(ROOT_PACKAGES)
        self.debs.mkdir(exist_ok=True)
        with contextlib.suppress(KeyError, PermissionError):
            shutil.chown(self.debs, "_apt")  # apt downloads as _apt where it can write
        have = {p.name.split("_", 1)[0] for p in self.debs.glob("*.deb")}
        missing = sorted(set(packages) - have)
        if missing:
            _say(f"downloading {len(missing)} packages")
            self._apt("download", *missing, cwd=self.debs)
        staging = self.home / "root.new"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for deb in sorted(self.debs.glob("*.deb")):
            if deb.name.split("_", 1)[0] in packages:
                _run(["dpkg-deb", "-x", str(deb), str(staging)])
        for name in ("bin", "sbin", "lib", "lib64"):  # sid is merged-/usr
            if not (staging / name).exists():
                (staging / name).symlink_to(f"usr/{name}")
        self._check_libraries(staging)
        unpacked = MySQLDist(staging, staging / "usr/sbin/mysqld", "")
        version = _version(_run(unpacked.command("mysqld") + ["--no-defaults", "--version"],
                                env=unpacked.env()))
        shutil.rmtree(self.root, ignore_errors=True)
        staging.rename(self.root)
        self.stamp.write_text(version + "\n")
        _say(f"{version}: ready in {time.monotonic() - started:.0f} s")

    def _configure_apt(self) -> None:
        (self.apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        mirror = _system_mirror()
        (self.apt / "sources.list").write_text(
            f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} sid main\n")

    def _apt(self, *args: str, cwd: Path | None = None) -> str:
        options = [
            "-o", f"Dir::Etc::sourcelist={self.apt / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=/nonexistent",
            "-o", f"Dir::State::Lists={self.apt / 'lists'}",
            "-o", f"Dir::Cache={self.apt / 'cache'}",
        ]
        tool = "apt-cache" if args[0] == "depends" else "apt-get"
        return _run([tool, *options, *args], cwd=cwd)

    def _closure(self, roots: Sequence[str]) -> set[str]:
        """The packages `roots` need, through Depends and Pre-Depends (the first of each
        set of alternatives; a virtual package's first provider), without perl."""
        found: set[str] = set()
        todo = list(roots)
        while todo:
            found.update(todo)
            output = self._apt("depends", "--no-recommends", "--no-suggests",
                               "--no-conflicts", "--no-breaks", "--no-replaces",
                               "--no-enhances", *todo)
            todo = sorted({name for name in _first_choices(output)
                           if name not in found and not NOT_NEEDED.match(name)})
        return found

    def _check_libraries(self, root: Path) -> None:
        """Every library mysqld and mysql load must come from the folder."""
        loader = root / "usr/lib64/ld-linux-x86-64.so.2"
        problems = []
        for program in ("mysqld", "mysql"):
            listing = _run([str(loader), "--library-path", _library_path(root), "--list",
                            str(_find_binary(root, program))])
            for line in listing.splitlines():
                if "not found" in line or re.search(r"=> /(usr/)?lib", line):
                    problems.append(f"{program}: {line.strip()}")
        if problems:
            raise MySQLSetupError("libraries missing from the sid folder (a package name "
                                  "changed in sid?):\n" + "\n".join(problems))


def _first_choices(output: str) -> Iterator[str]:
    """Package names from `apt-cache depends` output: per dependency the first
    alternative, and for a virtual one (<name>) its first provider."""
    lines = output.splitlines()
    in_alternatives = False
    expect_provider = False
    for line in lines:
        if not line.startswith(" "):
            expect_provider = False
            continue
        stripped = line.strip()
        if expect_provider and line.startswith("    "):
            yield stripped
            expect_provider = False
            continue
        expect_provider = False
        match = re.match(r"^(\|?)(Pre)?Depends: (.+)$", stripped)
        if match is None:
            continue
        alternative, name = match.group(1) == "|", match.group(3)
        if not in_alternatives:
            if name.startswith("<"):
                expect_provider = True
            else:
                yield name
        in_alternatives = alternative  # the next line is another choice for this one


def _version(output: str) -> str:
    """'9.7.4-2' from mysqld --version ('/path/mysqld  Ver 9.7.4-2 for Linux ...')."""
    match = re.search(r"\bVer\s+(\S+)", output)
    return match.group(1) if match else output.strip()


def _system_mirror() -> str:
    """The Debian mirror the system's apt uses (deb822 sources or sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        match = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", path.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    with contextlib.suppress(FileNotFoundError):
        text = Path("/etc/apt/sources.list").read_text()
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", text, re.MULTILINE)
        if match:
            return match.group(1)
    raise MySQLSetupError("no Debian mirror found in the system's apt sources; set "
                          f"{ENV_MYSQLD} to a mysqld binary instead")


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise MySQLSetupError(f"{' '.join(argv[:6])} ... failed ({result.returncode}):\n"
                              f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def made_once(home: Path, make: Callable[[Path], None]) -> Path:
    """`home`, filled by `make(home)` once (a server's template data dir): under a file
    lock, so parallel test runs wait for the first; a `ready` marker says `make`
    finished, and a half-made one is started again."""
    home.parent.mkdir(parents=True, exist_ok=True)
    with _locked(home.parent / f".{home.name}.lock"):
        if not (home / "ready").exists():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            make(home)
            (home / "ready").touch()
    return home


def _say(message: str) -> None:
    print(f"mysql_dist: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    print(mysql_dist().version)
