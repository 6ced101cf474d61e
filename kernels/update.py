"""Fused contrastive weight updates: every trained link's outer product in ONE launch.

Mirrors ``tritonep.reference.add_link_update`` (and the bias update of
``EPNet._write_grads``). For a link post <- pre with coefficient ``coef``:

    fre:     G = coef * (A_a - A_b)^T @ C_0          A: post states, C: pre states
    classic: G = coef * (A_a^T @ C_a - A_b^T @ C_b)
    bias:    g = coef * sum_batch (A_a - A_b)

a, b are the two phases contrasted (frames of the nudged/free phases, see
``kernels.relax``), 0 the free phase. A program owns one ``(BLOCK_M, BLOCK_N)``
tile of one link's gradient and sweeps the batch once, so the bias gradient comes
from the same post-state tiles. Gradients of all links live in one flat buffer
(``.grad`` of each parameter is a view of it) and are written in place,
overwriting or accumulating.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .common import dot, link_row, utile_row
from .launch import Space, launch, verified_triton

RULE_FRE, RULE_CLASSIC = range(2)
RULE_CODES = {"fre": RULE_FRE, "classic": RULE_CLASSIC}
_RULE_FRE = tl.constexpr(RULE_FRE)  # the kernel's twin of the int (see kernels.common)


@triton.jit
def _store_grad(ptrs, g, mask, ACCUMULATE: tl.constexpr):
    """Write ``g`` at ``ptrs``, or add it to what is there (gradient accumulation)."""
    if ACCUMULATE:
        g += tl.load(ptrs, mask=mask, other=0.0)
    tl.store(ptrs, g, mask=mask)


@triton.jit
def _update_kernel(
    Fa, Fb, F0, X, G, tiles, links, coefs,
    B, stride_f, stride_x,
    RULE: tl.constexpr, ACCUMULATE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
):
    pid = tl.program_id(0)
    link, m0, n0 = utile_row(tiles, pid)
    post_col, n_post, pre_col, n_pre, g_off, bias_off = link_row(links, link)
    coef = tl.load(coefs + link)

    rm = m0 + tl.arange(0, BLOCK_M)
    rn = n0 + tl.arange(0, BLOCK_N)
    mm = rm < n_post
    mn = rn < n_pre
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    bacc = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        rb = b0 + tl.arange(0, BLOCK_B)
        mb = rb < B
        # post states loaded transposed, (BLOCK_M, BLOCK_B), ready for the dot over the batch
        post = rb[None, :] * stride_f + post_col + rm[:, None]
        mpost = mm[:, None] & mb[None, :]
        a = tl.load(Fa + post, mask=mpost, other=0.0)
        b = tl.load(Fb + post, mask=mpost, other=0.0)
        mpre = mb[:, None] & mn[None, :]
        if pre_col < 0:  # the input layer: the same x in every phase
            c0 = tl.load(X + rb[:, None] * stride_x + rn[None, :], mask=mpre, other=0.0)
            acc = dot(a - b, c0, PRECISION, acc)
        else:
            pre = rb[:, None] * stride_f + pre_col + rn[None, :]
            if RULE == _RULE_FRE:
                c0 = tl.load(F0 + pre, mask=mpre, other=0.0)
                acc = dot(a - b, c0, PRECISION, acc)
            else:
                ca = tl.load(Fa + pre, mask=mpre, other=0.0)
                cb = tl.load(Fb + pre, mask=mpre, other=0.0)
                acc = dot(-b, cb, PRECISION, dot(a, ca, PRECISION, acc))  # one accumulator for both phases
        bacc += tl.sum(a - b, axis=1)

    _store_grad(G + g_off + rm[:, None] * n_pre + rn[None, :], coef * acc, mm[:, None] & mn[None, :], ACCUMULATE)
    if bias_off >= 0:
        if n0 == 0:  # one column of tiles writes the bias
            _store_grad(G + bias_off + rm, coef * bacc, mm, ACCUMULATE)


# (BLOCK_B, num_warps) that compile spill-free for sm_90 and sm_80 in every launched
# specialization, per precision (``tritonep.compile_check``, triton 3.9); the first is the
# default on CUDA. BLOCK_M, BLOCK_N are fixed by the engine's tile table.
UPDATE_TILES = {
    "ieee": ((16, 4),),
    "tf32": ((32, 4), (16, 4), (16, 8), (32, 8), (64, 8)),
    "bf16": ((16, 4), (16, 8), (32, 8)),  # (32, 4) and (64, 8) spill on sm_80 with the classic rule
}


def cuda_tiles(precision: str) -> dict:
    """The update kernel's default tiles on CUDA: ``{"BLOCK_B", "num_warps"}``."""
    b, w = UPDATE_TILES[precision][0]
    return dict(BLOCK_B=b, num_warps=w)


# Autotuning space on CUDA (``launch.Space``); G is restored between timing runs, since the
# kernel may accumulate into it.
UPDATE_SPACE = Space(configs=tuple(dict(BLOCK_B=b, num_warps=w)
                                   for b, w in dict.fromkeys(t for ts in UPDATE_TILES.values() for t in ts)),
                     key=("B", "stride_f", "PRECISION", "RULE", "ACCUMULATE"), restore=("G",),
                     fits=lambda c, consts: ((c["BLOCK_B"], c["num_warps"]) in UPDATE_TILES[consts["PRECISION"]]
                                             and (c["num_warps"] == 4 or verified_triton())))  # launch.VERIFIED_TRITON


def contrastive_update(frame_a, frame_b, frame_0, x, grads, tiles, links, coefs, *, rule: str,
                       accumulate: bool, precision: str = "ieee", block_m: int = 64, block_n: int = 64,
                       block_b: int = 32, num_warps: int = 4):
    """Write (or add) every trained link's contrastive update into ``grads``.

    frame_a, frame_b, frame_0: (B, N) fp32 frames of phases a, b and the free phase
    (same strides); x: (B, n_in) fp32 input (the pre states of the input link);
    grads: flat fp32 buffer; tiles (n_tiles, UTILE_FIELDS) and links (n_links,
    LINK_FIELDS): int32 tables laid out as ``kernels.common`` defines (``block_m``,
    ``block_n``: the tile sizes they were built with); coefs (n_links,) fp32.
    block_b, num_warps: off CUDA (CUDA autotunes over UPDATE_SPACE).
    """
    B = frame_a.shape[0]
    n_tiles = tiles.shape[0]
    launch(_update_kernel, lambda m: (n_tiles,),
           (frame_a, frame_b, frame_0, x, grads, tiles, links, coefs, B, frame_a.stride(0), x.stride(0)),
           dict(RULE=RULE_CODES[rule], ACCUMULATE=accumulate, PRECISION=precision, BLOCK_M=block_m, BLOCK_N=block_n),
           dict(BLOCK_B=block_b, num_warps=num_warps), UPDATE_SPACE)
    return grads
