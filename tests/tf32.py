"""TF32 for the tests: rounding fp32 to TF32, a reference whose products take
TF32 operands, an interpreter whose ``tl.dot`` honours ``input_precision="tf32"``,
and a context that turns torch's own TF32 off.

TF32 keeps fp32's sign and 8 exponent bits and the top 10 of its 23 mantissa bits:
an fp32 bit pattern with its low 13 bits cleared. ``round_tf32`` rounds to it to
nearest with ties away from zero (``"rna"``: ``cvt.rna.tf32.f32``, as cuBLAS
rounds), to nearest with ties to even (``"rne"``), or toward zero (``"rz"``: the
low bits dropped, as a tensor core reads an fp32 register handed to it as a TF32
operand; what the H200's errors point to for Triton's tf32 dots, see
``test_tf32_matches_a_tf32_rounded_reference``). ``dot_rounding`` measures which
one a device's ``tl.dot`` does.

Triton's CPU interpreter multiplies fp32 ``tl.dot`` operands in fp32 whatever
``input_precision`` says; ``interpreter_tf32`` makes it round them first, so a
kernel launched with ``precision="tf32"`` computes on CPU what one with rounded
operands computes on a GPU (up to summation order).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

MODES = ("rna", "rne", "rz")  # to nearest (ties away from zero, ties to even), toward zero
_LOW = 0x1FFF  # the 13 mantissa bits TF32 drops
_HALF = 0x1000  # half a TF32 ulp


def round_tf32(x: torch.Tensor, mode: str = "rna") -> torch.Tensor:
    """fp32 ``x`` rounded to TF32 (a new fp32 tensor); inf and NaN kept as they are."""
    if x.dtype != torch.float32:
        raise TypeError(f"round_tf32 takes float32, not {x.dtype}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {MODES}")
    bits = x.detach().contiguous().view(torch.int32)
    # adding half an ulp to the magnitude bits (sign apart) rounds half away from zero; half an
    # ulp less one, plus the kept last bit, rounds half to even; adding nothing truncates
    if mode == "rna":
        bits = bits + _HALF
    elif mode == "rne":
        bits = bits + (_HALF - 1) + ((bits >> 13) & 1)
    r = (bits & ~_LOW).view(torch.float32)
    return torch.where(torch.isfinite(x), r, x)


def round_tf32_np(a: np.ndarray, mode: str = "rna") -> np.ndarray:
    """``round_tf32`` of a numpy float32 array."""
    return round_tf32(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), mode).numpy()


def round_module_(net: torch.nn.Module, mode: str = "rna") -> torch.nn.Module:
    """Round every float32 parameter and buffer of ``net`` to TF32 in place."""
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.dtype == torch.float32:
                t.copy_(round_tf32(t, mode))
    return net


# the products torch is asked for, and the positions of their two operands
_PRODUCTS = {torch.mm: (0, 1), torch.Tensor.mm: (0, 1), torch.matmul: (0, 1), torch.Tensor.matmul: (0, 1),
             torch.Tensor.__matmul__: (0, 1), torch.addmm: (1, 2), torch.Tensor.addmm: (1, 2),
             torch.Tensor.addmm_: (1, 2), F.linear: (0, 1)}
# products this emulation does not round: met inside it, they fail (an unrounded product would
# pass for a rounded one)
_UNCOVERED = {torch.bmm, torch.baddbmm, torch.einsum, torch.tensordot, torch.mv, torch.addmv, torch.dot,
              torch.inner, torch.outer, torch.Tensor.__rmatmul__, F.conv1d, F.conv2d, F.conv3d, F.bilinear}


class _RoundProducts(TorchFunctionMode):
    def __init__(self, mode: str):
        super().__init__()
        self.mode, self.paused = mode, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.paused:
            if func in _UNCOVERED:
                raise NotImplementedError(f"tf32_products does not round {func}")
            pos = _PRODUCTS.get(func)
            if pos is not None:
                if len(args) <= max(pos):
                    raise NotImplementedError(f"tf32_products: {func} with operands passed by keyword")
                args = list(args)
                for i in pos:
                    if isinstance(args[i], torch.Tensor) and args[i].dtype == torch.float32:
                        args[i] = round_tf32(args[i], self.mode)
        return func(*args, **kwargs)


@contextlib.contextmanager
def tf32_products(mode: str = "rna"):
    """Inside: every fp32 matrix product torch computes (``mm``, ``addmm``,
    ``addmm_``, ``matmul``/``@``, ``F.linear``) takes TF32-rounded operands, as
    a TF32 tensor core does (fp32 accumulation; ``alpha``/``beta`` applied to the
    product as torch does); the products it does not cover raise. ``paused`` (a
    count) lets products through unrounded."""
    m = _RoundProducts(mode)
    with m:
        yield m


@contextlib.contextmanager
def tf32_reference(mode: str = "rna"):
    """``tf32_products`` over the dense reference engine, rounded where the Triton
    kernels round and nowhere else:

    - each relaxation term's matrix is packed with its link scale folded in (as
      ``dense_triton.Plan.pack`` does, and then rounds ``scale * W``), not
      multiplied by the scale after the product;
    - the readout's exact gradient (``rules.add_readout_gradient``), which the Triton
      path computes in torch too, stays fp32.
    The input drive ``F.linear(x, W0, b)`` is also torch's on both paths: give the
    nets TF32 parameters and inputs (``round_module_``) and rounding it changes nothing.
    """
    from tritonep import rules
    from tritonep.engine.dense_reference import DenseReference

    make_terms = DenseReference.make_terms
    readout_gradient = rules.add_readout_gradient

    def folded_terms(self):
        return [[(src, M * scale if scale != 1.0 else M, 1.0) for src, M, scale in layer]
                for layer in make_terms(self)]

    with tf32_products(mode) as m:
        def fp32_readout_gradient(*args, **kwargs):
            m.paused += 1
            try:
                return readout_gradient(*args, **kwargs)
            finally:
                m.paused -= 1

        DenseReference.make_terms, rules.add_readout_gradient = folded_terms, fp32_readout_gradient
        try:
            yield m
        finally:
            DenseReference.make_terms, rules.add_readout_gradient = make_terms, readout_gradient


@contextlib.contextmanager
def interpreter_tf32(mode: str = "rna"):
    """Inside: Triton's interpreter rounds the operands of a ``tl.dot`` whose
    ``input_precision`` is ``"tf32"`` (fp32 operands only) before multiplying, as a GPU does.
    Skips the calling test where this Triton's interpreter is not built the way
    this patch expects."""
    try:
        from triton._C.libtriton import ir
        from triton.runtime.interpreter import InterpreterBuilder
        tf32 = ir.INPUT_PRECISION.TF32
        create_dot = InterpreterBuilder.create_dot
    except (ImportError, AttributeError) as e:
        pytest.skip(f"cannot make this Triton's interpreter round tf32 dots: {e}")

    def rounding_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if input_precision == tf32 and a.data.dtype == np.float32 and b.data.dtype == np.float32:
            a = type(a)(round_tf32_np(a.data, mode), a.dtype.scalar)
            b = type(b)(round_tf32_np(b.data, mode), b.dtype.scalar)
        return create_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    InterpreterBuilder.create_dot = rounding_dot
    try:
        yield
    finally:
        InterpreterBuilder.create_dot = create_dot


@contextlib.contextmanager
def no_torch_tf32():
    """Inside: torch's own fp32 matmuls (cuBLAS) and convolutions (cuDNN) in fp32, not
    TF32 (cuDNN's default on Ampere and later is TF32; cuBLAS's may have been set),
    restored after: a reference to check kernels against must be fp32 on CUDA too.
    No effect on CPU."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


_PROBE = {}


def dot_rounding(device) -> tuple:
    """How ``tl.dot(a, b, input_precision="tf32")`` treats fp32 operands on ``device``,
    as the kernels call it (``kernels.common.dot``): per operand (a, b), ``"ieee"``
    (not rounded: Triton's interpreter), ``"rna"``, ``"rne"`` or ``"rz"``, or ``"?"``.
    Measured on 32x32 and 64x64 dots of four warps, tiles the kernels use, which may
    take different tensor-core instructions (Hopper: mma and wgmma); shapes that
    disagree give ``("?", "?")``."""
    import triton
    import triton.language as tl

    if "kernel" not in _PROBE:
        @triton.jit
        def probe(A, B, C, N: tl.constexpr):
            r = tl.arange(0, N)
            a = tl.load(A + r[:, None] * N + r[None, :])
            b = tl.load(B + r[:, None] * N + r[None, :])
            tl.store(C + r[:, None] * N + r[None, :], tl.dot(a, b, input_precision="tf32"))

        _PROBE["kernel"] = probe
    v1, v2 = 1 + 3 * 2.0 ** -12, 1 + 2.0 ** -11  # above half a TF32 ulp over 1; exactly half (a tie)
    names = {(v1, v2): "ieee", (1 + 2.0 ** -10, 1 + 2.0 ** -10): "rna", (1 + 2.0 ** -10, 1.0): "rne", (1.0, 1.0): "rz"}
    seen = set()
    for n in (32, 64):
        # C[i, j] = A[i, 0] * B[0, j]: C[0, 0], C[1, 0] show A's rounding of v1, v2; C[2, 2], C[2, 3] B's
        A, B = torch.zeros(n, n), torch.zeros(n, n)
        A[:, 0], B[0, :] = 1.0, 1.0
        A[0, 0], A[1, 0], B[0, 2], B[0, 3] = v1, v2, v1, v2
        C = torch.full((n, n), float("nan"), device=device)
        _PROBE["kernel"][(1,)](A.to(device), B.to(device), C, N=n, num_warps=4)
        C = C.cpu().tolist()
        seen.add((names.get((C[0][0], C[1][0]), "?"), names.get((C[2][2], C[2][3]), "?")))
    return seen.pop() if len(seen) == 1 else ("?", "?")
