"""``tritonep evaluate CHECKPOINT``: score a checkpoint's weights on its run's test set."""
from __future__ import annotations

import argparse
import json

from ..train import evaluate_checkpoint
from .common import USER_ERRORS, add_data_source, fail

DESCRIPTION = ("Score the weights of a checkpoint `tritonep train` wrote (RUN.ckpt, or RUN.best.ckpt: the best "
               "epoch's) on the test images of its run's data set; prints one JSON line.")


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("checkpoint", help="a checkpoint file (RUN.ckpt or RUN.best.ckpt)")
    add_data_source(ap)
    ap.add_argument("--limit-test", type=int, metavar="N",
                    help="score N test images, a class-stratified subset drawn from the run's seed (default: "
                         "what the run scored)")
    ap.add_argument("--device", help="auto (default: the run's), cpu, cuda, ...")
    return ap


def run_args(args: argparse.Namespace) -> int:
    try:
        res = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, download=not args.no_download,
                                  device=args.device, limit_test=args.limit_test)
    except USER_ERRORS as e:  # CheckpointError is a ValueError
        return fail("evaluate", e)
    print(json.dumps(res))
    return 0
