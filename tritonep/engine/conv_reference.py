"""The reference engine of the conv nets (``ConvEPNet``, the paper's Algorithm S2):
the specification ``conv_triton`` is checked against.

State layers are feature maps ``s_l`` (B, C_l, H_l, W_l). Layer l sends on its
max-pooled map ``O_l = P_l(s_l)``; a link applies ``conv2d`` forward, its adjoint
``conv_transpose2d`` as feedback (unpooled at the current maxima) and the weight
correlation in the rule. The engine reads a ``ConvSpec`` built by the net for each
call and shares its interface with ``dense_reference``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import reference as ref
from .. import rules
from ..topology import Topology
from .interface import ReferenceEngine, relative_residual


def pool(s: Tensor, k: int) -> tuple[Tensor, Optional[Tensor]]:
    """Max-pool ``s`` (B, C, H, W) with kernel = stride = k (floor mode) -> (O, indices);
    k = 1 or a dense layer (B, n): (s, None)."""
    if k == 1 or s.dim() != 4:
        return s, None
    return F.max_pool2d(s, k, return_indices=True)


def unpool(g: Tensor, idx: Optional[Tensor], k: int, size: Sequence[int]) -> Tensor:
    """Adjoint of ``pool`` at fixed indices: (B, C, H/k, W/k) -> (B, C, H, W), each value
    where the max was taken, zeros elsewhere (also in rows/columns a floor-mode pool skips)."""
    if idx is None:
        return g
    return F.max_unpool2d(g, idx, k, output_size=tuple(size[-2:]))


@dataclass
class ConvSpec:
    """What the conv engines read of a net, for one call.

    maps: state shapes per layer (index 0: the input (C, H, W)); pooled: what each
    layer sends on; pools: pooling size per layer (1: none). conv_args: per matrix
    key, the ``conv2d`` keywords (padding of a stack conv, stride of a skip).
    matrices: every weight a link names; biases: per layer (index 0 None);
    readout: (W_f, b_f, M_f) or None (P-EP output neurons); n_conv: conv layers
    (a P-EP net's last state layer is dense).
    """

    topology: Topology
    activation: str
    output: str
    n_conv: int
    maps: list
    pooled: list
    pools: list
    conv_args: dict
    matrices: dict
    biases: list
    readout: Optional[tuple]


class ConvReference(ReferenceEngine):
    """One call's conv reference engine (out of place: autograd runs through it)."""

    def __init__(self, spec: ConvSpec, check_every: int = 5):
        self.spec, self.check_every = spec, check_every
        self.incoming = [spec.topology.incoming(l) for l in range(spec.topology.n_state + 1)]
        self.drive_list: Optional[list] = None

    # ---- the three maps of a link: forward, its adjoint (feedback), its weight correlation (rule)
    def _is_dense(self, key: str) -> bool:
        return key == f"layers.{self.spec.n_conv}"  # only the P-EP output link is dense inside the dynamics

    def link_forward(self, key: str, o_src: Tensor) -> Tensor:
        """Forward map of a link (no bias): conv2d of the pooled source ``o_src``
        (B, C_src, H', W') -> (B, C_dst, H_dst, W_dst); the dense output link: (B, C)."""
        W = self.spec.matrices[key]
        if self._is_dense(key):
            return o_src.flatten(1) @ W.t()
        return F.conv2d(o_src, W, None, **self.spec.conv_args[key])

    def link_transpose(self, key: str, s_dst: Tensor) -> Tensor:
        """Adjoint of ``link_forward``: the destination's state (B, C_dst, H, W) -> a map
        of the source's pooled shape (B, C_src, H', W')."""
        W = self.spec.matrices[key]
        if self._is_dense(key):
            return (s_dst @ W).view(s_dst.shape[0], *self.spec.pooled[self.spec.n_conv])
        return F.conv_transpose2d(s_dst, W, None, **self.spec.conv_args[key])

    def link_correlation(self, key: str, o_src: Tensor, post: Tensor) -> Tensor:
        """Sum over the batch of ``post`` (destination shape) correlated with ``o_src``:
        the gradient of <post, link_forward(o_src)> wrt the weight, shape of the weight."""
        W = self.spec.matrices[key]
        if self._is_dense(key):
            return post.t() @ o_src.flatten(1)
        return torch.nn.grad.conv2d_weight(o_src, W.shape, post, **self.spec.conv_args[key])

    # ---- states
    def zero_states(self, x: Tensor) -> list[Tensor]:
        """``[x, 0, ..., 0]``: zeros of each state layer's shape."""
        return [x] + [x.new_zeros(x.shape[0], *m) for m in self.spec.maps[1:]]

    def bias_term(self, l: int) -> Optional[Tensor]:
        """Layer l's bias, shaped to add to its pre-activation ((C_l, 1, 1) or (C,))."""
        b = self.spec.biases[l]
        return None if b is None else (b.view(-1, 1, 1) if l <= self.spec.n_conv else b)

    def drives(self, x: Tensor) -> list[Optional[Tensor]]:
        """What does not change during the relaxation: ``conv_1(x) + b_1`` (B, C_1, H_1, W_1)
        for layer 1, the bias after."""
        d = [None, F.conv2d(x, self.spec.matrices["layers.0"], self.spec.biases[1],
                            **self.spec.conv_args["layers.0"])]
        return d + [self.bias_term(l) for l in range(2, self.spec.topology.n_state + 1)]

    def pooled_states(self, states: Sequence[Tensor]) -> list[tuple[Tensor, Optional[Tensor]]]:
        """``[(O_l, indices_l)]`` for l = 0..n: what each layer sends on (index 0: the input)."""
        return [(states[0], None)] + [pool(states[l], self.spec.pools[l]) for l in range(1, len(states))]

    def readout_input(self, states: Sequence[Tensor]) -> Tensor:
        """The flattened pooled top conv map (B, n_flat) the softmax readout reads."""
        n = self.spec.n_conv
        return pool(states[n], self.spec.pools[n])[0].flatten(1)



    # ---- dynamics
    def step(self, states: Sequence[Tensor], drives: Sequence[Optional[Tensor]], *, nudge=None,
             skip_terms: bool = False, order: Optional[Sequence[Sequence[int]]] = None) -> list[Tensor]:
        """One step of every state layer. states: ``[x, s_1, ..., s_n]``; drives: from
        ``drives``; nudge: from ``nudge`` or None (free phase); skip_terms: every state
        is zero (the first step; in the first group only); order: groups updated one
        after the other, each reading the earlier groups' new states
        (``Topology.update_order``; None: synchronous)."""
        spec = self.spec
        n = spec.topology.n_state
        view = list(states)  # new states of the groups done, old ones of the rest
        out = self.pooled_states(states)
        new = [states[0]] + [None] * n
        groups = list(order) if order is not None else [range(1, n + 1)]
        for g, group in enumerate(groups):
            for l in group:
                pre = drives[l]
                fb = None  # feedback at the pooled resolution of layer l
                for k in ([] if skip_terms and g == 0 else self.incoming[l]):
                    if k.kind == "forward":
                        term = self.link_forward(k.weight, out[k.src][0])
                        pre = term * k.scale if pre is None else pre + k.scale * term
                    else:
                        term = k.scale * self.link_transpose(k.weight, view[k.src])
                        fb = term if fb is None else fb + term
                if nudge is not None and l == n:
                    if spec.readout is None:  # the output neurons themselves: + beta (y - s_out)
                        base = pre if pre is not None else states[l].new_zeros(states[l].shape)
                        pre = nudge.add_to(base.expand_as(states[l]), view[l], inplace=False)
                    else:
                        e = nudge.frozen_error if nudge.frozen_error is not None else nudge.error(out[l][0].flatten(1))
                        term = (nudge.beta * (e @ nudge.M_f)).view(out[l][0].shape)
                        fb = term if fb is None else fb + term
                if fb is not None:
                    fb = unpool(fb, out[l][1], spec.pools[l], spec.maps[l])
                    pre = fb if pre is None else pre + fb
                if pre is None:
                    pre = states[l].new_zeros(states[l].shape)
                new[l] = ref.activate(spec.activation, pre.expand_as(states[l]))
            if g < len(groups) - 1:  # what the next group reads
                for l in group:
                    view[l], out[l] = new[l], pool(new[l], spec.pools[l])
        return new

    def run(self, states, drives, steps: int, *, nudge=None, tol=None, from_zero: bool = False,
            schedule: str = "synchronous"):
        """``steps`` steps (fewer on convergence under ``tol``), synchronous or
        alternating (``schedule``): (final states, steps run). ``before_last`` then holds
        the states the last step started from."""
        order = self.spec.topology.update_order(schedule)

        def one(cur, t):
            self.before_last = cur  # out of place: nothing overwrites it
            return self.step(cur, drives, nudge=nudge.at(t) if nudge is not None else None,
                             skip_terms=from_zero and t == 0, order=order)

        return ref.iterate(one, states, steps, tol=tol, check_every=self.check_every)

    # ---- the phases of ep_step
    def free(self, x: Tensor, T: int, tol: Optional[float] = None, schedule: str = "synchronous"):
        """Free phase from zero: ([x, s_1, ..., s_n], steps run); sets ``residual``."""
        self.x, self.drive_list = x, self.drives(x)
        states, t = self.run(self.zero_states(x), self.drive_list, T, tol=tol, from_zero=True, schedule=schedule)
        self.residual = relative_residual(states[1:], self.before_last[1:])
        return states, t


    def nudged(self, free, target: Tensor, error: Tensor, beta: float, K: int, frozen: bool,
               tol: Optional[float], tag: str, ramp: bool = False, schedule: str = "synchronous"):
        return self.run(free, self.drive_list, K, nudge=self.nudge(free, target, beta, frozen, ramp), tol=tol,
                        schedule=schedule)

    def update(self, rule: str, a, b, free, coefs: Sequence[float]) -> None:
        """Each trained link: fre ``coef * corr(O_src^0, s_dst^a - s_dst^b)``; classic
        ``coef * (corr(O_src^a, s_dst^a) - corr(O_src^b, s_dst^b))``; the bias of a chain
        link gets the same rule with a constant input of 1 (summed over batch and map)."""
        spec = self.spec
        o_free = [o for o, _ in self.pooled_states(free)]
        o_a = o_b = None
        if rule == "classic":
            o_a = [o for o, _ in self.pooled_states(a)]
            o_b = o_free if b is free else [o for o, _ in self.pooled_states(b)]
        diffs: dict[int, Tensor] = {}
        for k, coef in zip(spec.topology.trained_links(), coefs):
            if k.dst not in diffs:
                diffs[k.dst] = a[k.dst] - b[k.dst]
            G = rules.grad_of(spec.matrices[k.weight])
            if rule == "fre":
                G.add_(self.link_correlation(k.weight, o_free[k.src], diffs[k.dst]), alpha=coef)
            else:
                G.add_(self.link_correlation(k.weight, o_a[k.src], a[k.dst]), alpha=coef)
                G.sub_(self.link_correlation(k.weight, o_b[k.src], b[k.dst]), alpha=coef)
            if k.feeds_bias and spec.biases[k.dst] is not None:
                rules.add_bias_update(spec.biases[k.dst], diffs[k.dst], coef)
