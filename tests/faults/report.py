"""The fault suite's figures as a Markdown table (and, where matplotlib is installed, one PNG per
fault of pushes and verdicts per second across it), from the JSON lines the cases append to
$MDMPUSH_FAULTS_RESULTS.

Usage: ``python -m tests.faults.report RESULTS.jsonl [--png DIR]``; exits 1 when a case missed
a bar (something lost or doubled, or duplicate pushes above 1 %).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from tests.faults.harness import DUPLICATE_BAR


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| fault | targets | lost | doubled verdicts | duplicate pushes (at the simulator) "
            "| recovery | unplanned restarts | verdict |",
            "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        restarts = ", ".join(f"{k} x{n}" for k, n in sorted(r["restarts"].items())) or "none"
        recovery = "never" if r["recovery_s"] == float("inf") else f"{r['recovery_s']:.1f} s"
        rows.append(f"| {r['name']} | {r['targets']:,} | {r['lost']} | {r['doubled']} | "
                    f"{r['duplicate_pushes']} ({r['duplicate_share']:.2%}) | {recovery} | "
                    f"{restarts} | {'met' if r['met'] else 'MISSED'} |")
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
    parser.add_argument("results", type=Path)
    parser.add_argument("--png", type=Path, help="write one plot per fault into this directory")
    args = parser.parse_args()
    results = [json.loads(line) for line in args.results.read_text().splitlines() if line]
    print(table(results))
    print(f"\nbars: 0 lost, 0 doubled, duplicate pushes <= {DUPLICATE_BAR:.0%} of the targets")
    if args.png:
        for r in results:
            path = plot(r, args.png)
            if path is not None:
                print(f"plot: {path}")
    return 0 if results and all(r["met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
