"""The nets an analysis runs on: checks, the options a net was built with, and
copies of a net with the same weights and other options (or another dtype)."""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from ..net import EPNet
from .strict_json import jsonable


def check_net(net) -> EPNet:
    """``net`` if it is an ``EPNet``, else a TypeError."""
    if not isinstance(net, EPNet):
        raise TypeError(f"expected a tritonep.EPNet, got {type(net).__name__}")
    return net


def as_batch(x) -> Tensor:
    """One sample (n_in,) or a batch (B, n_in): always a batch (B, n_in)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    return x.unsqueeze(0) if x.dim() == 1 else x


def net_options(net: EPNet) -> dict:
    """The keyword options of ``EPNet`` that ``net`` was built with (not the layers)."""
    c = net.config
    return dict(feedback=c["feedback"], feedback_weights=c["feedback_weights"], residual=c["residual"],
                agt=c["agt"], agt_seed=c["agt_seed"], alpha=c["alpha"], output=c["output"], nudge=net.nudge,
                activation=net.activation, T=net.T, K=net.K, rule=net.rule, nudging=net.nudging,
                error=net.error, normalize=net.normalize, backend=net.backend)


def describe(net: EPNet) -> dict:
    """The net's widths and options, JSON-ready (for reports)."""
    return jsonable({"sizes": list(net.sizes), **net_options(net)})


def with_options(net: EPNet, *, seed: int = 0, **overrides) -> EPNet:
    """A new net with the same layers and weights and some options changed.

    overrides: any ``EPNet`` keyword (feedback, nudge, alpha, T, K, residual,
    feedback_weights, ...). Every parameter and buffer the two nets share (same
    name and shape) is copied, so a sweep compares one set of weights; matrices
    only the new net has (a new residual link, fixed random feedback) are drawn
    from ``seed`` without touching torch's global RNG. Same dtype and device.
    """
    check_net(net)
    opts = net_options(net)
    unknown = set(overrides) - set(opts)
    if unknown:
        raise ValueError(f"unknown EPNet option(s) {sorted(unknown)}; expected some of {sorted(opts)}")
    opts.update(overrides)
    W = net.layers[0].weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = EPNet([copy.deepcopy(d) for d in net.layers], **opts).to(dtype=W.dtype, device=W.device)
    own = new.state_dict()
    shared = {k: v for k, v in net.state_dict().items() if k in own and own[k].shape == v.shape}
    new.load_state_dict(shared, strict=False)
    return new


def working_copy(net: EPNet, dtype: torch.dtype) -> EPNet:
    """A detached copy in ``dtype`` with no gradients, to run EP and baselines on."""
    work = copy.deepcopy(check_net(net)).to(dtype)
    for p in work.parameters():
        p.grad = None
    return work
