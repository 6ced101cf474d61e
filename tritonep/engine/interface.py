"""What every engine's phases return, and the parts the two reference engines share.

An engine runs one net's ``ep_step`` phases for one call (see ARCHITECTURE.md):
``free(x, T, tol) -> (states, steps)``, ``readout(free, target) -> (out, y - p)``,
``nudged(free, target, error, beta, K, frozen, tol, tag, ramp) -> (states, steps)``,
``update(rule, a, b, free, coefs)``, ``readout_input(free)`` and
``views(states, x)``. The reference engines compute the readout from their own
``logits``; the Triton engines take it from their kernels. After ``free`` every
engine holds ``residual``: the free phase's last-step relative residual
(``relative_residual``), a 0-dim tensor on the device, computed without a host sync.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from torch import Tensor

from .. import reference as ref


def relative_residual(cur: Sequence[Tensor], prev: Sequence[Optional[Tensor]]) -> Tensor:
    """How far a relaxation is from its fixed point after one step, relative to the state:
    ``max_b ||z_b - z'_b|| / ||z_b||``, where z_b stacks sample b's state layers after the
    step (``cur``: tensors (B, ...) per layer, or one frame (B, N) holding them all) and
    z'_b before it (``prev``, the same shapes; None: zeros). The numerator is the
    largest per-sample change that ``tol`` checks (``reference.largest_change``).
    Returns a 0-dim tensor on the states' device (no host sync); 0 where nothing moves.
    """
    change = norm = None
    for c, p in zip(cur, prev):
        c = c.flatten(1)
        d2 = torch.linalg.vector_norm(c if p is None else c - p.flatten(1), dim=1).square()
        n2 = torch.linalg.vector_norm(c, dim=1).square()
        change, norm = (d2, n2) if change is None else (change + d2, norm + n2)
    tiny = torch.finfo(change.dtype).tiny
    return (change.sqrt() / norm.sqrt().clamp_min(tiny)).max()


class ReferenceEngine:
    """Base of the PyTorch reference engines: the readout, the top layer's nudge and
    the views, which every one of them computes the same way. A subclass has
    ``spec.readout`` ((W_f, b_f, M_f), or None for P-EP output neurons) and
    ``readout_input(states)`` (what the softmax readout reads, (B, n_top))."""

    def logits(self, states: Sequence[Tensor]) -> Tensor:
        """Softmax logits (B, C) of relaxed states, or the output neurons' rates."""
        if self.spec.readout is None:
            return states[-1]
        W_f, b_f, _ = self.spec.readout
        return ref.readout(self.readout_input(states), W_f, b_f)

    def nudge(self, states: Sequence[Tensor], target: Tensor, beta: float, frozen: bool, ramp: bool = False):
        """The top layer's nudge of strength ``beta`` (``ramp``: ``k * beta`` at nudged
        step k): P-EP's ``y - s_out``, or the softmax error of the readout input
        projected back through M_f (``reference.NeuronNudge`` / ``SoftmaxNudge``)."""
        if self.spec.readout is None:
            return ref.NeuronNudge(target, beta, frozen, states[-1], ramp)
        W_f, b_f, M_f = self.spec.readout
        return ref.SoftmaxNudge(W_f, b_f, M_f, target, beta, frozen, self.readout_input(states), ramp)

    def readout(self, free, target: Tensor) -> tuple[Tensor, Tensor]:
        """(out, error): the free state's logits (or output rates), a copy (B, C), and
        the output error ``y - p`` (or ``y - s_out``) (B, C)."""
        out = self.logits(free).clone()
        return out, (target - out if self.spec.readout is None else target - out.softmax(dim=1))

    def views(self, states, x: Tensor) -> list[Tensor]:
        """``[x, s_1, ..., s_n]``: the reference's states are already tensors."""
        return states
