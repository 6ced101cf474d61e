"""``tritonep plot RUN.json [RUN.json ...] --out DIR``: learning curves of runs.

One figure, ``DIR/NAME.png`` and ``.svg`` (NAME ``curves`` unless ``--name``): train
and test accuracy, training loss and the free phase's residual per epoch, one
colour per run (``tritonep.analysis.curves``). Prints the paths as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from ..analysis.curves import plot_runs, read_run, run_labels
from .common import fail

DESCRIPTION = "Plot learning curves (accuracy, loss, residual per epoch) of one or several results JSONs."


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``plot`` options."""
    ap.add_argument("runs", nargs="+", metavar="RUN.json", help="results JSONs of `tritonep train` (--out)")
    ap.add_argument("--out", required=True, metavar="DIR", help="output directory")
    ap.add_argument("--name", default="curves", help="file name, without suffix (default curves)")
    ap.add_argument("--title", default="Learning curves", help="the figure's title")
    return ap


def run_args(args: argparse.Namespace) -> int:
    """``tritonep plot`` with parsed arguments; returns the exit status."""
    try:
        if Path(args.name).name != args.name or args.name in ("", ".", ".."):
            raise ValueError(f"--name must be a file name without folders, got {args.name!r}")
        runs = [read_run(p) for p in args.runs]
        paths = plot_runs(runs, run_labels(args.runs, runs), Path(args.out) / args.name, args.title)
    except (ValueError, ImportError, OSError) as e:  # bad files, no matplotlib, an unwritable --out
        return fail("plot", e)
    print(json.dumps({"plots": paths}))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """``tritonep plot ...`` (argv without the word ``plot``)."""
    ap = add_arguments(argparse.ArgumentParser(prog="tritonep plot", description=DESCRIPTION))
    return run_args(ap.parse_args(sys.argv[1:] if argv is None else argv))
