"""The ``tritonep`` command line: ``tritonep train|reproduce|analyze ...``.

``main(argv)`` parses the subcommand and hands over to ``cli.train``,
``cli.reproduce`` or ``cli.analyze`` (which parses its own arguments).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional

from . import analyze, reproduce, train


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tritonep", description="Equilibrium Propagation (FRE-RNN) training")
    sub = ap.add_subparsers(dest="command", required=True)
    train.add_arguments(sub.add_parser("train", help="train a preset (see --list)",
                                       description="Train a preset; options override its settings."))
    sub.add_parser("analyze", help="dynamics, gradient alignment, sweeps and plots (tritonep analyze -h)",
                   add_help=False)
    reproduce.add_arguments(sub.add_parser("reproduce", help="rerun the paper's tables, several seeds each",
                                           description=reproduce.DESCRIPTION))
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``tritonep ARGV`` (default: the process's arguments); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["analyze"]:  # its own parser
        return analyze.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "reproduce":
        return reproduce.run_args(args, argv[argv.index("reproduce") + 1:])
    return train.run_args(args)
