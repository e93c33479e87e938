"""The fault soak (bench/soak.py, issue 16 part 4) in its one-minute form, per server.

The soak starts a server of its own (it restarts it, freezes it with SIGSTOP and takes
its account's connections), mysqlgate in front of it and ~34 client threads, injects
every kind of fault at least once, and checks its ledger at the end. It runs as a
subprocess, as a user runs it; its JSON result says what it saw, and its exit status
whether every check held. About 80 s per flavour.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOAK = REPO_ROOT / "bench" / "soak.py"
FAULT_KINDS = ("kill", "restart", "freeze", "vanish", "outsider")

@pytest.mark.timeout(300)
def test_one_minute_soak(flavour: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "1", "--server", flavour,
         "--result", str(tmp_path / "soak.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=280, check=False,
    )
    output = f"{run.stdout}\n--- stderr (last lines) ---\n" + "\n".join(
        run.stderr.splitlines()[-40:])
    result_path = tmp_path / f"soak-{flavour}.json"
    assert result_path.exists(), f"no result (exit {run.returncode}):\n{output}"
    result = json.loads(result_path.read_text())

    # The run did what a soak must: load, and every kind of fault at least once.
    assert result["writes"]["acknowledged"] >= 200, output
    assert set(result["units"]) == {"orm", "prepared", "request", "large", "idle"}, output
    assert all(result["faults"][kind] >= 1 for kind in FAULT_KINDS), result["faults"]

    # What it checked (each also among `failures`; asserted one by one for a clear message).
    writes = result["writes"]
    assert (writes["missing"], writes["doubled"], writes["phantom"]) == (0, 0, 0), output
    assert writes["half_transactions"] == 0, output
    assert result["state"]["crossings"] == [], output
    assert result["state"]["wrong"] == [], output
    assert result["errors_outside"] == 0, output
    assert result["resources"]["rss_growth"] < 0.10, output

    assert result["failures"] == [], output
    assert run.returncode == 0, output
