"""Per-layer EP update norms over training: the signal that fades with depth when
feedback is weak, with and without residual links. Unlike the rest of the
package, these functions train the nets they are given."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from ..data import Batches
from ..net import EPNet
from ..options import positive_float, positive_int
from .alignment import layer_label
from .netcopy import with_options
from .strict_json import jsonable


def train_update_norms(net: EPNet, x: Tensor, y: Tensor, *, epochs: int = 3, batch_size: int = 500,
                       lr: float = 1e-3, optimizer: Optional[torch.optim.Optimizer] = None, seed: int = 0,
                       log: Optional[Callable[[str], None]] = None) -> dict:
    """Train ``net`` with EP (in place) and record each weight's update norm per epoch.

    Per epoch and weight matrix: the mean over batches of ||.grad||_F after
    ``net.ep_step`` (the update before the optimizer rescales it): the quantity
    that vanishes in deep nets with weak feedback. x: (N, n_in) float; y: (N,)
    labels, on the net's device. ``optimizer`` defaults to Adam(lr).
    Returns ``{"names", "labels", "epochs", "norms": [[per epoch] per weight],
    "train_loss", "train_acc"}``, names ordered layers then skips.
    """
    epochs = positive_int("epochs", epochs, what="number of epochs")
    opt = optimizer if optimizer is not None else torch.optim.Adam(net.parameters(), lr=positive_float("lr", lr))
    names = [n for n, p in net.named_parameters() if n.endswith(".weight")]
    params = [net.get_parameter(n) for n in names]
    batches = Batches(x, y, batch_size, shuffle=True, seed=seed)
    norms, losses, accs = [], [], []
    for epoch in range(epochs):
        total = torch.zeros(len(names), dtype=torch.float64)
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in batches.epoch(epoch):
            opt.zero_grad(set_to_none=True)
            loss, logits = net.ep_step(xb, yb)
            total += torch.stack([p.grad.detach().double().norm().cpu() for p in params])
            opt.step()
            loss_sum += float(loss) * xb.shape[0]
            correct += int((logits.argmax(1) == yb).sum())
            seen += xb.shape[0]
        norms.append((total / len(batches)).tolist())
        losses.append(loss_sum / seen)
        accs.append(100.0 * correct / seen)
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"training diverged in epoch {epoch + 1}; lower the learning rate")
        if log is not None:
            log(f"epoch {epoch + 1}: loss {losses[-1]:.4f}, train acc {accs[-1]:.2f}%")
    return jsonable({"names": names, "labels": [layer_label(net, n) for n in names],
                      "epochs": list(range(1, epochs + 1)), "norms": [list(r) for r in zip(*norms)],
                      "train_loss": losses, "train_acc": accs, "batch_size": batch_size, "train_size": int(x.shape[0])})


def residual_update_norms(net: EPNet, x: Tensor, y: Tensor, *, every: int = 3, epochs: int = 3,
                          batch_size: int = 500, lr: float = 1e-3,
                          make_optimizer: Optional[Callable[[EPNet], torch.optim.Optimizer]] = None, seed: int = 0,
                          log: Optional[Callable[[str], None]] = None) -> dict:
    """``train_update_norms`` for two copies of ``net`` with the same initial weights:
    with residual links every ``every`` layers, and without any.
    make_optimizer: builds each copy's optimizer (default Adam(lr)).
    Returns ``{"with residual links (every k)": record, "without residual links": record}``."""
    every = positive_int("every", every, what="layers between residual links")
    out = {}
    for label, residual in ((f"with residual links (every {every})", every), ("without residual links", None)):
        if log is not None:
            log(label)
        trial = with_options(net, residual=residual, seed=seed)
        opt = make_optimizer(trial) if make_optimizer is not None else None
        out[label] = train_update_norms(trial, x, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=opt,
                                        seed=seed, log=log)
    return out
