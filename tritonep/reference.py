"""The maths of EP on a layered recurrent net, in plain PyTorch.

This is the specification the Triton kernels are checked against, and the fast
path on CPU. Notation follows Liu & Chen (FRE-RNN, arXiv 2508.11659):

    s_l[t+1] = rho( drive_l + sum_{links c into l} scale_c * s_src(c)[t] @ M_c  (+ nudge on the top layer) )

States are firing rates (post-activation), updated synchronously (every layer
reads the previous step's states) or alternating (odd layers, then even layers from
the odd layers' new states: ``step``'s ``order``, ``Topology.update_order``). ``drive_l`` (input drive ``x @ W0^T`` plus the
layer's bias) is computed once per batch. A ``term`` here is a triple
``(src, M, scale)`` with ``M`` already oriented so the contribution is
``scale * s[src] @ M`` (shape ``(B, n_src) @ (n_src, n_dst)``).

Every function takes an optional ``out`` so the same equations run in place into
preallocated buffers (no autograd, the fast path) or out of place (autograd can
differentiate them: BPTT in ``tritonep.baselines``).
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .options import ACTIVATIONS, choice

Term = tuple[int, Tensor, float]


def check_activation(name: str) -> str:
    """``name`` if it is one of ``ACTIVATIONS``, else a ValueError listing them."""
    return choice("activation", name, ACTIVATIONS)


def activate(name: str, x: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """rho(x). ``tanh``; ``hard_sigmoid`` = clamp(x, 0, 1); ``pep_sigmoid`` =
    1 / (1 + exp(-4 (x - 0.5))) (Ernoult et al. 2019). In place when ``out is x``."""
    if name == "tanh":
        # Not 2 sigmoid(2x) - 1: faster on CPU, but it loses every digit for small |x|, where
        # a deep net's learning signal s^beta - s^0 lives. torch.tanh in place and out of place
        # (autograd) alike: exact, and on the EPYC this ran on faster than the accurate
        # expm1(2x) / (expm1(2x) + 2) (bench/test_bench_activations.py; another machine ranked
        # them the other way, by 26 %, too little to keep two formulas).
        return torch.tanh(x, out=out) if out is not None else torch.tanh(x)
    if name == "hard_sigmoid":
        return torch.clamp(x, 0.0, 1.0, out=out) if out is not None else torch.clamp(x, 0.0, 1.0)
    if name == "pep_sigmoid":
        if out is None:
            return torch.sigmoid(4.0 * (x - 0.5))
        if out is not x:
            out.copy_(x)
        return out.sub_(0.5).mul_(4.0).sigmoid_()
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


# ----------------------------------------------------------------------------- nudges
class _Schedule:
    """What both nudges share: the strength of each nudged step. ``beta`` is that of
    every step, or with ``ramp`` that of the first, the k-th (k = 1..K) getting k * beta."""

    beta: float
    ramp: bool

    def at(self, t: int):
        """The nudge of nudged step ``t`` (0-based): this one, or with the ramp a copy of
        strength ``(t + 1) * beta``."""
        if not self.ramp:
            return self
        n = copy.copy(self)
        n.beta, n.ramp = self.beta * (t + 1), False
        return n


class SoftmaxNudge(_Schedule):
    """FRE nudge: ``+ beta_f * (y - softmax(s_L @ W_f^T + b_f)) @ M_f`` on the last
    hidden layer, where ``M_f`` is ``W_f`` (symmetric, i.e. B_f = W_f^T) or a fixed
    random ``(C, n_L)`` matrix.

    W_f: (C, n_L) readout weight; b_f: (C,) or None; M_f: (C, n_L);
    target: (B, C) class probabilities (one-hot for labels); beta: nudge strength
    (signed). ``frozen=True`` keeps the error at its free-phase value (the paper
    authors' code) instead of recomputing p from the current state at every step
    (the paper's Algorithm 1, the default). ``ramp``: see ``at``.
    """

    def __init__(self, W_f: Tensor, b_f: Optional[Tensor], M_f: Tensor, target: Tensor, beta: float,
                 frozen: bool = False, free_top: Optional[Tensor] = None, ramp: bool = False):
        self.W_f, self.b_f, self.M_f, self.target, self.beta = W_f, b_f, M_f, target, float(beta)
        self.ramp = bool(ramp)
        self.frozen_error = self.error(free_top) if frozen else None

    def error(self, s_top: Tensor) -> Tensor:
        """(B, C) output error y - p for the top state layer ``s_top`` (B, n_L)."""
        return self.target - torch.softmax(readout(s_top, self.W_f, self.b_f), dim=1)

    def add_to(self, pre: Tensor, s_top: Tensor, inplace: bool) -> Tensor:
        e = self.frozen_error if self.frozen_error is not None else self.error(s_top)
        if inplace:
            return pre.addmm_(e, self.M_f, alpha=self.beta)
        return torch.addmm(pre, e, self.M_f, alpha=self.beta)


class NeuronNudge(_Schedule):
    """P-EP nudge: ``+ beta * (y - s_out)`` on the output neurons (the gradient of
    the MSE cost 0.5 * ||y - s_out||^2). target: (B, C). ``ramp``: see ``at``."""

    def __init__(self, target: Tensor, beta: float, frozen: bool = False, free_top: Optional[Tensor] = None,
                 ramp: bool = False):
        self.target, self.beta, self.ramp = target, float(beta), bool(ramp)
        self.frozen_error = (target - free_top) if frozen else None

    def add_to(self, pre: Tensor, s_top: Tensor, inplace: bool) -> Tensor:
        e = self.frozen_error if self.frozen_error is not None else self.target - s_top
        if inplace:
            return pre.add_(e, alpha=self.beta)
        return pre + self.beta * e


def readout(s_top: Tensor, W_f: Tensor, b_f: Optional[Tensor]) -> Tensor:
    """Logits ``s_top @ W_f^T + b_f``: (B, n_L) -> (B, C)."""
    return torch.addmm(b_f, s_top, W_f.t()) if b_f is not None else s_top @ W_f.t()


# ----------------------------------------------------------------------------- dynamics
def step(states: Sequence[Optional[Tensor]], drives: Sequence[Optional[Tensor]], terms: Sequence[Sequence[Term]],
         act: str, *, nudge=None, out: Optional[Sequence[Tensor]] = None, skip_terms: bool = False,
         order: Optional[Sequence[Sequence[int]]] = None) -> list:
    """One step of every state layer: synchronous, or in groups (``order``).

    states: list indexed by layer, ``states[l]`` (B, n_l) for l = 1..n (index 0 unused).
    drives: ``drives[l]`` (B, n_l) or (n_l,) or None: input drive and bias of layer l.
    terms: ``terms[l]`` list of (src, M, scale) into layer l, M (n_src, n_l).
    nudge: a ``SoftmaxNudge``/``NeuronNudge`` for the top layer, or None (free phase).
    out: buffers ``out[l]`` (B, n_l), distinct from ``states``; None = out of place.
    skip_terms: every state is zero (the first free step): only drives count (in the
        first group; a later group reads the earlier groups' new states).
    order: groups of layers updated one after the other (``Topology.update_order``):
        a group reads the new states of the groups before it and the old states of
        the others (its own included); None: one group of every layer (synchronous).
    Returns the new states (``out`` when given), index 0 copied from ``states``.
    """
    n = len(terms) - 1
    new = [states[0]] + [None] * n
    view = list(states)  # what the next group reads: new states of the groups done, old ones of the rest
    for g, group in enumerate(order if order is not None else [range(1, n + 1)]):
        skip = skip_terms and g == 0
        for l in group:
            buf = out[l] if out is not None else None
            pre = drives[l]
            for src, M, scale in ([] if skip else terms[l]):
                if buf is None:
                    pre = torch.mm(view[src], M) * scale if pre is None else torch.addmm(pre, view[src], M,
                                                                                         alpha=scale)
                elif pre is None:
                    pre = torch.mm(view[src], M, out=buf)
                    if scale != 1.0:
                        pre.mul_(scale)
                elif pre is buf:
                    pre.addmm_(view[src], M, alpha=scale)
                else:
                    pre = torch.addmm(pre, view[src], M, alpha=scale, out=buf)
            if pre is None:  # no drive, no term (only when skip_terms): pre-activation 0
                pre = buf.zero_() if buf is not None else states[l].new_zeros(states[l].shape)
            elif buf is not None and pre is not buf:  # drive alone
                pre = buf.copy_(pre.expand_as(buf))
            elif buf is None and pre.dim() == 1:
                pre = pre.expand(states[l].shape[0], -1)
            if nudge is not None and l == n:
                pre = nudge.add_to(pre, view[n], inplace=buf is not None)
            new[l] = activate(act, pre, out=buf)
        for l in group:
            view[l] = new[l]
    return new


def relax(states: Sequence[Optional[Tensor]], drives: Sequence[Optional[Tensor]], terms: Sequence[Sequence[Term]],
          act: str, steps: int, **options) -> list:
    """``relax_until``'s final states alone (same arguments)."""
    return relax_until(states, drives, terms, act, steps, **options)[0]


def largest_change(cur: Sequence[Tensor], prev: Sequence[Tensor]) -> float:
    """``max_b sqrt(sum_l ||cur_l[b] - prev_l[b]||^2)`` over the state layers (index 0,
    the input, skipped): the largest per-sample state change of one step. Layers may
    be (B, n) or (B, C, H, W). One host sync."""
    # vector_norm reads each difference once
    per_layer = torch.stack([torch.linalg.vector_norm((c - p).flatten(1), dim=1) for c, p in zip(cur[1:], prev[1:])])
    return torch.linalg.vector_norm(per_layer, dim=0).max().item()


def relax_until(
    states: Sequence[Optional[Tensor]],
    drives: Sequence[Optional[Tensor]],
    terms: Sequence[Sequence[Term]],
    act: str,
    steps: int,
    *,
    tol: Optional[float] = None,
    check_every: int = 1,
    nudge=None,
    buffers: Optional[tuple[Sequence[Tensor], Sequence[Tensor]]] = None,
    from_zero: bool = False,
    order: Optional[Sequence[Sequence[int]]] = None,
) -> tuple[list, int]:
    """Run up to ``steps`` steps from ``states``: (final states, steps run).

    buffers: two lists of (B, n_l) tensors to ping-pong between (the fast path,
    under ``torch.no_grad``); ``states`` is never written. None = out of place
    (autograd can run through it). from_zero: ``states`` are all zero, so the first
    step skips every product it can. order: the step's update order (``step``;
    None: synchronous). tol, check_every: stop early (see ``iterate``).
    """
    def one(cur, t):
        out = buffers[t % 2] if buffers is not None else None
        return step(cur, drives, terms, act, nudge=nudge.at(t) if nudge is not None else None, out=out,
                    skip_terms=from_zero and t == 0, order=order)

    return iterate(one, states, steps, tol=tol, check_every=check_every)


def iterate(step_fn: Callable[[list, int], list], states: Sequence, steps: int, *, tol: Optional[float] = None,
            check_every: int = 1) -> tuple[list, int]:
    """Run ``states = step_fn(states, t)`` for t = 0..steps-1: the relaxation loop of
    every net. After every ``check_every``-th step, stop if every sample's state
    change over that step is under ``tol``, i.e. ``max_b sqrt(sum_l ||s_l[t] -
    s_l[t-1]||^2) < tol`` (one host sync per check). Returns (final states, steps
    run); ``tol=None`` runs all ``steps``.
    """
    cur = list(states)
    for t in range(steps):
        prev = cur
        cur = step_fn(cur, t)
        if tol is not None and (t + 1) % check_every == 0:
            if largest_change(cur, prev) < tol:
                return cur, t + 1
    return cur, steps
