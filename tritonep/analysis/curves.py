"""Figures of training runs: learning curves of results JSONs (``tritonep plot``) and
the paper against ours per row of a reproduction (``tritonep reproduce``).

Written as PNG and SVG (``plots.save_figure``; matplotlib optional). In the SVG every
drawn series is a group whose id names it (``run<i>-<metric>`` for curves,
``paper`` / ``ours`` for a reproduction), so the data can be checked or read back.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from .plots import figure, save_figure

# (record key, panel, label, line style) of the learning curves
CURVES = (("train_acc", 0, "train", "--"), ("test_acc", 0, "test", "-"), ("train_loss", 1, "train loss", "-"),
          ("residual_median", 2, "median", "-"), ("residual_max", 2, "max", ":"))


def read_run(path) -> dict:
    """A results JSON of ``tritonep train`` (or ``train.run``); ValueError naming the
    file when it is missing, not JSON, or holds no per-epoch records."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a results JSON ({type(e).__name__}: {e})") from None
    if not isinstance(result, dict) or not isinstance(result.get("epochs"), list) or not all(
            isinstance(e, dict) and "epoch" in e for e in result["epochs"]):
        raise ValueError(f"{path}: not a results JSON of `tritonep train` (no per-epoch records under 'epochs')")
    return result


def run_labels(paths: Sequence, runs: Sequence[dict]) -> list[str]:
    """A legend label per run: "PRESET seed S", or the file's path where that repeats."""
    names = [f"{r.get('preset') or Path(p).stem} seed {(r.get('config') or {}).get('seed', '?')}"
             for p, r in zip(paths, runs)]
    return [n if names.count(n) == 1 else f"{n} ({p})" for n, p in zip(names, paths)]


def _series(run: dict, key: str) -> tuple[list[int], list[float]]:
    pts = [(e["epoch"], e.get(key)) for e in run["epochs"]]
    pts = [(x, float(v)) for x, v in pts if isinstance(v, (int, float)) and math.isfinite(v)]
    return [x for x, _ in pts], [v for _, v in pts]


def plot_runs(runs: Sequence[dict], labels: Sequence[str], path, title: str = "Learning curves") -> list[str]:
    """Three panels over epochs: train (dashed) and test accuracy, training loss, and
    the free phase's residual (median and max over batches, log scale, with the
    threshold). runs: results dicts; labels: one per run. Returns the PNG and SVG paths."""
    if not runs:
        raise ValueError("give at least one run to plot")
    fig, ax = figure(1, 3, (16, 4.6))
    panels = ax[0]
    thresholds = set()
    for i, (run, label) in enumerate(zip(runs, labels)):
        color = f"C{i % 10}"
        for key, panel, what, style in CURVES:
            x, y = _series(run, key)
            if not x or (panel == 2 and min(y) <= 0):  # the log axis shows only positive residuals
                continue
            line, = panels[panel].plot(x, y, style, color=color, marker="o", ms=3, label=f"{label}: {what}")
            line.set_gid(f"run{i}-{key}")
        if run.get("residual_threshold") is not None and _series(run, "residual_median")[0]:
            thresholds.add(float(run["residual_threshold"]))
    for t in sorted(thresholds):
        panels[2].axhline(t, color="k", ls="--", lw=1, label=f"settled below {t:g}")
    panels[0].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    panels[1].set(xlabel="epoch", ylabel="mean cross-entropy (MSE for P-EP)", title="Training loss")
    panels[2].set(xlabel="epoch", ylabel="relative last-step residual", title="Free-phase residual")
    if panels[2].lines:
        panels[2].set_yscale("log")
    else:
        panels[2].text(0.5, 0.5, "no residuals (BP / FA runs)", ha="center", va="center",
                       transform=panels[2].transAxes)
    for a in panels:
        a.xaxis.get_major_locator().set_params(integer=True)
        if a.lines:
            a.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def reproduction_title(targets, n_rows: int) -> str:
    """A title that fits at any number of rows: the tables asked for (``table1``, ...),
    else the count of rows (their names label the axis)."""
    tables = [t for t in targets if t.startswith("table")]
    what = " and ".join(tables) if tables and len(tables) == len(targets) else f"{n_rows} row{'s' * (n_rows != 1)}"
    return f"Paper against ours: {what}"


def plot_reproduction(summary: dict, path) -> list[str]:
    """The paper's test accuracy against ours per row of a ``reproduce`` summary: means
    as points, one standard deviation as bars (ours: best test accuracy over seeds).
    Returns the PNG and SVG paths."""
    rows = [r for r in summary["rows"] if r.get("paper") or r["best_test_acc"]["mean"] is not None]
    if not rows:
        raise ValueError("no row has numbers to plot")
    fig, ax = figure(1, 1, (9, 1.5 + 0.45 * len(rows)))
    a = ax[0, 0]
    ys = list(range(len(rows)))[::-1]  # the first row at the top
    for name, offset, color, get in (
            ("paper", 0.15, "C0", lambda r: ((r["paper"] or {}).get("test"), (r["paper"] or {}).get("std"))),
            ("ours", -0.15, "C1", lambda r: (r["best_test_acc"]["mean"], r["best_test_acc"]["std"]))):
        pts = [(y + offset, *get(r)) for y, r in zip(ys, rows) if get(r)[0] is not None]
        if not pts:
            continue
        bars = a.errorbar([m for _, m, _ in pts], [y for y, _, _ in pts], xerr=[s or 0.0 for _, _, s in pts],
                          fmt="o", color=color, capsize=3, label="paper (test, 5 runs)" if name == "paper"
                          else "ours (best test, mean ± std over seeds)")
        bars.lines[0].set_gid(name)
    a.set_yticks(ys, [f"{r['key']} ({r['dataset']})" for r in rows])  # the rows are named here, on the axis
    a.set(xlabel="test accuracy (%)", title=reproduction_title(summary["targets"], len(rows)))
    a.legend(fontsize=8)
    return save_figure(fig, path)
