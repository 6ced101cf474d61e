"""Training: ``run(config)``, the loop behind ``tritonep train PRESET [options]``.

One flat loop: load data onto the device, build the net and optimizer from the
config (``tritonep.build``), then per epoch: EP (or BP / FA) steps over seeded
batches, test accuracy, a checkpoint (``tritonep.checkpoint``: model, optimizer,
epoch, RNG states) and the JSON results. A run resumed from a checkpoint gives
the same weights as one never interrupted. With ``dist`` (under torchrun) the
same loop runs data-parallel: see ``tritonep.distributed``. The command line is
``tritonep.cli.train``.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt_mod
from . import data as data_mod
from . import distributed as dist_mod
from .baselines import feedforward
from .build import ARCH_KEYS, DTYPES, INPUT_SHAPES, METHODS, OPTIMIZERS, build_net, build_optimizer
from .module import EPModule
from .runinfo import device_name, resolve_device, versions


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


@torch.no_grad()
def count_correct(net: EPModule, x: torch.Tensor, y: torch.Tensor, method: str, batch_size: int = 1000) -> int:
    """How many of x (N, n_in) the net labels y (N,): the relaxed net for EP, the
    feedforward net for BP/FA."""
    correct = 0
    for xb, yb in data_mod.Batches(x, y, batch_size, shuffle=False).epoch():
        out = net(xb) if method == "ep" else feedforward(net, xb)
        correct += int((out.argmax(1) == yb).sum())
    return correct


def lr_at(base: float, epoch: int, cfg: dict) -> float:
    """The learning rate of an epoch: constant, or cosine from ``base`` down to ``lr_min``."""
    if cfg.get("schedule") != "cosine":
        return base
    lo = float(cfg.get("lr_min", 0.0))
    return lo + (base - lo) * 0.5 * (1.0 + float(np.cos(np.pi * epoch / cfg["epochs"])))


def evaluate(net: EPModule, x: torch.Tensor, y: torch.Tensor, method: str, batch_size: int = 1000) -> float:
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
            ck = ckpt_mod.load(resume, map_location=dev)
        else:  # rank 0 reads it and sends it: the other ranks need not see the file
            ck = dist.main_first(lambda: ckpt_mod.load(resume, map_location="cpu") if dist.is_main else None)
            ck = dist.broadcast_object(ck)
        mismatch = {k: (ck["config"].get(k), cfg.get(k)) for k in ARCH_KEYS if ck["config"].get(k) != cfg.get(k)}
        if mismatch:
            raise ValueError(f"checkpoint {resume} was written by a different run: {mismatch} (saved, asked)")
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        ckpt_mod.set_rng_state(ck["rng"])
        start, result["epochs"] = ck["epoch"], ck["history"]

    for epoch in range(start, cfg["epochs"]):
        net.train()
        for g, base in zip(opt.param_groups, base_lrs):
            g["lr"] = lr_at(base, epoch, cfg)
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
                    xb = data_mod.augment(xb.view(b, *INPUT_SHAPES[cfg["dataset"]])).flatten(1)
                if cfg["method"] == "ep":
                    loss, logits = net.ep_step(xb, yb)
                else:
                    logits = feedforward(net, xb, alignment=cfg["method"] == "fa")
                    loss = net.loss(logits, net.check_target(yb, b))
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
            ckpt_mod.set_rng_state(dist.broadcast_object(ckpt_mod.rng_state()))
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": 100.0 * correct / seen,
               "test_acc": test_acc, "seconds": seconds}
        result["epochs"].append(rec)
        if progress:
            tqdm.write(f"epoch {epoch + 1}: loss {rec['train_loss']:.4f}  train {rec['train_acc']:.2f}%  "
                       f"test {test_acc:.2f}%  ({seconds:.1f} s)", file=sys.stderr)
        _summarise(result)
        if checkpoint is not None and main_rank:
            ckpt_mod.save(checkpoint, net=net, optimizer=opt, epoch=epoch + 1, history=result["epochs"], config=cfg,
                          world_size=world)
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


def _summarise(result: dict) -> None:
    accs = [e["test_acc"] for e in result["epochs"]]
    result["best_test_acc"] = max(accs) if accs else None
    result["final_test_acc"] = accs[-1] if accs else None
    result["train_seconds"] = sum(e["seconds"] for e in result["epochs"])


def _write_results(path: Path, result: dict) -> None:
    ckpt_mod.atomic_write(path, lambda p: p.write_text(json.dumps(result, indent=2)))
