"""Training: ``run(config)``, the loop behind ``tritonep train PRESET [options]``.

One flat loop: load data onto the device, build the net and optimizer from the
config (``tritonep.build``), then per epoch: EP (or BP / FA) steps over seeded
batches, test accuracy, a checkpoint (``tritonep.checkpoint``: model, optimizer,
epoch, RNG states) and the JSON results. A run resumed from a checkpoint gives
the same weights as one never interrupted. ``limit_train`` / ``limit_test`` draw
a seeded class-stratified subset (``data.stratified_subset``, recorded under
``subsets``). Each EP epoch records how well the free phase settled (the
per-batch ``EPModule.last_residual``: median, max and the fraction under
``residual_threshold``) and warns once (``RelaxationWarning``) when it did not.
With ``dist`` (under torchrun) the same loop runs data-parallel: see
``tritonep.distributed``. The command line is ``tritonep.cli.train``.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt_mod
from . import collapse as collapse_mod
from . import data as data_mod
from . import distributed as dist_mod
from . import presets
from .baselines import feedforward
from .build import ARCH_KEYS, DTYPES, INPUT_SHAPES, METHODS, OPTIMIZERS, build_net, build_optimizer
from .module import EPModule
from .options import SCHEDULES
from .runinfo import device_name, resolve_device, versions

# a batch's free phase has settled when its relative last-step residual is under this: the
# state moves by less than 1 % of its norm per step (float32 rounding leaves ~1e-7; the dense
# FRE presets end at 1e-8..1e-5, a conv net at T=10 near 2e-3; feedback 5 leaves 0.2)
RESIDUAL_THRESHOLD = 1e-2
# an epoch with fewer of its batches settled than this warns
SETTLED_FRACTION = 0.9


class RelaxationWarning(UserWarning):
    """The free phase of a run did not settle (its residual stayed over the threshold)."""


def validate(cfg: dict) -> dict:
    """Check a resolved config (older spellings upgraded: ``presets.upgrade``); returns
    it. Raises ValueError naming the bad key."""
    presets.upgrade(cfg)
    if cfg["method"] not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg['method']!r}")
    if cfg["dataset"] not in data_mod.DATASETS:
        raise ValueError(f"dataset must be one of {data_mod.DATASETS}, got {cfg['dataset']!r}")
    for key in ("epochs", "batch_size", "T", "K"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key} must be a positive int, got {v!r}")
    for key in ("limit_train", "limit_test"):
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{key} must be a positive int, got {v!r}")
    g = cfg.get("guard_residual")
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, float)) or not g > 0):
        raise ValueError(f"guard_residual must be None or a positive number, got {g!r}")
    thr = cfg.get("residual_threshold", RESIDUAL_THRESHOLD)
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not thr > 0:
        raise ValueError(f"residual_threshold must be a positive number, got {thr!r}")
    if cfg.get("conv") and cfg["method"] == "fa":
        raise ValueError("feedback alignment is not implemented for conv nets (method ep or bp)")
    if cfg.get("lr_schedule") not in (None, "cosine"):
        raise ValueError(f"lr_schedule must be None or 'cosine', got {cfg['lr_schedule']!r}")
    if cfg["schedule"] not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {cfg['schedule']!r}")
    if cfg["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {cfg['optimizer']!r}")
    if cfg.get("dtype", "float32") not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {cfg['dtype']!r}")
    return cfg


@torch.no_grad()
def count_correct(net: EPModule, x: torch.Tensor, y: torch.Tensor, method: str, batch_size: int = 1000) -> int:
    """How many of x (N, n_in) the net labels y (N,): the relaxed net for EP, the
    feedforward net for BP/FA."""
    correct = torch.zeros((), dtype=torch.int64, device=x.device)  # read back once, not per batch
    for xb, yb in data_mod.Batches(x, y, batch_size, shuffle=False).epoch():
        out = net(xb) if method == "ep" else feedforward(net, xb)
        correct += (out.argmax(1) == yb).sum()
    return int(correct)


def lr_at(base: float, epoch: int, cfg: dict) -> float:
    """The learning rate of an epoch: constant, or cosine from ``base`` down to ``lr_min``."""
    if cfg.get("lr_schedule") != "cosine":
        return base
    lo = float(cfg.get("lr_min", 0.0))
    return lo + (base - lo) * 0.5 * (1.0 + float(np.cos(np.pi * epoch / cfg["epochs"])))


def evaluate(net: EPModule, x: torch.Tensor, y: torch.Tensor, method: str, batch_size: int = 1000) -> float:
    """Accuracy in percent (see ``count_correct``)."""
    return 100.0 * count_correct(net, x, y, method, batch_size) / max(1, x.shape[0])


def run(cfg: dict, *, out: Optional[os.PathLike] = None, checkpoint: Optional[os.PathLike] = None,
        resume: Optional[os.PathLike] = None, data_dir: Optional[os.PathLike] = None, download: bool = True,
        progress: bool = True, dataset: Optional[data_mod.Dataset] = None,
        dist: Optional[dist_mod.Context] = None,
        on_epoch: Optional[Callable[[dict, EPModule, torch.optim.Optimizer], None]] = None) -> dict:
    """Train as ``cfg`` says; returns the results dict (also written to ``out``).

    cfg: a resolved config (``presets.get(name)`` plus overrides).
    checkpoint: written after every epoch (default: next to ``out``, if given); the
        best epoch's (by test accuracy) is kept beside it as ``NAME.best.ckpt``, the
        same format (``tritonep evaluate`` scores it, ``--resume`` continues from it),
        named in the results (``best_checkpoint``, ``best_epoch``).
    resume: a checkpoint to continue from (same architecture and seed; any world size).
    dataset: an already loaded ``data.Dataset`` (else loaded from ``data_dir``).
    dist: this process's place in a data-parallel group (``distributed.init_from_env``):
        ``cfg["batch_size"]`` stays the global batch, each rank trains on its
        1/world share of it, grads are averaged across ranks, test accuracy is
        counted on shards and summed; only rank 0 writes ``out`` and ``checkpoint``.
    on_epoch: called after each epoch's record is made, before it is saved, as
        ``on_epoch(record, net, optimizer)``; what it adds to the record (JSON values)
        is saved with it (diagnostics: ``bench/collapse.py``).
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

    ck = None
    if resume is not None:  # first: a bad or foreign checkpoint fails before any data is read
        if dist is None:
            ck = ckpt_mod.load(resume, map_location=dev)
        else:  # rank 0 reads it and sends it: the other ranks need not see the file
            ck = dist.main_first(lambda: ckpt_mod.load(resume, map_location="cpu") if dist.is_main else None)
            ck = dist.broadcast_object(ck)
        check_resume(ck, cfg, resume)

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
    subsets, split = {}, {}
    for name, x_all, y_all in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        limit = cfg.get(f"limit_{name}")
        rows = (torch.arange(y_all.shape[0]) if limit is None
                else data_mod.stratified_subset(y_all, limit, cfg["seed"], name))
        subsets[name] = data_mod.subset_record(y_all, rows, cfg["seed"], limit)
        whole = rows.numel() == y_all.shape[0]
        split[name] = (data_mod.to_float(x_all if whole else x_all[rows], device=dev, dtype=dtype),
                       (y_all if whole else y_all[rows]).to(dev))
    (x_train, y_train), (x_test, y_test) = split["train"], split["test"]
    n, n_test = x_train.shape[0], x_test.shape[0]
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
              "data_source": ds.source, "train_size": n, "test_size": n_test, "subsets": subsets,
              "residual_threshold": cfg.get("residual_threshold", RESIDUAL_THRESHOLD), "world_size": world,
              "collapse": None, "finished": False}
    if dist is not None:
        result["distributed"] = {"world_size": world, "backend": dist.backend,
                                 "per_rank_batch": cfg["batch_size"] // world}
    start, warned = 0, False
    watch = collapse_mod.Watch()
    guard = cfg.get("guard_residual")
    if ck is not None:
        try:
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            ckpt_mod.set_rng_state(ck["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:  # shapes or states of another net
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ckpt_mod.CheckpointError(f"checkpoint {resume} does not fit this run's net or optimizer: "
                                           f"{first[:300]}") from None
        start, result["epochs"] = ck["epoch"], ck["history"]
        watch = collapse_mod.Watch(result["epochs"])
        result["collapse"] = watch.collapse
        _summarise(result)  # the best so far, so a worse epoch never replaces its checkpoint
        if checkpoint is not None and result["epochs"] and best_path(checkpoint).is_file():
            best = max(range(len(result["epochs"])), key=lambda i: (result["epochs"][i]["test_acc"], -i))
            result.update(best_checkpoint=str(best_path(checkpoint)), best_epoch=best + 1)

    for epoch in range(start, cfg["epochs"]):
        net.train()
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = lr_at(base, epoch, cfg)
        t0 = time.perf_counter()
        # per-batch sums stay on the device: read back once per epoch (and when the bar refreshes)
        acc = torch.zeros(2, dtype=torch.float64, device=dev)  # loss sum, correct
        seen, residuals, shown, guarded = 0, [], -float("inf"), 0  # the bar shows the first batch at once
        steps = (batches.epoch(epoch) if dist is not None
                 else ((xb, yb, xb.shape[0]) for xb, yb in batches.epoch(epoch)))
        bar = tqdm(steps, total=len(batches), desc=f"epoch {epoch + 1}/{cfg['epochs']}",
                   disable=not progress, leave=False, dynamic_ncols=True)
        for xb, yb, b_global in bar:
            opt.zero_grad(set_to_none=True)
            b = xb.shape[0]
            if b:  # a rank's share of a short last batch can be empty: it then adds zeros
                if cfg.get("augment"):  # random crop + flip, drawn from torch's RNG (checkpointed)
                    xb = data_mod.augment(xb.view(b, *INPUT_SHAPES[cfg["dataset"]])).flatten(1)
                if cfg["method"] == "ep":
                    loss, logits = net.ep_step(xb, yb)
                    residuals.append(net.last_residual_tensor)
                else:
                    logits = feedforward(net, xb, alignment=cfg["method"] == "fa")
                    loss = net.loss(logits, net.check_target(yb, b))
                    loss.backward()
                acc[0] += loss.detach().to(torch.float64) * b
                acc[1] += (logits.argmax(1) == yb).sum()
                seen += b
            elif cfg["method"] == "ep":  # an empty shard moved nothing
                residuals.append(torch.zeros((), device=dev))
            if guard is not None and cfg["method"] == "ep":
                r = float(residuals[-1])  # the guard's price: one host sync per batch
                if dist is not None:  # every rank skips the same batches
                    r = dist.all_max([r])[0]
                if not r < guard:  # NaN too: a free phase that did not settle gives no gradient
                    guarded += 1
                    continue
            if reduce_grads is not None:
                reduce_grads(b / b_global)  # this shard's mean, weighted by its share of the global batch
            if cfg.get("clip"):
                torch.nn.utils.clip_grad_norm_(net.parameters(), float(cfg["clip"]))
            opt.step()
            if progress and seen and time.monotonic() - shown >= 0.5:  # one read per half second, not per batch
                shown = time.monotonic()
                got = torch.cat([acc, residuals[-1].reshape(1).to(acc)] if residuals else [acc]).tolist()
                bar.set_postfix(loss=f"{got[0] / seen:.4f}", acc=f"{100.0 * got[1] / seen:.2f}%",
                                **({"residual": f"{got[2]:.1e}"} if residuals else {}))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        net.check_pending()  # bad values a GPU found during the epoch, raised now
        loss_sum, correct = acc.tolist()
        correct = int(correct)
        residuals = torch.stack(residuals).to(torch.float64).tolist() if residuals else []
        seconds = time.perf_counter() - t0
        if dist is not None:
            loss_sum, correct, seen = dist.all_sum([loss_sum, correct, seen])
            correct, seen = int(correct), int(seen)
            residuals = dist.all_max(residuals)  # per global batch: the largest over its shards
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
            ckpt_mod.set_rng_state(dist.broadcast_object(ckpt_mod.rng_state()))
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
               "test_acc": test_acc, "seconds": seconds,
               **residual_stats(residuals, result["residual_threshold"]),
               **({"guarded": guarded} if guard is not None else {})}
        if on_epoch is not None:
            on_epoch(rec, net, opt)
        result["epochs"].append(rec)
        collapsed = watch.epoch(rec)
        if progress:
            settle = (f"  residual {rec['residual_median']:.1e} ({100 * rec['settled_fraction']:.0f}% settled)"
                      if residuals else "")
            tqdm.write(f"epoch {epoch + 1}: loss {rec['train_loss']:.4f}  train {rec['train_acc']:.2f}%  "
                       f"test {test_acc:.2f}%{settle}  ({seconds:.1f} s)"
                       + (f"  guarded {guarded} batches" if guarded else "") + ("  COLLAPSED" if collapsed else ""),
                       file=sys.stderr)
        if collapsed and main_rank:
            result["collapse"] = collapsed
            warnings.warn(collapse_mod.message(collapsed, result["epochs"], result.get("best_checkpoint"), cfg),
                          collapse_mod.CollapseWarning, stacklevel=2)
        if residuals and not warned and rec["settled_fraction"] < SETTLED_FRACTION and main_rank:
            warned = True
            warnings.warn(not_settled_message(rec, result["residual_threshold"], cfg), RelaxationWarning,
                          stacklevel=2)
        improved = result["best_test_acc"] is None or test_acc > result["best_test_acc"]
        _summarise(result)
        if checkpoint is not None and main_rank:
            state = dict(net=net, optimizer=opt, epoch=epoch + 1, history=result["epochs"], config=cfg,
                         world_size=world)
            if improved:  # the best weights survive whatever later epochs do
                ckpt_mod.save(best_path(checkpoint), **state)
                result.update(best_checkpoint=str(best_path(checkpoint)), best_epoch=epoch + 1)
            ckpt_mod.save(checkpoint, **state)
        if out is not None and main_rank:
            _write_results(out, result)
    result["finished"] = True
    _summarise(result)
    if out is not None and main_rank:
        _write_results(out, result)
    if dist is not None:
        dist.barrier()  # the files exist before any rank returns
    result["net"] = net  # for callers in Python; added after the JSON is written
    return result


def evaluate_checkpoint(path: os.PathLike, *, data_dir: Optional[os.PathLike] = None, download: bool = True,
                        device: Optional[str] = None, limit_test: Optional[int] = None,
                        dataset: Optional[data_mod.Dataset] = None) -> dict:
    """Score a checkpoint's weights (any ``run`` wrote, the best epoch's too) on the
    test images of its run's data set, as the run did (its subset, or ``limit_test``).
    Returns ``{"checkpoint", "preset", "epoch", "test_acc", "test_size"}``."""
    ck = ckpt_mod.load(path, map_location="cpu")
    cfg = validate(dict(ck["config"]))
    dev = resolve_device(device or cfg["device"])
    dtype = DTYPES[cfg.get("dtype", "float32")]
    ds = dataset if dataset is not None else data_mod.load(cfg["dataset"], data_dir, download=download)
    limit = limit_test if limit_test is not None else cfg.get("limit_test")
    rows = (torch.arange(ds.y_test.shape[0]) if limit is None
            else data_mod.stratified_subset(ds.y_test, limit, cfg["seed"], "test"))
    x, y = data_mod.to_float(ds.x_test[rows], device=dev, dtype=dtype), ds.y_test[rows].to(dev)
    net = build_net(cfg).to(device=dev, dtype=dtype)
    try:
        net.load_state_dict(ck["model"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ckpt_mod.CheckpointError(f"checkpoint {path}: its weights do not fit its own config ({first[:300]})")
    net.eval()
    return {"checkpoint": str(path), "preset": cfg.get("preset"), "epoch": ck["epoch"],
            "test_acc": evaluate(net, x, y, cfg["method"]), "test_size": int(rows.numel())}


def best_path(checkpoint: os.PathLike) -> Path:
    """Where the best epoch's checkpoint is kept beside ``checkpoint``: ``NAME.best.ckpt``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".best" + (p.suffix or ".ckpt"))


def check_resume(ck: dict, cfg: dict, path) -> None:
    """Raise ``CheckpointError`` unless checkpoint ``ck`` (read from ``path``) was written
    by a run of the same architecture and data set as ``cfg``."""
    saved = ck["config"]
    mismatch = [f"{k} {saved.get(k)!r} there, {cfg.get(k)!r} here" for k in ARCH_KEYS if saved.get(k) != cfg.get(k)]
    if mismatch:
        what = f" (preset {saved['preset']})" if saved.get("preset") not in (None, cfg.get("preset")) else ""
        raise ckpt_mod.CheckpointError(f"checkpoint {path} was written by a different run{what}: "
                                       + "; ".join(mismatch))


def residual_stats(residuals: list[float], threshold: float) -> dict:
    """An epoch's free-phase residuals (one per batch) as its record's
    ``residual_median``, ``residual_max`` and ``settled_fraction`` (the fraction under
    ``threshold``); None each without residuals (BP, FA)."""
    if not residuals:
        return {"residual_median": None, "residual_max": None, "settled_fraction": None}
    r = sorted(residuals)
    mid = len(r) // 2
    median = r[mid] if len(r) % 2 else 0.5 * (r[mid - 1] + r[mid])
    return {"residual_median": median, "residual_max": r[-1],
            "settled_fraction": sum(v < threshold for v in r) / len(r)}


def not_settled_message(rec: dict, threshold: float, cfg: dict) -> str:
    """The warning of an epoch whose free phase did not settle: the residual and the fixes."""
    run = f" ({cfg.get('preset') or 'run'}, seed {cfg['seed']})"
    return (f"the free phase has not settled in epoch {rec['epoch']}{run}: last-step residual "
            f"{rec['residual_median']:.2e} "
            f"(relative, median over batches; max {rec['residual_max']:.2e}), under {threshold:g} in only "
            f"{100 * rec['settled_fraction']:.0f}% of batches, so EP's updates are unreliable; use less feedback "
            f"(now {cfg.get('feedback')}), more free steps (T={cfg['T']}), or tol to run each phase until it "
            f"settles (T then a maximum)")


def _summarise(result: dict) -> None:
    accs = [e["test_acc"] for e in result["epochs"]]
    result["best_test_acc"] = max(accs) if accs else None
    result["final_test_acc"] = accs[-1] if accs else None
    result["train_seconds"] = sum(e["seconds"] for e in result["epochs"])


def _write_results(path: Path, result: dict) -> None:
    ckpt_mod.atomic_write(path, lambda p: p.write_text(json.dumps(result, indent=2)))
