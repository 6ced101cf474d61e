"""Reproduce the paper's tables: ``tritonep reproduce TABLE|ROW ... [--seeds 5]``.

One command runs every row of a table (``table1``, ``table2``) or the rows named
(preset names, e.g. ``mnist-5hl``), each with N seeds (5, as the paper), through
``tritonep.train.run``, and writes under ``--out``:

* ``ROW/seedS.json``: one run's results (the ``train.run`` JSON);
* ``NAME.md``: a Markdown table, the paper's mean ± std beside ours (mean ± sample
  std over seeds of the best test accuracy, the final one, training time per run,
  device);
* ``NAME.json``: the same summary, machine-readable, with every run's numbers.

The paper's numbers (Liu & Chen, arXiv 2508.11659 v2, Tables 1 and 2) are
transcribed in ``TABLE1`` and ``TABLE2`` below; every row maps to a preset (a
row without one would be listed with the paper's numbers and skipped). ``--quick`` (1 epoch on 1000 training / 500 test images, 2 seeds) runs
the whole pipeline in seconds per row: the CI smoke test.
"""
from __future__ import annotations

import argparse
import datetime
import difflib
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import data as data_mod
from . import presets
from . import train

DEFAULT_OUT = "runs/reproduce"
QUICK = dict(epochs=1, limit_train=1000, limit_test=500, seeds=2)


@dataclass(frozen=True)
class Paper:
    """One cell group of the paper: test accuracy mean ± std (percent, 5 runs),
    the training accuracy in brackets, and for Table 1 the setting and wall clock."""

    test: float
    std: float
    train: Optional[float] = None
    setting: str = ""   # "epochs/batch-T/K" as the paper prints it
    time: str = ""      # wall clock "H:MM:SS" as printed ("1:56:-": hours and minutes only)


@dataclass(frozen=True)
class Row:
    """A row of a table: what the paper reports and which preset reproduces it.

    key: the name on the command line (the preset name where the row is a preset as is).
    preset: the preset it runs, or None where the architecture is not implemented.
    overrides: settings applied on top of the preset for this row.
    """

    key: str
    table: str
    group: str
    approach: str
    dataset: str
    paper: Optional[Paper]
    preset: Optional[str]
    overrides: dict = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.group} · {self.approach}"


def _table1() -> list[Row]:
    """Table 1: MNIST, 512 units per hidden layer for 2HL/3HL; P-EP numbers are
    Ernoult et al. 2019's, quoted by the paper."""
    t, m = "table1", "mnist"
    return [
        Row("mnist-2hl-pep", t, "2HL", "P-EP (sigmoid-s)", m, Paper(98.05, 0.10, 99.86, "50/20-100/20", "1:56:-"),
            "mnist-2hl-pep"),
        Row("mnist-2hl", t, "2HL", "Ours (tanh, Adam)", m, Paper(98.39, 0.04, 100.00, "50/500-10/10", "0:01:16"),
            "mnist-2hl", note="paper's time on an RTX A5000"),
        Row("mnist-2hl-bp", t, "2HL", "BP (tanh, Adam)", m, Paper(98.26, 0.06, 100.00, "50/500-1/1", "0:00:18"),
            "mnist-2hl-bp"),
        Row("mnist-3hl-pep", t, "3HL", "P-EP (sigmoid-s)", m, Paper(97.99, 0.18, 99.90, "100/20-180/20", "8:27:-"),
            "mnist-3hl-pep"),
        Row("mnist-3hl-sgd-dlr", t, "3HL", "Ours-DLR (tanh)", m, Paper(97.65, 0.08, 98.93, "100/20-18/10", "1:01:14"),
            "mnist-3hl-sgd", {"lr": list(presets.PRESETS["mnist-3hl-pep"]["lr"])},
            note="mnist-3hl-sgd with P-EP's per-layer learning rates"),
        Row("mnist-3hl-sgd", t, "3HL", "Ours (tanh)", m, Paper(97.83, 0.13, 99.98, "100/20-18/10", "1:01:54"),
            "mnist-3hl-sgd"),
        Row("mnist-3hl", t, "3HL", "Ours (tanh, Adam)", m, Paper(98.36, 0.06, 100.00, "50/500-18/10", "0:02:11"),
            "mnist-3hl"),
        Row("mnist-3hl-bp", t, "3HL", "BP (tanh, Adam)", m, Paper(98.36, 0.08, 100.00, "50/500-1/1", "0:00:24"),
            "mnist-3hl-bp"),
        Row("mnist-conv-pep", t, "Conv", "P-EP (hard-sigmoid)", m,
            Paper(98.98, 0.04, 99.46, "40/20-200/10", "8:58:-"), "mnist-conv-pep"),
        Row("mnist-conv", t, "Conv", "Ours (hard-sigmoid)", m,
            Paper(99.14, 0.02, 99.78, "40/128-20/10", "0:12:28"), "mnist-conv"),
        Row("mnist-conv-bp", t, "Conv", "BP (hard-sigmoid)", m,
            Paper(98.93, 0.18, 99.43, "40/128-1/1", "0:01:01"), "mnist-conv-bp"),
    ]


# Table 2: (group, approach, preset suffix, overrides, note, MNIST test/std/train, CIFAR-10 test/std/train).
# 64 units per hidden layer, T = 10 L, K = 5 L, feedback 0.1, Adam (the paper's caption).
_T2 = [
    ("5-symm", "BP", "5hl-bp", {}, "", (97.69, 0.10, 100.00), (49.23, 0.81, 56.72)),
    ("5-symm", "Ours", "5hl", {}, "", (97.64, 0.10, 99.98), (50.72, 0.17, 57.02)),
    ("5-asymm", "FA", "5hl-asym-fa", {}, "", (96.44, 0.10, 98.96), (37.97, 2.18, 38.92)),
    ("5-asymm", "Ours", "5hl-asym", {}, "", (96.37, 0.11, 97.99), (45.27, 0.73, 46.79)),
    ("10-symm", "BP", "10hl-bp", {}, "", (97.61, 0.04, 99.93), (48.23, 1.26, 55.37)),
    ("10-symm", "Ours", "10hl", {}, "", (92.49, 0.32, 95.27), (34.90, 0.38, 34.64)),
    ("10-symm", "Ours-Residual", "10hl-res", {}, "", (97.49, 0.05, 99.77), (44.46, 0.51, 48.67)),
    ("10-asymm", "FA", "10hl-asym-fa", {}, "", (94.52, 0.26, 95.54), (30.16, 6.12, 30.20)),
    ("10-asymm", "Ours", "10hl-asym", {}, "", (87.37, 0.49, 87.95), (30.37, 1.09, 29.97)),
    ("10-asymm", "Ours-AGT", "10hl-agt", {}, "", (96.87, 0.11, 99.45), (30.94, 4.90, 31.36)),
    # the paper's BP baselines are the plain feedforward nets ("feedback connections removed")
    ("20-symm", "BP", "20hl-res-bp", {"residual": None}, "BP on the plain 20-layer net (residual links off)",
     (97.48, 0.07, 99.74), (47.35, 1.49, 54.59)),
    ("20-symm", "Ours-Residual", "20hl-res", {}, "", (95.95, 0.18, 98.20), (43.61, 1.17, 44.26)),
    ("Conv", "BP", None, {}, "", (99.34, 0.04, 99.97), (75.45, 0.46, 83.61)),
    ("Conv", "Ours", None, {}, "", (99.27, 0.07, 99.78), (75.04, 0.51, 80.79)),
]


def _table2() -> list[Row]:
    rows = []
    for ds, col in (("mnist", 5), ("cifar10", 6)):
        for spec in _T2:
            group, approach, suffix, over, note = spec[:5]
            test, std, tr = spec[col]
            if suffix is None:  # Table 1 has the MNIST conv rows' plain names; Table 2's MNIST conv is AdamW
                key = f"{ds}-conv" + ("-table2" if ds == "mnist" else "") + ("-bp" if approach == "BP" else "")
                preset = f"{ds}-conv" + ("-adamw" if ds == "mnist" else "") + ("-bp" if approach == "BP" else "")
            elif over:
                key, preset = f"{ds}-{suffix.replace('-res-bp', '-bp')}", f"{ds}-{suffix}"
            else:
                key = preset = f"{ds}-{suffix}"
            L = int(group.split("-")[0]) if group[0].isdigit() else None
            # the table gives T = 10 L, K = 5 L (1/1 for BP/FA); epochs and batch are not in it
            setting = "" if L is None else "?/?-1/1" if approach in ("BP", "FA") else f"?/?-{10 * L}/{5 * L}"
            rows.append(Row(key, "table2", group, approach, ds, Paper(test, std, tr, setting), preset, dict(over),
                            note))
    return rows


TABLES: dict[str, list[Row]] = {"table1": _table1(), "table2": _table2()}
ROWS: dict[str, Row] = {r.key: r for rows in TABLES.values() for r in rows}
assert len(ROWS) == sum(map(len, TABLES.values())), "row keys must be unique"


def resolve(targets: list[str], dataset: Optional[str] = None) -> list[Row]:
    """Rows for the targets in order (tables expanded, duplicates dropped).

    targets: table names, row keys, or any preset name (a row with no paper numbers).
    dataset: keep only rows on this dataset. Unknown names raise ValueError with
    the close matches.
    """
    rows: list[Row] = []
    for t in targets:
        if t in TABLES:
            found = TABLES[t]
        elif t in ROWS:
            found = [ROWS[t]]
        elif t in presets.PRESETS:
            p = presets.PRESETS[t]
            found = [Row(t, "-", "-", p["description"] or t, p["dataset"], None, t)]
        else:
            names = list(TABLES) + list(ROWS) + list(presets.PRESETS)
            close = difflib.get_close_matches(t, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown table or row {t!r}{hint} (tables: {', '.join(TABLES)}; "
                             f"`tritonep reproduce --list` lists the rows)")
        rows += [r for r in found if r.key not in {x.key for x in rows}]
    if dataset is not None:
        rows = [r for r in rows if r.dataset == dataset]
        if not rows:
            raise ValueError(f"no row of {', '.join(targets)} is on {dataset}")
    return rows


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


def _comparable(cfg: dict) -> dict:
    """A config as it reads back from JSON, without the keys that do not change results."""
    c = json.loads(json.dumps(cfg))
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


def _paper_cell(p: Optional[Paper]) -> str:
    if p is None:
        return "— (not in the paper's tables)"
    train_acc = f" ({p.train:.2f})" if p.train is not None else ""
    return f"{p.test:.2f} ± {p.std:.2f}{train_acc}"


def setting(cfg: dict) -> str:
    """A config in the paper's "epochs/batch-T/K" notation (T/K = 1/1 for BP and FA)."""
    tk = "1/1" if cfg["method"] != "ep" else f"{cfg['T']}/{cfg['K']}"
    return f"{cfg['epochs']}/{cfg['batch_size']}-{tk}"


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
    elif not runs:
        out["status"] = "not run"
    elif len(done) == len(runs):
        out["status"] = "done"
    else:
        bad = [f"seed {r['seed']}: {r['status']}" for r in runs if r not in done]
        out["status"] = "partial (" + "; ".join(bad) + ")"
    return out


COLUMNS = ("Row", "Paper setting", "Paper test % (train)", "Our setting", "Ours best test %", "Ours final test %",
           "Seeds", "Train / test images", "Time per run (s)", "Paper time", "Device", "Notes")


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
                     _paper_cell(None if p is None else Paper(**p)),
                     r["setting"] or "—",
                     fmt_pm(r["best_test_acc"]), fmt_pm(r["final_test_acc"]),
                     str(len(runs)) if r["preset"] else "—",
                     ", ".join(sorted({f"{x['train_size']} / {x['test_size']}" for x in runs})) or "—",
                     fmt_pm(r["train_seconds"], 1),
                     (p or {}).get("time") or "—",
                     ", ".join(r["devices"]) or "—",
                     notes or ""]
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI
def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``reproduce`` options (shared by ``tritonep reproduce`` and ``main``)."""
    ap.add_argument("targets", nargs="*", metavar="TABLE|ROW",
                    help="table1, table2, or rows (preset names, e.g. mnist-5hl; see --list)")
    ap.add_argument("--list", action="store_true", help="list the tables' rows with the paper's numbers and exit")
    ap.add_argument("--seeds", type=int, help="runs per row, seeds FIRST..FIRST+N-1 (default 5, as the paper; "
                                              "--quick: 2)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="override every row's epochs (default: the preset's, as the paper)")
    ap.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images")
    ap.add_argument("--limit-test", type=int, metavar="N", help="evaluate on the first N test images")
    ap.add_argument("--dataset", choices=data_mod.DATASETS, help="keep only the rows on this dataset")
    ap.add_argument("--device", help="auto (default), cpu, cuda, ...")
    ap.add_argument("--backend", help="the engine's backend (auto, torch, ...)")
    ap.add_argument("--data-dir", help=f"data directory (default ${data_mod.ENV_VAR}, then the cache)")
    ap.add_argument("--no-download", action="store_true", help="never download data")
    ap.add_argument("--out", help=f"output directory (default {DEFAULT_OUT}, {DEFAULT_OUT}-quick with --quick)")
    ap.add_argument("--name", help="report name: NAME.md and NAME.json (default: the targets joined by '+')")
    ap.add_argument("--resume-existing", action="store_true",
                    help="skip runs whose finished JSON exists with the same settings; continue unfinished ones "
                         "from their checkpoint")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 epoch, 1000 training and 500 test images, 2 seeds (explicit options win)")
    ap.add_argument("--progress", action="store_true", help="show each run's progress bar")
    return ap


def _list_rows() -> str:
    lines = []
    for name, rows in TABLES.items():
        lines.append(f"{name}:")
        for r in rows:
            paper = _paper_cell(r.paper)
            runs = r.preset or "-"
            extra = f" {r.overrides}" if r.overrides else ""
            lines.append(f"  {r.key:22s} {r.dataset:8s} {r.label:32s} paper {paper:22s} runs {runs}{extra}"
                         + (f"  [{r.note}]" if r.note else ""))
    return "\n".join(lines)


def _options(args: argparse.Namespace) -> dict:
    o = {"seeds": args.seeds, "first_seed": args.first_seed, "epochs": args.epochs,
         "limit_train": args.limit_train, "limit_test": args.limit_test, "device": args.device,
         "backend": args.backend, "quick": args.quick, "dataset": args.dataset}
    if args.quick:
        for key, v in QUICK.items():
            if o[key] is None:
                o[key] = v
    if o["seeds"] is None:
        o["seeds"] = 5
    for key in ("seeds", "epochs", "limit_train", "limit_test"):
        v = o[key]
        if v is not None and (isinstance(v, bool) or v < 1):
            raise ValueError(f"--{key.replace('_', '-')} must be a positive int, got {v}")
    if o["first_seed"] < 0:
        raise ValueError(f"--first-seed must be >= 0, got {o['first_seed']}")
    return o


def _one_run(row: Row, seed: int, opts: dict, out_dir: Path, *, resume_existing: bool, datasets: dict,
             data_dir, download: bool, progress: bool) -> dict:
    """Run (or reuse) one seed of a row; returns its entry for the summary."""
    cfg = row_config(row, seed, opts)
    path = out_dir / row.key / f"seed{seed}.json"
    ckpt = path.with_suffix(".ckpt")
    entry = {"seed": seed, "json": str(path)}
    resume = None
    if resume_existing and path.exists():
        saved = json.loads(path.read_text())
        if _comparable(saved["config"]) != _comparable(cfg):
            diff = {k: (saved["config"].get(k), cfg.get(k)) for k in _comparable(cfg)
                    if _comparable(saved["config"]).get(k) != _comparable(cfg).get(k)}
            raise ValueError(f"{path} holds a run with other settings {diff} (saved, asked); use another --out "
                             f"or drop --resume-existing")
        if saved.get("finished"):
            return {**entry, **_run_numbers(saved), "status": "reused"}
        resume = ckpt if ckpt.exists() else None
    if cfg["dataset"] not in datasets:
        datasets[cfg["dataset"]] = data_mod.load(cfg["dataset"], data_dir, download=download)
    try:
        res = train.run(cfg, out=path, checkpoint=ckpt, resume=resume, dataset=datasets[cfg["dataset"]],
                        progress=progress)
    except FloatingPointError as e:  # one diverged seed is a result, not a reason to stop the table
        return {**entry, "status": f"diverged ({e})"}
    ckpt.unlink(missing_ok=True)  # finished: the JSON holds what the report needs
    return {**entry, **_run_numbers(res), "status": "done"}


def _run_numbers(res: dict) -> dict:
    return {"best_test_acc": res["best_test_acc"], "final_test_acc": res["final_test_acc"],
            "train_seconds": res["train_seconds"], "device": res["device"], "epochs": len(res["epochs"]),
            "train_size": res["train_size"], "test_size": res["test_size"]}


def reproduce(targets: list[str], opts: dict, out_dir: Path, *, name: Optional[str] = None,
              resume_existing: bool = False, data_dir=None, download: bool = True, progress: bool = False,
              command: str = "", log=print) -> dict:
    """Run every seed of every row; write ``NAME.md`` and ``NAME.json`` in ``out_dir``.
    Returns the summary (as written to ``NAME.json``)."""
    rows = resolve(targets, opts.get("dataset"))
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
            entry = _one_run(row, seed, opts, out_dir, resume_existing=resume_existing, datasets=datasets,
                             data_dir=data_dir, download=download, progress=progress)
            runs.append(entry)
            acc = f"best {entry['best_test_acc']:.2f}%" if "best_test_acc" in entry else entry["status"]
            log(f"[{k}/{todo}] {row.key} seed {seed}: {acc} ({entry['status']}, {time.perf_counter() - t0:.1f} s)")
        summaries.append(summarise_row(row, runs, opts))
    name = name or "+".join(targets)
    summary = {"targets": targets, "command": command, "options": opts,
               "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "versions": train.versions(), "rows": summaries,
               "markdown": str(out_dir / f"{name}.md")}
    md = markdown(summary)
    (out_dir / f"{name}.md").write_text(md)
    (out_dir / f"{name}.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_args(args: argparse.Namespace, argv: Optional[list[str]] = None) -> int:
    """``tritonep reproduce`` with parsed arguments; returns the exit status.
    argv: the words after ``reproduce``, recorded in the report."""
    if args.list:
        print(_list_rows())
        return 0
    if not args.targets:
        print("tritonep reproduce: error: give a table (table1, table2) or rows (see --list)", file=sys.stderr)
        return 2
    try:
        opts = _options(args)
        resolve(args.targets, opts["dataset"])  # bad names fail before any run
        out = Path(args.out or (DEFAULT_OUT + ("-quick" if args.quick else "")))
        command = "tritonep reproduce " + " ".join(shlex.quote(a) for a in (argv or args.targets))
        summary = reproduce(args.targets, opts, out, name=args.name, resume_existing=args.resume_existing,
                            data_dir=args.data_dir, download=not args.no_download, progress=args.progress,
                            command=command, log=lambda m: print(m, file=sys.stderr))
    except (ValueError, data_mod.DataNotFoundError, FileNotFoundError) as e:
        print(f"tritonep reproduce: error: {e}", file=sys.stderr)
        return 2
    print(Path(summary["markdown"]).read_text())
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``tritonep reproduce ...`` (argv without the word ``reproduce``)."""
    ap = add_arguments(argparse.ArgumentParser(prog="tritonep reproduce", description=__doc__.split("\n\n")[0]))
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_args(ap.parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
