"""Training: ``tritonep train PRESET [options]``, and ``run(config)`` behind it.

One flat loop: load data onto the device, build the net and optimizer from the
config, then per epoch: EP (or BP / FA) steps over seeded batches, test accuracy,
a checkpoint (model, optimizer, epoch, RNG states) and the JSON results. A run
resumed from a checkpoint gives the same weights as one never interrupted.
With ``--distributed`` (under torchrun) the same loop runs data-parallel: see
``tritonep.distributed``. ``tritonep reproduce`` lives in ``tritonep.reproduce``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from . import conv as conv_mod
from . import data as data_mod
from . import distributed as dist_mod
from . import presets
from .baselines import feedforward
from .net import EPNet

METHODS = ("ep", "bp", "fa")
OPTIMIZERS = ("adam", "adamw", "sgd")
# optional "dtype" config key (float32 when absent); float64 for exactness checks
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# keys that fix the architecture: a checkpoint resumes only into the same ones
ARCH_KEYS = ("dataset", "hidden", "output", "feedback_weights", "residual", "agt", "bias", "activation", "seed",
             "conv", "input_norm")


def input_size(dataset: str) -> int:
    return {"mnist": 784, "fashion-mnist": 784, "cifar10": 3072}[dataset]


def build_net(cfg: dict) -> EPNet:
    """The ``EPNet`` a config describes (hidden widths, 10 classes); a ``ConvEPNet``
    where the config names a conv architecture (``cfg["conv"]``)."""
    if cfg.get("conv"):
        return conv_mod.build_net(cfg)
    sizes = [input_size(cfg["dataset"])] + list(cfg["hidden"]) + [10]
    return EPNet(sizes, feedback=cfg["feedback"], feedback_weights=cfg["feedback_weights"], nudge=cfg["nudge"],
                 activation=cfg["activation"], residual=cfg["residual"], agt=cfg["agt"], agt_seed=cfg["seed"],
                 alpha=cfg["alpha"], bias=cfg["bias"], output=cfg["output"], T=cfg["T"], K=cfg["K"],
                 rule=cfg["rule"], nudging=cfg["nudging"], error=cfg["error"], normalize=cfg["normalize"],
                 backend=cfg["backend"], precision=cfg.get("precision", "ieee"), tol=cfg.get("tol"),
                 check_every=cfg.get("check_every", 5))


def build_optimizer(net: EPNet, cfg: dict) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD; ``lr`` a float or one per weight layer, input to output
    (a skip link into layer j takes the rate of the chain weight into j)."""
    lr, n = cfg["lr"], len(net.layers)
    if isinstance(lr, (list, tuple)):
        if len(lr) != n:
            raise ValueError(f"lr lists {len(lr)} rates but the net has {n} weight layers (input to output)")
        groups = [{"params": list(net.layers[i].parameters()), "lr": float(lr[i])} for i in range(n)]
        for key, mod in net.skips.items():
            j = int(key.split("_")[1])
            groups[j - 1]["params"] += list(mod.parameters())
        params, base_lr = groups, float(lr[0])
    else:
        params, base_lr = net.parameters(), float(lr)
    name, wd = cfg["optimizer"], float(cfg["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(params, lr=base_lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=base_lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=base_lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here")
    return dev


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def versions() -> dict:
    try:
        import triton

        triton_v = triton.__version__
    except Exception:  # not installed, or no usable build on this machine
        triton_v = None
    from . import __version__

    return {"tritonep": __version__, "torch": torch.__version__, "triton": triton_v,
            "python": platform.python_version(), "numpy": np.__version__}


def validate(cfg: dict) -> dict:
    """Check a resolved config; returns it. Raises ValueError naming the bad key."""
    if cfg["method"] not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg['method']!r}")
    if cfg["dataset"] not in data_mod.DATASETS:
        raise ValueError(f"dataset must be one of {data_mod.DATASETS}, got {cfg['dataset']!r}")
    for key in ("epochs", "batch_size", "T", "K"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key} must be a positive int, got {v!r}")
    for key in ("limit_train", "limit_test"):
        if cfg.get(key) is not None and cfg[key] < 1:
            raise ValueError(f"{key} must be a positive int, got {cfg[key]!r}")
    if cfg.get("conv") and cfg["method"] == "fa":
        raise ValueError("feedback alignment is not implemented for conv nets (method ep or bp)")
    if cfg.get("schedule") not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {cfg['schedule']!r}")
    if cfg["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg['optimizer']!r}")
    if cfg.get("dtype", "float32") not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {cfg['dtype']!r}")
    return cfg


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


@torch.no_grad()
def count_correct(net: EPNet, x: torch.Tensor, y: torch.Tensor, method: str, batch_size: int = 1000) -> int:
    """How many of x (N, n_in) the net labels y (N,): the relaxed net for EP, the
    feedforward net for BP/FA."""
    correct = 0
    for xb, yb in data_mod.Batches(x, y, batch_size, shuffle=False).epoch():
        out = net(xb) if method == "ep" else _feedforward(net, xb)
        correct += int((out.argmax(1) == yb).sum())
    return correct


def _feedforward(net, x: torch.Tensor, alignment: bool = False) -> torch.Tensor:
    """The differentiable feedforward net (BP / FA) of a dense or conv net."""
    if isinstance(net, conv_mod.ConvEPNet):
        return conv_mod.feedforward(net, x)
    return feedforward(net, x, alignment=alignment)


def _lr_at(base: float, epoch: int, cfg: dict) -> float:
    """The learning rate of an epoch: constant, or cosine from ``base`` down to ``lr_min``."""
    if cfg.get("schedule") != "cosine":
        return base
    lo = float(cfg.get("lr_min", 0.0))
    return lo + (base - lo) * 0.5 * (1.0 + float(np.cos(np.pi * epoch / cfg["epochs"])))


def evaluate(net: EPNet, x: torch.Tensor, y: torch.Tensor, method: str, batch_size: int = 1000) -> float:
    """Accuracy in percent (see ``count_correct``)."""
    return 100.0 * count_correct(net, x, y, method, batch_size) / max(1, x.shape[0])


def run(cfg: dict, *, out: Optional[os.PathLike] = None, checkpoint: Optional[os.PathLike] = None,
        resume: Optional[os.PathLike] = None, data_dir: Optional[os.PathLike] = None, download: bool = True,
        progress: bool = True, dataset: Optional[data_mod.Dataset] = None,
        dist: Optional[dist_mod.Context] = None) -> dict:
    """Train as ``cfg`` says; returns the results dict (also written to ``out``).

    cfg: a resolved config (``presets.get(name)`` plus overrides).
    checkpoint: written after every epoch (default: next to ``out``, if given).
    resume: a checkpoint to continue from (same architecture and seed; any world size).
    dataset: an already loaded ``data.Dataset`` (else loaded from ``data_dir``).
    dist: this process's place in a data-parallel group (``distributed.init_from_env``):
        ``cfg["batch_size"]`` stays the global batch, each rank trains on its
        1/world share of it, grads are averaged across ranks, test accuracy is
        counted on shards and summed; only rank 0 writes ``out`` and ``checkpoint``.
    """
    cfg = validate(dict(cfg))
    world = dist.world_size if dist is not None else 1
    if dist is not None:
        dist_mod.check_batch(cfg["batch_size"], world)
        dev = dist.device
    else:
        dev = resolve_device(cfg["device"])
    main_rank = dist is None or dist.is_main
    progress = progress and main_rank
    out = Path(out) if out is not None else None
    checkpoint = Path(checkpoint) if checkpoint is not None else (
        out.with_suffix(".ckpt") if out is not None else None)

    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    if dataset is not None:
        ds = dataset
    elif dist is not None:  # rank 0 downloads (if it must) before the others look
        ds = dist.main_first(lambda: data_mod.load(cfg["dataset"], data_dir, download=download))
    else:
        ds = data_mod.load(cfg["dataset"], data_dir, download=download)
    dtype = DTYPES[cfg.get("dtype", "float32")]
    n = ds.x_train.shape[0] if cfg["limit_train"] is None else min(cfg["limit_train"], ds.x_train.shape[0])
    x_train, y_train = data_mod.to_float(ds.x_train[:n], device=dev, dtype=dtype), ds.y_train[:n].to(dev)
    n_test = ds.x_test.shape[0] if cfg.get("limit_test") is None else min(cfg["limit_test"], ds.x_test.shape[0])
    x_test, y_test = data_mod.to_float(ds.x_test[:n_test], device=dev, dtype=dtype), ds.y_test[:n_test].to(dev)
    if dist is not None:
        batches = dist_mod.ShardedBatches(x_train, y_train, cfg["batch_size"], rank=dist.rank, world_size=world,
                                          seed=cfg["seed"])
        lo, hi = dist.shard_range(n_test)  # each rank scores its own slice of the test set
        x_test, y_test = x_test[lo:hi], y_test[lo:hi]
    else:
        batches = data_mod.Batches(x_train, y_train, cfg["batch_size"], shuffle=True, seed=cfg["seed"])

    net = build_net(cfg).to(device=dev, dtype=dtype)
    opt = build_optimizer(net, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]  # the schedule's start (a resumed optimizer holds the last)
    reduce_grads = None
    if dist is not None:
        dist_mod.broadcast_module(net, dist)
        reduce_grads = dist_mod.GradAllReduce([p for g in opt.param_groups for p in g["params"]], dist)
    result = {"preset": cfg.get("preset"), "config": cfg, "epochs": [], "best_test_acc": None,
              "final_test_acc": None, "versions": versions(), "device": device_name(dev),
              "data_source": ds.source, "train_size": n, "test_size": n_test, "world_size": world,
              "finished": False}
    if dist is not None:
        result["distributed"] = {"world_size": world, "backend": dist.backend,
                                 "per_rank_batch": cfg["batch_size"] // world}
    start = 0
    if resume is not None:
        if dist is None:
            ck = torch.load(resume, map_location=dev, weights_only=False)  # our own file: holds RNG states
        else:  # rank 0 reads it and sends it: the other ranks need not see the file
            ck = dist.main_first(lambda: torch.load(resume, map_location="cpu", weights_only=False)
                                 if dist.is_main else None)
            ck = dist.broadcast_object(ck)
        mismatch = {k: (ck["config"].get(k), cfg.get(k)) for k in ARCH_KEYS if ck["config"].get(k) != cfg.get(k)}
        if mismatch:
            raise ValueError(f"checkpoint {resume} was written by a different run: {mismatch} (saved, asked)")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        _set_rng_state(ck["rng"])
        start, result["epochs"] = ck["epoch"], ck["history"]

    for epoch in range(start, cfg["epochs"]):
        net.train()
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = _lr_at(base, epoch, cfg)
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        steps = (batches.epoch(epoch) if dist is not None
                 else ((xb, yb, xb.shape[0]) for xb, yb in batches.epoch(epoch)))
        bar = tqdm(steps, total=len(batches), desc=f"epoch {epoch + 1}/{cfg['epochs']}",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for xb, yb, b_global in bar:
            opt.zero_grad(set_to_none=True)
            b = xb.shape[0]
            if b:  # a rank's share of a short last batch can be empty: it then adds zeros
                if cfg.get("augment"):  # random crop + flip, drawn from torch's RNG (checkpointed)
                    xb = conv_mod.augment(xb.view(b, *conv_mod.INPUT_SHAPES[cfg["dataset"]])).flatten(1)
                if cfg["method"] == "ep":
                    loss, logits = net.ep_step(xb, yb)
                else:
                    logits = _feedforward(net, xb, alignment=cfg["method"] == "fa")
                    loss = net.loss(logits, net._check_target(yb, b))
                    loss.backward()
                loss_sum += float(loss.detach()) * b
                correct += int((logits.argmax(1) == yb).sum())
                seen += b
            if reduce_grads is not None:
                reduce_grads(b / b_global)  # this shard's mean, weighted by its share of the global batch
            if cfg.get("clip"):
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(cfg["clip"]))
            opt.step()
            if seen:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100.0 * correct / seen:.2f}%")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        if dist is not None:
            loss_sum, correct, seen = dist.all_sum([loss_sum, correct, seen])
            correct, seen = int(correct), int(seen)
        if not np.isfinite(loss_sum):  # the same sum on every rank: all stop together
            raise FloatingPointError(f"training diverged in epoch {epoch + 1} (loss is {loss_sum}); lower the lr")
        net.eval()
        if dist is None:
            test_acc = evaluate(net, x_test, y_test, cfg["method"])
        else:
            (right,) = dist.all_sum([count_correct(net, x_test, y_test, cfg["method"])])
            test_acc = 100.0 * right / max(1, n_test)
            # Rank 0's RNG state is what a single process would hold (a rank with an
            # empty shard skipped a step's draws): every rank continues from it.
            _set_rng_state(dist.broadcast_object(_rng_state()))
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
               "test_acc": test_acc, "seconds": seconds}
        result["epochs"].append(rec)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: loss {rec['train_loss']:.4f}  train {rec['train_acc']:.2f}%  "
                       f"test {test_acc:.2f}%  ({seconds:.1f} s)", file=sys.stderr)
        _summarise(result)
        if checkpoint is not None and main_rank:
            state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                     "rng": _rng_state(), "history": result["epochs"], "config": cfg, "world_size": world}
            _atomic_write(checkpoint, lambda p: torch.save(state, p))
        if out is not None and main_rank:
            _atomic_write(out, lambda p: p.write_text(json.dumps(result, indent=2)))
    result["finished"] = True
    _summarise(result)
    if out is not None and main_rank:
        _atomic_write(out, lambda p: p.write_text(json.dumps(result, indent=2)))
    if dist is not None:
        dist.barrier()  # the files exist before any rank returns
    result["net"] = net  # for callers in Python; added after the JSON is written
    return result


def _summarise(result: dict) -> None:
    accs = [e["test_acc"] for e in result["epochs"]]
    result["best_test_acc"] = max(accs) if accs else None
    result["final_test_acc"] = accs[-1] if accs else None
    result["train_seconds"] = sum(e["seconds"] for e in result["epochs"])


# ----------------------------------------------------------------------------- CLI
def _floats(text: str):
    """"0.1" -> 0.1; "0.2,0.05" -> [0.2, 0.05] (per layer)."""
    parts = [float(v) for v in text.split(",")]
    return parts[0] if len(parts) == 1 else parts


def _widths(text: str) -> list[int]:
    """"64,64" -> [64, 64]: hidden layer widths, input side first."""
    try:
        widths = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths like 64,64, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return widths


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tritonep", description="Equilibrium Propagation (FRE-RNN) training")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a preset (see --list)",
                       description="Train a preset; options override its settings.")
    t.add_argument("preset", nargs="?", help="preset name, e.g. mnist-2hl (see --list)")
    t.add_argument("--list", action="store_true", help="list the presets with their settings and exit")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, help="the global batch (with --distributed: split across ranks)")
    t.add_argument("--hidden", type=_widths, help="hidden layer widths, e.g. 64,64 (replaces the preset's)")
    t.add_argument("--lr", type=_floats, help="learning rate, or a comma list, one per weight layer (input to output)")
    t.add_argument("--T", type=int, help="free phase steps")
    t.add_argument("--K", type=int, help="nudged phase steps")
    t.add_argument("--feedback", type=_floats, help="feedback coefficient, or a comma list, one per layer")
    t.add_argument("--nudge", type=float, help="nudge strength beta_f")
    t.add_argument("--rule", choices=("fre", "classic"))
    t.add_argument("--nudging", choices=("positive", "symmetric", "random-sign"))
    t.add_argument("--error", choices=("dynamic", "frozen"), help="recompute the output error every nudged step "
                   "(dynamic, Algorithm 1) or keep its free-phase value (frozen, the authors' code)")
    t.add_argument("--normalize", action="store_true", default=None, help="scale updates to gradient size")
    t.add_argument("--augment", action="store_true", default=None, help="random crop + flip (conv presets)")
    t.add_argument("--seed", type=int)
    t.add_argument("--dtype", choices=tuple(DTYPES), help="floating point type of weights and states (float32)")
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    t.add_argument("--backend", choices=("auto", "torch", "triton"),
                   help="auto (default: Triton kernels on CUDA, the PyTorch reference on CPU), torch or triton")
    t.add_argument("--precision", choices=("ieee", "tf32", "bf16"), help="operands of the Triton kernels' products")
    t.add_argument("--tol", type=float, help="stop each phase early once every sample's state change is below TOL")
    t.add_argument("--check-every", type=int, metavar="N", help="steps between convergence checks (default 5)")
    t.add_argument("--data-dir", help=f"data directory (default ${data_mod.ENV_VAR}, then the cache)")
    t.add_argument("--no-download", action="store_true", help="never download data")
    t.add_argument("--limit-train", type=int, metavar="N", help="train on the first N training images")
    t.add_argument("--limit-test", type=int, metavar="N", help="evaluate on the first N test images")
    t.add_argument("--out", help="results JSON (written after every epoch)")
    t.add_argument("--checkpoint", help="checkpoint path (default: the --out path with .ckpt)")
    t.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes torchrun starts (`torchrun --nproc_per_node=N -m tritonep "
                        "train PRESET --distributed`); --batch-size stays the global batch, split across ranks")
    from . import reproduce  # here, not at the top: reproduce imports this module

    sub.add_parser("analyze", help="dynamics, gradient alignment, sweeps and plots (tritonep analyze -h)",
                   add_help=False)
    reproduce.add_arguments(sub.add_parser("reproduce", help="rerun the paper's tables, several seeds each",
                                           description=reproduce.__doc__.split("\n\n")[0]))
    return ap


def _list_presets() -> str:
    rows = []
    for name, c in presets.PRESETS.items():
        arch = c.get("conv") or "-".join(str(v) for v in [input_size(c["dataset"])] + c["hidden"] + [10])
        extra = [c["feedback_weights"]] + ([f"res{c['residual']}"] if c["residual"] else []) + (
            [f"agt{c['agt']}"] if c["agt"] else [])
        rows.append(f"{name:24s} {c['method']:3s} {arch:28s} T={c['T']:<4d} K={c['K']:<4d} fb={c['feedback']!s:5s} "
                    f"nudge={c['nudge']!s:4s} {c['optimizer']} lr={c['lr']} bs={c['batch_size']} ep={c['epochs']} "
                    f"{' '.join(extra)}\n{'':24s} {c['description']}")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["analyze"]:  # its own parser: tritonep.analysis
        from . import analysis

        return analysis.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "reproduce":
        from . import reproduce

        return reproduce.run_args(args, argv[argv.index("reproduce") + 1:])
    if args.list:
        print(_list_presets())
        return 0
    if not args.preset:
        print("tritonep train: error: give a preset (see `tritonep train --list`)", file=sys.stderr)
        return 2
    try:
        cfg = presets.get(args.preset)
    except KeyError as e:
        print(f"tritonep train: error: {e.args[0]}", file=sys.stderr)
        return 2
    cfg["preset"] = args.preset
    for key in ("epochs", "batch_size", "hidden", "lr", "T", "K", "feedback", "nudge", "rule", "nudging", "error",
                "normalize", "augment", "seed", "dtype", "device", "backend", "precision", "tol", "check_every",
                "limit_train", "limit_test"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    ctx = None
    try:
        if args.distributed:
            ctx = dist_mod.init_from_env(cfg["device"], cfg["batch_size"])
        elif os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            raise ValueError(f"started as one of WORLD_SIZE={os.environ['WORLD_SIZE']} processes (torchrun?) without "
                             f"--distributed: each would train alone and write the same files; add --distributed")
        result = run(cfg, out=args.out, checkpoint=args.checkpoint, resume=args.resume, data_dir=args.data_dir,
                     download=not args.no_download, progress=not args.quiet, dist=ctx)
    except (ValueError, data_mod.DataNotFoundError, FileNotFoundError) as e:
        print(f"tritonep train: error: {e}", file=sys.stderr)
        if ctx is not None:
            dist_mod.shutdown(barrier=False)
        return 2
    if ctx is not None:
        dist_mod.shutdown()
        if not ctx.is_main:
            return 0
    print(json.dumps({"preset": args.preset, "best_test_acc": result["best_test_acc"],
                      "final_test_acc": result["final_test_acc"], "train_seconds": round(result["train_seconds"], 2),
                      "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
