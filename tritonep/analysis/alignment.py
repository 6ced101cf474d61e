"""How closely EP's updates follow backprop: EP's update against BP of the
feedforward net and BPTT through the relaxation, per trained matrix (cosine and
norm ratio, the latter against the scale Appendix C predicts), and over a grid of
feedback, nudge, T and K."""
from __future__ import annotations

import itertools
import json
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..baselines import bp_gradients, bptt_gradients
from ..net import EPNet
from .netcopy import as_batch, with_options, working_copy
from .strict_json import jsonable, reported_float

BASELINES = ("bp", "bptt")


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two tensors of one shape, flattened; nan if either is zero."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return float("nan")  # no direction to compare
    return float(a @ b / (na * nb))


def norm_ratio(a: Tensor, b: Tensor) -> float:
    """||a|| / ||b|| (Frobenius); inf if only b is zero, nan if both are."""
    if a.shape != b.shape:
        raise ValueError(f"cannot compare tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    na, nb = float(a.detach().double().norm()), float(b.detach().double().norm())
    if nb == 0:
        return float("nan") if na == 0 else float("inf")
    return na / nb


def _target_layer(net: EPNet, name: str) -> int:
    """The layer a parameter feeds: ``layers.i.*`` feeds i+1 (n_state+1 = the
    softmax readout), ``skips.i_j.*`` feeds j."""
    group, key = name.split(".")[:2]
    if group == "layers":
        return int(key) + 1
    if group == "skips":
        return int(key.split("_")[1])
    raise ValueError(f"parameter {name!r} is not a layer or skip weight")


def layer_label(net: EPNet, name: str) -> str:
    """A readable name for a parameter: ``"h1->h2"``, ``"x->h1"``, ``"h5->y"``, ``"h1->h4 (skip)"``."""
    def layer(l: int) -> str:
        return "x" if l == 0 else ("y" if l == len(net.layers) else f"h{l}")

    dst = _target_layer(net, name)
    src = int(name.split(".")[1]) if name.startswith("layers.") else int(name.split(".")[1].split("_")[0])
    label = f"{layer(src)}->{layer(dst)}" + (" (skip)" if name.startswith("skips.") else "")
    return label + (" bias" if name.endswith(".bias") else "")


def hidden_weights(net: EPNet) -> list[str]:
    """Names of the trained weights that feed a relaxing state layer (not the
    softmax readout, whose EP update is the exact gradient by construction)."""
    return [n for n, _ in net.named_parameters() if n.endswith(".weight") and _target_layer(net, n) <= net.n_state]


def expected_scales(net: EPNet) -> dict[str, float]:
    """Per parameter, the factor EP's update is expected to carry relative to the
    gradient (paper Appendix C): the nudge and feedback gain that reaches its layer,
    beta_f * prod of beta_l along the strongest feedback path (``fre`` rule;
    ``classic`` divides by beta_f); 1 with ``normalize=True`` and for the readout."""
    gain = net.topology.feedback_gain(net.nudge)
    scales = {}
    for name, _ in net.named_parameters():
        dst = _target_layer(net, name)
        if dst > net.n_state or net.normalize:
            scales[name] = 1.0
        else:
            scales[name] = gain[dst] if net.rule == "fre" else gain[dst] / net.nudge
    return scales


def compare_gradients(update: dict, reference: dict, scales: Optional[dict] = None) -> dict:
    """Per parameter name of ``reference``: ``cosine`` and ``norm_ratio`` (||update|| /
    ||reference||), and with ``scales`` also ``expected_scale`` and
    ``norm_ratio_normalized`` = norm_ratio / expected_scale (1 = gradient-sized)."""
    missing = [n for n in reference if n not in update]
    if missing:
        raise ValueError(f"update has no entry for {missing}")
    out = {}
    for name, g in reference.items():
        row = {"cosine": cosine(update[name], g), "norm_ratio": norm_ratio(update[name], g)}
        if scales is not None:
            s = scales[name]
            row["expected_scale"] = s
            row["norm_ratio_normalized"] = row["norm_ratio"] / s if s > 0 else float("nan")
        out[name] = row
    return out


def ep_update(net: EPNet, x: Tensor, y: Tensor, *, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """EP's update (what ``net.ep_step`` writes into ``.grad`` from zero), keyed like
    ``named_parameters()``, computed on a copy in ``dtype`` (the net is untouched).
    x: (B, n_in); y: (B,) labels or (B, C) targets."""
    work = working_copy(net, dtype)
    work.ep_step(x.to(dtype), y)
    return {n: p.grad.clone() for n, p in work.named_parameters() if p.grad is not None}


def gradient_alignment(net: EPNet, x: Tensor, y: Tensor, *, baselines: Sequence[str] = BASELINES,
                       dtype: torch.dtype = torch.float64) -> dict:
    """EP's update against BP of the feedforward net and BPTT through the relaxation.

    One EP step (the net's own T, K, rule, nudging, error, normalize) on a float64
    copy, grads zeroed first; BPTT unrolls the same T free steps. Per trained
    parameter: cosine, raw norm ratio EP/baseline, expected_scale (Appendix C:
    beta_f * beta_l per hop) and the normalised ratio. The cosine does not depend
    on that scale. x: (B, n_in); y: (B,) labels. Returns a JSON-ready dict
    ``{"bp": {name: {...}}, "bptt": {...}, "hidden": [...], "labels": {...}, "loss": float}``.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown or not baselines:
        raise ValueError(f"baselines must be a non-empty subset of {BASELINES}, got {list(baselines)}")
    work = working_copy(net, dtype)
    x = work.check_input(as_batch(x))
    loss, _ = work.ep_step(x, y)
    ep = {n: p.grad.clone() for n, p in work.named_parameters() if p.grad is not None}
    scales = expected_scales(work)
    out = {"loss": float(loss), "batch": int(x.shape[0]), "hidden": hidden_weights(work),
           "labels": {n: layer_label(work, n) for n in ep}}
    for b in baselines:
        grads = bp_gradients(work, x, y) if b == "bp" else bptt_gradients(work, x, y, work.T)
        out[b] = compare_gradients(ep, grads, scales)
    return jsonable(out)


def mean_cosine(alignment: dict, baseline: str = "bp") -> float:
    """Mean cosine over the hidden weights (readout excluded) of a ``gradient_alignment`` result."""
    vals = [reported_float(alignment[baseline][n]["cosine"]) for n in alignment["hidden"]]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def alignment_sweep(net: EPNet, x: Tensor, y: Tensor, *, feedback: Optional[Sequence] = None,
                    nudge: Optional[Sequence[float]] = None, T: Optional[Sequence[int]] = None,
                    K: Optional[Sequence[int]] = None, baselines: Sequence[str] = BASELINES,
                    log: Optional[Callable[[str], None]] = None) -> list[dict]:
    """``gradient_alignment`` over the grid feedback x nudge x T x K (every
    combination), on copies of ``net`` with the same weights. A parameter left
    None stays at the net's value. Returns one JSON-ready dict per grid point:
    ``{"feedback", "nudge", "T", "K", "mean_cosine_bp", ..., "alignment": {...}}``.
    """
    grid = {"feedback": feedback if feedback is not None else [net.config["feedback"]],
            "nudge": nudge if nudge is not None else [net.nudge],
            "T": T if T is not None else [net.T], "K": K if K is not None else [net.K]}
    for key, values in grid.items():
        if len(values) == 0:
            raise ValueError(f"the {key} sweep is empty")
    points = []
    for fb, nu, t, k in itertools.product(*grid.values()):
        trial = with_options(net, feedback=fb, nudge=nu, T=t, K=k)
        al = gradient_alignment(trial, x, y, baselines=baselines)
        point = {"feedback": fb, "nudge": nu, "T": t, "K": k}
        point.update({f"mean_cosine_{b}": mean_cosine(al, b) for b in baselines})
        points.append(jsonable({**point, "alignment": al}))
        if log is not None:
            log(json.dumps({k: v for k, v in points[-1].items() if k != "alignment"}))
    return points
