"""``tritonep train PRESET [options]``: train a preset, options overriding its settings.

Prints one JSON line (preset, best and final test accuracy, training seconds,
results path); ``--list`` lists the presets. With ``--distributed`` (under
torchrun) every process trains its share of each batch: see
``tritonep.distributed``.
"""
from __future__ import annotations

import argparse
import json
import os

from .. import distributed as dist_mod
from .. import presets
from ..build import DTYPES, input_size
from ..options import BACKENDS, ERRORS, NUDGE_SCHEDULES, NUDGINGS, PRECISIONS, READOUT_ERRORS, RULES, SCHEDULES
from ..train import run
from .common import USER_ERRORS, add_data_source, add_limits, fail, float_or_floats, widths

# train options that override the preset's setting of the same name
OVERRIDES = ("epochs", "batch_size", "hidden", "lr", "T", "K", "feedback", "nudge", "rule", "nudging", "error",
             "normalize", "augment", "seed", "dtype", "device", "backend", "precision", "tol", "check_every",
             "limit_train", "limit_test", "nudge_schedule", "readout_error", "residual_threshold", "schedule", "guard_residual")


def add_arguments(t: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``train`` options."""
    t.add_argument("preset", nargs="?", help="preset name, e.g. mnist-2hl (see --list)")
    t.add_argument("--list", action="store_true", help="list the presets with their settings and exit")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, help="the global batch (with --distributed: split across ranks)")
    t.add_argument("--hidden", type=widths, help="hidden layer widths, e.g. 64,64 (replaces the preset's)")
    t.add_argument("--lr", type=float_or_floats,
                   help="learning rate, or a comma list, one per weight layer (input to output)")
    t.add_argument("--T", type=int, help="free phase steps")
    t.add_argument("--K", type=int, help="nudged phase steps")
    t.add_argument("--feedback", type=float_or_floats, help="feedback coefficient, or a comma list, one per layer")
    t.add_argument("--nudge", type=float, help="nudge strength beta_f")
    t.add_argument("--rule", choices=RULES)
    t.add_argument("--nudging", choices=NUDGINGS)
    t.add_argument("--error", choices=ERRORS, help="recompute the output error every nudged step "
                   "(dynamic, Algorithm 1) or keep its free-phase value (frozen, the authors' code)")
    t.add_argument("--schedule", choices=SCHEDULES,
                   help="relaxation steps: synchronous (the paper) or alternating (odd layers, then even layers "
                        "from their new states: about half the steps to settle)")
    t.add_argument("--nudge-schedule", choices=NUDGE_SCHEDULES, help="constant (Algorithm 1) or ramp: the k-th "
                   "nudged step nudged by k * beta (the authors' graph model, with --error frozen)")
    t.add_argument("--readout-error", choices=READOUT_ERRORS, help="update the readout from p at the free state "
                   "(its exact gradient) or at the end of the nudged phase (the authors' graph model)")
    t.add_argument("--normalize", action="store_true", default=None, help="scale updates to gradient size")
    t.add_argument("--augment", action="store_true", default=None, help="random crop + flip (conv presets)")
    t.add_argument("--seed", type=int)
    t.add_argument("--dtype", choices=tuple(DTYPES), help="floating point type of weights and states (float32)")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    t.add_argument("--backend", choices=BACKENDS,
                   help="auto (default: Triton kernels on CUDA, the PyTorch reference on CPU), torch or triton")
    t.add_argument("--precision", choices=PRECISIONS, help="operands of the Triton kernels' products")
    t.add_argument("--tol", type=float, help="stop each phase early once every sample's state change is below TOL")
    t.add_argument("--check-every", type=int, metavar="N", help="steps between convergence checks (default 5)")
    t.add_argument("--residual-threshold", type=float, metavar="R",
                   help="a batch's free phase counts as settled below this relative residual (default 1e-2)")
    t.add_argument("--guard-residual", type=float, metavar="R",
                   help="the collapse guard: a batch whose free phase's relative residual is not under R gets no "
                        "update (costs one host sync per batch; e.g. 1e-5)")
    add_data_source(t)
    add_limits(t)
    t.add_argument("--out", help="results JSON (written after every epoch)")
    t.add_argument("--checkpoint", help="checkpoint path (default: the --out path with .ckpt)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes torchrun starts (`torchrun --nproc_per_node=N -m tritonep "
                        "train PRESET --distributed`); --batch-size stays the global batch, split across ranks")
    return t


def list_presets() -> str:
    """One entry per preset: name, method, architecture, the main settings, and its description."""
    rows = []
    for name, c in presets.PRESETS.items():
        arch = c.get("conv") or "-".join(str(v) for v in [input_size(c["dataset"])] + c["hidden"] + [10])
        extra = [c["feedback_weights"]] + ([f"res{c['residual']}"] if c["residual"] else []) + (
            [f"agt{c['agt']}"] if c["agt"] else [])
        rows.append(f"{name:24s} {c['method']:3s} {arch:28s} T={c['T']:<4d} K={c['K']:<4d} fb={c['feedback']!s:5s} "
                    f"nudge={c['nudge']!s:4s} {c['optimizer']} lr={c['lr']} bs={c['batch_size']} ep={c['epochs']} "
                    f"{' '.join(extra)}\n{'':24s} {c['description']}")
    return "\n".join(rows)


def _config(args: argparse.Namespace) -> dict:
    """The preset's config with the options given; ValueError for a missing or unknown preset."""
    if not args.preset:
        raise ValueError("give a preset (see `tritonep train --list`)")
    try:
        cfg = presets.get(args.preset)
    except KeyError as e:  # its message names the close matches
        raise ValueError(e.args[0]) from None
    cfg["preset"] = args.preset
    for key in OVERRIDES:
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    return cfg


def run_args(args: argparse.Namespace) -> int:
    """``tritonep train`` with parsed arguments; returns the exit status."""
    if args.list:
        print(list_presets())
        return 0
    ctx = None
    try:
        cfg = _config(args)  # first: a bad preset fails before joining a process group
        if args.distributed:
            ctx = dist_mod.init_from_env(cfg["device"], cfg["batch_size"])
        elif os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            raise ValueError(f"started as one of WORLD_SIZE={os.environ['WORLD_SIZE']} processes (torchrun?) without "
                             f"--distributed: each would train alone and write the same files; add --distributed")
        result = run(cfg, out=args.out, checkpoint=args.checkpoint, resume=args.resume, data_dir=args.data_dir,
                     download=not args.no_download, progress=not args.quiet, dist=ctx)
    except USER_ERRORS as e:
        if ctx is not None:
            dist_mod.shutdown(barrier=False)
        return fail("train", e)
    if ctx is not None:
        dist_mod.shutdown()
        if not ctx.is_main:
            return 0
    print(json.dumps({"preset": args.preset, "best_test_acc": result["best_test_acc"],
                      "final_test_acc": result["final_test_acc"], "train_seconds": round(result["train_seconds"], 2),
                      "out": args.out}))
    return 0
