"""The ``tritonep`` command line: ``tritonep train|evaluate|reproduce|analyze|plot ...``.

``main(argv)`` parses the subcommand and hands over to ``cli.train``,
``cli.evaluate``, ``cli.reproduce``, ``cli.plot`` or ``cli.analyze`` (which parses its own
arguments). The library's relaxation warnings appear as one
``tritonep COMMAND: warning: ...`` line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from . import analyze, evaluate, plot, reproduce, train
from .common import warning_lines


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tritonep", description="Equilibrium Propagation (FRE-RNN) training")
    sub = ap.add_subparsers(dest="command", required=True)
    train.add_arguments(sub.add_parser("train", help="train a preset (see --list)",
                                       description="Train a preset; options override its settings."))
    evaluate.add_arguments(sub.add_parser("evaluate", help="score a checkpoint's weights on its run's test set",
                                          description=evaluate.DESCRIPTION))
    sub.add_parser("analyze", help="dynamics, gradient alignment, sweeps and plots (tritonep analyze -h)",
                   add_help=False)
    reproduce.add_arguments(sub.add_parser("reproduce", help="rerun the paper's tables, several seeds each",
                                           description=reproduce.DESCRIPTION))
    plot.add_arguments(sub.add_parser("plot", help="learning curves of results JSONs (PNG and SVG)",
                                      description=plot.DESCRIPTION))
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``tritonep ARGV`` (default: the process's arguments); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with warning_lines(argv[0] if argv else "tritonep"):
        if argv[:1] == ["analyze"]:  # its own parser
            return analyze.main(argv[1:])
        args = _parser().parse_args(argv)
        if args.command == "reproduce":
            return reproduce.run_args(args, argv[argv.index("reproduce") + 1:])
        if args.command == "plot":
            return plot.run_args(args)
        if args.command == "evaluate":
            return evaluate.run_args(args)
        return train.run_args(args)
