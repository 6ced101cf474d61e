"""A pytest-benchmark JSON as a Markdown table of times and ratios.

    python bench/summarize.py bench/results/bench.json [--baseline torch]

Rows are grouped by (case, net, batch); each row's ratio is the baseline
backend's median time over this row's (so > 1 means faster than the baseline),
measured in the same run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def bench_table(path: Path) -> list[dict]:
    """pytest-benchmark JSON -> rows of (case, net, backend, batch, mean/median/min seconds)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for b in json.loads(path.read_text())["benchmarks"]:
        info, st = b.get("extra_info", {}), b["stats"]
        row = {"name": b["name"], **{k: info.get(k) for k in ("case", "net", "backend", "batch", "T", "K", "width")},
               "mean_s": st["mean"], "median_s": st["median"], "min_s": st["min"], "rounds": st["rounds"]}
        if info.get("flops"):
            row["tflops"] = info["flops"] / st["median"] / 1e12
        rows.append(row)
    return rows


def with_ratios(rows: list[dict], baseline: str = "torch") -> list[dict]:
    """Each row plus ``speedup_vs_<baseline>``: the baseline's median over the row's,
    for the same case, net and batch (None where the run has no baseline row)."""
    base = {(r["case"], r["net"], r["batch"]): r["median_s"] for r in rows if r["backend"] == baseline}
    return [{**r, f"speedup_vs_{baseline}": (base[(r["case"], r["net"], r["batch"])] / r["median_s"]
                                             if (r["case"], r["net"], r["batch"]) in base else None)}
            for r in rows]


def markdown(rows: list[dict], baseline: str = "torch") -> str:
    key = f"speedup_vs_{baseline}"
    lines = [f"| case | net | backend | batch | median ms | TFLOP/s | x {baseline} |", "|---|---|---|---|---|---|---|"]
    for r in with_ratios(rows, baseline):
        tf = f"{r['tflops']:.1f}" if r.get("tflops") else ""
        sp = f"{r[key]:.2f}" if r[key] is not None else ""
        lines.append(f"| {r['case']} | {r['net']} | {r['backend']} | {r['batch']} | {1e3 * r['median_s']:.3f} "
                     f"| {tf} | {sp} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="a --benchmark-json file")
    ap.add_argument("--baseline", default="torch")
    args = ap.parse_args(argv)
    print(markdown(bench_table(Path(args.json)), args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
