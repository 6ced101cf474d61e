"""Stability and convergence of the free phase: the scaled coupling matrix and its
spectral radius, the state change per step, the convergence time, the Jacobian of
one step and the maximal Lyapunov exponent (Benettin's method).

For one sample the state vector z stacks the state layers ``[s_1, ..., s_n]``
(``state_offsets``); block (dst, src) of the coupling matrix is ``scale * M^T``.
Exponents are natural logs per step (nats/step), times are in steps.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import reference as ref
from ..net import EPNet
from ..options import positive_float, positive_int
from .netcopy import as_batch, check_net
from .strict_json import jsonable

PATIENCE = 3  # consecutive steps under the tolerance that count as "settled"
DEFAULT_TOL = 1e-4


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
    off = state_offsets(check_net(net))
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


def _free_system(net: EPNet, x: Tensor, dtype: torch.dtype):
    """(x, drives, terms) of the free phase, detached and in ``dtype``.

    x: (B, n_in) or (n_in,). drives[l]: (B, n_l), (n_l,) or None; terms as in
    ``tritonep.reference.step``. The drive is recomputed in ``dtype`` rather than
    cast from the net's precision.
    """
    x = check_net(net).check_input(as_batch(x)).detach().to(dtype)
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
    horizon = positive_int("horizon", horizon)
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
    tol, patience = positive_float("tol", tol), positive_int("patience", patience)
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
    T = net.T if T is None else positive_int("T", T)
    horizon = default_horizon(T) if horizon is None else positive_int("horizon", horizon)
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
    T = net.T if T is None else positive_int("T", T)
    horizon = default_horizon(T) if horizon is None else positive_int("horizon", horizon)
    rho = spectral_radius(net)
    lyap = lyapunov(net, x, T=T, horizon=horizon, seed=seed)
    changes = state_changes(net, x, horizon)
    out = {"spectral_radius": rho, "log_spectral_radius": math.log(rho) if rho > 0 else float("-inf"),
           "ftmle": lyap["ftmle"], "asymptotic_exponent": lyap["asymptotic"],
           "ftmle_max_over_batch": float(lyap["ftmle_per_sample"].max()),
           "convergence_time": first_settled(changes, tol), "tol": tol, "patience": PATIENCE,
           "T": T, "horizon": horizon, "batch": int(as_batch(x).shape[0])}
    if traces:
        out["state_change"] = changes
        out["log_growth"] = lyap["log_growth"].mean(1).tolist()
    return jsonable(out)
