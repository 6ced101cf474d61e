"""Baselines on the same modules: BP of the feedforward net, BPTT through the
relaxation, and feedback alignment (FA), for dense and conv nets.

All three read the weights of the EP net itself, so EP and its baselines are
compared on one set of parameters; they run through the net's reference engine
(autograd flows through it).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import reference as ref
from .conv import ConvEPNet
from .engine.conv_reference import pool
from .module import EPModule


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


def _fa_matrix(net, link) -> Tensor:
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


def feedforward(net: EPModule, x: Tensor, *, alignment: bool = False) -> Tensor:
    """The net with its feedback removed, evaluated layer by layer with autograd.

    s_l = rho(sum of forward links into l + b_l) in layer order (conv nets: each
    layer sends on its pooled map), then the readout. x: (B, n_in) (conv: (B, C, H, W)
    or flattened). Returns logits (B, C) (P-EP nets: output rates).
    alignment: backward through fixed random matrices (feedback alignment; dense nets).
    """
    conv = isinstance(net, ConvEPNet)
    if conv and alignment:
        raise ValueError("feedback alignment is implemented for dense nets only, not for a ConvEPNet")
    x = net.check_input(x)
    eng = net.reference_engine()
    s: list[Tensor] = [x]
    sent: list[Tensor] = [x]  # what each layer sends on (its pooled map for a conv layer)
    for l in range(1, net.n_state + 1):
        pre = eng.bias_term(l) if conv else net.layer_bias(l)
        for k in net.topology.incoming(l, include_input=True):
            if k.kind != "forward":
                continue
            if conv:
                term = eng.link_forward(k.weight, sent[k.src])
            else:
                W = net.matrix(k.weight)
                term = _AlignedLinear.apply(s[k.src], W, _fa_matrix(net, k)) if alignment else s[k.src] @ W.t()
            term = term * k.scale if k.scale != 1.0 else term
            pre = term if pre is None else pre + term
        s.append(ref.activate(net.activation, pre))
        sent.append(pool(s[-1], net.pool_size(l))[0] if conv else s[-1])
    if net.output == "neuron":
        return s[-1]
    W_f, b_f, M_f = net.readout_matrices()
    top = sent[net.n_conv].flatten(1) if conv else s[-1]
    if alignment:
        out = _AlignedLinear.apply(top, W_f, M_f.detach())
        return out + b_f if b_f is not None else out
    return ref.readout(top, W_f, b_f)


def _grads(net: EPModule, loss: Tensor) -> dict[str, Tensor]:
    names, params = zip(*[(n, p) for n, p in net.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for n, p, g in zip(names, params, grads)}


def bp_gradients(net: EPModule, x: Tensor, y: Tensor, *, alignment: bool = False) -> dict[str, Tensor]:
    """BP's gradients of the feedforward net's mean cost, keyed like
    ``net.named_parameters()``. x: (B, n_in) (conv: (B, C, H, W)); y: (B,) labels or
    (B, C) targets. ``alignment=True`` gives feedback alignment's updates instead."""
    with torch.enable_grad():
        out = feedforward(net, x, alignment=alignment)
        return _grads(net, net.loss(out, net.check_target(y, out.shape[0])))


def bptt_gradients(net: EPModule, x: Tensor, y: Tensor, T: Optional[int] = None) -> dict[str, Tensor]:
    """Gradients of the cost after T free steps (from zero), by backprop through
    the unrolled relaxation, keyed like ``net.named_parameters()``.

    With converged dynamics this is the gradient EP estimates (Ernoult et al. 2019).
    x: (B, n_in) (conv: (B, C, H, W)); y: (B,) labels or (B, C) targets.
    """
    x = net.check_input(x)
    T = net.T if T is None else T
    with torch.enable_grad():
        eng = net.reference_engine()
        s, _ = eng.run(eng.zero_states(x), eng.drives(x), T, from_zero=True)
        return _grads(net, net.loss(eng.logits(s), net.check_target(y, x.shape[0])))
