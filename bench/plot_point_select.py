"""Plot point_select.py results by the mysqlgate commit they measured.

Usage:  python bench/plot_point_select.py [RESULT.json ...] [--out bench/point_select.png]
        (default: every point_select result in bench/results/)

One column per commit (in the order the commits were made), one dot per round: the
throughput ratio through/direct (left), and mysqlgate's CPU per query of each run
(right); grey crosses are HAProxy's rounds in runs made with `--reference haproxy`.
Runs of the working tree with local edits are left out unless --with-edits: they
measured no commit. Needs matplotlib (pip install matplotlib), which mysqlgate
itself does not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import REPO_ROOT, RESULTS_DIR


def load(paths: list[Path], with_edits: bool) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Results by (commit, ps mode)."""
    by_commit: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for path in paths:
        result = json.loads(path.read_text())
        settings = result.get("settings", {})
        # point_select.py names its --ps-mode auto runs "sysbench-oltp_point_select-ps-auto".
        if result.get("benchmark", "point_select") not in (
                "point_select", "sysbench-oltp_point_select-ps-auto") or \
                settings.get("workload", "oltp_point_select") != "oltp_point_select" or \
                settings.get("self_test") or "summary" not in result:
            continue
        source = result.get("environment", {}).get("gate_source", {})
        commit = source.get("git_commit")
        if not commit or (source.get("local_edits") and not with_edits):
            continue
        by_commit[(commit, settings.get("ps_mode", "disable"))].append(result)
    return by_commit


def commit_order(commits: set[str]) -> list[str]:
    """Oldest first, as git orders them; commits git does not know go last."""
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-list", "--reverse", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.split()
    rank = {commit: i for i, commit in enumerate(listed)}
    return sorted(commits, key=lambda c: rank.get(c, len(rank)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "point_select.png")
    parser.add_argument("--with-edits", action="store_true",
                        help="include runs of a working tree with local edits")
    ns = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = ns.results or sorted(RESULTS_DIR.glob("*.json"))
    by_commit = load(paths, ns.with_edits)
    if not by_commit:
        raise SystemExit("no point_select results with a commit found")
    commits = commit_order({commit for commit, _ in by_commit})
    fig, (ratio_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    styles = {"disable": ("tab:blue", "o", -0.12), "auto": ("tab:orange", "s", 0.12)}
    for (commit, mode), results in by_commit.items():
        color, marker, shift = styles.get(mode, ("tab:gray", "x", 0.0))
        x = commits.index(commit) + shift
        ratios = [r for result in results for r in result["summary"]["qps_ratios"]]
        cpus = [result["summary"]["gate_cpu_us_per_query"] for result in results
                if result["summary"].get("gate_cpu_us_per_query")]
        label = f"--db-ps-mode={mode}"
        ratio_ax.scatter([x] * len(ratios), ratios, color=color, marker=marker, alpha=0.7,
                         label=label)
        cpu_ax.scatter([x] * len(cpus), cpus, color=color, marker=marker, alpha=0.7,
                       label=label)
        # --reference haproxy: the C relay's rounds of the same run, the floor on this machine.
        references = [result["summary"]["reference"] for result in results
                      if result["summary"].get("reference")]
        ref_ratios = [r for reference in references for r in reference["qps_ratios"]]
        ref_cpus = [reference["cpu_us_per_query"] for reference in references]
        ratio_ax.scatter([x] * len(ref_ratios), ref_ratios, color="tab:gray", marker="x",
                         label="HAProxy, same run (C relay, no pool)")
        cpu_ax.scatter([x] * len(ref_cpus), ref_cpus, color="tab:gray", marker="x",
                       label="HAProxy, same run (C relay, no pool)")
    ratio_ax.axhline(0.6, color="tab:green", linestyle="--", linewidth=1)
    ratio_ax.text(-0.4, 0.61, "issue 8 target", color="tab:green", fontsize=8)
    ratio_ax.set_ylim(0, 1)
    ratio_ax.set_title("throughput through mysqlgate / direct (per round)")
    cpu_ax.set_ylim(bottom=0)
    cpu_ax.set_title("mysqlgate CPU per query, µs (per run)")
    for ax in (ratio_ax, cpu_ax):
        ax.set_xticks(range(len(commits)), [c[:7] for c in commits], rotation=30)
        ax.set_xlabel("mysqlgate commit")
        ax.grid(axis="y", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle("sysbench oltp_point_select, 16 threads, pool of 4 (2-core VM)")
    fig.tight_layout()
    fig.savefig(ns.out, dpi=100)
    print(f"wrote {ns.out} ({len(commits)} commits, {sum(map(len, by_commit.values()))} runs)")


if __name__ == "__main__":
    main()
