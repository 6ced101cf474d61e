"""The reference engine of the dense nets (``EPNet``): EP's phases and updates in
plain PyTorch, the specification the Triton engine (``dense_triton``) is checked
against, and the fast path on CPU.

An engine gets what it needs as a ``DenseSpec`` (topology, matrices, biases,
readout), built by the net for each call, and never reads the module itself.
The phases of one step share the engine's interface with ``dense_triton``,
``conv_reference`` and ``conv_triton``: ``free``, ``readout``, ``nudged``,
``update``, ``readout_input`` and ``views``, driven by ``EPModule.ep_step``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor

from .. import reference as ref
from .. import rules
from ..topology import Topology
from .interface import ReferenceEngine, relative_residual


@dataclass
class DenseSpec:
    """What the dense engines read of a net, for one call.

    topology: the links over state sizes ``[n_in, n_1, ..., n_n]``.
    matrices: every matrix a link names (``layers.i``, ``skips.i_j``, ``fixed.B…``),
        stored ``(out, in)``.
    biases: per state layer l = 0..n, the bias (n_l,) of the layer feeding it, or None.
    readout: ``(W_f (C, n_L), b_f (C,) or None, M_f (C, n_L))`` of the softmax readout
        (M_f carries the error back: W_f, or a fixed random matrix), or None for
        ``output="neuron"``.
    """

    topology: Topology
    activation: str
    output: str
    matrices: dict
    biases: list
    readout: Optional[tuple]

    def input_drive(self, x: Tensor) -> Tensor:
        """Layer 1's input drive ``x @ W0^T + b_1``: (B, n_in) -> (B, n_1)."""
        return F.linear(x, self.matrices["layers.0"], self.biases[1])


class DenseReference(ReferenceEngine):
    """One call's reference engine. workspace: the net's buffer cache
    (``BackendState.cached``), where the in-place phases keep their ping-pong buffers."""

    def __init__(self, spec: DenseSpec, workspace=None, check_every: int = 5):
        self.spec, self.workspace, self.check_every = spec, workspace, check_every
        self.drive_list: Optional[list] = None
        self.terms: Optional[list] = None

    def make_terms(self) -> list[list[ref.Term]]:
        """Per state layer, the (src, M, scale) terms of the dynamics (input excluded)."""
        out: list[list[ref.Term]] = [[] for _ in range(self.spec.topology.n_state + 1)]
        for k in self.spec.topology.links:
            if k.src != 0:
                W = self.spec.matrices[k.weight]
                out[k.dst].append((k.src, W if k.transpose else W.t(), k.scale))
        return out

    def drives(self, x: Tensor) -> list[Optional[Tensor]]:
        """Per state layer: input drive ``x @ W0^T + b_1`` (B, n_1) for layer 1, the bias
        (n_l,) or None after; computed once per batch."""
        return [None, self.spec.input_drive(x)] + list(self.spec.biases[2:])

    def zero_states(self, x: Tensor) -> list[Tensor]:
        """The free phase's start: ``[x, 0, ..., 0]`` (zeros (B, n_l) per state layer)."""
        return [x] + [x.new_zeros(x.shape[0], n) for n in self.spec.topology.sizes[1:]]



    def _buffers(self, tag: str, x: Tensor):
        if self.workspace is None:
            return None
        sizes = self.spec.topology.sizes

        def make():
            return tuple([None] + [x.new_empty(x.shape[0], n) for n in sizes[1:]] for _ in range(2))

        return self.workspace(("dense", tag, x.shape[0], x.dtype, x.device), make)

    def run(self, states, drives, steps: int, *, nudge=None, tol=None, from_zero: bool = False, buffers=None,
            schedule: str = "synchronous"):
        """``steps`` steps from ``states`` (fewer on convergence under ``tol``), each
        synchronous or alternating (``schedule``): (final states, steps run). Out of
        place without ``buffers``, so autograd can run through it (BPTT)."""
        return ref.relax_until(states, drives, self.terms if self.terms is not None else self.make_terms(),
                               self.spec.activation, steps, tol=tol, check_every=self.check_every, nudge=nudge,
                               buffers=buffers, from_zero=from_zero,
                               order=self.spec.topology.update_order(schedule))

    def free(self, x: Tensor, T: int, tol: Optional[float] = None, schedule: str = "synchronous"):
        """Free phase from zero: ([x, s_1, ..., s_n], steps run); sets ``residual``."""
        self.x, self.drive_list, self.terms = x, self.drives(x), self.make_terms()
        buffers = self._buffers("free", x) or self._fresh_buffers(x)
        states, t = self.run(self.zero_states(x), self.drive_list, T, tol=tol, from_zero=True, buffers=buffers,
                             schedule=schedule)
        # step t-1 wrote buffers[(t-1) % 2]; the other still holds the step before (or zeros: t = 1)
        prev = buffers[t % 2][1:] if t >= 2 else [None] * (len(states) - 1)
        self.residual = relative_residual(states[1:], prev)
        return states, t

    def _fresh_buffers(self, x: Tensor):
        """Ping-pong buffers of one call (an engine without a workspace), so the free
        phase keeps its last two states for the residual."""
        return tuple([None] + [x.new_empty(x.shape[0], n) for n in self.spec.topology.sizes[1:]] for _ in range(2))


    def nudged(self, free, target: Tensor, error: Tensor, beta: float, K: int, frozen: bool,
               tol: Optional[float], tag: str, ramp: bool = False, schedule: str = "synchronous"):
        """A nudged phase of strength ``beta`` (``ramp``: ``k * beta`` at step k) from the
        free state: (states, steps run)."""
        return self.run(free, self.drive_list, K, nudge=self.nudge(free, target, beta, frozen, ramp), tol=tol,
                        buffers=self._buffers(tag, self.x), schedule=schedule)

    def update(self, rule: str, a, b, free, coefs: Sequence[float]) -> None:
        """Every trained link's contrastive update (and its layer's bias) into ``.grad``."""
        spec, diffs = self.spec, {}
        for k, coef in zip(spec.topology.trained_links(), coefs):
            if k.dst not in diffs:
                diffs[k.dst] = a[k.dst] - b[k.dst]
            rules.add_link_update(rules.grad_of(spec.matrices[k.weight]), rule, a[k.dst], b[k.dst], a[k.src],
                                  b[k.src], free[k.src], coef, post_diff=diffs[k.dst] if rule == "fre" else None)
            if k.feeds_bias and spec.biases[k.dst] is not None:
                rules.add_bias_update(spec.biases[k.dst], diffs[k.dst], coef)

    def readout_input(self, free) -> Tensor:
        """What the softmax readout reads: the top state layer (B, n_L)."""
        return free[-1]
