"""The fault suite's figures as a Markdown table (and, where matplotlib is installed, one PNG per
fault of pushes and verdicts per second across it), from the JSON lines the cases append to
$MDMPUSH_FAULTS_RESULTS.

Usage: ``python -m tests.faults.report RESULTS.jsonl [MORE.jsonl ...] [--png DIR]``; exits 1
when a case missed a bar (something lost or doubled, a poison record not dead-lettered, or
duplicate pushes above 1 %). Given several files, one per run of the suite, it prints one row per
case with each run's figures and whether the case met the bar in every run (issue 11: five).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from tests.faults.harness import DUPLICATE_BAR

#: Runs of the suite each case must meet its bars in (issue 11).
RUNS_NEEDED = 5


def _recovery(r: dict[str, Any]) -> str:
    return "never" if r["recovery_s"] == float("inf") else f"{r['recovery_s']:.1f} s"


def _restarts(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} x{n}" for k, n in sorted(r["restarts"].items())) or "none"


def _set_aside(r: dict[str, Any]) -> str:
    """Poison records dead-lettered of those expected (record faults only)."""
    expected = r.get("poison", 0)
    return f"{expected - len(r.get('poison_lost', []))}/{expected}" if expected else "-"


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| fault | targets | lost | doubled verdicts | duplicate pushes (at the simulator) "
            "| recovery | unplanned restarts | poison dead-lettered | code | verdict |",
            "|---|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for r in results:
        rows.append(f"| {r['name']} | {r['targets']:,} | {r['lost']} | {r['doubled']} | "
                    f"{r['duplicate_pushes']} ({r['duplicate_share']:.2%}) | {_recovery(r)} | "
                    f"{_restarts(r)} | {_set_aside(r)} | {r.get('commit', '?')} | "
                    f"{'met' if r['met'] else 'MISSED'} |")
    return "\n".join(rows)


def runs_table(runs: list[list[dict[str, Any]]]) -> str:
    """One row per case, one column per run (lost, duplicates, recovery, restarts, code), and
    whether the case met its bars in every run, RUNS_NEEDED of them."""
    names = list(dict.fromkeys(r["name"] for run in runs for r in run))
    head = " | ".join(f"run {i}" for i in range(1, len(runs) + 1))
    rows = [f"| fault | {head} | bar in every run |",
            "|---|" + "---|" * len(runs) + "---|"]
    for name in names:
        cells, met = [], 0
        for run in runs:
            r = next((r for r in run if r["name"] == name), None)
            if r is None:
                cells.append("not run")
                continue
            met += bool(r["met"])
            restarts = "" if not r["restarts"] else f", restarts {_restarts(r)}"
            poison = "" if not r.get("poison") else f", poison {_set_aside(r)}"
            cells.append(f"lost {r['lost']}, dup {r['duplicate_pushes']} "
                         f"({r['duplicate_share']:.2%}), rec {_recovery(r)}{restarts}{poison}, "
                         f"{r.get('commit', '?')}: {'MET' if r['met'] else 'MISSED'}")
        ran = sum(1 for c in cells if c != "not run")
        if met < ran:
            verdict = f"MISSED ({met} of {ran} runs met)"
        elif ran < RUNS_NEEDED:
            verdict = f"not judged: met in {met} of {ran} runs, {RUNS_NEEDED} needed"
        else:
            verdict = f"MET ({met} of {ran})"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(rows)


def plot(result: dict[str, Any], directory: Path) -> Path | None:
    """Pushes and verdicts per second across the run, the fault shaded; None without
    matplotlib (the `bench` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    samples = result["timeline"]
    times = [s["t"] for s in samples]

    def rate(key: str, window: int = 10) -> list[float]:
        """Per second over the last `window` samples (about 1 s: 0.1 s ones are too noisy)."""
        out = []
        for i, b in enumerate(samples):
            a = samples[max(0, i - window)]
            dt = b["t"] - a["t"]
            out.append((b[key] - a[key]) / dt if dt > 0 else 0.0)
        return out

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(times, rate("arrivals"), label="pushes/s at the simulator", linewidth=0.8)
    ax.plot(times, rate("verdicts"), label="verdicts/s", linewidth=0.8)
    ax.axvspan(result["fault_at_s"], max(result["fault_end_s"], result["fault_at_s"] + 0.2),
               color="red", alpha=0.15, label="fault")
    ax.set_xlabel("s since the first request")
    ax.set_title(result["name"])
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (re.sub(r"[^a-z0-9]+", "-", result["name"].lower()).strip("-") + ".png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="one JSON-lines file per run")
    parser.add_argument("--png", type=Path, help="write one plot per fault into this directory "
                        "(of the last run given)")
    args = parser.parse_args()
    runs = [[json.loads(line) for line in path.read_text().splitlines() if line]
            for path in args.results]
    results = runs[-1]
    for i, run in enumerate(runs, 1):
        if len(runs) > 1:
            print(f"\nrun {i}: {args.results[i - 1]}")
        print(table(run))
    if len(runs) > 1:
        print(f"\nevery run ({len(runs)}):")
        print(runs_table(runs))
    print(f"\nbars: 0 lost, 0 doubled, every poison record dead-lettered, no service exiting by "
          f"itself (but while Kafka is gone), duplicate pushes <= {DUPLICATE_BAR:.0%} of the "
          "targets")
    if args.png:
        for r in results:
            path = plot(r, args.png)
            if path is not None:
                print(f"plot: {path}")
    return 0 if results and all(r["met"] for run in runs for r in run) else 1


if __name__ == "__main__":
    sys.exit(main())
