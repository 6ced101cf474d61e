"""Analysis of FRE-RNN dynamics and learning: stability, convergence, gradient
alignment, and update norms over training (issue 5).

What it measures on any ``EPNet``:

* ``spectral_radius``: largest |eigenvalue| of the scaled state-to-state matrix
  (forward blocks times alpha, feedback blocks times beta_l).
* ``lyapunov``: the finite-time maximal Lyapunov exponent (FTMLE) along the free
  trajectory, by Benettin's method, and the asymptotic exponent.
* ``convergence_time``: steps until the free phase has settled.
* ``gradient_alignment``: EP's update against BP and BPTT, per trained matrix.
* ``train_update_norms``: per-layer update norms over training epochs.
* sweeps over the feedback coefficient and an alpha x beta grid, plots, and the
  ``tritonep analyze`` command line (``main``).

Conventions. For one sample, the state vector z stacks the state layers
``[s_1, ..., s_n]`` as a column of length N = n_1 + ... + n_n (``state_offsets``
says where each layer sits). The dynamics add ``scale * s_src @ M`` (row vectors,
M of shape (n_src, n_dst)) to layer dst, which is ``scale * M^T s_src`` in column
form, so block (dst, src) of the coupling matrix is ``scale * M^T``.
Exponents are natural logs per step (nats/step); times are in steps; state
changes are Euclidean norms in the units of the rates.

Dynamics and updates are computed in float64 by default, on detached copies: the
net, its weights and its ``.grad`` are never changed (``train_update_norms`` is
the exception: it trains the net it is given). Report-level functions return
plain dicts and lists that ``json.dumps`` writes as strict JSON: a non-finite
number appears as the string ``"inf"``, ``"-inf"`` or ``"nan"``, and a run that
never converged as ``None``.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from . import reference as ref
from .baselines import bp_gradients, bptt_gradients
from .net import EPNet

# The sweep values: feedback coefficients beta_l, and the alpha x beta grid.
FEEDBACK_VALUES = (0.001, 0.01, 0.1, 0.25, 1.0, 2.0, 4.0)
ALPHA_VALUES = (0.25, 0.5, 1.0, 2.0, 4.0)
BETA_VALUES = (0.01, 0.1, 0.25, 1.0, 2.0)
BASELINES = ("bp", "bptt")
PATIENCE = 3  # consecutive steps under the tolerance that count as "settled"
DEFAULT_TOL = 1e-4


# ----------------------------------------------------------------------------- validation
def _steps(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int (a number of steps), got {v!r}")
    return v


def _positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def _check_net(net) -> EPNet:
    if not isinstance(net, EPNet):
        raise TypeError(f"expected a tritonep.EPNet, got {type(net).__name__}")
    return net


def _as_batch(x) -> Tensor:
    """One sample (n_in,) or a batch (B, n_in): always a batch."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    return x.unsqueeze(0) if x.dim() == 1 else x


def _jsonable(obj):
    """Tensors to lists, non-finite floats to strings: strict JSON (json.dumps would
    otherwise write the non-standard ``Infinity``/``NaN``)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", "-inf", "nan"
    return obj


def _num(v) -> float:
    """A reported number back to a float (None and "nan" -> nan, "-inf" -> -inf)."""
    return float("nan") if v is None else float(v)


# ----------------------------------------------------------------------------- nets with other options
def net_options(net: EPNet) -> dict:
    """The keyword options of ``EPNet`` that ``net`` was built with (not the layers)."""
    c = net.config
    return dict(feedback=c["feedback"], feedback_weights=c["feedback_weights"], residual=c["residual"],
                agt=c["agt"], agt_seed=c["agt_seed"], alpha=c["alpha"], output=c["output"], nudge=net.nudge,
                activation=net.activation, T=net.T, K=net.K, rule=net.rule, nudging=net.nudging,
                error=net.error, normalize=net.normalize, backend=net.backend)


def describe(net: EPNet) -> dict:
    """The net's widths and options, JSON-ready (for reports)."""
    return _jsonable({"sizes": list(net.sizes), **net_options(net)})


def with_options(net: EPNet, *, seed: int = 0, **overrides) -> EPNet:
    """A new net with the same layers and weights and some options changed.

    overrides: any ``EPNet`` keyword (feedback, nudge, alpha, T, K, residual,
    feedback_weights, ...). Every parameter and buffer the two nets share (same
    name and shape) is copied, so a sweep compares one set of weights; matrices
    only the new net has (a new residual link, fixed random feedback) are drawn
    from ``seed`` without touching torch's global RNG. Same dtype and device.
    """
    _check_net(net)
    opts = net_options(net)
    unknown = set(overrides) - set(opts)
    if unknown:
        raise ValueError(f"unknown EPNet option(s) {sorted(unknown)}; expected some of {sorted(opts)}")
    opts.update(overrides)
    W = net.layers[0].weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = EPNet([copy.deepcopy(d) for d in net.layers], **opts).to(dtype=W.dtype, device=W.device)
    own = new.state_dict()
    shared = {k: v for k, v in net.state_dict().items() if k in own and own[k].shape == v.shape}
    new.load_state_dict(shared, strict=False)
    return new


def _working_copy(net: EPNet, dtype: torch.dtype) -> EPNet:
    """A detached copy in ``dtype`` with no gradients, to run EP and baselines on."""
    work = copy.deepcopy(_check_net(net)).to(dtype)
    for p in work.parameters():
        p.grad = None
    return work


# ----------------------------------------------------------------------------- coupling matrix
def state_offsets(net: EPNet) -> list[int]:
    """Where each state layer sits in the stacked state vector: layer l is
    ``z[off[l-1]:off[l]]``. Length ``n_state + 1``; ``off[-1]`` is N."""
    off = [0]
    for n in net.topology.sizes[1:]:
        off.append(off[-1] + n)
    return off


def coupling_matrix(net: EPNet, dtype: torch.dtype = torch.float64) -> Tensor:
    """The scaled state-to-state matrix C (N, N), column convention.

    The free dynamics are ``z_{t+1} = rho(drive + C z_t)``: block (dst, src) of C
    is ``scale * M^T`` for each term ``(src, M, scale)`` into dst of ``net.terms()``
    (alpha on forward links, beta_dst on feedback links). The input drive is not in C.
    """
    off = state_offsets(_check_net(net))
    C = torch.zeros(off[-1], off[-1], dtype=dtype, device=net.layers[0].weight.device)
    for dst, terms in enumerate(net.terms()):
        for src, M, scale in terms:
            # += : two links between the same pair of layers add up
            C[off[dst - 1]:off[dst], off[src - 1]:off[src]] += scale * M.detach().to(dtype).t()
    return C


def spectral_radius(net: EPNet) -> float:
    """Largest |eigenvalue| of ``coupling_matrix(net)``.

    Below 1 the linearised dynamics around zero contract; with tanh (slope <= 1)
    a radius under 1 is the usual sign of a fast, unique relaxation.
    """
    C = coupling_matrix(net).cpu()  # eig on CPU: robust and fast for N ~ 1000
    return float(torch.linalg.eigvals(C).abs().max())


# ----------------------------------------------------------------------------- free dynamics
def _free_system(net: EPNet, x: Tensor, dtype: torch.dtype):
    """(x, drives, terms) of the free phase, detached and in ``dtype``.

    x: (B, n_in) or (n_in,). drives[l]: (B, n_l), (n_l,) or None; terms as in
    ``tritonep.reference.step``. The drive is recomputed in ``dtype`` rather than
    cast from the net's precision.
    """
    x = _check_net(net)._check_input(_as_batch(x)).detach().to(dtype)
    drives: list[Optional[Tensor]] = [None] * (net.n_state + 1)
    drives[1] = x @ net.layers[0].weight.detach().to(dtype).t()
    for l in range(1, net.n_state + 1):
        b = net.layer_bias(l)
        if b is not None:
            b = b.detach().to(dtype)
            drives[l] = b if drives[l] is None else drives[l] + b
    terms = [[(src, M.detach().to(dtype), scale) for src, M, scale in t] for t in net.terms()]
    return x, drives, terms


def _sample_norms(layers: Sequence[Tensor]) -> Tensor:
    """Per-sample Euclidean norm over all layers: list of (B, n_l) -> (B,)."""
    return torch.sqrt(sum((t * t).sum(1) for t in layers))


@torch.no_grad()
def state_changes(net: EPNet, x: Tensor, horizon: int, *, dtype: torch.dtype = torch.float64) -> list[float]:
    """How much the free phase moves at each step.

    Returns ``[d_1, ..., d_horizon]`` with ``d_t = max over the batch of
    ||z_t - z_{t-1}||`` (per-sample norm over all state layers), z_0 = 0.
    x: (B, n_in) or (n_in,).
    """
    horizon = _steps("horizon", horizon)
    x, drives, terms = _free_system(net, x, dtype)
    cur = net.zero_states(x)
    changes = []
    for _ in range(horizon):
        new = ref.step(cur, drives, terms, net.activation)
        changes.append(float(_sample_norms([a - b for a, b in zip(new[1:], cur[1:])]).max()))
        cur = new
    return changes


def first_settled(changes: Sequence[float], tol: float, patience: int = PATIENCE) -> Optional[int]:
    """The first step t (1-based) from which ``patience`` consecutive changes
    ``changes[t-1], ..., changes[t+patience-2]`` are all below ``tol``; None if no
    such run fits in ``changes`` (never settled within the horizon)."""
    tol, patience = _positive("tol", tol), _steps("patience", patience)
    run = 0
    for i, c in enumerate(changes):
        run = run + 1 if c < tol else 0  # a NaN change is not below tol: resets the run
        if run == patience:
            return i - patience + 2
    return None


def default_horizon(T: int) -> int:
    """Steps simulated by default: four free phases, and at least 100."""
    return max(4 * T, 100)


def convergence_time(net: EPNet, x: Tensor, *, tol: float = DEFAULT_TOL, horizon: Optional[int] = None,
                     patience: int = PATIENCE, dtype: torch.dtype = torch.float64) -> Optional[int]:
    """Steps the free phase needs to settle: the first t from which the state change
    stays under ``tol`` for ``patience`` steps (see ``state_changes`` and
    ``first_settled``), or None if that never happens within ``horizon`` steps
    (default ``default_horizon(net.T)``). x: (B, n_in) or (n_in,).
    """
    horizon = default_horizon(net.T) if horizon is None else horizon
    return first_settled(state_changes(net, x, horizon, dtype=dtype), tol, patience)


def step_jacobian(net: EPNet, x: Tensor, state: Optional[Tensor] = None, *,
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """Jacobian (N, N) of one free step at ``state`` for one sample:
    ``J[i, j] = d z_new[i] / d z[j]`` = diag(rho'(pre)) @ C.

    x: (n_in,) or (1, n_in); state: the stacked state z (N,), default zero.
    """
    x, drives, terms = _free_system(net, x, dtype)
    if x.shape[0] != 1:
        raise ValueError(f"step_jacobian takes one sample, got a batch of {x.shape[0]}")
    off = state_offsets(net)
    z0 = x.new_zeros(off[-1]) if state is None else state.detach().to(dtype).reshape(off[-1])

    def step(z: Tensor) -> Tensor:
        layers = [z[None, off[l - 1]:off[l]] for l in range(1, net.n_state + 1)]
        return torch.cat([s[0] for s in ref.step([x, *layers], drives, terms, net.activation)[1:]])

    return torch.autograd.functional.jacobian(step, z0)


def lyapunov(net: EPNet, x: Tensor, *, T: Optional[int] = None, horizon: Optional[int] = None, seed: int = 0,
             dtype: torch.dtype = torch.float64) -> dict:
    """Maximal Lyapunov exponent along the free trajectory (Benettin's method).

    From z_0 = 0 and a random unit tangent v_0 per sample, each step maps
    (z_t, v_t) to (z_{t+1}, J_t v_t) with J_t the step's Jacobian (autograd through
    ``tritonep.reference.step``, out of place); g_t = log ||J_t v_t|| is the growth
    of that step, and v is renormalised to unit length. Samples are independent
    (a batch's Jacobian is block diagonal), so every sample has its own tangent.

    x: (B, n_in) or (n_in,). T: steps of the FTMLE (default ``net.T``); horizon:
    total steps (default ``default_horizon(T)``, must be >= T and >= 2).
    Returns floats (a tangent that dies gives -inf) and tensors:
        ftmle: mean over samples of mean(g_1..g_T) [nats/step]
        asymptotic: mean over samples of the mean of g over the second half of the horizon
        ftmle_per_sample, asymptotic_per_sample: (B,)
        log_growth: (horizon, B) the g_t
        T, horizon
    """
    x, drives, terms = _free_system(net, x, dtype)
    T = net.T if T is None else _steps("T", T)
    horizon = default_horizon(T) if horizon is None else _steps("horizon", horizon)
    if horizon < max(T, 2):
        raise ValueError(f"horizon ({horizon}) must be >= T ({T}) and >= 2")

    def step(*states: Tensor) -> tuple[Tensor, ...]:
        return tuple(ref.step([x, *states], drives, terms, net.activation)[1:])

    states = tuple(net.zero_states(x)[1:])
    gen = torch.Generator().manual_seed(int(seed))
    tangent = tuple(torch.randn(s.shape, generator=gen, dtype=dtype).to(s.device) for s in states)
    norm = _sample_norms(tangent)
    tangent = tuple(v / norm[:, None] for v in tangent)
    growth = []
    for _ in range(horizon):
        # autograd.functional.jvp (reverse mode, double-backward trick) rather than
        # torch.func.jvp: forward-mode AD runs ref.step's scalar ops through Python
        # decompositions, 5-7x slower here; both give the same J v (tests check J)
        with torch.enable_grad():
            states, tangent = torch.autograd.functional.jvp(step, states, tangent)
        norm = _sample_norms(tangent)
        growth.append(torch.log(norm))  # -inf where the tangent vanished (a saturated hard_sigmoid)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))  # keep a dead tangent at zero
        tangent = tuple(v / safe[:, None] for v in tangent)
    g = torch.stack(growth)  # (horizon, B)
    ftmle, asym = g[:T].mean(0), g[horizon // 2:].mean(0)
    return {"ftmle": float(ftmle.mean()), "asymptotic": float(asym.mean()), "ftmle_per_sample": ftmle,
            "asymptotic_per_sample": asym, "log_growth": g, "T": T, "horizon": horizon}


def dynamics_report(net: EPNet, x: Tensor, *, tol: float = DEFAULT_TOL, T: Optional[int] = None,
                    horizon: Optional[int] = None, seed: int = 0, traces: bool = True) -> dict:
    """Spectral radius, FTMLE, asymptotic exponent and convergence time in one dict.

    x: (B, n_in) or (n_in,). traces: also return the per-step ``state_change``
    (max over the batch) and ``log_growth`` (mean over the batch) lists, for plots.
    JSON-ready; ``convergence_time`` is None when the net never settled.
    """
    T = net.T if T is None else _steps("T", T)
    horizon = default_horizon(T) if horizon is None else _steps("horizon", horizon)
    rho = spectral_radius(net)
    lyap = lyapunov(net, x, T=T, horizon=horizon, seed=seed)
    changes = state_changes(net, x, horizon)
    out = {"spectral_radius": rho, "log_spectral_radius": math.log(rho) if rho > 0 else float("-inf"),
           "ftmle": lyap["ftmle"], "asymptotic_exponent": lyap["asymptotic"],
           "ftmle_max_over_batch": float(lyap["ftmle_per_sample"].max()),
           "convergence_time": first_settled(changes, tol), "tol": tol, "patience": PATIENCE,
           "T": T, "horizon": horizon, "batch": int(_as_batch(x).shape[0])}
    if traces:
        out["state_change"] = changes
        out["log_growth"] = lyap["log_growth"].mean(1).tolist()
    return _jsonable(out)


# ----------------------------------------------------------------------------- gradient alignment
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
    work = _working_copy(net, dtype)
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
    work = _working_copy(net, dtype)
    x = work._check_input(_as_batch(x))
    loss, _ = work.ep_step(x, y)
    ep = {n: p.grad.clone() for n, p in work.named_parameters() if p.grad is not None}
    scales = expected_scales(work)
    out = {"loss": float(loss), "batch": int(x.shape[0]), "hidden": hidden_weights(work),
           "labels": {n: layer_label(work, n) for n in ep}}
    for b in baselines:
        grads = bp_gradients(work, x, y) if b == "bp" else bptt_gradients(work, x, y, work.T)
        out[b] = compare_gradients(ep, grads, scales)
    return _jsonable(out)


def mean_cosine(alignment: dict, baseline: str = "bp") -> float:
    """Mean cosine over the hidden weights (readout excluded) of a ``gradient_alignment`` result."""
    vals = [_num(alignment[baseline][n]["cosine"]) for n in alignment["hidden"]]
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
        points.append(_jsonable({**point, "alignment": al}))
        if log is not None:
            log(json.dumps({k: v for k, v in points[-1].items() if k != "alignment"}))
    return points


# ----------------------------------------------------------------------------- sweeps
def point_report(net: EPNet, x: Tensor, y: Tensor, *, tol: float = DEFAULT_TOL, horizon: Optional[int] = None,
                 baselines: Sequence[str] = BASELINES, seed: int = 0) -> dict:
    """What a sweep records per point: ``dynamics_report`` (no traces) plus the
    gradient alignment and its mean cosine over hidden weights per baseline."""
    report = dynamics_report(net, x, tol=tol, horizon=horizon, seed=seed, traces=False)
    al = gradient_alignment(net, x, y, baselines=baselines)
    report.update({f"mean_cosine_{b}": mean_cosine(al, b) for b in baselines})
    report["alignment"] = al
    return _jsonable(report)


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
    points = []
    for kind in weights:
        for beta in values:
            trial = with_options(net, feedback=_positive("feedback", beta), feedback_weights=kind, seed=seed)
            p = {"feedback": float(beta), "feedback_weights": kind,
                 **point_report(trial, x, y, tol=tol, horizon=horizon, baselines=baselines, seed=seed)}
            points.append(p)
            if log is not None:
                log(_summary_line(p, ("feedback_weights", "feedback")))
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
    points = []
    for a in alphas:
        for b in betas:
            trial = with_options(net, alpha=_positive("alpha", a), feedback=_positive("beta", b), seed=seed)
            p = {"alpha": float(a), "beta": float(b),
                 **point_report(trial, x, y, tol=tol, horizon=horizon, baselines=baselines, seed=seed)}
            points.append(p)
            if log is not None:
                log(_summary_line(p, ("alpha", "beta")))
    return {"alphas": [float(a) for a in alphas], "betas": [float(b) for b in betas], "points": points}


def _summary_line(point: dict, keys: Sequence[str]) -> str:
    shown = list(keys) + ["spectral_radius", "ftmle", "asymptotic_exponent", "convergence_time"] + [
        k for k in point if k.startswith("mean_cosine_")]
    return json.dumps({k: point[k] for k in shown})


# ----------------------------------------------------------------------------- update norms over training
def train_update_norms(net: EPNet, x: Tensor, y: Tensor, *, epochs: int = 3, batch_size: int = 500,
                       lr: float = 1e-3, optimizer: Optional[torch.optim.Optimizer] = None, seed: int = 0,
                       log: Optional[Callable[[str], None]] = None) -> dict:
    """Train ``net`` with EP (in place) and record each weight's update norm per epoch.

    Per epoch and weight matrix: the mean over batches of ||.grad||_F after
    ``net.ep_step`` (the update before the optimizer rescales it): the quantity
    that vanishes in deep nets with weak feedback. x: (N, n_in) float; y: (N,)
    labels, on the net's device. ``optimizer`` defaults to Adam(lr).
    Returns ``{"names", "labels", "epochs", "norms": [[per epoch] per weight],
    "train_loss", "train_acc"}``, names ordered layers then skips.
    """
    from .data import Batches  # not at import time: the data module is only needed here

    epochs = _steps("epochs", epochs)
    opt = optimizer if optimizer is not None else torch.optim.Adam(net.parameters(), lr=_positive("lr", lr))
    names = [n for n, p in net.named_parameters() if n.endswith(".weight")]
    params = [net.get_parameter(n) for n in names]
    batches = Batches(x, y, batch_size, shuffle=True, seed=seed)
    norms, losses, accs = [], [], []
    for epoch in range(epochs):
        total = torch.zeros(len(names), dtype=torch.float64)
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in batches.epoch(epoch):
            opt.zero_grad(set_to_none=True)
            loss, logits = net.ep_step(xb, yb)
            total += torch.stack([p.grad.detach().double().norm().cpu() for p in params])
            opt.step()
            loss_sum += float(loss) * xb.shape[0]
            correct += int((logits.argmax(1) == yb).sum())
            seen += xb.shape[0]
        norms.append((total / len(batches)).tolist())
        losses.append(loss_sum / seen)
        accs.append(100.0 * correct / seen)
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"training diverged in epoch {epoch + 1}; lower the learning rate")
        if log is not None:
            log(f"epoch {epoch + 1}: loss {losses[-1]:.4f}, train acc {accs[-1]:.2f}%")
    return _jsonable({"names": names, "labels": [layer_label(net, n) for n in names],
                      "epochs": list(range(1, epochs + 1)), "norms": [list(r) for r in zip(*norms)],
                      "train_loss": losses, "train_acc": accs, "batch_size": batch_size, "train_size": int(x.shape[0])})


def residual_update_norms(net: EPNet, x: Tensor, y: Tensor, *, every: int = 3, epochs: int = 3,
                          batch_size: int = 500, lr: float = 1e-3,
                          make_optimizer: Optional[Callable[[EPNet], torch.optim.Optimizer]] = None, seed: int = 0,
                          log: Optional[Callable[[str], None]] = None) -> dict:
    """``train_update_norms`` for two copies of ``net`` with the same initial weights:
    with residual links every ``every`` layers, and without any.
    make_optimizer: builds each copy's optimizer (default Adam(lr)).
    Returns ``{"with residual links (every k)": record, "without residual links": record}``."""
    out = {}
    for label, residual in ((f"with residual links (every {every})", _steps("every", every)),
                            ("without residual links", None)):
        if log is not None:
            log(label)
        trial = with_options(net, residual=residual, seed=seed)
        opt = make_optimizer(trial) if make_optimizer is not None else None
        out[label] = train_update_norms(trial, x, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=opt,
                                        seed=seed, log=log)
    return out


# ----------------------------------------------------------------------------- plots
def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    """A matplotlib Figure with an (nrows, ncols) grid of axes; no pyplot, so no
    global backend is touched."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'tritonep[plot]' "
                          "(or pip install matplotlib)") from None
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig, path) -> list[str]:
    """Write ``fig`` as PATH.png and PATH.svg (a .png/.svg suffix on ``path`` is dropped)."""
    stem = Path(path)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = Path(f"{stem}.{ext}")
        fig.savefig(p, dpi=150)
        paths.append(str(p))
    return paths


def _finite(values) -> list[float]:
    """Numbers for plotting: reported strings/None to floats, +-inf to nan (not drawn)."""
    out = []
    for v in values:
        f = _num(v)
        out.append(f if math.isfinite(f) else float("nan"))
    return out


def plot_dynamics(report: dict, path, title: Optional[str] = None) -> list[str]:
    """Two panels from a ``dynamics_report`` (with traces): the state change per
    step against the tolerance, and the Lyapunov growth per step with the FTMLE
    and asymptotic exponent. Returns the PNG and SVG paths."""
    if "state_change" not in report:
        raise ValueError("plot_dynamics needs a dynamics_report made with traces=True")
    fig, ax = _figure(1, 2, (11, 4.2))
    steps = list(range(1, len(report["state_change"]) + 1))
    a = ax[0, 0]
    a.semilogy(steps, _finite(report["state_change"]), label="max over batch of ||z_t - z_(t-1)||")
    a.axhline(report["tol"], color="k", ls="--", lw=1, label=f"tolerance {report['tol']:g}")
    t_conv = report["convergence_time"]
    if t_conv is not None:
        a.axvline(t_conv, color="C2", lw=1, label=f"converged at step {t_conv}")
    else:
        a.plot([], [], " ", label=f"never converged in {report['horizon']} steps")
    a.set(xlabel="step t", ylabel="state change (rate units, log scale)", title="Free-phase convergence")
    a.legend(fontsize=8)
    b = ax[0, 1]
    b.plot(steps, _finite(report["log_growth"]), lw=1, label="log growth of tangent per step (mean over batch)")
    b.axhline(_num(report["ftmle"]), color="C1", ls="--", label=f"FTMLE, first {report['T']} steps: "
              f"{_num(report['ftmle']):.3f}")
    b.axhline(_num(report["asymptotic_exponent"]), color="C3", ls=":", label="asymptotic (2nd half): "
              f"{_num(report['asymptotic_exponent']):.3f}")
    b.axhline(0.0, color="k", lw=0.5)
    b.set(xlabel="step t", ylabel="log ||J_t v_t|| (nats per step)",
          title=f"Lyapunov exponent (spectral radius {_num(report['spectral_radius']):.3g})")
    b.legend(fontsize=8)
    fig.suptitle(title or "Free-phase dynamics")
    return save_figure(fig, path)


def plot_alignment(result, path, title: Optional[str] = None) -> list[str]:
    """Plot a ``gradient_alignment`` result (bars per trained matrix) or an
    ``alignment_sweep`` list (lines per hidden matrix against the swept value).
    Returns the PNG and SVG paths."""
    if isinstance(result, list):
        return _plot_alignment_sweep(result, path, title)
    baselines = [b for b in BASELINES if b in result]
    names = list(result[baselines[0]])
    labels = [result["labels"].get(n, n) for n in names]
    fig, ax = _figure(1, 2, (max(8, 1.2 * len(names) + 4), 4.2))
    width = 0.8 / len(baselines)
    for i, b in enumerate(baselines):
        xs = [k + (i - (len(baselines) - 1) / 2) * width for k in range(len(names))]
        ax[0, 0].bar(xs, _finite(result[b][n]["cosine"] for n in names), width, label=f"EP vs {b.upper()}")
        ax[0, 1].bar(xs, _finite(result[b][n]["norm_ratio_normalized"] for n in names), width,
                     label=f"EP vs {b.upper()}")
    ax[0, 0].set(xticks=range(len(names)), ylim=(min(0.0, ax[0, 0].get_ylim()[0]), 1.05), ylabel="cosine similarity",
                 title="Direction: cosine(EP update, gradient)")
    ax[0, 0].set_xticklabels(labels, rotation=45, ha="right")
    ax[0, 1].axhline(1.0, color="k", ls="--", lw=1, label="gradient-sized")
    ax[0, 1].set(xticks=range(len(names)), yscale="log", ylabel="||EP|| / (expected scale x ||gradient||)",
                 title="Size, normalised by beta_f x beta_l per hop")
    ax[0, 1].set_xticklabels(labels, rotation=45, ha="right")
    for a in ax[0]:
        a.set_xlabel("trained matrix (source -> target layer)")
        a.legend(fontsize=8)
    fig.suptitle(title or "EP update vs BP / BPTT gradients")
    return save_figure(fig, path)


def _plot_alignment_sweep(points: list[dict], path, title: Optional[str]) -> list[str]:
    if not points:
        raise ValueError("nothing to plot: the sweep has no points")
    varied = [k for k in ("feedback", "nudge", "T", "K") if len({json.dumps(p[k]) for p in points}) > 1]
    if len(varied) == 1 and all(isinstance(p[varied[0]], (int, float)) for p in points):
        xs, xlabel = [p[varied[0]] for p in points], {"feedback": "feedback coefficient beta_l",
                                                       "nudge": "nudge beta_f", "T": "free steps T",
                                                       "K": "nudged steps K"}[varied[0]]
        log_x = min(xs) > 0 and max(xs) / min(xs) >= 20
    else:  # several parameters vary: one tick per grid point
        xs, xlabel, log_x = list(range(len(points))), "grid point (" + ", ".join(varied or ["none varied"]) + ")", False
    first = points[0]["alignment"]
    baselines = [b for b in BASELINES if b in first]
    fig, ax = _figure(1, len(baselines) + 1, (5 * (len(baselines) + 1), 4.2))
    for i, name in enumerate(first["hidden"]):
        style = dict(marker="o", color=f"C{i % 10}", label=first["labels"][name])
        for j, b in enumerate(baselines):
            ax[0, j].plot(xs, _finite(p["alignment"][b][name]["cosine"] for p in points), **style)
        ax[0, -1].plot(xs, _finite(p["alignment"][baselines[0]][name]["norm_ratio_normalized"] for p in points),
                       **style)
    for j, b in enumerate(baselines):
        ax[0, j].set(ylabel="cosine similarity", title=f"cosine(EP update, {b.upper()} gradient)")
    ax[0, -1].axhline(1.0, color="k", ls="--", lw=1)
    ax[0, -1].set(yscale="log", ylabel="||EP|| / (expected scale x ||gradient||)",
                  title=f"Normalised size vs {baselines[0].upper()}")
    for a in ax[0]:
        a.set_xlabel(xlabel)
        if log_x:
            a.set_xscale("log")
        a.legend(fontsize=7, title="matrix")
    fig.suptitle(title or "EP update vs gradients across the sweep")
    return save_figure(fig, path)


def plot_feedback_sweep(result: dict, path, title: Optional[str] = None) -> list[str]:
    """Four panels from ``sweep_feedback``: spectral radius, Lyapunov exponents,
    convergence time and mean cosine to BP/BPTT, against the feedback coefficient,
    one colour per feedback-weight kind. Returns the PNG and SVG paths."""
    fig, ax = _figure(2, 2, (11, 8))
    for i, kind in enumerate(result["weights"]):
        pts = [p for p in result["points"] if p["feedback_weights"] == kind]
        xs, c = [p["feedback"] for p in pts], f"C{i}"
        ax[0, 0].plot(xs, _finite(p["spectral_radius"] for p in pts), "o-", color=c, label=kind)
        ax[0, 1].plot(xs, _finite(p["ftmle"] for p in pts), "o-", color=c, label=f"{kind}: FTMLE (first T steps)")
        ax[0, 1].plot(xs, _finite(p["asymptotic_exponent"] for p in pts), "s:", color=c,
                      label=f"{kind}: asymptotic")
        conv = [p["convergence_time"] for p in pts]
        ax[1, 0].plot(xs, _finite(conv), "o-", color=c, label=kind)
        never = [x for x, t in zip(xs, conv) if t is None]
        if never:  # drawn at the horizon, staggered so the kinds do not hide each other
            ax[1, 0].plot(never, [pts[0]["horizon"] * (1 - 0.04 * i)] * len(never), "x+"[i % 2], color=c, ms=10,
                          mew=2, label=f"{kind}: never (within {pts[0]['horizon']} steps)")
        for b, ls in (("bp", "o-"), ("bptt", "s:")):
            if f"mean_cosine_{b}" in pts[0]:
                ax[1, 1].plot(xs, _finite(p[f"mean_cosine_{b}"] for p in pts), ls, color=c,
                              label=f"{kind}: vs {b.upper()}")
    ax[0, 0].axhline(1.0, color="k", ls="--", lw=1, label="radius 1")
    ax[0, 0].set(yscale="log", ylabel="spectral radius of scaled coupling", title="Spectral radius")
    ax[0, 1].axhline(0.0, color="k", lw=0.5)
    ax[0, 1].set(ylabel="exponent (nats per step)", title="Maximal Lyapunov exponent")
    ax[1, 0].set(ylabel="steps to settle", title=f"Convergence time (change < tol for {PATIENCE} steps)")
    ax[1, 1].set(ylabel="mean cosine over hidden matrices", title="Alignment of EP updates with gradients")
    for a in ax.flat:
        a.set(xscale="log", xlabel="feedback coefficient beta_l")
        a.legend(fontsize=7)
    fig.suptitle(title or "Sweep of the feedback coefficient")
    return save_figure(fig, path)


def plot_alpha_beta(result: dict, path, title: Optional[str] = None) -> list[str]:
    """Four heatmaps from ``sweep_alpha_beta`` (rows alpha, columns beta): spectral
    radius (log colour), asymptotic Lyapunov exponent, convergence time ("never"
    cells grey) and mean cosine to BP, values written in the cells."""
    fig, ax = _figure(2, 2, (11, 9))  # first: a missing matplotlib gives the install hint
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    alphas, betas = result["alphas"], result["betas"]
    cell = {(p["alpha"], p["beta"]): p for p in result["points"]}

    def grid(key):
        return [[_finite([cell[(a, b)][key]])[0] for b in betas] for a in alphas]

    rho = grid("spectral_radius")
    exp = grid("asymptotic_exponent")
    span = max([abs(v) for r in exp for v in r if math.isfinite(v)] or [1.0])
    panels = [
        ("spectral_radius", "Spectral radius", "radius (log colour)",
         dict(cmap="viridis", norm=LogNorm(vmin=min(v for r in rho for v in r if v > 0) if any(
             v > 0 for r in rho for v in r) else 1e-3, vmax=max(max(r) for r in rho) or 1.0)), "{:.3g}"),
        ("asymptotic_exponent", "Asymptotic Lyapunov exponent", "nats per step",
         dict(cmap="coolwarm", vmin=-span, vmax=span), "{:.2f}"),
        ("convergence_time", f"Convergence time (within {result['points'][0]['horizon']} steps)",
         "steps (grey: never)",
         dict(cmap=colormaps["viridis"].with_extremes(bad="lightgrey")), "{:.0f}"),
        ("mean_cosine_bp", "Mean cosine EP vs BP (hidden matrices)", "cosine",
         dict(cmap="magma", vmin=-1.0, vmax=1.0), "{:.2f}"),
    ]
    for a, (key, name, unit, style, fmt) in zip(ax.flat, panels):
        values = grid(key) if key in result["points"][0] else [[float("nan")] * len(betas) for _ in alphas]
        im = a.imshow(values, origin="lower", aspect="auto", **style)
        fig.colorbar(im, ax=a, label=unit)
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                text = "never" if key == "convergence_time" and math.isnan(v) else (
                    "n/a" if math.isnan(v) else fmt.format(v))
                a.text(j, i, text, ha="center", va="center", fontsize=7, color="k",
                       bbox=dict(boxstyle="round,pad=0.1", fc="white", alpha=0.6, lw=0))
        a.set(xticks=range(len(betas)), yticks=range(len(alphas)), title=name,
              xlabel="feedback coefficient beta_l", ylabel="forward scale alpha")
        a.set_xticklabels([f"{b:g}" for b in betas])
        a.set_yticklabels([f"{v:g}" for v in alphas])
    fig.suptitle(title or "alpha x beta grid")
    return save_figure(fig, path)


def plot_update_norms(records: dict, path, title: Optional[str] = None) -> list[str]:
    """Heatmaps (weight matrix x epoch) of log10 update norms, one panel per record
    of ``{label: train_update_norms result}`` on a shared colour scale (e.g. with and
    without residual links). Returns the PNG and SVG paths."""
    if not records:
        raise ValueError("nothing to plot: no records")
    logs = {}
    for label, rec in records.items():
        logs[label] = [[math.log10(v) if v > 0 else float("nan") for v in _finite(row)] for row in rec["norms"]]
    finite = [v for g in logs.values() for r in g for v in r if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    rows = max(len(r["names"]) for r in records.values())
    fig, ax = _figure(1, len(records), (5.5 * len(records), 1.8 + 0.35 * rows))
    for a, (label, rec) in zip(ax[0], records.items()):
        im = a.imshow(logs[label], aspect="auto", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        a.set(xticks=range(len(rec["epochs"])), yticks=range(len(rec["names"])), title=label,
              xlabel="epoch", ylabel="weight matrix (input at top)")
        a.set_xticklabels([str(e) for e in rec["epochs"]])
        a.set_yticklabels(rec["labels"], fontsize=7)
        fig.colorbar(im, ax=a, label="log10 mean ||EP update||_F per batch")
    fig.suptitle(title or "Per-layer EP update norms over training")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- CLI
def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _residual(text: str):
    return None if text.lower() == "none" else int(text)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tritonep analyze",
                                 description="Dynamics and learning analysis of FRE-RNN nets; writes JSON (+ plots).")
    sub = ap.add_subparsers(dest="command", required=True)

    net = argparse.ArgumentParser(add_help=False)
    g = net.add_argument_group("net (a preset, changed by these options)")
    g.add_argument("--hidden", type=_ints, help="hidden widths, e.g. 64,64,64 (default: the preset's)")
    g.add_argument("--feedback", type=_floats, help="feedback coefficient, or one per layer receiving feedback")
    g.add_argument("--feedback-weights", choices=("symmetric", "random"))
    g.add_argument("--alpha", type=float, help="forward scale between hidden layers")
    g.add_argument("--nudge", type=float, help="nudge strength beta_f")
    g.add_argument("--T", type=int, help="free steps (also the FTMLE window)")
    g.add_argument("--K", type=int, help="nudged steps")
    g.add_argument("--residual", type=_residual, metavar="K|none", help="residual links every K layers, or none")
    g.add_argument("--activation", choices=ref.ACTIVATIONS)
    g.add_argument("--checkpoint", help="analyse a `tritonep train` checkpoint (its config and trained weights)")
    g.add_argument("--seed", type=int, default=0, help="weights, inputs and tangent vectors (default 0)")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    io = net.add_argument_group("inputs and outputs")
    io.add_argument("--batch", type=int, default=64, help="samples analysed (default 64)")
    io.add_argument("--data-dir", help="take the samples from the data set's test split here (never downloads); "
                    "default: uniform random inputs and labels")
    io.add_argument("--out", required=True, help="output directory for COMMAND.json (and .png/.svg)")
    io.add_argument("--plot", action="store_true", help="also write PNG and SVG plots")

    def dyn_opts(p):
        p.add_argument("--tol", type=float, default=DEFAULT_TOL, help=f"state-change tolerance (default {DEFAULT_TOL})")
        p.add_argument("--horizon", type=int, help="steps simulated (default max(4T, 100))")

    def base_opts(p):
        p.add_argument("--baselines", type=lambda s: s.split(","), default=list(BASELINES),
                       help="bp,bptt (default both)")

    p = sub.add_parser("dynamics", parents=[net], help="spectral radius, FTMLE, convergence time")
    p.add_argument("preset", nargs="?", default="mnist-2hl", help="preset name (default mnist-2hl)")
    dyn_opts(p)
    p = sub.add_parser("alignment", parents=[net], help="EP updates vs BP and BPTT gradients, per layer; sweeps")
    p.add_argument("preset", nargs="?", default="mnist-2hl", help="preset name (default mnist-2hl)")
    p.add_argument("--sweep-feedback", type=_floats, metavar="LIST",
                   help="feedback values to sweep (each for every layer)")
    p.add_argument("--sweep-nudge", type=_floats, metavar="LIST", help="nudge values to sweep")
    p.add_argument("--sweep-T", type=_ints, metavar="LIST", help="free-phase lengths to sweep")
    p.add_argument("--sweep-K", type=_ints, metavar="LIST", help="nudged-phase lengths to sweep")
    base_opts(p)
    p = sub.add_parser("sweep-feedback", parents=[net], help="feedback coefficient sweep, symmetric and random")
    p.add_argument("preset", nargs="?", default="mnist-5hl", help="preset name (default mnist-5hl)")
    p.add_argument("--values", type=_floats, default=list(FEEDBACK_VALUES), help="feedback coefficients")
    p.add_argument("--weights", type=lambda s: s.split(","), default=["symmetric", "random"],
                   help="symmetric,random (default both)")
    dyn_opts(p)
    base_opts(p)
    p = sub.add_parser("sweep-alpha-beta", parents=[net], help="alpha x beta grid")
    p.add_argument("preset", nargs="?", default="mnist-5hl", help="preset name (default mnist-5hl)")
    p.add_argument("--alphas", type=_floats, default=list(ALPHA_VALUES), help="forward scales alpha")
    p.add_argument("--betas", type=_floats, default=list(BETA_VALUES), help="feedback coefficients beta")
    dyn_opts(p)
    base_opts(p)
    p = sub.add_parser("norms", parents=[net], help="per-layer update norms over training, with/without residual")
    p.add_argument("preset", nargs="?", default="mnist-10hl-res", help="preset name (default mnist-10hl-res)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--limit-train", type=int, default=5000, metavar="N", help="train on the first N images")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's optimizer and rates)")
    p.add_argument("--every", type=int, help="residual links every k layers (default: the preset's, else 3)")
    return ap


def _build(args):
    """(net, cfg) from the preset or checkpoint, with the command line's changes."""
    from . import presets
    from .train import build_net

    state = None
    if args.checkpoint:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)  # our own file: holds RNG states
        cfg, state = dict(ck["config"]), ck["model"]
        if args.hidden is not None:
            raise ValueError("--hidden cannot change a checkpoint's widths")
    else:
        cfg = presets.get(args.preset)
        if args.hidden is not None:
            cfg["hidden"] = args.hidden
        cfg["seed"] = args.seed  # a preset net's initial weights (and AGT draw) come from --seed
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
        torch.manual_seed(cfg["seed"])
        net = build_net(cfg)
    if state is not None:
        net.load_state_dict(state)
    changes = {}
    for key in ("feedback", "feedback_weights", "alpha", "nudge", "T", "K", "activation"):
        v = getattr(args, key, None)
        if v is not None:
            changes[key] = v[0] if key == "feedback" and len(v) == 1 else v
    if args.residual_given:  # "--residual none" must remove links, so None alone cannot mean "not given"
        changes["residual"] = args.residual
    if changes:
        net = with_options(net, seed=args.seed, **changes)
    return net.to(args.device), cfg


def _inputs(args, cfg, net):
    """(x, y, source): ``--batch`` test samples of the data set, or uniform random ones."""
    if args.batch < 1:
        raise ValueError(f"--batch must be a positive int, got {args.batch}")
    if args.data_dir:
        from . import data

        ds = data.load(cfg["dataset"], args.data_dir, download=False)
        x = data.to_float(ds.x_test[:args.batch], device=args.device)
        return x, ds.y_test[:args.batch].to(args.device), f"{cfg['dataset']} test[:{args.batch}] ({ds.source})"
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, net.sizes[0], generator=gen).to(args.device)
    y = torch.randint(0, net.num_classes, (args.batch,), generator=gen).to(args.device)
    return x, y, "uniform random inputs in [0, 1) and random labels"


def _versions() -> dict:
    from . import __version__

    return {"tritonep": __version__, "torch": torch.__version__}


def _run(args, log) -> tuple[dict, Callable[[str], list[str]]]:
    """Execute one subcommand: (JSON result, plotter writing the figure to a stem)."""
    net, cfg = _build(args)
    if args.command == "norms":
        return _run_norms(args, net, cfg, log)
    x, y, source = _inputs(args, cfg, net)
    head = {"command": args.command, "preset": None if args.checkpoint else args.preset,
            "checkpoint": args.checkpoint, "net": describe(net), "inputs": source, "batch": args.batch,
            "seed": args.seed, "versions": _versions()}
    if args.command == "dynamics":
        r = dynamics_report(net, x, tol=args.tol, horizon=args.horizon, seed=args.seed)
        return {**head, "result": r}, lambda stem: plot_dynamics(r, stem, f"Dynamics of {_name(args, net)}")
    if args.command == "alignment":
        sweep = any(v is not None for v in (args.sweep_feedback, args.sweep_nudge, args.sweep_T, args.sweep_K))
        if sweep:
            r = alignment_sweep(net, x, y, feedback=args.sweep_feedback, nudge=args.sweep_nudge, T=args.sweep_T,
                                K=args.sweep_K, baselines=args.baselines, log=log)
        else:
            r = gradient_alignment(net, x, y, baselines=args.baselines)
        return {**head, "result": r}, lambda stem: plot_alignment(r, stem, f"EP vs gradients, {_name(args, net)}")
    if args.command == "sweep-feedback":
        r = sweep_feedback(net, x, y, values=args.values, weights=args.weights, tol=args.tol, horizon=args.horizon,
                           baselines=args.baselines, seed=args.seed, log=log)
        return {**head, "result": r}, lambda stem: plot_feedback_sweep(r, stem, f"Feedback sweep, {_name(args, net)}")
    r = sweep_alpha_beta(net, x, y, alphas=args.alphas, betas=args.betas, tol=args.tol, horizon=args.horizon,
                         baselines=args.baselines, seed=args.seed, log=log)
    return {**head, "result": r}, lambda stem: plot_alpha_beta(r, stem, f"alpha x beta grid, {_name(args, net)}")


def _run_norms(args, net, cfg, log):
    from . import data
    from .train import build_optimizer

    ds = data.load(cfg["dataset"], args.data_dir, download=False)
    n = min(_steps("--limit-train", args.limit_train), ds.x_train.shape[0])
    x, y = data.to_float(ds.x_train[:n], device=args.device), ds.y_train[:n].to(args.device)
    every = args.every or (cfg["residual"] if isinstance(cfg["residual"], int) else 3)
    if args.lr is not None:
        lr = _positive("--lr", args.lr)
        make_optimizer = lambda trial: torch.optim.Adam(trial.parameters(), lr=lr)  # noqa: E731
    else:
        make_optimizer = lambda trial: build_optimizer(trial, cfg)  # noqa: E731
    records = residual_update_norms(net, x, y, every=every, epochs=args.epochs,
                                    batch_size=args.batch_size or cfg["batch_size"], make_optimizer=make_optimizer,
                                    seed=args.seed, log=log)
    out = {"command": "norms", "preset": None if args.checkpoint else args.preset, "checkpoint": args.checkpoint,
           "net": describe(net), "inputs": f"{cfg['dataset']} train[:{n}] ({ds.source})", "seed": args.seed,
           "versions": _versions(), "result": records}
    return out, lambda stem: plot_update_norms(records, stem, f"Per-layer EP update norms, {_name(args, net)}")


def _name(args, net: EPNet) -> str:
    return (Path(args.checkpoint).name if args.checkpoint else args.preset) + " " + "-".join(map(str, net.sizes))


def main(argv: Optional[list[str]] = None) -> int:
    """``tritonep analyze COMMAND [options]``: writes OUT/COMMAND.json (and with
    --plot OUT/COMMAND.png, .svg); prints the paths as one JSON line. Returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.residual_given = "--residual" in argv or any(a.startswith("--residual=") for a in argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        if args.checkpoint is None:
            from . import presets

            presets.get(args.preset)  # unknown names fail here, before any work
        result, plot = _run(args, log)
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{args.command}.json"
        path.write_text(json.dumps(_jsonable(result), indent=2, allow_nan=False))
        plots = plot(out_dir / args.command) if args.plot else []
    except KeyError as e:  # unknown preset
        print(f"tritonep analyze: error: {e.args[0]}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, ImportError) as e:  # bad input, no data (DataNotFoundError), no matplotlib
        print(f"tritonep analyze: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"json": str(path), "plots": plots}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
