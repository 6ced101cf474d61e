"""Baselines on the same modules: BP of the feedforward net, BPTT through the
relaxation, and feedback alignment (FA).

All three read the weights of an ``EPNet`` so EP and its baselines are compared
on one set of parameters.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import reference as ref
from .net import EPNet


class _AlignedLinear(torch.autograd.Function):
    """``x @ W^T`` whose backward sends the error through a fixed matrix ``M``
    (shape of W) instead of W: feedback alignment (Lillicrap et al. 2016)."""

    @staticmethod
    def forward(ctx, x, W, M):
        ctx.save_for_backward(x, M)
        return x @ W.t()

    @staticmethod
    def backward(ctx, g):
        x, M = ctx.saved_tensors
        return g @ M, g.t() @ x, None


def _fa_matrix(net: EPNet, link) -> Tensor:
    """The fixed random matrix carrying the error back across a forward link:
    the EP net's own random feedback matrix of the same pair, as (out, in)."""
    if link.src == 0:  # the error is not sent into the input
        return net.matrix(link.weight).detach()
    back = [k for k in net.topology.links
            if k.src == link.dst and k.dst == link.src and k.kind == "feedback" and k.weight.startswith("fixed.")]
    if not back:
        raise ValueError(
            f"feedback alignment needs a fixed random feedback matrix for the forward link {link.src}->{link.dst}; "
            "build the net with feedback_weights='random' (AGT forward links have none)"
        )
    return net.matrix(back[0].weight).t()


def _conv_module(net, alignment: bool = False):
    """``tritonep.conv`` when ``net`` is a ``ConvEPNet`` (its baselines live there), else None."""
    from . import conv

    if not isinstance(net, conv.ConvEPNet):
        return None
    if alignment:
        raise ValueError("feedback alignment is implemented for dense nets only, not for a ConvEPNet")
    return conv


def feedforward(net: EPNet, x: Tensor, *, alignment: bool = False) -> Tensor:
    """The net with its feedback removed, evaluated layer by layer with autograd.

    s_l = rho(sum of forward links into l + b_l) in layer order, then the readout.
    x: (B, n_in). Returns logits (B, C) (P-EP nets: output rates).
    alignment: backward through fixed random matrices (feedback alignment).
    A ``ConvEPNet`` goes to ``tritonep.conv.feedforward``.
    """
    conv = _conv_module(net, alignment)
    if conv is not None:
        return conv.feedforward(net, x)
    x = net._check_input(x)
    s: list[Optional[Tensor]] = [x] + [None] * net.n_state
    for l in range(1, net.n_state + 1):
        pre = net.layer_bias(l)
        for k in net.topology.links:
            if k.dst != l or k.kind != "forward":
                continue
            W = net.matrix(k.weight)
            term = _AlignedLinear.apply(s[k.src], W, _fa_matrix(net, k)) if alignment else s[k.src] @ W.t()
            term = term * k.scale if k.scale != 1.0 else term
            pre = term if pre is None else pre + term
        s[l] = ref.activate(net.activation, pre)
    if net.output == "neuron":
        return s[-1]
    W_f, b_f, M_f = net.readout_matrices()
    if alignment:
        out = _AlignedLinear.apply(s[-1], W_f, M_f.detach())
        return out + b_f if b_f is not None else out
    return ref.readout(s[-1], W_f, b_f)


def _grads(net: EPNet, loss: Tensor) -> dict[str, Tensor]:
    names, params = zip(*[(n, p) for n, p in net.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for n, p, g in zip(names, params, grads)}


def bp_gradients(net: EPNet, x: Tensor, y: Tensor, *, alignment: bool = False) -> dict[str, Tensor]:
    """BP's gradients of the feedforward net's mean cost, keyed like
    ``net.named_parameters()``. x: (B, n_in); y: (B,) labels or (B, C) targets.
    ``alignment=True`` gives feedback alignment's updates instead."""
    conv = _conv_module(net, alignment)
    if conv is not None:
        return conv.bp_gradients(net, x, y)
    with torch.enable_grad():
        out = feedforward(net, x, alignment=alignment)
        return _grads(net, net.loss(out, net._check_target(y, out.shape[0])))


def bptt_gradients(net: EPNet, x: Tensor, y: Tensor, T: Optional[int] = None) -> dict[str, Tensor]:
    """Gradients of the cost after T free steps (from zero), by backprop through
    the unrolled relaxation, keyed like ``net.named_parameters()``.

    With converged dynamics this is the gradient EP estimates (Ernoult et al. 2019).
    x: (B, n_in); y: (B,) labels or (B, C) targets.
    """
    conv = _conv_module(net)
    if conv is not None:
        return conv.bptt_gradients(net, x, y, T)
    x = net._check_input(x)
    T = net.T if T is None else T
    with torch.enable_grad():
        s = ref.relax(net.zero_states(x), net.drives(x), net.terms(), net.activation, T)
        return _grads(net, net.loss(net.logits(s), net._check_target(y, x.shape[0])))
