"""Rerun the paper's tables: rows over seeds, summaries, Markdown and JSON reports.

``reproduce(targets, opts, out_dir)`` runs every row (``tritonep.paper``) with
each seed through ``tritonep.train.run`` and writes under ``out_dir``:

* ``ROW/seedS.json``: one run's results (the ``train.run`` JSON);
* ``NAME.md``: a Markdown table, the paper's mean ± std beside ours (mean ± sample
  std over seeds of the best test accuracy, the final one, training time per run,
  device);
* ``NAME.json``: the same summary, machine-readable, with every run's numbers;
* ``NAME.png`` and ``NAME.svg``: the paper's test accuracy against ours per row
  (mean and std; needs matplotlib, else skipped with a note).

The command line is ``tritonep reproduce`` (``tritonep.cli.reproduce``).
"""
from __future__ import annotations

import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Optional

from . import data as data_mod
from . import presets
from . import train
from .analysis.curves import plot_reproduction
from .paper import Paper, Row, paper_cell, resolve
from .runinfo import versions


def row_config(row: Row, seed: int, opts: dict) -> dict:
    """The config of one run: the preset, the row's overrides, then the options
    (epochs, limits, device, backend) and the seed."""
    cfg = presets.get(row.preset)
    cfg.update(row.overrides)
    cfg["preset"] = row.preset
    for key in ("epochs", "limit_train", "limit_test", "device", "backend"):
        if opts.get(key) is not None:
            cfg[key] = opts[key]
    cfg["seed"] = seed
    return cfg


def comparable(cfg: dict) -> dict:
    """A config as it reads back from JSON, without the keys that do not change results."""
    c = presets.upgrade(json.loads(json.dumps(cfg)))
    for key in [k for k, v in c.items() if v is None]:  # a key added since (None) reads as absent
        del c[key]
    for key in ("device", "backend"):
        c.pop(key, None)
    return c


def stats(values: list[float]) -> dict:
    """mean, sample std (None below 2 values) and count."""
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def fmt_pm(s: dict, digits: int = 2, unit: str = "") -> str:
    """"98.12 ± 0.05" (mean ± sample std) from ``stats``; "—" without values."""
    if s["mean"] is None:
        return "—"
    std = "n/a" if s["std"] is None else f"{s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {std}{unit}"


def setting(cfg: dict) -> str:
    """A config in the paper's "epochs/batch-T/K" notation (T/K = 1/1 for BP and FA),
    then for EP the variant where it is not Algorithm 1 (e.g. "ramp, frozen error,
    nudged readout error")."""
    tk = "1/1" if cfg["method"] != "ep" else f"{cfg['T']}/{cfg['K']}"
    out = f"{cfg['epochs']}/{cfg['batch_size']}-{tk}"
    if cfg["method"] == "ep":
        tags = [t for t, on in (("ramp", cfg.get("nudge_schedule") == "ramp"),
                                ("frozen error", cfg.get("error") == "frozen"),
                                ("nudged readout error", cfg.get("readout_error") == "nudged")) if on]
        out += f" ({', '.join(tags)})" if tags else ""
    return out


def summarise_row(row: Row, runs: list[dict], opts: dict) -> dict:
    """Aggregate one row's runs (dicts with ``seed, json, status`` and, when run, its results)."""
    done = [r for r in runs if r["status"] in ("done", "reused")]
    ours = setting(row_config(row, opts["first_seed"], opts)) if row.preset else None
    out = {"key": row.key, "table": row.table, "group": row.group, "approach": row.approach,
           "dataset": row.dataset, "preset": row.preset, "overrides": row.overrides, "note": row.note,
           "setting": ours,
           "paper": None if row.paper is None else vars(row.paper).copy(), "runs": runs,
           "best_test_acc": stats([r["best_test_acc"] for r in done]),
           "final_test_acc": stats([r["final_test_acc"] for r in done]),
           "train_seconds": stats([r["train_seconds"] for r in done]),
           "devices": sorted({r["device"] for r in done})}
    if row.preset is None:
        out["status"] = "not implemented"
    elif all(r["status"] == "not run" for r in runs):
        out["status"] = "not run"
    elif len(done) == len(runs):
        out["status"] = "done"
    else:
        bad = [f"seed {r['seed']}: {r['status']}" for r in runs if r not in done]
        out["status"] = "partial (" + "; ".join(bad) + ")"
    return out


COLUMNS = ("Row", "Paper setting", "Paper test % (train)", "Our setting", "Ours best test %", "Ours final test %",
           "EP - BP: ours / paper", "Seeds", "Train / test images", "Time per run (s)", "Paper time", "Device",
           "Notes")


def gap_to_bp(r: dict, by_key: dict) -> Optional[dict]:
    """An EP row's best test accuracy minus its BP twin's (``KEY-bp``, same table),
    ours and the paper's: ``{"ours", "paper"}`` (a value None where a side is missing),
    or None without a twin in ``by_key``. On a data set copy that differs from the
    paper's (the lossy CIFAR-10), this gap is what compares."""
    bp = by_key.get(f"{r['key']}-bp")
    if bp is None or r["key"].endswith("-bp"):
        return None
    ours = (r["best_test_acc"]["mean"] - bp["best_test_acc"]["mean"]
            if r["best_test_acc"]["mean"] is not None and bp["best_test_acc"]["mean"] is not None else None)
    paper = (r["paper"]["test"] - bp["paper"]["test"] if r.get("paper") and bp.get("paper") else None)
    return {"ours": ours, "paper": paper}


def fmt_gap(g: Optional[dict]) -> str:
    if g is None:
        return ""
    return " / ".join("—" if v is None else f"{v:+.2f}" for v in (g["ours"], g["paper"]))


def markdown(summary: dict) -> str:
    """The Markdown report: a header naming the command and machine, then one table
    per paper table (columns ``COLUMNS``)."""
    o = summary["options"]
    lines = [f"# Reproduction: {' '.join(summary['targets'])}", "",
             f"Command: `{summary['command']}`  ",
             f"Date: {summary['date']}; tritonep {summary['versions']['tritonep']}, torch "
             f"{summary['versions']['torch']}; seeds {o['first_seed']}..{o['first_seed'] + o['seeds'] - 1}.  ",
             "Ours: mean ± sample std over seeds of each run's best test accuracy (over epochs) and of its "
             "final one; time per run is training time only (no evaluation). Paper: mean ± std of 5 runs, "
             "training accuracy in brackets (Liu & Chen, arXiv 2508.11659 v2, Tables 1-2). Settings read "
             "epochs/batch-T/K as in the paper's Table 1 (?: not given in the table; BP/FA: 1/1); paper times are "
             "wall clock H:MM:SS on the authors' GPU (an RTX A5000 for 2HL), `-`: seconds not given."]
    if o["quick"] or o["epochs"] or o["limit_train"] or o["limit_test"]:
        lines.append(f"**Not the paper's budget**: epochs {o['epochs'] or 'as preset'}, training images "
                     f"{o['limit_train'] or 'all'}, test images {o['limit_test'] or 'all'}"
                     f"{' (--quick smoke test)' if o['quick'] else ''}; accuracies are not comparable to the paper's.")
    order = {"table1": 0, "table2": 1, "-": 2}
    by_key = {r["key"]: r for r in summary["rows"]}
    for table in sorted(dict.fromkeys(r["table"] for r in summary["rows"]), key=order.get):
        title = {"table1": "Table 1 (MNIST)", "table2": "Table 2", "-": "Other presets"}[table]
        lines += ["", f"## {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in (r for r in summary["rows"] if r["table"] == table):
            p = r["paper"]
            runs = [x for x in r["runs"] if x["status"] in ("done", "reused")]
            notes = "; ".join(x for x in (r["note"], "" if r["status"] in ("done", "not implemented")
                                          else r["status"]) if x)
            ds = {"mnist": "MNIST", "cifar10": "CIFAR-10"}.get(r["dataset"], r["dataset"])
            cells = [f"{ds} {r['group']} · {r['approach']} (`{r['key']}`)",
                     (p or {}).get("setting") or "—",
                     paper_cell(None if p is None else Paper(**p)),
                     r["setting"] or "—",
                     fmt_pm(r["best_test_acc"]), fmt_pm(r["final_test_acc"]),
                     fmt_gap(gap_to_bp(r, by_key)),
                     str(len(runs)) if r["preset"] else "—",
                     ", ".join(sorted({f"{x['train_size']} / {x['test_size']}" for x in runs})) or "—",
                     fmt_pm(r["train_seconds"], 1),
                     (p or {}).get("time") or "—",
                     ", ".join(r["devices"]) or "—",
                     notes or ""]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _one_run(row: Row, seed: int, opts: dict, out_dir: Path, *, resume_existing: bool, datasets: dict,
             data_dir, download: bool, progress: bool, report_only: bool = False) -> dict:
    """Run (or reuse) one seed of a row; returns its entry for the summary. report_only:
    run nothing; a run not finished on disk is reported as unfinished (with its epochs
    so far) or not run."""
    cfg = row_config(row, seed, opts)
    path = out_dir / row.key / f"seed{seed}.json"
    ckpt = path.with_suffix(".ckpt")
    entry = {"seed": seed, "json": str(path)}
    resume = None
    if resume_existing and path.exists():
        saved = json.loads(path.read_text())
        if comparable(saved["config"]) != comparable(cfg):
            a, b = comparable(saved["config"]), comparable(cfg)
            diff = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
            raise ValueError(f"{path} holds a run with other settings {diff} (saved, asked); use another --out "
                             f"or drop --resume-existing")
        if saved.get("finished"):
            return {**entry, **_run_numbers(saved), "status": "reused"}
        resume = ckpt if ckpt.exists() else None
        if report_only:
            return {**entry, "status": unfinished(saved, cfg["epochs"])}
    if report_only:
        return {**entry, "status": "not run"}
    if cfg["dataset"] not in datasets:
        datasets[cfg["dataset"]] = data_mod.load(cfg["dataset"], data_dir, download=download)
    try:
        res = train.run(cfg, out=path, checkpoint=ckpt, resume=resume, dataset=datasets[cfg["dataset"]],
                        progress=progress)
    except FloatingPointError as e:  # one diverged seed is a result, not a reason to stop the table
        return {**entry, "status": f"diverged ({e})"}
    ckpt.unlink(missing_ok=True)  # finished: the JSON holds what the report needs
    return {**entry, **_run_numbers(res), "status": "done"}


def unfinished(saved: dict, epochs: int) -> str:
    """The status of a run stopped part way: its epochs so far and its best test accuracy."""
    done = saved.get("epochs") or []
    best = max((e["test_acc"] for e in done), default=None)
    return f"unfinished: {len(done)}/{epochs} epochs" + (f", best so far {best:.2f}%" if best is not None else "")


def _plot(summary: dict, stem: Path, log) -> list[str]:
    """The paper-against-ours figure (PNG, SVG) of a summary; [] with a note where it
    cannot be drawn (no matplotlib, no row with numbers)."""
    try:
        return plot_reproduction(summary, stem)
    except (ImportError, ValueError) as e:
        log(f"no plot: {e}")
        return []


def _run_numbers(res: dict) -> dict:
    return {"best_test_acc": res["best_test_acc"], "final_test_acc": res["final_test_acc"],
            "train_seconds": res["train_seconds"], "device": res["device"], "epochs": len(res["epochs"]),
            "train_size": res["train_size"], "test_size": res["test_size"]}


def reproduce(targets: list[str], opts: dict, out_dir: Path, *, name: Optional[str] = None,
              resume_existing: bool = False, data_dir=None, download: bool = True, progress: bool = False,
              command: str = "", log=print, report_only: bool = False) -> dict:
    """Run every seed of every row; write ``NAME.md`` and ``NAME.json`` in ``out_dir``.
    Returns the summary (as written to ``NAME.json``). report_only: run nothing, load
    no data; summarise the finished runs under ``out_dir`` (as ``--resume-existing``
    would reuse them) and list the others as unfinished or not run."""
    rows = resolve(targets, opts.get("dataset"), opts.get("variant", "paper"))
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = list(range(opts["first_seed"], opts["first_seed"] + opts["seeds"]))
    todo = sum(len(seeds) for r in rows if r.preset)
    datasets: dict = {}
    summaries, k = [], 0
    for row in rows:
        runs = []
        if row.preset is None:
            log(f"skip {row.key}: {row.note}")
        for seed in seeds if row.preset else []:
            k += 1
            t0 = time.perf_counter()
            entry = _one_run(row, seed, opts, out_dir, resume_existing=resume_existing or report_only,
                             datasets=datasets, data_dir=data_dir, download=download, progress=progress,
                             report_only=report_only)
            runs.append(entry)
            acc = f"best {entry['best_test_acc']:.2f}%" if "best_test_acc" in entry else entry["status"]
            log(f"[{k}/{todo}] {row.key} seed {seed}: {acc} ({entry['status']}, {time.perf_counter() - t0:.1f} s)")
        summaries.append(summarise_row(row, runs, opts))
    by_key = {r["key"]: r for r in summaries}
    for r in summaries:
        r["gap_to_bp"] = gap_to_bp(r, by_key)
    name = name or "+".join(targets)
    summary = {"targets": targets, "command": command, "options": opts,
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "versions": versions(), "rows": summaries,
               "markdown": str(out_dir / f"{name}.md")}
    summary["plots"] = _plot(summary, out_dir / name, log)
    md = markdown(summary)
    if summary["plots"]:
        md += f"\n![The paper's test accuracy against ours, per row]({Path(summary['plots'][0]).name})\n"
    (out_dir / f"{name}.md").write_text(md)
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2))
    return summary
