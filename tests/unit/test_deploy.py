"""deploy/ and the README's install steps agree with each other and with the code (issue
15): the unit runs what the steps install and passes `systemd-analyze verify`, a
configuration error does not restart it, the always-on recipe installs from a checkout,
the compose sidecar's logs are bounded, and the example config's numbers are the code's.

The steps themselves are run, as written, on a fresh Debian root by
tests/integration/test_install.py (opt-in: it needs debootstrap and the network)."""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness.docs import code_blocks, commands

from mysqlgate import cli
from mysqlgate.accounts import pool_settings
from mysqlgate.config import load

REPO_ROOT = Path(__file__).resolve().parents[2]


# Read when a test runs, not at collection: a copy of tests/ without the docs (the
# mutation runner's snapshot) must still collect.
@functools.cache
def text(name: str) -> str:
    return (REPO_ROOT / name).read_text()


def unit_value(key: str) -> str:
    (value,) = re.findall(rf"(?m)^{key}=(.*)$", text("deploy/mysqlgate.service"))
    return value


# -- the Quick start -----------------------------------------------------------------


def test_quick_start_installs_into_a_virtual_environment() -> None:
    """Plain `pip install .` fails on Debian 12 (PEP 668) and plain Debian has no pip."""
    (block,) = code_blocks(text("README.md"), "## Quick start")[:1]
    steps = commands(block)
    assert steps[0][:3] == ["python3", "-m", "venv"], steps
    venv = steps[0][3]
    assert steps[1] == [f"{venv}/bin/pip", "install", "."], steps
    assert steps[2][0] == f"{venv}/bin/mysqlgate", steps
    assert all(step[0] not in ("pip", "pip3") for step in steps), steps


# -- the systemd unit ----------------------------------------------------------------


def service_steps() -> list[list[str]]:
    (block,) = code_blocks(text("README.md"), "### As a systemd service")[:1]
    return commands(block)


def test_unit_runs_what_the_install_steps_create() -> None:
    steps = service_steps()
    venvs = [step[3] for step in steps if step[:3] == ["python3", "-m", "venv"]
             and step[3].startswith("/")]
    assert venvs == ["/opt/mysqlgate"], steps
    program = shlex.split(unit_value("ExecStart"))[0]
    assert program == f"{venvs[0]}/bin/mysqlgate"
    # The venv gets mysqlgate itself, from the wheel the first step builds.
    assert [venvs[0] + "/bin/pip", "install", "dist/mysqlgate-*.whl"] in steps, steps
    assert ["install", "-m", "0644", "deploy/mysqlgate.service", "/etc/systemd/system/"] in steps
    # The unit's own comment gives the same steps.
    for step in steps:
        assert " ".join(step) in " ".join(text("deploy/mysqlgate.service").split()), step


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` of the unit as installed by the README's steps: in a root
    holding the unit in /etc/systemd/system, the system's own units, /bin/kill (its
    ExecReload) and, where the steps put it, mysqlgate's entry point (this test venv's
    copy of the console script pip makes; that the steps really put one there on a fresh
    Debian is test_install's job). Any warning fails it too: verify exits 0 on unknown
    keys."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, ("the test needs systemd-analyze (Debian package systemd; "
                                 "scripts/test.sh installs it)")
    units = next((path for path in (Path("/usr/lib/systemd/system"),
                                    Path("/lib/systemd/system")) if path.is_dir()), None)
    assert units is not None, "no systemd units on this machine (Debian package systemd)"
    root = tmp_path / "root"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    kill = shutil.which("kill", path="/usr/bin:/bin")
    assert kill is not None
    shutil.copy2(kill, root / "usr/bin/kill")
    (root / "bin").symlink_to("usr/bin")
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "deploy/mysqlgate.service", root / "etc/systemd/system/")
    program = root / shlex.split(unit_value("ExecStart"))[0].lstrip("/")
    program.parent.mkdir(parents=True)
    entry_point = Path(sys.executable).parent / "mysqlgate"
    assert entry_point.is_file(), f"no entry point {entry_point}: mysqlgate is not installed"
    shutil.copy2(entry_point, program)

    done = subprocess.run([analyze, "verify", f"--root={root}", "mysqlgate.service"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

    # The check is real: without the program, verify says what the issue saw.
    program.unlink()
    done = subprocess.run([analyze, "verify", f"--root={root}", "mysqlgate.service"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "/opt/mysqlgate/bin/mysqlgate is not executable" in done.stderr, done.stderr


def test_a_configuration_error_does_not_restart_the_unit(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert unit_value("Restart") == "on-failure"
    assert unit_value("RestartPreventExitStatus").split() == ["2"]
    assert cli.main(["--pool-size", "lots", "check-config"]) == 2  # what the unit sees
    assert "configuration error" in capsys.readouterr().err


def test_readme_says_what_each_exit_status_means() -> None:
    readme = text("README.md")
    start = readme.index("### Exit status")
    table = readme[start:readme.index("\n\n", readme.index("| 0 |", start))]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if re.match(r"\| \d ", line)}
    assert set(rows) == {"0", "1", "2"}
    assert "SIGTERM" in rows["0"] and "Ctrl-C" in rows["0"]
    assert "restarted" in rows["1"]
    assert "configuration" in rows["2"] and "RestartPreventExitStatus=2" in rows["2"]


# -- the always-on recipe and the sidecar --------------------------------------------


def test_always_on_recipe_installs_from_a_checkout() -> None:
    """No `pip install mysqlgate`: the name is not on PyPI."""
    blocks = code_blocks(text("deploy/always-on-task.md"))
    assert not any(re.search(r"pip[\d.]* install (--user )?mysqlgate\b", block)
                   for block in blocks), blocks
    install, _, wrapper = blocks[:3]
    steps = commands(install)
    assert steps[0][:3] == ["python3.11", "-m", "venv"], steps
    venv = steps[0][3]
    assert steps[1] == [f"{venv}/bin/pip", "install", "~/mysqlgate"], steps
    assert f"exec {venv}/bin/mysqlgate " in wrapper


def test_compose_sidecar_bounds_its_logs() -> None:
    compose = text("deploy/docker-compose.sidecar.yml")
    service = compose[compose.index("\n  mysqlgate:\n"):compose.index("\n  app:\n")]
    logging = service[service.index("\n    logging:\n"):]
    assert re.search(r"\n {6}driver: json-file\n", logging)
    assert re.search(r'\n {8}max-size: "\d+m"\n', logging)
    assert re.search(r'\n {8}max-file: "\d+"\n', logging)


# -- numbers the docs repeat --------------------------------------------------------


def test_idle_timeout_of_the_usual_server_is_the_same_everywhere() -> None:
    class Facts:
        wait_timeout = 300.0
        max_user_connections = 0
        max_connections = 151

    settings = pool_settings(load(None, {}, {}), Facts())  # type: ignore[arg-type]
    assert settings.idle_timeout == 270
    example = text("deploy/mysqlgate.toml.example")
    assert "270 s for the\n# usual 300 s" in example
    assert "280" not in example
    assert "(270 s for 300 s)" in text("README.md")
