"""Nets and optimizers from training configs (``tritonep.presets`` plus overrides).

``build_net(cfg)`` gives the ``EPNet`` (dense) or ``ConvEPNet`` (``cfg["conv"]``
names an architecture) a config describes; ``build_optimizer(net, cfg)`` its
optimizer. The constants name the values the config keys may take.
"""
from __future__ import annotations

from typing import Union

import torch

from .conv import ConvEPNet
from .module import EPModule
from .net import EPNet

METHODS = ("ep", "bp", "fa")
OPTIMIZERS = ("adam", "adamw", "sgd")
# optional "dtype" config key (float32 when absent); float64 for exactness checks
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# keys that fix the architecture: a checkpoint resumes only into the same ones
ARCH_KEYS = ("dataset", "hidden", "output", "feedback_weights", "residual", "agt", "bias", "activation", "seed",
             "conv", "input_norm")
# one image (C, H, W) of each data set, as conv nets take it
INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def input_size(dataset: str) -> int:
    """Pixels per flattened image of a data set (784 for MNIST, 3072 for CIFAR-10)."""
    return {"mnist": 784, "fashion-mnist": 784, "cifar10": 3072}[dataset]


def build_net(cfg: dict) -> Union[EPNet, ConvEPNet]:
    """The ``EPNet`` a config describes (hidden widths, 10 classes); a ``ConvEPNet``
    where the config names a conv architecture (``cfg["conv"]``, the input shape
    from ``cfg["dataset"]``)."""
    if cfg.get("conv"):
        return _build_conv(cfg)
    sizes = [input_size(cfg["dataset"])] + list(cfg["hidden"]) + [10]
    return EPNet(sizes, feedback=cfg["feedback"], feedback_weights=cfg["feedback_weights"], nudge=cfg["nudge"],
                 activation=cfg["activation"], residual=cfg["residual"], agt=cfg["agt"], agt_seed=cfg["seed"],
                 alpha=cfg["alpha"], bias=cfg["bias"], output=cfg["output"], T=cfg["T"], K=cfg["K"],
                 rule=cfg["rule"], nudging=cfg["nudging"], error=cfg["error"], normalize=cfg["normalize"],
                 backend=cfg["backend"], precision=cfg.get("precision", "auto"), tol=cfg.get("tol"),
                 check_every=cfg.get("check_every", 5), **_variant(cfg))


def _build_conv(cfg: dict) -> ConvEPNet:
    if cfg["dataset"] not in INPUT_SHAPES:
        raise ValueError(f"no conv input shape for data set {cfg['dataset']!r}")
    return ConvEPNet.from_arch(
        cfg["conv"], input_shape=INPUT_SHAPES[cfg["dataset"]], feedback=cfg["feedback"], nudge=cfg["nudge"],
        activation=cfg["activation"], residual=cfg.get("residual"), alpha=cfg.get("alpha", 1.0),
        output=cfg["output"], T=cfg["T"], K=cfg["K"], rule=cfg["rule"], nudging=cfg["nudging"], error=cfg["error"],
        normalize=cfg["normalize"], input_norm=cfg.get("input_norm"), backend=cfg.get("backend", "auto"),
        tol=cfg.get("tol"), check_every=cfg.get("check_every", 5), cuda_graph=cfg.get("cuda_graph", True),
        **_variant(cfg))


def _variant(cfg: dict) -> dict:
    """The nudge schedule, readout error and relaxation schedule of a config (older
    configs have none of them)."""
    return dict(nudge_schedule=cfg.get("nudge_schedule", "constant"), readout_error=cfg.get("readout_error", "free"),
                schedule=cfg.get("schedule", "synchronous"))


def build_optimizer(net: EPModule, cfg: dict) -> torch.optim.Optimizer:
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
