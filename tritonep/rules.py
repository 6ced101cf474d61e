"""EP's local learning rules: the contrastive update of each link, its scale, and
the readout's gradient, written as descent directions into ``.grad``.

Shared maths (bottom layer): both nets and both backends of each net take their
coefficients from here, so a rule, its sign convention and ``normalize`` are
defined once. Tensor shapes: states (B, n) for dense layers; ``grad`` tensors have
the parameter's shape.
"""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from .options import RULES
from .topology import Link


def add_link_update(
    grad: Tensor,
    rule: str,
    post_a: Tensor,
    post_b: Tensor,
    pre_a: Tensor,
    pre_b: Tensor,
    pre_free: Tensor,
    coef: float,
    post_diff: Optional[Tensor] = None,
) -> Tensor:
    """Accumulate one dense link's contrastive update into ``grad`` (n_post, n_pre).

    Phases a and b are the two nudged/free phases being contrasted (a = the more
    positively nudged one). With ``coef`` carrying the sign and the scale:
      fre:     grad += coef * (post_a - post_b)^T @ pre_free
      classic: grad += coef * (post_a^T @ pre_a - post_b^T @ pre_b)
    post_*: (B, n_post); pre_*: (B, n_pre). ``post_diff`` may pass a precomputed
    ``post_a - post_b`` shared by several links into the same layer.
    """
    if rule == "fre":
        d = post_diff if post_diff is not None else post_a - post_b
        return grad.addmm_(d.t(), pre_free, alpha=coef)
    if rule == "classic":
        grad.addmm_(post_a.t(), pre_a, alpha=coef)
        return grad.addmm_(post_b.t(), pre_b, alpha=-coef)
    raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")


def link_coefficient(rule: str, beta: float, span: float, batch: int, gain: Optional[float]) -> float:
    """Scale of a contrastive update written as a descent direction into ``.grad``.

    beta: nudge strength; span: beta_a - beta_b, the nudge difference between the
    two phases contrasted (beta, 2 beta or +-beta); gain: the feedback gain that
    reaches the layer (``normalize=True``) or None.
      fre:     -(beta / span) / batch            (the paper's Delta W, not divided by beta)
      classic: -(1 / span) / batch               (a finite-difference quotient)
    ``normalize`` divides both by gain / beta (fre: by gain), so a layer's update
    is of the order of its gradient whatever the nudge and feedback strengths.
    """
    c = -(beta / span if rule == "fre" else 1.0 / span) / batch
    if gain is not None:
        c = c / (gain if rule == "fre" else gain / beta)
    return c


def link_coefficients(links: Sequence[Link], rule: str, beta: float, span: float, batch: int,
                      gain: Optional[Sequence[float]]) -> list[float]:
    """``link_coefficient`` of every trained link, in order. gain: the topology's
    ``feedback_gain(beta)`` per layer (``normalize=True``) or None; a layer that no
    feedback path reaches cannot be normalised and raises a ValueError."""
    out = []
    for k in links:
        g = gain[k.dst] if gain is not None else None
        if g is not None and g == 0.0:
            raise ValueError(f"normalize=True but no feedback path reaches layer {k.dst}")
        out.append(link_coefficient(rule, beta, span, batch, g))
    return out


def grad_of(param: Tensor) -> Tensor:
    """``param.grad``, allocated as zeros on first use (like autograd), to accumulate into."""
    if param.grad is None:
        param.grad = param.new_zeros(param.shape)
    return param.grad


def add_bias_update(bias: Tensor, diff: Tensor, coef: float) -> None:
    """A bias is a weight on a constant input of 1: ``bias.grad += coef * diff`` summed
    over the batch (and over the map of a conv layer). diff: (B, n) or (B, C, H, W)."""
    grad_of(bias).add_(diff.sum(dim=(0, 2, 3)) if diff.dim() == 4 else diff.sum(0), alpha=coef)


def add_readout_gradient(weight: Tensor, bias: Optional[Tensor], error: Tensor, top: Tensor, batch: int) -> None:
    """The softmax readout's exact cross-entropy gradient at the free state:
    ``W.grad += (p - y)^T top / B`` and ``b.grad += sum_b (p - y) / B``.
    error: (B, C), ``y - p``; top: (B, n_top), what the readout reads."""
    grad_of(weight).addmm_(error.t(), top, alpha=-1.0 / batch)
    if bias is not None:
        grad_of(bias).sub_(error.sum(0), alpha=1.0 / batch)
