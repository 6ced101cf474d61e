"""Fused layerwise relaxation: one synchronous step of every state layer in ONE launch
(or one group's half of an alternating step: see below).

Mirrors ``tritonep.reference.step``. All state layers of a batch live side by side
in one *frame*, a ``(B, N)`` fp32 tensor in which layer l owns the columns
``[col_l, col_l + n_l)``. A program computes one ``(BLOCK_B, BLOCK_N)`` tile of one
layer's new state:

    pre  = drive (layer 1: x @ W0^T + b0, computed once per batch by cuBLAS)
         + bias_l
         + sum over links c into l of  scale_c * s_src(c) @ M_c      (one fp32 accumulator)
         + the nudge on the top layer (softmax error projected back, or P-EP's y - s)
    s_l' = rho(pre)

The grid is (batch tiles, output tiles of all layers): a small int32 table maps
each output tile to its layer, and another lists each layer's incoming links
(source columns, offset and strides of its matrix in the packed weight buffer,
scale), so residual and AGT links cost loop iterations, not launches (table
layouts and the shared helpers: ``kernels.common``). Optionally
each program also writes its tile's per-sample squared state change, which the
convergence check sums.

The alternating schedule (``Topology.update_order``: the odd layers, then the even
layers from the odd layers' new states) launches the step kernel once per group of
layers, each over that group's own tile table, all writing the same output frame;
a term whose source's group came earlier in the step (a per-term flag of the term
table) reads the output frame, every other term the input frame. The compile-time
switch ``ALTERNATING`` adds that choice, a scalar per term, so the synchronous
kernels compile as before, and both groups run one compiled kernel.

The readout kernel (logits and error of the softmax output) shares the
softmax-error code with the nudge of the step kernel. The persistent kernel runs
a whole phase in one launch: each program loops over every step and every output
tile for its rows of the batch (alternating: the first group's tiles, a barrier,
the second group's, from one table ordered by group).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    ACTIVATION_CODES,
    NUDGE_NEURON,
    NUDGE_NEURON_GIVEN,
    NUDGE_NONE,
    NUDGE_SOFTMAX,
    NUDGE_SOFTMAX_GIVEN,
    activate,
    dot,
    layer_row,
    load_weights,
    term_row,
    term_src_new,
    tile_row,
)
from .launch import Space, launch, verified_triton

# the codes stay importable from here: callers pass relax.NUDGE_* to the launchers
__all__ = ["ACTIVATION_CODES", "NUDGE_NEURON", "NUDGE_NEURON_GIVEN", "NUDGE_NONE", "NUDGE_SOFTMAX",
           "NUDGE_SOFTMAX_GIVEN", "readout", "relax_phase", "relax_step"]
# the step kernel's twins of the codes it compares (see kernels.common)
_NUDGE_NONE, _NUDGE_SOFTMAX, _NUDGE_SOFTMAX_GIVEN, _NUDGE_NEURON = map(
    tl.constexpr, (NUDGE_NONE, NUDGE_SOFTMAX, NUDGE_SOFTMAX_GIVEN, NUDGE_NEURON))


@triton.jit
def _frame_times(acc, S, stride_s, col, n_src, rb, mb, M, stride_k, stride_n, rn, mn,
                 W_BF16: tl.constexpr, PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """``acc + S[rb, col:col + n_src] @ M[:, rn]``, acc a (BLOCK_B, BLOCK_N) fp32 tile;
    zero outside the masks ``mb``, ``mn``. ``M[k, j]`` is stored at ``M + k * stride_k
    + j * stride_n``, so a packed matrix serves as W or W^T. Accumulating every link
    into the one tile (scales folded into the packed matrices) keeps a single
    accumulator live, which is what keeps the step kernel's registers down."""
    rk = tl.arange(0, BLOCK_K)
    for k0 in range(0, n_src, BLOCK_K):
        kk = k0 + rk
        mk = kk < n_src
        s = tl.load(S + rb[:, None] * stride_s + col + kk[None, :], mask=mb[:, None] & mk[None, :], other=0.0)
        w = load_weights(M + rn[None, :] * stride_n + kk[:, None] * stride_k, mk[:, None] & mn[None, :], W_BF16)
        acc = dot(s, w, PRECISION, acc)
    return acc


@triton.jit
def _softmax_error(S, stride_s, col, n_top, Wf, stride_wf, Bf, Y, stride_y, rb, mb, C,
                   HAS_BF: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    """Logits s_top @ W_f^T + b_f and error y - softmax(logits) for rows ``rb``:
    two (BLOCK_B, BLOCK_C) tiles, zero in the padding classes."""
    rc = tl.arange(0, BLOCK_C)
    mc = rc < C
    # logits = s_top @ W_f^T: W_f (C, n_top) read transposed, unit stride over k; W_f is fp32
    logits = _frame_times(tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32), S, stride_s, col, n_top, rb, mb, Wf, 1,
                          stride_wf, rc, mc, False, PRECISION, BLOCK_K)
    if HAS_BF:
        logits += tl.load(Bf + rc, mask=mc, other=0.0)[None, :]
    z = tl.where(mc[None, :], logits, float("-inf"))
    z = z - tl.max(z, axis=1)[:, None]
    p = tl.exp(z)
    p = p / tl.sum(p, axis=1)[:, None]
    y = tl.load(Y + rb[:, None] * stride_y + rc[None, :], mask=mb[:, None] & mc[None, :], other=0.0)
    err = tl.where(mc[None, :], y - p, 0.0)
    return logits, err


@triton.jit
def _step_tile(
    S_in, S_out, Drive, W, Bias, tiles, layers, terms, Y, Wf, Bf, Mf, E, Delta,
    B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
    pid_b, pid_t, SKIP_TERMS: tl.constexpr,
    ACT: tl.constexpr, NUDGE: tl.constexpr, HAS_BF: tl.constexpr, TRACK: tl.constexpr,
    W_BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
    ALTERNATING: tl.constexpr = False,
):
    """New states of one (BLOCK_B, BLOCK_N) tile: rows of batch tile ``pid_b``,
    units of output tile ``pid_t`` (whose layer the tile table names).

    ALTERNATING: the tile table holds one group of layers of the alternating schedule,
    and a term whose source was updated by an earlier group of this step (TERM_SRC_NEW)
    reads ``S_out``, the others ``S_in``; with SKIP_TERMS (``S_in`` is all zero and
    unread) only the new sources count. The nudge reads the top layer's old state
    (``S_in``) either way."""
    layer, n0 = tile_row(tiles, pid_t)
    col, n, t_begin, t_end, bias_off, has_drive = layer_row(layers, layer)

    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = n0 + tl.arange(0, BLOCK_N)
    mb = rb < B
    mn = rn < n
    m2 = mb[:, None] & mn[None, :]

    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    if ALTERNATING:  # one group of layers: sources updated earlier in the step read S_out
        for t in range(t_begin, t_end):
            src_col, n_src, w_off, stride_k, stride_n = term_row(terms, t)
            new_src = term_src_new(terms, t) != 0
            if SKIP_TERMS:  # the first free step: the old states are zero, only the new ones count
                if new_src:
                    acc = _frame_times(acc, S_out, stride_s, src_col, n_src, rb, mb, W + w_off, stride_k, stride_n,
                                       rn, mn, W_BF16, PRECISION, BLOCK_K)
            else:  # pick the frame with a scalar, so the product is inlined once
                s_src = S_in
                if new_src:
                    s_src = S_out
                acc = _frame_times(acc, s_src, stride_s, src_col, n_src, rb, mb, W + w_off, stride_k, stride_n,
                                   rn, mn, W_BF16, PRECISION, BLOCK_K)
    elif SKIP_TERMS:  # the first free step starts from zero states: only drives count
        pass
    else:
        for t in range(t_begin, t_end):
            src_col, n_src, w_off, stride_k, stride_n = term_row(terms, t)
            acc = _frame_times(acc, S_in, stride_s, src_col, n_src, rb, mb, W + w_off, stride_k, stride_n, rn, mn,
                               W_BF16, PRECISION, BLOCK_K)

    if has_drive != 0:
        acc += tl.load(Drive + rb[:, None] * stride_d + rn[None, :], mask=m2, other=0.0)
    if bias_off >= 0:
        acc += tl.load(Bias + bias_off + rn, mask=mn, other=0.0)[None, :]

    if NUDGE != _NUDGE_NONE:
        if layer == top:
            if NUDGE == _NUDGE_SOFTMAX or NUDGE == _NUDGE_SOFTMAX_GIVEN:  # softmax error, back through M_f
                rc = tl.arange(0, BLOCK_C)
                mc = rc < C
                if NUDGE == _NUDGE_SOFTMAX:
                    _, err = _softmax_error(S_in, stride_s, col, n, Wf, stride_wf, Bf, Y, stride_y, rb, mb, C,
                                            HAS_BF, PRECISION, BLOCK_B, BLOCK_K, BLOCK_C)
                else:
                    err = tl.load(E + rb[:, None] * stride_e + rc[None, :], mask=mb[:, None] & mc[None, :], other=0.0)
                mf = tl.load(Mf + rc[:, None] * stride_mfc + rn[None, :] * stride_mfn,
                             mask=mc[:, None] & mn[None, :], other=0.0)
                acc = dot(beta * err, mf, PRECISION, acc)
            else:  # P-EP: the error is on the top layer's own units
                if NUDGE == _NUDGE_NEURON:
                    y = tl.load(Y + rb[:, None] * stride_y + rn[None, :], mask=m2, other=0.0)
                    s_top = tl.load(S_in + rb[:, None] * stride_s + col + rn[None, :], mask=m2, other=0.0)
                    err = y - s_top
                else:
                    err = tl.load(E + rb[:, None] * stride_e + rn[None, :], mask=m2, other=0.0)
                acc += beta * err

    new = activate(acc, ACT)
    tl.store(S_out + rb[:, None] * stride_s + col + rn[None, :], new, mask=m2)
    if TRACK:
        if SKIP_TERMS:
            old = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        else:
            old = tl.load(S_in + rb[:, None] * stride_s + col + rn[None, :], mask=m2, other=0.0)
        d = tl.where(m2, new - old, 0.0)
        tl.store(Delta + pid_t * B + rb, tl.sum(d * d, axis=1), mask=mb)


@triton.jit
def _relax_step_kernel(
    S_in, S_out, Drive, W, Bias,            # frames (B, N); drive (B, n_1); packed weights; packed biases
    tiles, layers, terms,                   # int32 tables
    Y, Wf, Bf, Mf, E, Delta,                # nudge operands; per-tile squared state change (n_tiles, B)
    B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
    ACT: tl.constexpr, NUDGE: tl.constexpr, HAS_BF: tl.constexpr, SKIP_TERMS: tl.constexpr,
    TRACK: tl.constexpr, W_BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
    ALTERNATING: tl.constexpr = False,
):
    _step_tile(S_in, S_out, Drive, W, Bias, tiles, layers, terms, Y, Wf, Bf, Mf, E, Delta,
               B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
               tl.program_id(0), tl.program_id(1), SKIP_TERMS,
               ACT, NUDGE, HAS_BF, TRACK, W_BF16, PRECISION, BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C, ALTERNATING)


@triton.jit
def _relax_persistent_kernel(
    S_start, S_a, S_b, Drive, W, Bias, tiles, layers, terms, Y, Wf, Bf, Mf, E, Scratch,
    B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta, beta_growth,
    steps, n_tiles, n_first,
    ACT: tl.constexpr, NUDGE: tl.constexpr, HAS_BF: tl.constexpr, FROM_ZERO: tl.constexpr,
    W_BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
    ALTERNATING: tl.constexpr = False,
):
    """A whole phase in one launch: each program owns BLOCK_B samples and runs every
    step and every output tile for them. Samples are independent and the weights are
    read-only, so programs never wait on each other; within a program a barrier
    orders one step's writes before the next step's reads. Step t reads S_start (t = 0),
    else the frame step t-1 wrote, and writes S_a (even t) or S_b (odd t). Step t is
    nudged by ``beta + t * beta_growth`` (the ramp: ``beta_growth = beta``).

    ALTERNATING: the tile table lists the first group's ``n_first`` tiles, then the
    second group's, whose terms read the first group's new states from the step's
    output frame (``_step_tile``); a barrier before the second group's first tile
    orders those writes before these reads (``n_first`` is unused otherwise).

    The dynamic softmax nudge's error is computed once per step, before the tiles,
    into ``Scratch`` ((B, C), the program's own rows), which the tiles then read as a
    given error: recomputing it inside the tile loop made this kernel spill."""
    pid_b = tl.program_id(0)
    first = 0
    if FROM_ZERO:  # step 0 from zero states reads no frame (alternating: only the step's new states)
        for i in range(n_tiles):  # Delta is never written (TRACK=False): S_a stands in
            if ALTERNATING:
                if i == n_first:
                    tl.debug_barrier()
            _step_tile(S_start, S_a, Drive, W, Bias, tiles, layers, terms, Y, Wf, Bf, Mf, E, S_a,
                       B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
                       pid_b, i, True, ACT, NUDGE, HAS_BF, False, W_BF16, PRECISION,
                       BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C, ALTERNATING)
        tl.debug_barrier()
        first = 1
    for t in range(first, steps):
        beta_t = beta + t * beta_growth
        # pick this step's frames first, so the step is inlined once (not once per frame pair)
        if t == 0:
            s_in = S_start
            s_out = S_a
        elif t % 2 == 1:
            s_in = S_a
            s_out = S_b
        else:
            s_in = S_b
            s_out = S_a
        if NUDGE == _NUDGE_SOFTMAX:  # (from the old top state, before either group: as the reference)
            rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
            mb = rb < B
            rc = tl.arange(0, BLOCK_C)
            top_col, n_top, _, _, _, _ = layer_row(layers, top)
            _, err = _softmax_error(s_in, stride_s, top_col, n_top, Wf, stride_wf, Bf, Y, stride_y, rb, mb, C,
                                    HAS_BF, PRECISION, BLOCK_B, BLOCK_K, BLOCK_C)
            tl.store(Scratch + rb[:, None] * C + rc[None, :], err, mask=mb[:, None] & (rc < C)[None, :])
            tl.debug_barrier()
            for i in range(n_tiles):
                if ALTERNATING:
                    if i == n_first:
                        tl.debug_barrier()
                _step_tile(s_in, s_out, Drive, W, Bias, tiles, layers, terms, Y, Wf, Bf, Mf, Scratch, S_a,
                           B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, C, C, top, beta_t,
                           pid_b, i, False, ACT, _NUDGE_SOFTMAX_GIVEN, HAS_BF, False, W_BF16, PRECISION,
                           BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C, ALTERNATING)
        else:
            for i in range(n_tiles):
                if ALTERNATING:
                    if i == n_first:
                        tl.debug_barrier()
                _step_tile(s_in, s_out, Drive, W, Bias, tiles, layers, terms, Y, Wf, Bf, Mf, E, S_a,
                           B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta_t,
                           pid_b, i, False, ACT, NUDGE, HAS_BF, False, W_BF16, PRECISION,
                           BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C, ALTERNATING)
        tl.debug_barrier()


@triton.jit
def _readout_kernel(S, Wf, Bf, Y, Logits, Err, B, stride_s, col, n_top, stride_wf, stride_y, stride_o, C,
                    HAS_BF: tl.constexpr, PRECISION: tl.constexpr,
                    BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    rb = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    mb = rb < B
    rc = tl.arange(0, BLOCK_C)
    m2 = mb[:, None] & (rc < C)[None, :]
    logits, err = _softmax_error(S, stride_s, col, n_top, Wf, stride_wf, Bf, Y, stride_y, rb, mb, C,
                                 HAS_BF, PRECISION, BLOCK_B, BLOCK_K, BLOCK_C)
    out = rb[:, None] * stride_o + rc[None, :]
    tl.store(Logits + out, logits, mask=m2)
    tl.store(Err + out, err, mask=m2)


# ----------------------------------------------------------------------------- launchers
# (BLOCK_B, BLOCK_K, num_warps) of the step kernel that compile spill-free for sm_90 and sm_80
# in every specialization the library launches, per precision (``tritonep.compile_check``
# with triton 3.9; the check fails if one spills with the installed triton). The first is
# the default on CUDA. The FMA path of "ieee" keeps both operand tiles of a dot in registers,
# so only K = 16 fits it; tensor cores take larger tiles. BLOCK_N is fixed by the tile table.
STEP_TILES = {
    "ieee": ((32, 16, 4),),
    "tf32": ((64, 16, 4), (32, 32, 4), (64, 16, 8), (64, 32, 8), (64, 64, 8)),
    "bf16": ((64, 16, 4), (32, 16, 4), (32, 32, 4), (64, 32, 4), (64, 32, 8), (64, 64, 8)),
}
# the persistent kernel's, likewise (it is not autotuned)
PERSISTENT_TILES = {"ieee": (16, 16, 8), "tf32": (32, 16, 8), "bf16": (32, 16, 8)}
READOUT_TILES = ((64, 32, 4), (32, 32, 4), (64, 64, 4), (32, 64, 4))  # (BLOCK_B, BLOCK_K, num_warps): none spills


def _tiles(entries) -> tuple:
    return tuple(dict(BLOCK_B=b, BLOCK_K=k, num_warps=w) for b, k, w in dict.fromkeys(entries))


def cuda_tiles(precision: str, persistent: bool = False) -> dict:
    """The default tiles on CUDA, ``{"BLOCK_B", "BLOCK_K", "num_warps"}``, of the step
    and readout kernels (or of the persistent kernel)."""
    return _tiles([PERSISTENT_TILES[precision] if persistent else STEP_TILES[precision][0]])[0]


# Autotuning spaces on CUDA (``launch.Space``): a precision tries only its spill-free tiles.
def _step_fits(c: dict, consts: dict) -> bool:
    return ((c["BLOCK_B"], c["BLOCK_K"], c["num_warps"]) in STEP_TILES[consts["PRECISION"]]
            and (c["num_warps"] == 4 or verified_triton()))  # see launch.VERIFIED_TRITON


STEP_SPACE = Space(configs=_tiles(t for ts in STEP_TILES.values() for t in ts),
                   key=("B", "stride_s", "PRECISION", "NUDGE", "SKIP_TERMS", "TRACK", "ALTERNATING"), fits=_step_fits)
READOUT_SPACE = Space(configs=_tiles(READOUT_TILES), key=("B", "n_top", "PRECISION"))


def relax_step(s_in, s_out, drive, weights, biases, tiles, layers, terms, *, activation: str,
               nudge: int = NUDGE_NONE, top: int = 0, beta: float = 0.0, target=None, W_f=None, b_f=None,
               M_f=None, error=None, delta=None, skip_terms: bool = False, precision: str = "ieee",
               alternating: bool = False, block_b: int = 32, block_n: int = 64, block_k: int = 32,
               num_warps: int = 4):
    """One synchronous step of every state layer: ``s_out = step(s_in)``; or, with
    ``alternating``, one group's part of an alternating step (see below).

    s_in, s_out: (B, N) fp32 frames with the same strides (distinct memory).
    drive: (B, n_1) fp32 input drive of layer 1 (bias included).
    weights: packed matrices, each term's own, its link scale folded in (fp32, or
    int16 holding bf16 bits); biases: packed fp32.
    tiles (n_tiles, TILE_FIELDS), layers (n_layers, LAYER_FIELDS), terms (n_terms,
    TERM_FIELDS): int32 tables laid out as ``kernels.common`` defines; ``block_n``
    must be the tile width the tile table was built with.
    nudge: one of the NUDGE_* codes, on layer ``top`` with strength ``beta``;
    target (B, C), W_f (C, n_top), b_f (C,) or None, M_f (C, n_top) any strides,
    error (B, C) or (B, n_top) for the *_GIVEN codes.
    delta: (n_tiles, B) fp32 to receive per-tile squared state changes, or None.
    skip_terms: ``s_in`` is all zero (the first free step) and is not read.
    alternating: ``tiles`` holds the tiles of one group of layers of the alternating
    schedule (``Plan.group_tiles``), and a term flagged TERM_SRC_NEW (its source is in
    a group updated earlier in the step) reads ``s_out``, which the earlier groups'
    launches wrote, instead of ``s_in``; one launch per group makes a step, all into
    the same ``s_out``. The groups share one compiled kernel: the table says which
    layers, the flags which frame.
    block_b, block_k, num_warps: the tiles off CUDA (CUDA autotunes over STEP_SPACE).
    """
    B = s_in.shape[0]
    nudge_ptrs, nudge_strides, C = _nudge_args(s_in, target, W_f, b_f, M_f, error)
    n_tiles = tiles.shape[0]
    args = (s_in, s_out, drive, weights, biases if biases is not None else s_in, tiles, layers, terms,
            *nudge_ptrs, delta if delta is not None else s_in, B, s_in.stride(0), drive.stride(0), *nudge_strides,
            C, top, float(beta))
    consts = dict(ACT=ACTIVATION_CODES[activation], NUDGE=nudge, HAS_BF=b_f is not None, SKIP_TERMS=skip_terms,
                  TRACK=delta is not None, W_BF16=weights.dtype == _int16(), PRECISION=precision,
                  BLOCK_N=block_n, BLOCK_C=_block_c(C), ALTERNATING=bool(alternating))
    launch(_relax_step_kernel, lambda m: (triton.cdiv(B, m["BLOCK_B"]), n_tiles), args, consts,
           dict(BLOCK_B=block_b, BLOCK_K=block_k, num_warps=num_warps), STEP_SPACE)
    return s_out


def relax_phase(s_start, frames, drive, weights, biases, tiles, layers, terms, steps: int, *,
                activation: str, from_zero: bool = False, nudge: int = NUDGE_NONE, top: int = 0, beta: float = 0.0,
                target=None, W_f=None, b_f=None, M_f=None, error=None, precision: str = "ieee",
                beta_growth: float = 0.0, alternating: bool = False, n_first: int = 0, block_b: int = 32,
                block_n: int = 64, block_k: int = 32, num_warps: int = 4):
    """``steps`` steps in ONE launch (the persistent kernel): each program runs every
    step for its ``block_b`` samples. Arguments as ``relax_step``; step t
    (0-based) is nudged by ``beta + t * beta_growth``;
    ``frames``: two (B, N) frames written alternately (step 0 into ``frames[0]``);
    ``s_start`` is read only (ignored when ``from_zero``). Returns the final frame.
    alternating: the alternating schedule's steps: ``tiles`` lists every tile by group
    (``Plan.phase_tiles``), the first group's ``n_first`` tiles first, which each
    program runs before (a barrier) the second group's; else synchronous steps.
    Opt-in and not autotuned: no GPU run has shown it faster than ``relax_step``."""
    s_a, s_b = frames
    B = s_a.shape[0]
    nudge_ptrs, nudge_strides, C = _nudge_args(s_a, target, W_f, b_f, M_f, error)
    # the dynamic softmax error, once per step (see the kernel)
    scratch = s_a.new_empty(B, C) if nudge == NUDGE_SOFTMAX else s_a
    args = (s_start if s_start is not None else s_b, s_a, s_b, drive, weights, biases if biases is not None else s_a,
            tiles, layers, terms, *nudge_ptrs, scratch, B, s_a.stride(0), drive.stride(0), *nudge_strides,
            C, top, float(beta), float(beta_growth), steps, tiles.shape[0], n_first if alternating else 0)
    consts = dict(ACT=ACTIVATION_CODES[activation], NUDGE=nudge, HAS_BF=b_f is not None, FROM_ZERO=from_zero,
                  W_BF16=weights.dtype == _int16(), PRECISION=precision, BLOCK_N=block_n, BLOCK_C=_block_c(C),
                  ALTERNATING=bool(alternating))
    launch(_relax_persistent_kernel, lambda m: (triton.cdiv(B, m["BLOCK_B"]),), args, consts,
           dict(BLOCK_B=block_b, BLOCK_K=block_k, num_warps=num_warps))
    return s_a if (steps - 1) % 2 == 0 else s_b


def readout(frame, col: int, n_top: int, W_f, b_f, target, logits, error, *, precision: str = "ieee",
            block_b: int = 32, block_k: int = 32, num_warps: int = 4):
    """Softmax readout of the top layer held in ``frame[:, col:col + n_top]``.

    Writes logits = s_top @ W_f^T + b_f and error = target - softmax(logits) into
    ``logits`` and ``error`` ((B, C) fp32, same strides). W_f: (C, n_top), unit inner
    stride; target: (B, C). Tiles as ``relax_step`` (CUDA autotunes over READOUT_SPACE).
    """
    B, C = frame.shape[0], W_f.shape[0]
    args = (frame, W_f, b_f if b_f is not None else W_f, target, logits, error,
            B, frame.stride(0), col, n_top, W_f.stride(0), target.stride(0), logits.stride(0), C)
    launch(_readout_kernel, lambda m: (triton.cdiv(B, m["BLOCK_B"]),), args,
           dict(HAS_BF=b_f is not None, PRECISION=precision, BLOCK_C=_block_c(C)),
           dict(BLOCK_B=block_b, BLOCK_K=block_k, num_warps=num_warps), READOUT_SPACE)
    return logits, error


def _nudge_args(dummy, target, W_f, b_f, M_f, error):
    """The nudge operands as both step kernels take them: pointers (Y, Wf, Bf, Mf, E),
    ``dummy`` standing in for absent tensors (never read); strides (y, wf, mfc, mfn,
    e); and C, the number of classes."""
    C = W_f.shape[0] if W_f is not None else (target.shape[1] if target is not None else 1)
    ptrs = tuple(t if t is not None else dummy for t in (target, W_f, b_f, M_f, error))
    strides = (target.stride(0) if target is not None else 0, W_f.stride(0) if W_f is not None else 0,
               M_f.stride(0) if M_f is not None else 0, M_f.stride(1) if M_f is not None else 0,
               error.stride(0) if error is not None else 0)
    return ptrs, strides, C


def _block_c(C: int) -> int:
    return max(16, triton.next_power_of_2(C))  # 16: the smallest dot a GPU takes


def _int16():
    import torch

    return torch.int16
