"""cli.py: what a newcomer reads first, --help and the messages of a wrong command line
(issue 15), and a reader that stops early."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mysqlgate import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def _help_entries(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """--help's text per flag (continuation lines joined), as wide as a terminal might be."""
    monkeypatch.setenv("COLUMNS", "200")
    text = cli.build_parser().format_help()
    assert "(default: None)" not in text
    entries: dict[str, str] = {}
    flag = ""
    for line in text.splitlines():
        if line.startswith("  --"):
            flag = line.split()[0]
            entries[flag] = " ".join(line.split()[2:])
        elif flag and line.startswith("      "):
            entries[flag] += " " + line.strip()
        else:
            flag = ""
    return entries


def test_help_shows_defaults_as_the_readme_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = _help_entries(monkeypatch)
    assert entries["--pool-size"].endswith("(default: auto)"), entries["--pool-size"]
    assert entries["--pool-idle-timeout"].endswith("(default: auto)")
    assert entries["--pool-idle-transaction-timeout"].endswith("(default: auto)")
    assert entries["--metrics-listen"].endswith("(default: off)")
    assert entries["--pool-result-buffer"].endswith("(default: 16MiB)")
    assert entries["--limits-max-packet"].endswith("(default: 1GiB)")
    assert entries["--pool-queue-timeout"].endswith("(default: 10)")
    assert "90% of @@wait_timeout (270 s for 300 s)" in entries["--pool-idle-timeout"]
    # A setting with no default says nothing rather than "None".
    assert "default" not in entries["--upstream-password-file"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pool-size", "lots"],
         "mysqlgate: configuration error: pool.size (from --pool-size): 'lots' is not a whole "
         "number; accepted: a whole number of connections, 1 or more, or auto\n"),
        (["--upstream-ssl-mode", "maybe"],
         "upstream.ssl_mode (from --upstream-ssl-mode): unknown value 'maybe'; accepted: "
         "disabled, preferred, required, verify_ca, verify_identity\n"),
    ],
)
def test_a_wrong_setting_exits_2_saying_what_is_accepted(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "check-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith(message), captured.err
    assert "Traceback" not in captured.err


def test_a_reader_that_stops_early_gets_no_traceback() -> None:
    """`mysqlgate ... | head`: the reader closes the pipe before mysqlgate has written all.
    The read end is closed before mysqlgate starts, so its first write meets EPIPE (here the
    answer of `health`, finding no metrics listener: exit status 1 either way)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        try:
            done = subprocess.run(
                [sys.executable, "-m", "mysqlgate", "health", "--metrics", f"127.0.0.1:{port}"],
                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60, cwd=REPO_ROOT)
        finally:
            os.close(write_end)
    assert done.returncode == 1
    assert done.stderr == ""
