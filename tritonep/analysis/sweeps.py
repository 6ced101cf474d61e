"""Sweeps of the net's coupling: the feedback coefficient (symmetric and random
feedback weights) and the forward scale alpha x feedback coefficient beta grid,
recording the dynamics and the gradient alignment at every point."""
from __future__ import annotations

import json
from typing import Callable, Iterable, Optional, Sequence

from torch import Tensor

from ..net import EPNet
from ..options import positive_float
from .alignment import BASELINES, gradient_alignment, mean_cosine
from .dynamics import DEFAULT_TOL, dynamics_report
from .netcopy import with_options
from .strict_json import jsonable

# The sweep values: feedback coefficients beta_l, and the alpha x beta grid.
FEEDBACK_VALUES = (0.001, 0.01, 0.1, 0.25, 1.0, 2.0, 4.0)
ALPHA_VALUES = (0.25, 0.5, 1.0, 2.0, 4.0)
BETA_VALUES = (0.01, 0.1, 0.25, 1.0, 2.0)


def point_report(net: EPNet, x: Tensor, y: Tensor, *, tol: float = DEFAULT_TOL, horizon: Optional[int] = None,
                 baselines: Sequence[str] = BASELINES, seed: int = 0) -> dict:
    """What a sweep records per point: ``dynamics_report`` (no traces) plus the
    gradient alignment and its mean cosine over hidden weights per baseline."""
    report = dynamics_report(net, x, tol=tol, horizon=horizon, seed=seed, traces=False)
    al = gradient_alignment(net, x, y, baselines=baselines)
    report.update({f"mean_cosine_{b}": mean_cosine(al, b) for b in baselines})
    report["alignment"] = al
    return jsonable(report)


def sweep_feedback(net: EPNet, x: Tensor, y: Tensor, *, values: Sequence[float] = FEEDBACK_VALUES,
                   weights: Sequence[str] = ("symmetric", "random"), tol: float = DEFAULT_TOL,
                   horizon: Optional[int] = None, baselines: Sequence[str] = BASELINES, seed: int = 0,
                   log: Optional[Callable[[str], None]] = None) -> dict:
    """``point_report`` for every feedback coefficient (one value for every layer)
    and feedback-weight kind (``"symmetric"``: W^T; ``"random"``: fixed random
    matrices drawn from ``seed``), forward weights shared by all points.
    Returns ``{"values", "weights", "points": [{"feedback", "feedback_weights", ...}]}``."""
    if not values or not weights:
        raise ValueError("sweep_feedback needs at least one value and one feedback-weight kind")
    grid = ((with_options(net, feedback=positive_float("feedback", beta), feedback_weights=kind, seed=seed),
             {"feedback": float(beta), "feedback_weights": kind}) for kind in weights for beta in values)
    points = _report_points(grid, x, y, ("feedback_weights", "feedback"), log, tol=tol, horizon=horizon,
                            baselines=baselines, seed=seed)
    return {"values": [float(v) for v in values], "weights": list(weights), "points": points}


def sweep_alpha_beta(net: EPNet, x: Tensor, y: Tensor, *, alphas: Sequence[float] = ALPHA_VALUES,
                     betas: Sequence[float] = BETA_VALUES, tol: float = DEFAULT_TOL, horizon: Optional[int] = None,
                     baselines: Sequence[str] = BASELINES, seed: int = 0,
                     log: Optional[Callable[[str], None]] = None) -> dict:
    """``point_report`` on the grid forward scale alpha x feedback coefficient beta
    (same weights everywhere). Returns ``{"alphas", "betas", "points": [{"alpha", "beta", ...}]}``
    with points in row-major order (alpha outer)."""
    if not alphas or not betas:
        raise ValueError("sweep_alpha_beta needs at least one alpha and one beta")
    grid = ((with_options(net, alpha=positive_float("alpha", a), feedback=positive_float("beta", b), seed=seed),
             {"alpha": float(a), "beta": float(b)}) for a in alphas for b in betas)
    points = _report_points(grid, x, y, ("alpha", "beta"), log, tol=tol, horizon=horizon, baselines=baselines,
                            seed=seed)
    return {"alphas": [float(a) for a in alphas], "betas": [float(b) for b in betas], "points": points}


def _report_points(grid: Iterable[tuple[EPNet, dict]], x: Tensor, y: Tensor, keys: Sequence[str],
                   log: Optional[Callable[[str], None]], **options) -> list[dict]:
    """``{**coordinates, **point_report(trial, x, y, **options)}`` for each
    (trial net, coordinates) of ``grid``, logging a summary line per point."""
    points = []
    for trial, coords in grid:  # a generator: each trial net is built just before it is measured
        points.append({**coords, **point_report(trial, x, y, **options)})
        if log is not None:
            log(_summary_line(points[-1], keys))
    return points


def _summary_line(point: dict, keys: Sequence[str]) -> str:
    """One JSON line: the point's coordinates, dynamics and mean cosines."""
    shown = list(keys) + ["spectral_radius", "ftmle", "asymptotic_exponent", "convergence_time"] + [
        k for k in point if k.startswith("mean_cosine_")]
    return json.dumps({k: point[k] for k in shown})
