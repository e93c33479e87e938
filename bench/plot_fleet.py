"""Plot a bench/fleet.py result: each gate's connections over time, the account's
total on the server, and the person's logins, one panel per server.

Usage:  python bench/plot_fleet.py RESULT.json [RESULT.json ...] [--out bench/fleet.png]

Needs matplotlib (pip install matplotlib), which mysqlgate itself does not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

COLOURS = ("tab:blue", "tab:orange", "tab:green")


def panel(axis: Any, result: dict[str, Any], before: bool) -> None:
    timeline = result["before"]["timeline"] if before else result["timeline"]
    shares = timeline["shares"]
    times = [at for at, _ in shares]
    bottom = [0.0] * len(shares)
    for gate in range(3):
        held = [float(values[gate] or 0) for _, values in shares]
        axis.fill_between(times, bottom, [b + h for b, h in zip(bottom, held, strict=True)],
                          step="post", color=COLOURS[gate], alpha=0.55,
                          label=f"gate {gate}'s connections")
        bottom = [b + h for b, h in zip(bottom, held, strict=True)]
    samples = timeline["samples"]
    axis.step([s[0] for s in samples], [s[2] for s in samples], where="post",
              color="black", linewidth=0.8, label="the account's on the server "
              "(person aside)")
    axis.axhline(6, color="red", linestyle=":", linewidth=1, label="max_user_connections")
    axis.axhline(5, color="grey", linestyle="--", linewidth=0.8,
                 label="limit less pool.reserve")
    failed = [at for at, ok in timeline["logins"] if not ok]
    worked = [at for at, ok in timeline["logins"] if ok]
    axis.plot(worked, [6.4] * len(worked), "|", color="green", label="person's login")
    if failed:
        axis.plot(failed, [6.4] * len(failed), "x", color="red", label="login refused")
    for name, start, _end in timeline["phases"]:
        axis.axvline(start, color="grey", linewidth=0.5)
        axis.text(start + 0.2, 6.75, name, fontsize=7, va="bottom")
    axis.set_ylim(0, 7.3)
    axis.set_ylabel("connections")
    axis.set_title(f"{result['server']}: before (fleet.mode off)" if before else
                   f"{result['server']}: three mysqlgates sharing, 30 busy clients each, one "
                   "account limited to 6", fontsize=9)


def main() -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "fleet.png")
    args = parser.parse_args()
    results = [json.loads(path.read_text()) for path in args.results]
    figure, axes = plt.subplots(len(results), 2, figsize=(15, 3.8 * len(results)),
                                squeeze=False, gridspec_kw={"width_ratios": [1, 3]})
    for row, result in zip(axes, results, strict=True):
        panel(row[0], result, before=True)
        panel(row[1], result, before=False)
    for axis in axes[-1]:
        axis.set_xlabel("seconds")
    axes[0, 1].legend(loc="lower left", fontsize=7, ncol=4)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
