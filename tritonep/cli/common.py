"""Argument types, shared options and error reporting of the ``tritonep`` subcommands."""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from ..collapse import CollapseWarning
from ..data import ENV_VAR, DataNotFoundError
from ..train import RelaxationWarning

# what a user can fix (bad options, missing files): reported as one line, exit status 2, no traceback
USER_ERRORS = (ValueError, DataNotFoundError, FileNotFoundError)


def _split(text: str, convert, expected: str) -> list:
    try:
        return [convert(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def floats(text: str) -> list[float]:
    """"0.1,0.2" -> [0.1, 0.2]."""
    return _split(text, float, "comma-separated numbers")


def float_or_floats(text: str):
    """"0.1" -> 0.1; "0.2,0.05" -> [0.2, 0.05] (one per layer)."""
    parts = floats(text)
    return parts[0] if len(parts) == 1 else parts


def ints(text: str) -> list[int]:
    """"10,20" -> [10, 20]."""
    return _split(text, int, "comma-separated integers")


def widths(text: str) -> list[int]:
    """"64,64" -> [64, 64]: hidden layer widths, input side first."""
    w = _split(text, int, "comma-separated layer widths like 64,64")
    if not w or min(w) < 1:
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return w


def fail(command: str, message) -> int:
    """Print ``tritonep COMMAND: error: MESSAGE`` on stderr; returns exit status 2."""
    print(f"tritonep {command}: error: {message}", file=sys.stderr)
    return 2


@contextlib.contextmanager
def warning_lines(command: str):
    """Within the block, a ``RelaxationWarning`` or ``CollapseWarning`` prints as the one line ``tritonep
    COMMAND: warning: MESSAGE`` on stderr (no file and line of library code); other
    warnings print as Python prints them."""
    with warnings.catch_warnings():  # restores showwarning afterwards
        show = warnings.showwarning

        def line(message, category, filename, lineno, file=None, text=None):
            if issubclass(category, (RelaxationWarning, CollapseWarning)):
                print(f"tritonep {command}: warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, text)

        warnings.showwarning = line
        yield


def add_data_source(ap: argparse.ArgumentParser) -> None:
    """``--data-dir`` and ``--no-download``: where the data sets come from."""
    ap.add_argument("--data-dir", help=f"data directory (default ${ENV_VAR}, then the cache)")
    ap.add_argument("--no-download", action="store_true", help="never download data")


def add_limits(ap: argparse.ArgumentParser) -> None:
    """``--limit-train N`` and ``--limit-test N``: a seeded, class-stratified subset of N
    images (``data.stratified_subset``; the same for every run with the same seed and N)."""
    ap.add_argument("--limit-train", type=int, metavar="N",
                    help="train on N training images, a class-stratified subset drawn from the run's seed")
    ap.add_argument("--limit-test", type=int, metavar="N",
                    help="evaluate on N test images, a class-stratified subset drawn from the run's seed")
