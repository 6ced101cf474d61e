"""Fused layerwise relaxation: one synchronous step of every state layer in ONE launch.

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
scale), so residual and AGT links cost loop iterations, not launches. Optionally
each program also writes its tile's per-sample squared state change, which the
convergence check sums.

The readout kernel (logits and error of the softmax output) shares the
softmax-error code with the nudge of the step kernel. The persistent kernel runs
a whole phase in one launch: each program loops over every step and every output
tile for its rows of the batch.
"""
from __future__ import annotations

import triton
import triton.language as tl

ACTIVATION_CODES = {"tanh": 0, "hard_sigmoid": 1, "pep_sigmoid": 2}
# nudge of the top layer: none; softmax error recomputed from the current state (dynamic);
# a given (B, C) error projected through M_f (frozen softmax); P-EP's beta (y - s_top)
# recomputed (dynamic); a given (B, n_top) error added as is (frozen P-EP)
NUDGE_NONE, NUDGE_SOFTMAX, NUDGE_SOFTMAX_GIVEN, NUDGE_NEURON, NUDGE_NEURON_GIVEN = range(5)
LAYER_FIELDS = 6  # col, n, first term, end term, bias offset (-1: none), has drive
TERM_FIELDS = 5  # source col, n_src, weight offset, stride over source units, stride over dest units


@triton.jit
def _activate(x, ACT: tl.constexpr):
    if ACT == 0:  # tanh as 2 sigmoid(2x) - 1, like the reference
        y = 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0
    elif ACT == 1:  # hard sigmoid
        y = tl.minimum(tl.maximum(x, 0.0), 1.0)
    else:  # P-EP sigmoid
        y = 1.0 / (1.0 + tl.exp(-4.0 * (x - 0.5)))
    return y


@triton.jit
def _load_w(ptrs, mask, W_BF16: tl.constexpr):
    """Load weights as fp32. bf16 weights are stored as int16 bit patterns and widened
    right after the load (bf16 is the top half of an fp32), which the CPU interpreter
    handles too."""
    if W_BF16:
        bits = tl.load(ptrs, mask=mask, other=0).to(tl.int32) & 0xFFFF
        w = (bits << 16).to(tl.float32, bitcast=True)
    else:
        w = tl.load(ptrs, mask=mask, other=0.0)
    return w


@triton.jit
def _dot(a, b, PRECISION: tl.constexpr):
    """fp32 x fp32 -> fp32 with the requested operand precision, fp32 accumulation.

    bf16: both operands rounded to bf16, then multiplied on the tf32 path, where
    bf16 values are exact; this gives a bf16 dot's numbers on the GPU and in the CPU
    interpreter alike (whose bf16 dot is broken)."""
    if PRECISION == "bf16":
        d = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="tf32")
    else:
        d = tl.dot(a, b, input_precision=PRECISION)
    return d


@triton.jit
def _softmax_error(S, stride_s, col, n_top, Wf, stride_wf, Bf, Y, stride_y, rb, mb, C,
                   HAS_BF: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    """Logits s_top @ W_f^T + b_f and error y - softmax(logits) for rows ``rb``:
    two (BLOCK_B, BLOCK_C) tiles, zero in the padding classes."""
    rc = tl.arange(0, BLOCK_C)
    mc = rc < C
    rk = tl.arange(0, BLOCK_K)
    logits = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, n_top, BLOCK_K):
        kk = k0 + rk
        mk = kk < n_top
        s = tl.load(S + rb[:, None] * stride_s + col + kk[None, :], mask=mb[:, None] & mk[None, :], other=0.0)
        w = tl.load(Wf + rc[None, :] * stride_wf + kk[:, None], mask=mk[:, None] & mc[None, :], other=0.0)
        logits += _dot(s, w, PRECISION)
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
    S_in, S_out, Drive, W, Bias, tiles, layers, terms, scales, Y, Wf, Bf, Mf, E, Delta,
    B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
    pid_b, pid_t, skip_terms,
    ACT: tl.constexpr, NUDGE: tl.constexpr, HAS_BF: tl.constexpr, TRACK: tl.constexpr,
    W_BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """New states of one (BLOCK_B, BLOCK_N) tile: rows of batch tile ``pid_b``,
    units of output tile ``pid_t`` (whose layer the tile table names)."""
    layer = tl.load(tiles + 2 * pid_t)
    n0 = tl.load(tiles + 2 * pid_t + 1)
    lrow = layers + 6 * layer  # LAYER_FIELDS
    col = tl.load(lrow)
    n = tl.load(lrow + 1)
    t_begin = tl.load(lrow + 2)
    t_end = tl.load(lrow + 3)
    bias_off = tl.load(lrow + 4)
    has_drive = tl.load(lrow + 5)

    rb = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    rn = n0 + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mb = rb < B
    mn = rn < n
    m2 = mb[:, None] & mn[None, :]

    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    if skip_terms:  # the first free step starts from zero states: only drives count
        pass
    else:
        for t in range(t_begin, t_end):
            trow = terms + 5 * t  # TERM_FIELDS
            src_col = tl.load(trow)
            n_src = tl.load(trow + 1)
            w_off = tl.load(trow + 2)
            stride_k = tl.load(trow + 3)
            stride_n = tl.load(trow + 4)
            part = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, n_src, BLOCK_K):
                kk = k0 + rk
                mk = kk < n_src
                s = tl.load(S_in + rb[:, None] * stride_s + src_col + kk[None, :],
                            mask=mb[:, None] & mk[None, :], other=0.0)
                w = _load_w(W + w_off + kk[:, None] * stride_k + rn[None, :] * stride_n,
                            mk[:, None] & mn[None, :], W_BF16)
                part += _dot(s, w, PRECISION)
            acc += tl.load(scales + t) * part

    if has_drive != 0:
        acc += tl.load(Drive + rb[:, None] * stride_d + rn[None, :], mask=m2, other=0.0)
    if bias_off >= 0:
        acc += tl.load(Bias + bias_off + rn, mask=mn, other=0.0)[None, :]

    if NUDGE != 0:
        if layer == top:
            if NUDGE == 1 or NUDGE == 2:
                rc = tl.arange(0, BLOCK_C)
                mc = rc < C
                if NUDGE == 1:
                    _, err = _softmax_error(S_in, stride_s, col, n, Wf, stride_wf, Bf, Y, stride_y, rb, mb, C,
                                            HAS_BF, PRECISION, BLOCK_B, BLOCK_K, BLOCK_C)
                else:
                    err = tl.load(E + rb[:, None] * stride_e + rc[None, :], mask=mb[:, None] & mc[None, :], other=0.0)
                mf = tl.load(Mf + rc[:, None] * stride_mfc + rn[None, :] * stride_mfn,
                             mask=mc[:, None] & mn[None, :], other=0.0)
                acc += beta * _dot(err, mf, PRECISION)
            else:
                if NUDGE == 3:
                    y = tl.load(Y + rb[:, None] * stride_y + rn[None, :], mask=m2, other=0.0)
                    s_top = tl.load(S_in + rb[:, None] * stride_s + col + rn[None, :], mask=m2, other=0.0)
                    err = y - s_top
                else:
                    err = tl.load(E + rb[:, None] * stride_e + rn[None, :], mask=m2, other=0.0)
                acc += beta * err

    new = _activate(acc, ACT)
    tl.store(S_out + rb[:, None] * stride_s + col + rn[None, :], new, mask=m2)
    if TRACK:
        if skip_terms:
            old = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        else:
            old = tl.load(S_in + rb[:, None] * stride_s + col + rn[None, :], mask=m2, other=0.0)
        d = tl.where(m2, new - old, 0.0)
        tl.store(Delta + pid_t * B + rb, tl.sum(d * d, axis=1), mask=mb)


@triton.jit
def _relax_step_kernel(
    S_in, S_out, Drive, W, Bias,            # frames (B, N); drive (B, n_1); packed weights; packed biases
    tiles, layers, terms, scales,           # int32 tables and fp32 link scales
    Y, Wf, Bf, Mf, E, Delta,                # nudge operands; per-tile squared state change (n_tiles, B)
    B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
    ACT: tl.constexpr, NUDGE: tl.constexpr, HAS_BF: tl.constexpr, SKIP_TERMS: tl.constexpr,
    TRACK: tl.constexpr, W_BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    _step_tile(S_in, S_out, Drive, W, Bias, tiles, layers, terms, scales, Y, Wf, Bf, Mf, E, Delta,
               B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
               tl.program_id(0), tl.program_id(1), SKIP_TERMS,
               ACT, NUDGE, HAS_BF, TRACK, W_BF16, PRECISION, BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C)


@triton.jit
def _relax_persistent_kernel(
    S_start, S_a, S_b, Drive, W, Bias, tiles, layers, terms, scales, Y, Wf, Bf, Mf, E,
    B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
    steps, n_tiles,
    ACT: tl.constexpr, NUDGE: tl.constexpr, HAS_BF: tl.constexpr, FROM_ZERO: tl.constexpr,
    W_BF16: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """A whole phase in one launch: each program owns BLOCK_B samples and runs every
    step and every output tile for them. Samples are independent and the weights are
    read-only, so programs never wait on each other; within a program a barrier
    orders one step's writes before the next step's reads. Step t reads S_start (t = 0),
    else the frame step t-1 wrote, and writes S_a (even t) or S_b (odd t)."""
    pid_b = tl.program_id(0)
    for t in range(0, steps):
        skip = FROM_ZERO and t == 0
        for i in range(0, n_tiles):
            if t == 0:
                _step_tile(S_start, S_a, Drive, W, Bias, tiles, layers, terms, scales, Y, Wf, Bf, Mf, E, S_a,
                           B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
                           pid_b, i, skip, ACT, NUDGE, HAS_BF, False, W_BF16, PRECISION,
                           BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C)
            elif t % 2 == 1:
                _step_tile(S_a, S_b, Drive, W, Bias, tiles, layers, terms, scales, Y, Wf, Bf, Mf, E, S_a,
                           B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
                           pid_b, i, False, ACT, NUDGE, HAS_BF, False, W_BF16, PRECISION,
                           BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C)
            else:
                _step_tile(S_b, S_a, Drive, W, Bias, tiles, layers, terms, scales, Y, Wf, Bf, Mf, E, S_a,
                           B, stride_s, stride_d, stride_y, stride_wf, stride_mfc, stride_mfn, stride_e, C, top, beta,
                           pid_b, i, False, ACT, NUDGE, HAS_BF, False, W_BF16, PRECISION,
                           BLOCK_B, BLOCK_N, BLOCK_K, BLOCK_C)
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
def relax_step(s_in, s_out, drive, weights, biases, tiles, layers, terms, scales, *, activation: str,
               nudge: int = NUDGE_NONE, top: int = 0, beta: float = 0.0, target=None, W_f=None, b_f=None,
               M_f=None, error=None, delta=None, skip_terms: bool = False, precision: str = "ieee",
               block_b: int = 32, block_n: int = 64, block_k: int = 32, num_warps: int = 4):
    """One synchronous step of every state layer: ``s_out = step(s_in)``.

    s_in, s_out: (B, N) fp32 frames with the same strides (distinct memory).
    drive: (B, n_1) fp32 input drive of layer 1 (bias included).
    weights: packed matrices (fp32, or int16 holding bf16 bits); biases: packed fp32.
    tiles (n_tiles, 2), layers (n_layers, 6), terms (n_terms, 5): int32 tables built
    by ``tritonep.fused.Plan``; scales (n_terms,) fp32.
    nudge: one of the NUDGE_* codes, on layer ``top`` with strength ``beta``;
    target (B, C), W_f (C, n_top), b_f (C,) or None, M_f (C, n_top) any strides,
    error (B, C) or (B, n_top) for the *_GIVEN codes.
    delta: (n_tiles, B) fp32 to receive per-tile squared state changes, or None.
    """
    B = s_in.shape[0]
    nudge_ptrs, nudge_strides, C = _nudge_args(s_in, target, W_f, b_f, M_f, error)
    grid = (triton.cdiv(B, block_b), tiles.shape[0])
    _relax_step_kernel[grid](
        s_in, s_out, drive, weights, biases if biases is not None else s_in, tiles, layers, terms, scales,
        *nudge_ptrs, delta if delta is not None else s_in, B, s_in.stride(0), drive.stride(0), *nudge_strides,
        C, top, float(beta),
        ACT=ACTIVATION_CODES[activation], NUDGE=nudge, HAS_BF=b_f is not None, SKIP_TERMS=skip_terms,
        TRACK=delta is not None, W_BF16=weights.dtype == _int16(), PRECISION=precision,
        BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_C=_block_c(C), num_warps=num_warps,
    )
    return s_out


def relax_phase(s_start, frames, drive, weights, biases, tiles, layers, terms, scales, steps: int, *,
                activation: str, from_zero: bool = False, nudge: int = NUDGE_NONE, top: int = 0, beta: float = 0.0,
                target=None, W_f=None, b_f=None, M_f=None, error=None, precision: str = "ieee",
                block_b: int = 32, block_n: int = 64, block_k: int = 32, num_warps: int = 4):
    """``steps`` synchronous steps in ONE launch (the persistent kernel): each program
    runs every step for its ``block_b`` samples. Arguments as ``relax_step``;
    ``frames``: two (B, N) frames written alternately (step 0 into ``frames[0]``);
    ``s_start`` is read only (ignored when ``from_zero``). Returns the final frame."""
    s_a, s_b = frames
    B = s_a.shape[0]
    nudge_ptrs, nudge_strides, C = _nudge_args(s_a, target, W_f, b_f, M_f, error)
    _relax_persistent_kernel[(triton.cdiv(B, block_b),)](
        s_start if s_start is not None else s_b, s_a, s_b, drive, weights, biases if biases is not None else s_a,
        tiles, layers, terms, scales, *nudge_ptrs, B, s_a.stride(0), drive.stride(0), *nudge_strides,
        C, top, float(beta), steps, tiles.shape[0],
        ACT=ACTIVATION_CODES[activation], NUDGE=nudge, HAS_BF=b_f is not None, FROM_ZERO=from_zero,
        W_BF16=weights.dtype == _int16(), PRECISION=precision,
        BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=block_k, BLOCK_C=_block_c(C), num_warps=num_warps,
    )
    return s_a if (steps - 1) % 2 == 0 else s_b


def readout(frame, col: int, n_top: int, W_f, b_f, target, logits, error, *, precision: str = "ieee",
            block_b: int = 32, block_k: int = 32, num_warps: int = 4):
    """Softmax readout of the top layer held in ``frame[:, col:col + n_top]``.

    Writes logits = s_top @ W_f^T + b_f and error = target - softmax(logits) into
    ``logits`` and ``error`` ((B, C) fp32, same strides). W_f: (C, n_top), unit inner
    stride; target: (B, C).
    """
    B, C = frame.shape[0], W_f.shape[0]
    _readout_kernel[(triton.cdiv(B, block_b),)](
        frame, W_f, b_f if b_f is not None else W_f, target, logits, error,
        B, frame.stride(0), col, n_top, W_f.stride(0), target.stride(0), logits.stride(0), C,
        HAS_BF=b_f is not None, PRECISION=precision,
        BLOCK_B=block_b, BLOCK_K=block_k, BLOCK_C=_block_c(C), num_warps=num_warps,
    )
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
