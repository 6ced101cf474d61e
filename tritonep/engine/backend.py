"""Which engine runs a net: backend resolution, device checks, the first-use
fallback, and the per-net state the engines keep (``BackendState``)."""
from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .cuda_graph import GraphCache
from .value_checks import DeferredChecks


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> bool:
    """Whether the triton package can be imported here."""
    return importlib.util.find_spec("triton") is not None


def can_capture(x: Tensor) -> bool:
    """Whether a step on ``x`` can be captured as a CUDA graph: a CUDA tensor (tests
    stand in for CUDA by replacing this and ``torch.cuda``'s graph API)."""
    return x.is_cuda


def check_device(x: Tensor) -> None:
    """Raise a clear error where the Triton kernels cannot run on ``x``'s device."""
    if x.is_cuda or (x.device.type == "cpu" and interpreting()):
        return
    raise RuntimeError(
        f"backend='triton' runs on CUDA tensors; got a tensor on {x.device}. On CPU use backend='torch' "
        "(or 'auto'), or set TRITON_INTERPRET=1 before importing tritonep to run the kernels in Triton's "
        "(slow) interpreter."
    )


def check_triton_input(x: Tensor) -> None:
    """Device and dtype checks of every Triton engine: CUDA (or the interpreter), float32."""
    check_device(x)
    if x.dtype != torch.float32:
        raise TypeError(f"backend='triton' computes in float32; the net is {x.dtype} (use backend='torch')")


def resolve(backend: str, x: Tensor, state: "BackendState", reference_only: bool = False) -> str:
    """Which backend runs on input ``x``: ``"torch"``, or ``"triton"`` where asked
    (after ``check_device``) or where ``"auto"`` finds a CUDA float32 input and triton
    installed, unless ``reference_only`` or the net's Triton path failed on first use."""
    if backend == "torch":
        return "torch"
    if backend == "triton":
        check_device(x)
        return "triton"
    if reference_only or state.triton_off:
        return "torch"
    return "triton" if x.is_cuda and x.dtype == torch.float32 and available() else "torch"


@dataclass
class BackendState:
    """What a net's engines keep between calls, per net: whether its Triton path has
    worked (or failed on first use), its CUDA graphs, its deferred value checks
    (``value_checks``), and reusable buffers (tables,
    frames, workspaces) keyed by device and batch. Never copied or pickled: a copy of
    a net starts with a fresh one."""

    triton_ok: bool = False
    triton_off: bool = False
    graphs: GraphCache = field(default_factory=GraphCache)
    checks: DeferredChecks = field(default_factory=DeferredChecks)
    buffers: dict = field(default_factory=dict)

    def cached(self, key: tuple, make: Callable, limit: int = 16):
        """``buffers[key]``, made by ``make()`` on first use. ``key[0]`` names the kind
        (``"dense"`` workspaces, ``"dense-plan"``, ``"conv-frames"``, ...): past ``limit``
        entries of one kind (many batch sizes seen) that kind's are dropped, and only
        that kind's, so workspace churn never drops a plan. Dropping buffers drops the
        CUDA graphs too: a graph may write them, and must never replay into freed memory."""
        v = self.buffers.get(key)
        if v is None:
            same = [k for k in self.buffers if k[0] == key[0]]
            if len(same) >= limit:
                self.graphs.clear()
                for k in same:
                    del self.buffers[k]
            v = self.buffers[key] = make()
        return v

    def first_use(self, backend: str, fn: Callable, *args):
        """Run a Triton-path call. With ``backend="auto"``, a failure of the very first
        call (a kernel that does not compile on this GPU or Triton version) turns the
        net to the reference path, with a warning, and returns None; later failures,
        or any with ``backend="triton"``, propagate."""
        try:
            out = fn(*args)
        except Exception as e:
            if backend != "auto" or self.triton_ok:
                raise
            warnings.warn(f"tritonep: the Triton path failed on first use ({type(e).__name__}: {e}); this net runs "
                          "on the PyTorch reference from now on (backend='triton' shows the error)", RuntimeWarning,
                          stacklevel=4)
            self.triton_off = True
            return None
        self.triton_ok = True
        return out


def kernel_module(name: str):
    """A kernel module of ``tritonep.kernels`` (``"relax"``, ``"update"``, ``"conv"``),
    imported on first use: Triton is heavy to import and must see
    ``TRITON_INTERPRET`` before its kernels are defined."""
    try:
        return importlib.import_module(f"tritonep.kernels.{name}")
    except ImportError as e:  # no triton on this platform
        raise RuntimeError(f"backend='triton' needs the triton package (pip install 'triton>=3.1'): {e}") from e
