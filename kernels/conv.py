"""Fused epilogue of a conv state layer's update: one pass over the layer's maps.

Mirrors ``tritonep.conv.ConvEPNet.step`` for one conv layer l, given what the
convolutions produced (cuDNN / torch, before this kernel):

    A      (B, C, H, W)    forward terms: conv_l(O_{l-1}) (+ skip convs), or layer 1's drive
    G1, G2 (B, C, Hp, Wp)  feedback terms at the pooled resolution: ConvT_{l+1}(s_{l+1})
                           (+ skip adjoints), and the top layer's nudge reshape(W_f^T e)
    idx_in (B, C, Hp, Wp)  where the pooling of the current state s_l took each maximum

it computes, without writing any intermediate map,

    pre   = A + bias[c] + Unpool(scale1 * G1 + scale2 * G2; idx_in)
    s     = rho(pre)                                   -> S      (B, C, H, W)
    O     = MaxPool_P(s), idx_out = argmax positions   -> O, idx_out (B, C, Hp, Wp)

A program owns ``BLOCK`` pooling windows (a (BLOCK, P*P) tile, rows = windows,
columns = positions in the window in row-major order). Windows tile the map with
``ceil(H / P) x ceil(W / P)``; those past the floor-mode pooled grid (a ragged last
row / column, e.g. 13x13 maps with P = 2) are computed but pool nothing, as in
``F.max_pool2d``. The max and its index follow torch's tie rule (first maximum in
the window's row-major order), so the indices equal ``max_pool2d``'s and the next
step's unpooling puts feedback where the reference does. Indices are flat
``h * W + w`` within a (b, c) plane, int32. No dot products: nothing here needs
the GPU's 16-wide tiles, and every load and store is masked.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .common import ACTIVATION_CODES, activate
from .launch import launch


@triton.jit
def _conv_epilogue_kernel(
    A, Bias, G1, G2, IdxIn, S, O, IdxOut,
    n_windows, C, H, W, Hp, Wp, Wc, HWc, scale1, scale2,
    ACT: tl.constexpr, P: tl.constexpr, WIN: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_G1: tl.constexpr,
    HAS_G2: tl.constexpr, WRITE_POOL: tl.constexpr, BLOCK: tl.constexpr,
):
    rw = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # window ids over (b, c, ph, pw)
    mw = rw < n_windows
    plane = rw // HWc
    r = rw % HWc
    ph = r // Wc
    pw = r % Wc
    j = tl.arange(0, WIN)  # position in the window, row-major; WIN = next power of two >= P * P
    h = ph[:, None] * P + (j // P)[None, :]
    w = pw[:, None] * P + (j % P)[None, :]
    me = mw[:, None] & (j < P * P)[None, :] & (h < H) & (w < W)
    flat = h * W + w
    off = plane[:, None] * (H * W) + flat
    pre = tl.load(A + off, mask=me, other=0.0)
    if HAS_BIAS:
        pre += tl.load(Bias + plane % C, mask=mw, other=0.0)[:, None]
    pooled = mw & (ph < Hp) & (pw < Wp)  # windows of the floor-mode pooled grid
    poff = plane * (Hp * Wp) + ph * Wp + pw
    if HAS_G1 or HAS_G2:
        fb = tl.zeros((BLOCK,), dtype=tl.float32)
        if HAS_G1:
            fb += scale1 * tl.load(G1 + poff, mask=pooled, other=0.0)
        if HAS_G2:
            fb += scale2 * tl.load(G2 + poff, mask=pooled, other=0.0)
        if P > 1:  # unpool: only the window's current maximum receives the feedback
            at = tl.load(IdxIn + poff, mask=pooled, other=-1)
            pre += tl.where(flat == at[:, None], fb[:, None], 0.0)
        else:
            pre += fb[:, None]
    s = activate(pre, ACT)
    tl.store(S + off, s, mask=me)
    if WRITE_POOL:
        sm = tl.where(me, s, float("-inf"))
        best = tl.max(sm, axis=1)
        arg = tl.argmax(sm, axis=1, tie_break_left=True)  # torch keeps the first maximum
        at_out = (ph * P + arg // P) * W + pw * P + arg % P
        tl.store(O + poff, best, mask=pooled)
        tl.store(IdxOut + poff, at_out.to(tl.int32), mask=pooled)


def conv_epilogue(A, s_out, *, pool: int, activation: str, bias=None, g1=None, scale1: float = 1.0, g2=None,
                  scale2: float = 1.0, idx_in=None, o_out=None, idx_out=None, block: int = 128, num_warps: int = 4):
    """One conv layer's new state, pooled output and pooling indices in one pass.

    A: (B, C, H, W) fp32 forward terms (contiguous); s_out: (B, C, H, W) fp32 output.
    pool: P (kernel = stride; 1 = none, then ``o_out``/``idx_out`` are not written).
    bias: (C,) or None. g1, g2: (B, C, H//P, W//P) feedback maps or None, scaled by
    ``scale1``, ``scale2`` and unpooled at ``idx_in`` (int32, same shape; flat
    ``h * W + w`` per plane; needed when P > 1 and a feedback map is given).
    o_out: (B, C, H//P, W//P) fp32, idx_out: int32 same shape, written when P > 1.
    """
    Bn, C, H, W = A.shape
    P = int(pool)
    Hp, Wp = H // P, W // P
    Hc, Wc = -(-H // P), -(-W // P)
    n_windows = Bn * C * Hc * Wc
    has_fb = g1 is not None or g2 is not None
    if P > 1 and has_fb and idx_in is None:
        raise ValueError("conv_epilogue: feedback into a pooled layer needs idx_in (where the maxima are)")
    if P > 1 and (o_out is None or idx_out is None):
        raise ValueError("conv_epilogue: a pooled layer needs o_out and idx_out")
    dummy = A
    args = (A, bias if bias is not None else dummy, g1 if g1 is not None else dummy, g2 if g2 is not None else dummy,
            idx_in if idx_in is not None else dummy, s_out, o_out if o_out is not None else dummy,
            idx_out if idx_out is not None else dummy, n_windows, C, H, W, Hp, Wp, Wc, Hc * Wc, float(scale1),
            float(scale2))
    consts = dict(ACT=ACTIVATION_CODES[activation], P=P, WIN=triton.next_power_of_2(P * P), HAS_BIAS=bias is not None,
                  HAS_G1=g1 is not None, HAS_G2=g2 is not None, WRITE_POOL=P > 1)
    # not autotuned: elementwise, and idx_in may be the buffer idx_out overwrites
    launch(_conv_epilogue_kernel, lambda m: (triton.cdiv(n_windows, m["BLOCK"]),), args, consts,
           dict(BLOCK=block, num_warps=num_warps))
    return s_out
