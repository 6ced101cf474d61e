"""Reproduce the paper's tables from a checkout: ``python bench/reproduce.py table1 --seeds 5``.

A thin wrapper over ``tritonep reproduce`` (``tritonep/cli/reproduce.py``); all options are its own.
"""
import sys

from tritonep.cli.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
