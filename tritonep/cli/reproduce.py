"""``tritonep reproduce TABLE|ROW ... [--seeds 5]``: rerun the paper's tables.

One command runs every row of a table (``table1``, ``table2``) or the rows named
(preset names, e.g. ``mnist-5hl``), each with N seeds (5, as the paper), and
writes per-run JSON, ``NAME.md`` and ``NAME.json`` under ``--out`` (see
``tritonep.reproduce``). ``--quick`` (1 epoch on 1000 training / 500 test images,
2 seeds) runs the whole pipeline in seconds per row: the CI smoke test.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional

from .. import data as data_mod
from ..paper import TABLES, VARIANTS, paper_cell, resolve
from ..reproduce import reproduce
from .common import USER_ERRORS, add_data_source, add_limits, fail

DEFAULT_OUT = "runs/reproduce"
QUICK = dict(epochs=1, limit_train=1000, limit_test=500, seeds=2)
DESCRIPTION = "Reproduce the paper's tables: ``tritonep reproduce TABLE|ROW ... [--seeds 5]``."


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``reproduce`` options (shared by ``tritonep reproduce`` and ``main``)."""
    ap.add_argument("targets", nargs="*", metavar="TABLE|ROW",
                    help="table1, table2, or rows (preset names, e.g. mnist-5hl; see --list)")
    ap.add_argument("--list", action="store_true", help="list the tables' rows with the paper's numbers and exit")
    ap.add_argument("--seeds", type=int, help="runs per row, seeds FIRST..FIRST+N-1 (default 5, as the paper; "
                                              "--quick: 2)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, help="override every row's epochs (default: the preset's, as the paper)")
    add_limits(ap)
    ap.add_argument("--dataset", choices=data_mod.DATASETS, help="keep only the rows on this dataset")
    ap.add_argument("--variant", choices=VARIANTS, default="paper",
                    help="paper (default): each row as its published number was made (the authors' code); alg1: "
                         "the paper's Algorithm 1 (rows ROW-alg1)")
    ap.add_argument("--device", help="auto (default), cpu, cuda, ...")
    ap.add_argument("--backend", help="the engine's backend (auto, torch, ...)")
    add_data_source(ap)
    ap.add_argument("--out", help=f"output directory (default {DEFAULT_OUT}, {DEFAULT_OUT}-quick with --quick)")
    ap.add_argument("--name", help="report name: NAME.md and NAME.json (default: the targets joined by '+')")
    ap.add_argument("--resume-existing", action="store_true",
                    help="skip runs whose finished JSON exists with the same settings; continue unfinished ones "
                         "from their checkpoint")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: write the report from the finished runs under --out and list the others "
                         "(unfinished with their epochs so far, or not run)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 epoch, 1000 training and 500 test images (class-stratified), 2 seeds "
                         "(explicit options win)")
    ap.add_argument("--progress", action="store_true", help="show each run's progress bar")
    return ap


def _list_rows() -> str:
    lines = []
    for name, rows in TABLES.items():
        lines.append(f"{name}:")
        for r in rows:
            paper = paper_cell(r.paper)
            runs = r.preset or "-"
            extra = f" {r.overrides}" if r.overrides else ""
            lines.append(f"  {r.key:22s} {r.dataset:8s} {r.label:32s} paper {paper:22s} runs {runs}{extra}"
                         + (f"  [{r.note}]" if r.note else ""))
    return "\n".join(lines)


def _options(args: argparse.Namespace) -> dict:
    o = {"seeds": args.seeds, "first_seed": args.first_seed, "epochs": args.epochs,
         "limit_train": args.limit_train, "limit_test": args.limit_test, "device": args.device,
         "backend": args.backend, "quick": args.quick, "dataset": args.dataset, "variant": args.variant}
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


def run_args(args: argparse.Namespace, argv: Optional[list[str]] = None) -> int:
    """``tritonep reproduce`` with parsed arguments; returns the exit status.
    argv: the words after ``reproduce``, recorded in the report."""
    if args.list:
        print(_list_rows())
        return 0
    try:
        if not args.targets:
            raise ValueError("give a table (table1, table2) or rows (see --list)")
        opts = _options(args)
        resolve(args.targets, opts["dataset"], opts["variant"])  # bad names fail before any run
        out = Path(args.out or (DEFAULT_OUT + ("-quick" if args.quick else "")))
        command = "tritonep reproduce " + " ".join(shlex.quote(a) for a in (argv or args.targets))
        summary = reproduce(args.targets, opts, out, name=args.name, resume_existing=args.resume_existing,
                            data_dir=args.data_dir, download=not args.no_download, progress=args.progress,
                            command=command, log=lambda m: print(m, file=sys.stderr),
                            report_only=args.report_only)
    except USER_ERRORS as e:
        return fail("reproduce", e)
    print(Path(summary["markdown"]).read_text())
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``tritonep reproduce ...`` (argv without the word ``reproduce``)."""
    ap = add_arguments(argparse.ArgumentParser(prog="tritonep reproduce", description=DESCRIPTION))
    argv = sys.argv[1:] if argv is None else list(argv)
    return run_args(ap.parse_args(argv), argv)
