"""The Triton path of ``EPNet``: tables, packing, phases and CUDA graphs.

``EPNet`` dispatches here when its backend resolves to Triton. The maths is that
of ``tritonep.reference``; what differs is the memory layout the kernels want:

- a *frame* per phase buffer: all state layers of a batch side by side, (B, N);
- the matrices the dynamics read, packed into one flat buffer once per call
  (one ``torch.cat``; transposition is a choice of strides in the term table);
- every trained parameter's ``.grad`` a view of one flat buffer, so the update
  kernel writes all links' gradients in place in one launch.

A ``Plan`` holds the int32 tables that map kernel programs to layers, links and
tiles; it depends only on the topology, the device and the block sizes.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from . import reference as ref

PRECISIONS = ("ieee", "tf32", "bf16")


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


CACHES = ("_plans", "_graphs", "_graph_off", "_runners", "_triton_ok", "_triton_off")  # per-device state the Triton paths keep on a net


def getstate(module) -> dict:
    """A module's ``__dict__`` without the Triton paths' caches (tables, buffers,
    CUDA graphs, which cannot be copied): what ``copy.deepcopy`` and pickling keep."""
    state = {k: v for k, v in module.__dict__.items() if k not in CACHES}
    if "_work" in state:
        state["_work"] = {}
    return state


def resolve_backend(net, x: Tensor, reference_only: bool = False) -> str:
    """Which backend runs ``net`` (an ``EPNet`` or ``ConvEPNet``) on input ``x``:
    ``"torch"``, or ``"triton"`` where asked (after ``check_device``) or where ``auto``
    finds a CUDA float32 input and triton installed, unless ``reference_only`` or the
    net's Triton path failed on first use (``first_use_guard``)."""
    if net.backend == "torch":
        return "torch"
    if net.backend == "triton":
        check_device(x)
        return "triton"
    if reference_only or net.__dict__.get("_triton_off"):
        return "torch"
    return "triton" if x.is_cuda and x.dtype == torch.float32 and available() else "torch"


def first_use_guard(net, fn, *args, **kwargs):
    """Run a Triton-path call for ``net``. With ``backend="auto"``, a failure of the
    very first call on this net (a kernel that does not compile on this GPU or Triton
    version) turns the net to the reference path (``net._triton_off``), with a
    warning, and returns None; later failures, or any with ``backend="triton"``,
    propagate."""
    try:
        out = fn(*args, **kwargs)
    except Exception as e:
        if net.backend != "auto" or net.__dict__.get("_triton_ok"):
            raise
        warnings.warn(f"tritonep: the Triton path failed on first use ({type(e).__name__}: {e}); this net runs "
                      "on the PyTorch reference from now on (backend='triton' shows the error)", RuntimeWarning,
                      stacklevel=3)
        net.__dict__["_triton_off"] = True
        return None
    net.__dict__["_triton_ok"] = True
    return out


def available() -> bool:
    """Whether the triton package can be imported here."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def kernels():
    """The kernel modules, imported on first use (Triton is heavy to import and
    must see ``TRITON_INTERPRET`` before its kernels are defined)."""
    try:
        from .kernels import relax, update
    except ImportError as e:  # no triton on this platform
        raise RuntimeError(f"backend='triton' needs the triton package (pip install 'triton>=3.1'): {e}") from e
    return relax, update


def check_device(x: Tensor) -> None:
    """Raise a clear error where the Triton kernels cannot run on ``x``'s device."""
    if x.is_cuda:
        return
    if x.device.type == "cpu" and interpreting():
        return
    raise RuntimeError(
        f"backend='triton' runs on CUDA tensors; got a tensor on {x.device}. On CPU use backend='torch' "
        "(or 'auto'), or set TRITON_INTERPRET=1 before importing tritonep to run the kernels in Triton's "
        "(slow) interpreter."
    )


@dataclass(frozen=True)
class Blocks:
    """Tile sizes of the three kernels (powers of two, >= 16 for the GPU's dots)."""

    relax_b: int = 64
    relax_n: int = 64
    relax_k: int = 32
    update_m: int = 64
    update_n: int = 64
    update_b: int = 32
    num_warps: int = 4


def default_blocks(device: torch.device) -> Blocks:
    if device.type != "cuda":  # the interpreter pays per program and loop step, not per element
        return Blocks(relax_b=64, relax_n=64, relax_k=64, update_m=64, update_n=64, update_b=64)
    return Blocks()


class Plan:
    """Tables and buffers of one net on one device.

    Frame columns: state layer l at ``[col[l], col[l] + n_l)``. Tables (int32):
      relax tiles (n_tiles, 2): layer, first unit;
      layers (n_state + 1, 6): col, n, first term, end term, bias offset, has drive;
      terms (n_terms, 5): source col, n_src, weight offset, strides over source/dest units;
      update tiles (n_tiles, 3): link, first post unit, first pre unit;
      links (n_links, 6): post col, n_post, pre col (-1: input), n_pre, grad offset, bias grad offset.
    """

    def __init__(self, net, device: torch.device, blocks: Blocks):
        topo = net.topology
        sizes, n = topo.sizes, topo.n_state
        self.device, self.blocks, self.top, self.sizes = device, blocks, n, list(sizes)
        self.col = [0] * (n + 1)
        for l in range(2, n + 1):
            self.col[l] = self.col[l - 1] + sizes[l - 1]
        self.width = self.col[n] + sizes[n]
        for k in topo.links:
            if k.src == 0 and (k.dst != 1 or k.weight != "layers.0"):
                raise NotImplementedError("the Triton backend takes the input only through layers.0 into layer 1")

        # matrices the dynamics read, each packed once; a term picks its orientation by strides
        self.weight_keys: list[str] = []
        w_off: dict[str, int] = {}
        total = 0
        term_rows, scales, layer_rows = [], [], [[0] * 6]
        for l in range(1, n + 1):
            t_begin = len(term_rows)
            for k in topo.incoming(l):
                W = net.matrix(k.weight)
                if k.weight not in w_off:
                    w_off[k.weight] = total
                    self.weight_keys.append(k.weight)
                    total += W.numel()
                n_in = W.shape[1]  # stored (out, in)
                # term = s_src @ M; M = W (n_src, n_dst) if transpose else W^T
                sk, sn = (n_in, 1) if k.transpose else (1, n_in)
                term_rows.append([self.col[k.src], sizes[k.src], w_off[k.weight], sk, sn])
                scales.append(k.scale)
            layer_rows.append([self.col[l], sizes[l], t_begin, len(term_rows), -1, int(l == 1)])
        self.bias_layers = []
        b_total = 0
        for l in range(2, n + 1):  # layer 1's bias is in the input drive
            b = net.layer_bias(l)
            if b is not None:
                layer_rows[l][4] = b_total
                self.bias_layers.append(l)
                b_total += b.numel()
        self.weight_numel, self.bias_numel = total, b_total
        tiles = [[l, n0] for l in range(1, n + 1) for n0 in range(0, sizes[l], blocks.relax_n)]

        # trained parameters, in the order of their slices of the flat gradient buffer
        self.params: list[Tensor] = []
        self.slices: list[tuple[int, int]] = []

        def slot(p: Tensor) -> int:
            off = sum(q.numel() for q in self.params)
            self.params.append(p)
            self.slices.append((off, p.numel()))
            return off

        link_rows, up_tiles = [], []
        self.links = topo.trained_links()
        for i, k in enumerate(self.links):
            W = net.matrix(k.weight)
            g_off = slot(W)
            bias = net.layer_bias(k.dst) if k.weight == f"layers.{k.dst - 1}" else None
            b_off = slot(bias) if bias is not None else -1
            pre_col = -1 if k.src == 0 else self.col[k.src]
            link_rows.append([self.col[k.dst], sizes[k.dst], pre_col, sizes[k.src], g_off, b_off])
            up_tiles += [[i, m0, n0] for m0 in range(0, sizes[k.dst], blocks.update_m)
                         for n0 in range(0, sizes[k.src], blocks.update_n)]
        self.head: list[Tensor] = []
        if net.output == "softmax":  # the readout's exact gradient, written by torch into the same buffer
            head = net.layers[-1]
            self.head = [head.weight] + ([head.bias] if head.bias is not None else [])
            for p in self.head:
                slot(p)
        self.grad_numel = sum(q.numel() for q in self.params)
        self.grads = torch.zeros(self.grad_numel, device=device)
        self.views = [self.grads[off:off + numel].view_as(p) for p, (off, numel) in zip(self.params, self.slices)]

        def table(rows):
            return torch.tensor(rows, dtype=torch.int32, device=device).reshape(len(rows), -1)

        self.tiles, self.layers, self.terms = table(tiles), table(layer_rows), table(term_rows or [[0] * 5])
        self.scales = torch.tensor(scales or [0.0], dtype=torch.float32, device=device)
        self.up_tiles, self.link_table = table(up_tiles), table(link_rows)
        self.n_tiles = len(tiles)
        self.weights = torch.empty(max(total, 1), device=device)
        self.biases = torch.empty(max(b_total, 1), device=device)
        self._coefs: dict = {}
        self._frames: dict = {}

    # ------------------------------------------------------------------ buffers
    def frames(self, tag: str, batch: int) -> tuple[Tensor, Tensor]:
        """Two (B, N) frames to ping-pong between for one phase, reused across calls."""
        key = (tag, batch)
        f = self._frames.get(key)
        if f is None:
            if len(self._frames) > 24:  # many batch sizes seen: drop the old buffers
                self._frames.clear()
            f = self._frames[key] = tuple(torch.empty(batch, self.width, device=self.device) for _ in range(2))
        return f

    def scratch(self, batch: int, C: int):
        """(delta (n_tiles, B), logits (B, C), error (B, C), neuron error (B, n_top))."""
        key = ("scratch", batch, C)
        s = self._frames.get(key)
        if s is None:
            s = self._frames[key] = (torch.empty(self.n_tiles, batch, device=self.device),
                                     torch.empty(batch, C, device=self.device),
                                     torch.empty(batch, C, device=self.device),
                                     torch.empty(batch, self.sizes[self.top], device=self.device))
        return s

    def pack(self, net, precision: str) -> tuple[Tensor, Tensor]:
        """Copy the matrices and biases the dynamics read into the packed buffers
        (fp32, or int16 holding bf16 bits for ``precision="bf16"``)."""
        if self.weight_keys:
            torch.cat([net.matrix(k).detach().reshape(-1) for k in self.weight_keys], out=self.weights)
        if self.bias_layers:
            torch.cat([net.layer_bias(l).detach() for l in self.bias_layers], out=self.biases)
        w = self.weights
        if precision == "bf16":
            w = w.to(torch.bfloat16).view(torch.int16)
        return w, self.biases

    def coefs(self, rule: str, beta: float, span: float, batch: int, gain) -> Tensor:
        """Per trained link, the rule's coefficient (``reference.link_coefficient``) on the device."""
        key = (rule, beta, span, batch, None if gain is None else tuple(gain))
        c = self._coefs.get(key)
        if c is None:
            vals = []
            for k in self.links:
                g = gain[k.dst] if gain is not None else None
                if g is not None and g == 0.0:
                    raise ValueError(f"normalize=True but no feedback path reaches layer {k.dst}")
                vals.append(ref.link_coefficient(rule, beta, span, batch, g))
            if len(self._coefs) > 64:
                self._coefs.clear()
            c = self._coefs[key] = torch.tensor(vals, dtype=torch.float32, device=self.device)
        return c

    def bind_grads(self) -> bool:
        """Make every trained parameter's ``.grad`` a view of the flat buffer.

        Returns whether the kernels must accumulate (some ``.grad`` held values,
        which are kept) or may overwrite (every ``.grad`` was None). Like
        ``backward()``, the next call writes into the same tensors.
        """
        fresh = []
        for p, view in zip(self.params, self.views):
            g = p.grad
            if g is None:
                fresh.append(view)
            elif g.data_ptr() != view.data_ptr() or g.shape != view.shape or g.stride() != view.stride():
                view.copy_(g)
            p.grad = view
        if len(fresh) == len(self.params):
            return False
        for v in fresh:
            v.zero_()
        return True


def plan_for(net, device: torch.device) -> Plan:
    """The net's plan on ``device``, built once and cached on the net (rebuilt if its
    parameters were replaced)."""
    plans = net.__dict__.setdefault("_plans", {})
    key = (device, tuple(id(p) for p in net.parameters()))
    p = plans.get(key)
    if p is None:
        plans.clear()
        p = plans[key] = Plan(net, device, default_blocks(device))
    return p


# ----------------------------------------------------------------------------- phases
def _drive(net, x: Tensor) -> Tensor:
    """Input drive of layer 1, (B, n_1): x @ W0^T + b0 (cuBLAS, once per batch)."""
    return net.layers[0](x)


def _phase(net, plan: Plan, frames, start: Optional[Tensor], drive, w, b, steps: int, *, precision,
           nudge: int = 0, beta: float = 0.0, target=None, W_f=None, b_f=None, M_f=None, error=None,
           tol: Optional[float] = None, check_every: int = 1, delta=None) -> tuple[Tensor, int]:
    """Run up to ``steps`` steps from the frame ``start`` (None: zero states).
    Returns (final frame, steps run)."""
    relax_k, _ = kernels()
    bl = plan.blocks
    if net.persistent and tol is None:  # the whole phase in one launch
        frame = relax_k.relax_phase(
            start, frames, drive, w, b, plan.tiles, plan.layers, plan.terms, plan.scales, steps,
            activation=net.activation, from_zero=start is None, nudge=nudge, top=plan.top, beta=beta, target=target,
            W_f=W_f, b_f=b_f, M_f=M_f, error=error, precision=precision, block_b=bl.relax_b, block_n=bl.relax_n,
            block_k=bl.relax_k, num_warps=bl.num_warps)
        return frame, steps
    cur = start
    for t in range(steps):
        out = frames[t % 2]
        track = tol is not None and (t + 1) % check_every == 0
        relax_k.relax_step(
            cur if cur is not None else out, out, drive, w, b, plan.tiles, plan.layers, plan.terms, plan.scales,
            activation=net.activation, nudge=nudge, top=plan.top, beta=beta, target=target, W_f=W_f, b_f=b_f,
            M_f=M_f, error=error, delta=delta if track else None, skip_terms=cur is None, precision=precision,
            block_b=bl.relax_b, block_n=bl.relax_n, block_k=bl.relax_k, num_warps=bl.num_warps,
        )
        cur = out
        if track and delta.sum(0).max().item() < tol * tol:  # one host sync per check
            return cur, t + 1
    return cur, steps


def state_views(plan: Plan, frame: Tensor, x: Tensor) -> list[Tensor]:
    """``[x, s_1, ..., s_n]``: the layers of a frame as (B, n_l) views."""
    return [x] + [frame[:, plan.col[l]:plan.col[l] + plan.sizes[l]] for l in range(1, plan.top + 1)]


def _prepare(net, x: Tensor, precision: str):
    check_device(x)
    if x.dtype != torch.float32:
        raise TypeError(f"backend='triton' computes in float32; the net is {x.dtype} (use backend='torch')")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    return plan_for(net, x.device), x.contiguous()


@torch.no_grad()
def relax(net, x: Tensor, T: int, *, precision: str = "ieee", tol=None, check_every: int = 1):
    """Free phase on the Triton path. Returns ([x, s_1, ..., s_n] views of a frame, steps run)."""
    plan, x = _prepare(net, x, precision)
    w, b = plan.pack(net, precision)
    delta = plan.scratch(x.shape[0], net.num_classes)[0]
    frame, steps = _phase(net, plan, plan.frames("free", x.shape[0]), None, _drive(net, x), w, b, T,
                          precision=precision, tol=tol, check_every=check_every, delta=delta)
    return state_views(plan, frame, x), steps


@torch.no_grad()
def ep_step(net, x: Tensor, target: Tensor, *, T: int, K: int, rule: str, nudging: str, frozen: bool,
            normalize: bool, precision: str = "ieee", tol=None, check_every: int = 1, graph: bool = True):
    """``EPNet.ep_step`` on the Triton path (arguments already validated).

    x: (B, n_in) fp32; target: (B, C). Returns (loss, logits, steps) with steps =
    (free steps, [steps of each nudged phase]).
    """
    plan, x = _prepare(net, x, precision)
    target = target.contiguous()
    sign = 1.0
    if nudging == "random-sign":  # drawn like the reference path, from torch's RNG
        sign = 1.0 if torch.rand(()).item() < 0.5 else -1.0
    args = (rule, nudging, sign, frozen, normalize, precision)
    if graph and tol is None and x.is_cuda and not net.__dict__.get("_graph_off"):
        out = _graphed(net, plan, x, target, T, K, args)
        if out is not None:
            return out
    w, b = plan.pack(net, precision)
    accumulate = plan.bind_grads()
    return _ep_body(net, plan, x, target, w, b, T, K, args, accumulate, tol, check_every)


def _ep_body(net, plan: Plan, x, target, w, b, T, K, args, accumulate: bool, tol=None, check_every=1):
    """Free phase, readout, nudged phase(s), updates: everything but the packing
    and grad binding (so a CUDA graph can capture it)."""
    rule, nudging, sign, frozen, normalize, precision = args
    relax_k, update_k = kernels()
    B, C = x.shape[0], net.num_classes
    delta, logits_buf, err_buf, neuron_err = plan.scratch(B, C)
    drive = _drive(net, x)
    free, t_free = _phase(net, plan, plan.frames("free", B), None, drive, w, b, T, precision=precision,
                          tol=tol, check_every=check_every, delta=delta)
    top = free[:, plan.col[plan.top]:]
    if net.output == "softmax":
        W_f, b_f, M_f = net.readout_matrices()
        relax_k.readout(free, plan.col[plan.top], top.shape[1], W_f.detach(), None if b_f is None else b_f.detach(),
                        target, logits_buf, err_buf, precision=precision, block_b=plan.blocks.relax_b,
                        block_k=plan.blocks.relax_k, num_warps=plan.blocks.num_warps)
        out = logits_buf.clone()
        nudge = relax_k.NUDGE_SOFTMAX_GIVEN if frozen else relax_k.NUDGE_SOFTMAX
        operands = dict(target=target, W_f=W_f.detach(), b_f=None if b_f is None else b_f.detach(),
                        M_f=M_f.detach(), error=err_buf)
    else:
        out = top.clone()
        if frozen:
            torch.sub(target, top, out=neuron_err)
        nudge = relax_k.NUDGE_NEURON_GIVEN if frozen else relax_k.NUDGE_NEURON
        operands = dict(target=target, error=neuron_err)
    loss = net.loss(out, target)

    beta = net.nudge
    steps = []

    def nudged(signed_beta: float, tag: str) -> Tensor:
        frame, k = _phase(net, plan, plan.frames(tag, B), free, drive, w, b, K, precision=precision, nudge=nudge,
                          beta=signed_beta, tol=tol, check_every=check_every, delta=delta, **operands)
        steps.append(k)
        return frame

    if nudging == "symmetric":
        fa, fb, span = nudged(beta, "plus"), nudged(-beta, "minus"), 2 * beta
    else:
        fa, fb, span = nudged(sign * beta, "plus"), free, sign * beta
    gain = net.topology.feedback_gain(beta) if normalize else None
    bl = plan.blocks
    update_k.contrastive_update(fa, fb, free, x, plan.grads, plan.up_tiles, plan.link_table,
                                plan.coefs(rule, beta, span, B, gain), rule=rule, accumulate=accumulate,
                                precision=precision, block_m=bl.update_m, block_n=bl.update_n, block_b=bl.update_b,
                                num_warps=bl.num_warps)
    if plan.head:  # readout: exact cross-entropy gradient at the free state, (p - y)^T s_top / B
        g = plan.views[len(plan.params) - len(plan.head):]
        if not accumulate:
            for v in g:
                v.zero_()
        g[0].addmm_(err_buf.t(), top, alpha=-1.0 / B)
        if len(g) == 2:
            g[1].sub_(err_buf.sum(0), alpha=1.0 / B)
    return loss, out, (t_free, steps)


# ----------------------------------------------------------------------------- CUDA graphs
class _Captured:
    """One captured ep_step: static input buffers and the outputs it writes."""

    def __init__(self, graph, x, target, loss, logits, steps):
        self.graph, self.x, self.target, self.loss, self.logits, self.steps = graph, x, target, loss, logits, steps


def _graphed(net, plan: Plan, x: Tensor, target: Tensor, T: int, K: int, args):
    """Run the step through a CUDA graph of the whole call (packing, T free and K
    nudged steps, updates), captured once per batch size and options. Returns None
    (and turns graphs off for this net, with a warning) if capture fails."""
    graphs = net.__dict__.setdefault("_graphs", {})
    params = [p for p in net.parameters()] + [bf for bf in net.buffers()]
    key = (x.shape[0], target.dtype, T, K, args, tuple(p.data_ptr() for p in params))
    precision = args[-1]
    if not plan.bind_grads():  # the graph always accumulates: start from zeros
        plan.grads.zero_()
    cap = graphs.get(key)
    if cap is None:
        if len(graphs) > 8:
            graphs.clear()
        try:
            cap = graphs[key] = _capture(net, plan, x, target, T, K, args, precision)
        except Exception as e:  # capture is an optimisation: fall back to plain launches
            warnings.warn(f"tritonep: CUDA graph capture failed ({type(e).__name__}: {e}); running the Triton "
                          "kernels without graphs", RuntimeWarning, stacklevel=3)
            net.__dict__["_graph_off"] = True
            return None
    cap.x.copy_(x)
    cap.target.copy_(target)
    cap.graph.replay()
    return cap.loss.clone(), cap.logits.clone(), cap.steps


def _capture(net, plan: Plan, x, target, T, K, args, precision) -> _Captured:
    sx, st = x.clone(), target.clone()
    saved = plan.grads.clone()  # warm-up runs write gradients: restore them after

    def body():
        w, b = plan.pack(net, precision)
        return _ep_body(net, plan, sx, st, w, b, T, K, args, True)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compiles the kernels and warms cuBLAS outside the capture
        for _ in range(2):
            body()
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        loss, logits, steps = body()
    plan.grads.copy_(saved)
    return _Captured(g, sx, st, loss, logits, steps)
