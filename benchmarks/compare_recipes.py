"""One table for several end-to-end benchmark runs (``bench_e2e.py --out DIR``), e.g. the
RGB recipe beside the RGB-D recipe, or one recipe with several training seeds:

    python benchmarks/compare_recipes.py runs/bench runs/bench-rgbd runs/bench-rgbd-seed1

Per run, group and method: full-image PSNR / SSIM / LPIPS, motion-region PSNR, R (motion
region) and R_full (full image) = (method - static) / (oracle - static) of the group means,
the joint from the prediction (median axis error, median relative amount error, joint type
right) and the zero-drag control. Every figure is on the ``test`` split (held-out objects).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partrm.evaluate import METHODS, SampleRow  # noqa: E402
from partrm.metrics import recovery_ratio  # noqa: E402


def _fmt(v, spec=".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def _median(rows: list[SampleRow], column: str):
    vals = [v for v in (r.value(column) for r in rows) if v is not None]
    return statistics.median(vals) if vals else None


def rows_of(run: Path) -> tuple[str, dict, list[SampleRow]]:
    results = json.loads((run / "eval-test" / "results.json").read_text())
    report = (run / "report.md").read_text().splitlines()[0] if (run / "report.md").is_file() else str(run)
    return report, results["groups"], [SampleRow.from_record(r) for r in results["samples"]]


def table(runs: list[Path]) -> str:
    lines = ["| run | group | method | pairs | PSNR | SSIM | LPIPS | motion PSNR | R | R_full | axis err ° (median) "
             "| amount err (median) | type right |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        _, groups, samples = rows_of(run)
        for group, entry in groups.items():
            for m in METHODS:
                e = entry.get(m)
                if not e or not e.get("pairs"):
                    continue
                rows = [r for r in samples if r.group == group and r.method == m]
                r_full = e.get("R_full")
                if r_full is None and "static" in entry and "oracle" in entry:
                    r_full = recovery_ratio(e["psnr"], entry["static"]["psnr"], entry["oracle"]["psnr"])
                type_right = [r.value("type_correct") for r in rows if r.value("type_correct") is not None]
                lines.append(f"| {run.name} | {group} | {m} | {e['pairs']} | {_fmt(e['psnr'])} | {_fmt(e['ssim'], '.4f')} "
                             f"| {_fmt(e.get('lpips'), '.4f')} | {_fmt(e['psnr_motion'])} | {_fmt(e.get('R'))} | {_fmt(r_full)} "
                             f"| {_fmt(_median(rows, 'axis_err_deg'), '.1f')} | {_fmt(_median(rows, 'amount_err_rel'))} "
                             f"| {_fmt(100 * sum(type_right) / len(type_right) if type_right else None, '.0f')} % |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench_e2e.py output folders (each with eval-test/results.json)")
    args = parser.parse_args()
    for run in args.runs:
        print(f"{run.name}: {rows_of(run)[0]}")
    print()
    print(table(args.runs))


if __name__ == "__main__":
    main()
