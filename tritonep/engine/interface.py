"""What every engine's phases return, and the parts the two reference engines share.

An engine runs one net's ``ep_step`` phases for one call (see ARCHITECTURE.md):
``free(x, T, tol) -> (states, steps)``, ``readout(free, target) -> (out, y - p)``,
``nudged(free, target, error, beta, K, frozen, tol, tag, ramp) -> (states, steps)``,
``update(rule, a, b, free, coefs)``, ``readout_input(free)`` and
``views(states, x)``. The reference engines compute the readout from their own
``logits``; the Triton engines take it from their kernels.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from .. import reference as ref


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
