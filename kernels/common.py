"""What the kernel families share: codes, table layouts and ``@triton.jit`` helpers.

- Codes of the compile-time switches: ``ACT_*`` (``ACTIVATION_CODES`` by name) and
  ``NUDGE_*``.
- Layouts of the int32 tables the Python side builds (tritonep's Triton engine) and
  the kernels read: one constant per column and the row width ``*_FIELDS``, and one
  jit reader per table that loads a row's fields (``tile_row``, ``layer_row``,
  ``term_row`` and ``term_src_new``, ``utile_row``, ``link_row``).
- Helpers: ``activate`` (rho), ``load_weights`` (fp32 or bf16 bits), ``dot``.

Every code and column here is a plain int, defined once. A ``@triton.jit`` function
may read a global only if it is a ``tl.constexpr`` (whose value then also keys the
kernel cache, so editing a layout recompiles the kernels), and a ``tl.constexpr`` is
no int (torch takes it for a sequence), so the jit code here reads private
``tl.constexpr`` twins made from the ints; a kernel module that compares a code makes
its own twin the same way.

``relax`` (state updates), ``update`` (contrastive updates) and ``conv`` (conv
epilogue) import from here and never from each other.
"""
from __future__ import annotations

import triton
import triton.language as tl

# --------------------------------------------------------------------------- codes
ACT_TANH, ACT_HARD_SIGMOID, ACT_PEP_SIGMOID = range(3)
ACTIVATION_CODES = {"tanh": ACT_TANH, "hard_sigmoid": ACT_HARD_SIGMOID, "pep_sigmoid": ACT_PEP_SIGMOID}
# nudge of the top layer: none; softmax error recomputed from the current state (dynamic);
# a given (B, C) error projected through M_f (frozen softmax); P-EP's beta (y - s_top)
# recomputed (dynamic); a given (B, n_top) error added as is (frozen P-EP)
NUDGE_NONE, NUDGE_SOFTMAX, NUDGE_SOFTMAX_GIVEN, NUDGE_NEURON, NUDGE_NEURON_GIVEN = range(5)

# --------------------------------------------------------------------------- table layouts
# Each line lists one int32 table's columns in order, then its row width (the number of
# columns): row r of a table starts at ``table + r * WIDTH``.
# relax tiles (n_tiles, 2): the output tile's state layer, its first unit (all layers' tiles, or
# under the alternating schedule one table per group of layers)
TILE_LAYER, TILE_UNIT0, TILE_FIELDS = range(3)
# layers (n_state + 1, 6; row 0 unused): frame column, units, first and end term (half-open
# range into the terms table), bias offset in the packed biases (-1: none), has drive (0/1)
LAYER_COL, LAYER_N, LAYER_TERM_BEGIN, LAYER_TERM_END, LAYER_BIAS, LAYER_HAS_DRIVE, LAYER_FIELDS = range(7)
# terms (n_terms, 6), one incoming link of a layer: source frame column, source units,
# offset of its matrix in the packed weights, strides over source and over dest units, and
# whether the source is new (1: under the alternating schedule the source layer's group is
# updated before the term's layer's, so the term reads the step's output frame; else 0)
TERM_SRC_COL, TERM_N_SRC, TERM_W_OFF, TERM_STRIDE_SRC, TERM_STRIDE_DST, TERM_SRC_NEW, TERM_FIELDS = range(7)
# update tiles (n_tiles, 3): link, first post unit, first pre unit
UTILE_LINK, UTILE_POST0, UTILE_PRE0, UTILE_FIELDS = range(4)
# links (n_links, 6), one trained link post <- pre: post frame column, post units, pre frame
# column (-1: the input x), pre units, offset of its gradient in the flat buffer, offset of
# its bias gradient (-1: none)
LINK_POST_COL, LINK_N_POST, LINK_PRE_COL, LINK_N_PRE, LINK_GRAD, LINK_BIAS_GRAD, LINK_FIELDS = range(7)

# the tl.constexpr twins the jit code below reads (see the module docstring)
_ACT_TANH, _ACT_HARD_SIGMOID = map(tl.constexpr, (ACT_TANH, ACT_HARD_SIGMOID))
_TILE_LAYER, _TILE_UNIT0, _TILE_FIELDS = map(tl.constexpr, (TILE_LAYER, TILE_UNIT0, TILE_FIELDS))
_LAYER_COL, _LAYER_N, _LAYER_TERM_BEGIN, _LAYER_TERM_END, _LAYER_BIAS, _LAYER_HAS_DRIVE, _LAYER_FIELDS = map(
    tl.constexpr, (LAYER_COL, LAYER_N, LAYER_TERM_BEGIN, LAYER_TERM_END, LAYER_BIAS, LAYER_HAS_DRIVE, LAYER_FIELDS))
_TERM_SRC_COL, _TERM_N_SRC, _TERM_W_OFF, _TERM_STRIDE_SRC, _TERM_STRIDE_DST, _TERM_SRC_NEW, _TERM_FIELDS = map(
    tl.constexpr, (TERM_SRC_COL, TERM_N_SRC, TERM_W_OFF, TERM_STRIDE_SRC, TERM_STRIDE_DST, TERM_SRC_NEW, TERM_FIELDS))
_UTILE_LINK, _UTILE_POST0, _UTILE_PRE0, _UTILE_FIELDS = map(
    tl.constexpr, (UTILE_LINK, UTILE_POST0, UTILE_PRE0, UTILE_FIELDS))
_LINK_POST_COL, _LINK_N_POST, _LINK_PRE_COL, _LINK_N_PRE, _LINK_GRAD, _LINK_BIAS_GRAD, _LINK_FIELDS = map(
    tl.constexpr, (LINK_POST_COL, LINK_N_POST, LINK_PRE_COL, LINK_N_PRE, LINK_GRAD, LINK_BIAS_GRAD, LINK_FIELDS))


# The readers return a row's fields in column order. One load per field: the fields are
# scalars that steer loops and offsets, and a vector load would need a reduction per field.
@triton.jit
def tile_row(tiles, i):
    row = tiles + i * _TILE_FIELDS
    return tl.load(row + _TILE_LAYER), tl.load(row + _TILE_UNIT0)


@triton.jit
def layer_row(layers, layer):
    row = layers + layer * _LAYER_FIELDS
    return (tl.load(row + _LAYER_COL), tl.load(row + _LAYER_N), tl.load(row + _LAYER_TERM_BEGIN),
            tl.load(row + _LAYER_TERM_END), tl.load(row + _LAYER_BIAS), tl.load(row + _LAYER_HAS_DRIVE))


@triton.jit
def term_row(terms, t):
    row = terms + t * _TERM_FIELDS
    return (tl.load(row + _TERM_SRC_COL), tl.load(row + _TERM_N_SRC), tl.load(row + _TERM_W_OFF),
            tl.load(row + _TERM_STRIDE_SRC), tl.load(row + _TERM_STRIDE_DST))


@triton.jit
def term_src_new(terms, t):
    """Term ``t``'s TERM_SRC_NEW (read apart from ``term_row``: only the alternating
    schedule's kernels read it)."""
    return tl.load(terms + t * _TERM_FIELDS + _TERM_SRC_NEW)


@triton.jit
def utile_row(tiles, i):
    row = tiles + i * _UTILE_FIELDS
    return tl.load(row + _UTILE_LINK), tl.load(row + _UTILE_POST0), tl.load(row + _UTILE_PRE0)


@triton.jit
def link_row(links, link):
    row = links + link * _LINK_FIELDS
    return (tl.load(row + _LINK_POST_COL), tl.load(row + _LINK_N_POST), tl.load(row + _LINK_PRE_COL),
            tl.load(row + _LINK_N_PRE), tl.load(row + _LINK_GRAD), tl.load(row + _LINK_BIAS_GRAD))


# --------------------------------------------------------------------------- jit helpers
@triton.jit
def activate(x, ACT: tl.constexpr):
    """rho(x) for one of the ACT_* codes, elementwise."""
    if ACT == _ACT_TANH:
        # within a few ulp of torch.tanh everywhere: an odd polynomial for |x| < 0.625 (the
        # Cephes tanhf coefficients), 1 - 2 / (exp(2|x|) + 1) beyond, where it cannot
        # cancel; 2 sigmoid(2x) - 1 would lose every digit for small |x|
        xs = tl.minimum(tl.maximum(x, -0.625), 0.625)  # the polynomial's range (no overflow when unused)
        s = xs * xs
        p = (((-5.70498872745e-3 * s + 2.06390887954e-2) * s - 5.37397155531e-2) * s + 1.33314422036e-1) * s
        small = xs + xs * s * (p - 3.33332819422e-1)
        a = tl.abs(x)
        big = 1.0 - 2.0 / (tl.exp(2.0 * tl.minimum(a, 20.0)) + 1.0)  # tanh(20) rounds to 1: no overflow
        y = tl.where(a < 0.625, small, tl.where(x < 0, -big, big))
    elif ACT == _ACT_HARD_SIGMOID:
        y = tl.minimum(tl.maximum(x, 0.0), 1.0)
    else:  # P-EP sigmoid
        y = 1.0 / (1.0 + tl.exp(tl.minimum(-4.0 * (x - 0.5), 88.0)))  # exp(88) is still finite in fp32
    return y


@triton.jit
def load_weights(ptrs, mask, W_BF16: tl.constexpr):
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
def dot(a, b, PRECISION: tl.constexpr, acc):
    """``acc + a @ b`` (fp32 x fp32 -> fp32, ``acc`` an fp32 tile) with the requested
    operand precision ("ieee", "tf32", "bf16"), fp32 accumulation. Both operands'
    tiles must be at least 16 x 16 on a GPU. Accumulating in the dot itself lets the
    tensor-core paths add into their accumulator registers in place (and a default
    ``acc=None`` would reach ``tl.dot`` as a constexpr under triton 3.1).

    bf16: both operands rounded to bf16, then multiplied on the tf32 path, where
    bf16 values are exact; this gives a bf16 dot's numbers on the GPU and in the CPU
    interpreter alike (whose bf16 dot is broken)."""
    if PRECISION == "bf16":
        d = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), acc, input_precision="tf32")
    else:
        d = tl.dot(a, b, acc, input_precision=PRECISION)
    return d
