"""``tritonep analyze COMMAND``: the dynamics and learning analysis of a preset
net or a trained checkpoint (``tritonep.analysis``), written as OUT/COMMAND.json
and, with ``--plot``, OUT/COMMAND.png and .svg.

Subcommands: ``dynamics`` (spectral radius, FTMLE, convergence time),
``alignment`` (EP vs BP/BPTT, optionally swept), ``sweep-feedback``,
``sweep-alpha-beta`` and ``norms`` (update norms over training, with and without
residual links).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import analysis as A
from .. import checkpoint, data, presets
from ..analysis.strict_json import jsonable
from ..build import build_net, build_optimizer
from ..net import EPNet
from ..options import ACTIVATIONS, positive_float, positive_int
from ..runinfo import versions
from ..topology import FEEDBACK_WEIGHTS
from .common import fail, float_or_floats, floats, ints

COMMAND = "analyze"


def _residual(text: str):
    """"3" -> 3 (links every 3 layers); "none" -> None (no links)."""
    return None if text.lower() == "none" else int(text)


def _names(text: str) -> list[str]:
    """"bp,bptt" -> ["bp", "bptt"]."""
    return text.split(",")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tritonep analyze",
                                 description="Dynamics and learning analysis of FRE-RNN nets; writes JSON (+ plots).")
    sub = ap.add_subparsers(dest="command", required=True)

    net = argparse.ArgumentParser(add_help=False)
    g = net.add_argument_group("net (a preset, changed by these options)")
    g.add_argument("--hidden", type=ints, help="hidden widths, e.g. 64,64,64 (default: the preset's)")
    g.add_argument("--feedback", type=float_or_floats, help="feedback coefficient, or one per layer receiving feedback")
    g.add_argument("--feedback-weights", choices=FEEDBACK_WEIGHTS)
    g.add_argument("--alpha", type=float, help="forward scale between hidden layers")
    g.add_argument("--nudge", type=float, help="nudge strength beta_f")
    g.add_argument("--T", type=int, help="free steps (also the FTMLE window)")
    g.add_argument("--K", type=int, help="nudged steps")
    g.add_argument("--residual", type=_residual, metavar="K|none", help="residual links every K layers, or none")
    g.add_argument("--activation", choices=ACTIVATIONS)
    g.add_argument("--checkpoint", help="analyse a `tritonep train` checkpoint (its config and trained weights)")
    g.add_argument("--seed", type=int, default=0, help="weights, inputs and tangent vectors (default 0)")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    io = net.add_argument_group("inputs and outputs")
    io.add_argument("--batch", type=int, default=64,
                    help="samples analysed (default 64): with --data-dir a seeded class-stratified subset of the "
                         "test set, as --limit-test draws")
    io.add_argument("--data-dir", help="take the samples from the data set's test split here (never downloads); "
                    "default: uniform random inputs and labels")
    io.add_argument("--out", required=True, help="output directory for COMMAND.json (and .png/.svg)")
    io.add_argument("--plot", action="store_true", help="also write PNG and SVG plots")

    def command(name: str, preset: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[net], help=text)
        p.add_argument("preset", nargs="?", default=preset, help=f"preset name (default {preset})")
        return p

    def dyn_opts(p):
        p.add_argument("--tol", type=float, default=A.DEFAULT_TOL,
                       help=f"state-change tolerance (default {A.DEFAULT_TOL})")
        p.add_argument("--horizon", type=int, help="steps simulated (default max(4T, 100))")

    def base_opts(p):
        p.add_argument("--baselines", type=_names, default=list(A.BASELINES), help="bp,bptt (default both)")

    dyn_opts(command("dynamics", "mnist-2hl", "spectral radius, FTMLE, convergence time"))
    p = command("alignment", "mnist-2hl", "EP updates vs BP and BPTT gradients, per layer; sweeps")
    p.add_argument("--sweep-feedback", type=floats, metavar="LIST",
                   help="feedback values to sweep (each for every layer)")
    p.add_argument("--sweep-nudge", type=floats, metavar="LIST", help="nudge values to sweep")
    p.add_argument("--sweep-T", type=ints, metavar="LIST", help="free-phase lengths to sweep")
    p.add_argument("--sweep-K", type=ints, metavar="LIST", help="nudged-phase lengths to sweep")
    base_opts(p)
    sweeps = (("sweep-feedback", "feedback coefficient sweep, symmetric and random",
               [("--values", floats, A.FEEDBACK_VALUES, "feedback coefficients"),
                ("--weights", _names, ("symmetric", "random"), "symmetric,random (default both)")]),
              ("sweep-alpha-beta", "alpha x beta grid",
               [("--alphas", floats, A.ALPHA_VALUES, "forward scales alpha"),
                ("--betas", floats, A.BETA_VALUES, "feedback coefficients beta")]))
    for name, text, lists in sweeps:
        p = command(name, "mnist-5hl", text)
        for flag, kind, default, what in lists:
            p.add_argument(flag, type=kind, default=list(default), help=what)
        dyn_opts(p)
        base_opts(p)
    p = command("norms", "mnist-10hl-res", "per-layer update norms over training, with/without residual")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit-train", type=int, default=5000, metavar="N", help="train on N images, a class-stratified subset drawn from --seed")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's optimizer and rates)")
    p.add_argument("--every", type=int, help="residual links every k layers (default: the preset's, else 3)")
    return ap


def _build(args) -> tuple[EPNet, dict]:
    """(net, cfg) from the preset or checkpoint, with the command line's changes."""
    state = None
    if args.checkpoint:
        ck = checkpoint.load(args.checkpoint, map_location="cpu")
        cfg, state = dict(ck["config"]), ck["model"]
        if args.hidden is not None:
            raise ValueError("--hidden cannot change a checkpoint's widths")
    else:
        cfg = presets.get(args.preset)
        if args.hidden is not None:
            cfg["hidden"] = args.hidden
        cfg["seed"] = args.seed  # a preset net's initial weights (and AGT draw) come from --seed
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        torch.manual_seed(cfg["seed"])
        net = build_net(cfg)
    if state is not None:
        net.load_state_dict(state)
    changes = {key: getattr(args, key) for key in ("feedback", "feedback_weights", "alpha", "nudge", "T", "K",
                                                   "activation") if getattr(args, key, None) is not None}
    if args.residual_given:  # "--residual none" must remove links, so None alone cannot mean "not given"
        changes["residual"] = args.residual
    if changes:
        net = A.with_options(net, seed=args.seed, **changes)
    return net.to(args.device), cfg


def _inputs(args, cfg: dict, net: EPNet):
    """(x, y, source): ``--batch`` test samples of the data set, or uniform random ones."""
    if args.batch < 1:
        raise ValueError(f"--batch must be a positive int, got {args.batch}")
    if args.data_dir:
        ds = data.load(cfg["dataset"], args.data_dir, download=False)
        # the subset --limit-test draws: seeded, class-stratified (the first N of a test set
        # stored by class would be one class)
        rows = data.stratified_subset(ds.y_test, min(args.batch, ds.y_test.shape[0]), args.seed, "test")
        x = data.to_float(ds.x_test[rows], device=args.device)
        y = ds.y_test[rows]
        counts = torch.bincount(y, minlength=int(ds.y_test.max()) + 1).tolist()
        return x, y.to(args.device), (f"{cfg['dataset']} test, {rows.numel()} images class-stratified with seed "
                                      f"{args.seed}, per class {counts} ({ds.source})")
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, net.sizes[0], generator=gen).to(args.device)
    y = torch.randint(0, net.num_classes, (args.batch,), generator=gen).to(args.device)
    return x, y, "uniform random inputs in [0, 1) and random labels"


def _run(args, log) -> tuple[dict, Callable[[str], list[str]]]:
    """Execute one subcommand: (JSON result, plotter writing the figure to a stem)."""
    net, cfg = _build(args)
    if args.command == "norms":
        return _run_norms(args, net, cfg, log)
    x, y, source = _inputs(args, cfg, net)
    head = {"command": args.command, "preset": None if args.checkpoint else args.preset,
            "checkpoint": args.checkpoint, "net": A.describe(net), "inputs": source, "batch": args.batch,
            "seed": args.seed, "versions": versions()}
    if args.command == "dynamics":
        r = A.dynamics_report(net, x, tol=args.tol, horizon=args.horizon, seed=args.seed)
        return {**head, "result": r}, lambda stem: A.plot_dynamics(r, stem, f"Dynamics of {_name(args, net)}")
    if args.command == "alignment":
        sweep = any(v is not None for v in (args.sweep_feedback, args.sweep_nudge, args.sweep_T, args.sweep_K))
        if sweep:
            r = A.alignment_sweep(net, x, y, feedback=args.sweep_feedback, nudge=args.sweep_nudge, T=args.sweep_T,
                                  K=args.sweep_K, baselines=args.baselines, log=log)
        else:
            r = A.gradient_alignment(net, x, y, baselines=args.baselines)
        return {**head, "result": r}, lambda stem: A.plot_alignment(r, stem, f"EP vs gradients, {_name(args, net)}")
    if args.command == "sweep-feedback":
        r = A.sweep_feedback(net, x, y, values=args.values, weights=args.weights, tol=args.tol,
                             horizon=args.horizon, baselines=args.baselines, seed=args.seed, log=log)
        return {**head, "result": r}, lambda stem: A.plot_feedback_sweep(r, stem,
                                                                         f"Feedback sweep, {_name(args, net)}")
    r = A.sweep_alpha_beta(net, x, y, alphas=args.alphas, betas=args.betas, tol=args.tol, horizon=args.horizon,
                           baselines=args.baselines, seed=args.seed, log=log)
    return {**head, "result": r}, lambda stem: A.plot_alpha_beta(r, stem, f"alpha x beta grid, {_name(args, net)}")


def _run_norms(args, net: EPNet, cfg: dict, log):
    """The ``norms`` subcommand: train copies with and without residual links on
    ``--limit-train`` training images, a class-stratified subset drawn from ``--seed``."""
    ds = data.load(cfg["dataset"], args.data_dir, download=False)
    rows = data.stratified_subset(ds.y_train, positive_int("--limit-train", args.limit_train,
                                                           what="number of images"), args.seed)
    n = rows.numel()
    x, y = data.to_float(ds.x_train[rows], device=args.device), ds.y_train[rows].to(args.device)
    every = args.every or (cfg["residual"] if isinstance(cfg["residual"], int) else 3)
    if args.lr is not None:
        lr = positive_float("--lr", args.lr)
        make_optimizer = lambda trial: torch.optim.Adam(trial.parameters(), lr=lr)  # noqa: E731
    else:
        make_optimizer = lambda trial: build_optimizer(trial, cfg)  # noqa: E731
    records = A.residual_update_norms(net, x, y, every=every, epochs=args.epochs,
                                      batch_size=args.batch_size or cfg["batch_size"],
                                      make_optimizer=make_optimizer, seed=args.seed, log=log)
    out = {"command": "norms", "preset": None if args.checkpoint else args.preset, "checkpoint": args.checkpoint,
           "net": A.describe(net), "inputs": f"{cfg['dataset']} train, {n} images stratified by class, seed {args.seed} ({ds.source})",
           "subset": data.subset_record(ds.y_train, rows, args.seed, args.limit_train), "seed": args.seed,
           "versions": versions(), "result": records}
    return out, lambda stem: A.plot_update_norms(records, stem, f"Per-layer EP update norms, {_name(args, net)}")


def _name(args, net: EPNet) -> str:
    """The net in plot titles: the preset (or checkpoint file) and the widths."""
    return (Path(args.checkpoint).name if args.checkpoint else args.preset) + " " + "-".join(map(str, net.sizes))


def main(argv: Optional[list[str]] = None) -> int:
    """``tritonep analyze COMMAND [options]``: writes OUT/COMMAND.json (and with
    --plot OUT/COMMAND.png, .svg); prints the paths as one JSON line. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.residual_given = "--residual" in argv or any(a.startswith("--residual=") for a in argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        if args.checkpoint is None:
            presets.get(args.preset)  # unknown names fail here, before any work
        result, plot = _run(args, log)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{args.command}.json"
        path.write_text(json.dumps(jsonable(result), indent=2, allow_nan=False))
        plots = plot(out_dir / args.command) if args.plot else []
    except KeyError as e:  # unknown preset
        return fail(COMMAND, e.args[0])
    except (ValueError, FileNotFoundError, ImportError) as e:  # bad input, no data (DataNotFoundError), no matplotlib
        return fail(COMMAND, e)
    print(json.dumps({"json": str(path), "plots": plots}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
