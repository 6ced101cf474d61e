"""The Triton engine of the dense nets (``EPNet``): the phases and updates of
``dense_reference`` run by the kernels of ``tritonep.kernels`` (``relax``,
``update``). The maths is the reference's; what differs is the memory layout the
kernels want:

- a *frame* per phase buffer: all state layers of a batch side by side, (B, N);
- the matrices the dynamics read, packed into one flat buffer once per call
  (one ``torch.cat``; transposition is a choice of strides in the term table);
- every trained parameter's ``.grad`` a view of one flat buffer (``GradBuffer``),
  so the update kernel writes all links' gradients in place in one launch.

A ``Plan`` holds the int32 tables that map kernel programs to layers, links and
tiles, laid out as ``tritonep.kernels.common`` defines; it depends only on the
topology, the device and the block sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .backend import kernel_module
from .dense_reference import DenseSpec
from .grads import GradBuffer
from .interface import relative_residual


@dataclass(frozen=True)
class Blocks:
    """Tile sizes of the kernels (powers of two, >= 16 for the GPU's dots): relax
    (step and readout kernels), update and persistent-kernel (``phase_*``) tiles;
    ``num_warps`` of the relax kernels, ``update_warps`` and ``phase_warps`` of the
    others. ``relax_n``, ``update_m`` and ``update_n`` shape the plan's tile tables
    (the persistent kernel shares ``relax_n``); on CUDA with autotuning the step,
    readout and update kernels pick the rest."""

    relax_b: int = 64
    relax_n: int = 64
    relax_k: int = 32
    update_m: int = 64
    update_n: int = 64
    update_b: int = 32
    num_warps: int = 4
    update_warps: int = 4
    phase_b: int = 64
    phase_k: int = 32
    phase_warps: int = 4


def default_blocks(device: torch.device, precision: str = "ieee") -> Blocks:
    """The tiles of launches on ``device``: on CUDA (also while the compile check
    records launches for a GPU) each precision's spill-free default (the kernels'
    ``cuda_tiles``), else the interpreter's (which pays per program and loop step,
    not per element)."""
    if not kernel_module("launch").as_cuda(device):
        return Blocks(relax_b=64, relax_n=64, relax_k=64, update_m=64, update_n=64, update_b=64, phase_k=64)
    relax = kernel_module("relax")
    step, phase = relax.cuda_tiles(precision), relax.cuda_tiles(precision, persistent=True)
    up = kernel_module("update").cuda_tiles(precision)
    return Blocks(relax_b=step["BLOCK_B"], relax_k=step["BLOCK_K"], num_warps=step["num_warps"],
                  update_b=up["BLOCK_B"], update_warps=up["num_warps"], phase_b=phase["BLOCK_B"],
                  phase_k=phase["BLOCK_K"], phase_warps=phase["num_warps"])


def _row(width: int, fields: dict) -> list[int]:
    """One table row: ``fields`` maps column index -> value (columns from kernels.common)."""
    row = [0] * width
    for col, v in fields.items():
        row[col] = int(v)
    return row


class Plan:
    """Tables and buffers of one net on one device.

    Frame columns: state layer l at ``[col[l], col[l] + n_l)``. Tables (int32, columns
    named in ``tritonep.kernels.common``): relax tiles (layer, first unit); layers
    (col, n, first and end term, bias offset, has drive); terms (source col, n_src,
    weight offset, strides over source and destination units, source new: whether the
    alternating schedule updates the source's group before the layer's); update tiles
    (link, first post unit, first pre unit); links (post col, n_post, pre col (-1:
    input), n_pre, grad offset, bias grad offset). ``order``, ``group_tiles``,
    ``phase_tiles`` and ``n_first``: the alternating schedule's groups of layers
    (``Topology.update_order``), one relax tile table per group (the step kernel's),
    all tiles by group (the persistent kernel's) and the first group's tile count
    (None, None, None, 0 for a single state layer, which only steps synchronously).
    """

    def __init__(self, spec: DenseSpec, device: torch.device, blocks: Blocks):
        c = kernel_module("common")
        topo = spec.topology
        sizes, n = topo.sizes, topo.n_state
        self.device, self.blocks, self.top, self.sizes = device, blocks, n, list(sizes)
        self.col = [0] * (n + 1)
        for l in range(2, n + 1):
            self.col[l] = self.col[l - 1] + sizes[l - 1]
        self.width = self.col[n] + sizes[n]
        for k in topo.links:
            if k.src == 0 and (k.dst != 1 or k.weight != "layers.0"):
                raise NotImplementedError("the Triton backend takes the input only through layers.0 into layer 1")

        # the alternating schedule's groups of layers (None: one layer, always synchronous)
        self.order = topo.update_order("alternating")
        group = {l: g for g, layers in enumerate(self.order or [range(1, n + 1)]) for l in layers}

        # each term's matrix packed with its link scale folded in (so the step kernel sums every
        # link into one accumulator); a term picks its orientation by strides; one pack per
        # (matrix, scale), so W and a feedback gamma * W are two packs of the same parameter
        self.packs: list[tuple[str, float, int]] = []  # (weight key, scale, offset)
        w_off: dict[tuple, int] = {}
        total = 0
        term_rows, layer_rows = [], [[0] * c.LAYER_FIELDS]
        for l in range(1, n + 1):
            t_begin = len(term_rows)
            for k in topo.incoming(l):
                W = spec.matrices[k.weight]
                pack = (k.weight, float(k.scale))
                if pack not in w_off:
                    w_off[pack] = total
                    self.packs.append((k.weight, float(k.scale), total))
                    total += W.numel()
                n_in = W.shape[1]  # stored (out, in); term = s_src @ M with M = W (n_src, n_dst) or W^T
                s_src, s_dst = (n_in, 1) if k.transpose else (1, n_in)
                term_rows.append(_row(c.TERM_FIELDS, {c.TERM_SRC_COL: self.col[k.src], c.TERM_N_SRC: sizes[k.src],
                                                      c.TERM_W_OFF: w_off[pack], c.TERM_STRIDE_SRC: s_src,
                                                      c.TERM_STRIDE_DST: s_dst,
                                                      c.TERM_SRC_NEW: group[k.src] < group[l]}))
            layer_rows.append(_row(c.LAYER_FIELDS, {c.LAYER_COL: self.col[l], c.LAYER_N: sizes[l],
                                                    c.LAYER_TERM_BEGIN: t_begin, c.LAYER_TERM_END: len(term_rows),
                                                    c.LAYER_BIAS: -1, c.LAYER_HAS_DRIVE: l == 1}))
        self.bias_layers = []
        b_total = 0
        for l in range(2, n + 1):  # layer 1's bias is in the input drive
            b = spec.biases[l]
            if b is not None:
                layer_rows[l][c.LAYER_BIAS] = b_total
                self.bias_layers.append(l)
                b_total += b.numel()

        def layer_tiles(layers):
            return [_row(c.TILE_FIELDS, {c.TILE_LAYER: l, c.TILE_UNIT0: n0})
                    for l in layers for n0 in range(0, sizes[l], blocks.relax_n)]

        tiles = layer_tiles(range(1, n + 1))

        # trained parameters, in the order of their slices of the flat gradient buffer
        params: list[Tensor] = []
        link_rows, up_tiles = [], []
        self.links = topo.trained_links()
        for i, k in enumerate(self.links):
            g_off = sum(p.numel() for p in params)
            params.append(spec.matrices[k.weight])
            bias = spec.biases[k.dst] if k.feeds_bias else None
            b_off = -1
            if bias is not None:
                b_off = g_off + params[-1].numel()
                params.append(bias)
            link_rows.append(_row(c.LINK_FIELDS, {
                c.LINK_POST_COL: self.col[k.dst], c.LINK_N_POST: sizes[k.dst],
                c.LINK_PRE_COL: -1 if k.src == 0 else self.col[k.src], c.LINK_N_PRE: sizes[k.src],
                c.LINK_GRAD: g_off, c.LINK_BIAS_GRAD: b_off}))
            up_tiles += [_row(c.UTILE_FIELDS, {c.UTILE_LINK: i, c.UTILE_POST0: m0, c.UTILE_PRE0: n0})
                         for m0 in range(0, sizes[k.dst], blocks.update_m)
                         for n0 in range(0, sizes[k.src], blocks.update_n)]
        self.n_link_params = len(params)
        if spec.readout is not None:  # the readout's exact gradient, written by torch into the same buffer
            params += [p for p in spec.readout[:2] if p is not None]
        self.grads = GradBuffer(params, device)

        def table(rows, width):
            return torch.tensor(rows or [[0] * width], dtype=torch.int32, device=device).reshape(-1, width)

        self.tiles, self.layers = table(tiles, c.TILE_FIELDS), table(layer_rows, c.LAYER_FIELDS)
        self.terms = table(term_rows, c.TERM_FIELDS)
        self.up_tiles, self.link_table = table(up_tiles, c.UTILE_FIELDS), table(link_rows, c.LINK_FIELDS)
        self.n_tiles = len(tiles)
        # alternating: one tile table per group for the step kernel (separate tensors, so each
        # is aligned as the table of every tile is: one compiled kernel serves both groups),
        # and for the persistent kernel every tile by group, the first group's n_first first
        self.group_tiles = self.phase_tiles = None
        self.n_first = 0
        if self.order is not None:
            self.group_tiles = tuple(table(layer_tiles(g), c.TILE_FIELDS) for g in self.order)
            self.phase_tiles = torch.cat(self.group_tiles)
            self.n_first = self.group_tiles[0].shape[0]
        self.weights = torch.empty(max(total, 1), device=device)
        self.biases = torch.empty(max(b_total, 1), device=device)
        self._coefs: dict = {}
        self._frames: dict = {}
        # bumped whenever frames are dropped: a CUDA graph that wrote them must not replay
        self.generation = 0

    # ------------------------------------------------------------------ buffers
    def frames(self, tag: str, batch: int) -> tuple[Tensor, Tensor]:
        """Two (B, N) frames to ping-pong between for one phase, reused across calls."""
        key = (tag, batch)
        f = self._frames.get(key)
        if f is None:
            if len(self._frames) > 24:  # many batch sizes seen: drop the old buffers
                self._frames.clear()
                self.generation += 1
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

    def group_delta(self, batch: int) -> tuple[Tensor, list[Tensor]]:
        """The alternating schedule's per-tile squared state changes: (buffer, one
        (n_tiles of the group, B) view per group). Each group's rows start 16-byte
        aligned (as a fresh tensor's do, so the kernel is not specialized apart); the
        rows between are zero and stay so, so ``buffer.sum(0)`` is every layer's change
        over the step, per sample."""
        key = ("group-delta", batch)
        s = self._frames.get(key)
        if s is None:
            starts, rows = [], 0
            for t in self.group_tiles:
                starts.append(rows)
                rows += -(-t.shape[0] // 4) * 4  # 4 rows of fp32 = 16 bytes for any batch
            buf = torch.zeros(rows, batch, device=self.device)
            s = self._frames[key] = (buf, [buf[a:a + t.shape[0]] for a, t in zip(starts, self.group_tiles)])
        return s

    def pack(self, spec: DenseSpec, precision: str) -> tuple[Tensor, Tensor]:
        """Copy the matrices (times their terms' scales) and biases the dynamics read
        into the packed buffers (fp32, or int16 holding bf16 bits for ``precision="bf16"``)."""
        for key, scale, off in self.packs:
            W = spec.matrices[key].detach().reshape(-1)
            dst = self.weights[off:off + W.numel()]
            if scale == 1.0:
                dst.copy_(W)
            else:
                torch.mul(W, scale, out=dst)
        if self.bias_layers:
            torch.cat([spec.biases[l].detach() for l in self.bias_layers], out=self.biases)
        w = self.weights
        if precision == "bf16":
            w = w.to(torch.bfloat16).view(torch.int16)
        return w, self.biases

    def coefs(self, values: list[float]) -> Tensor:
        """The links' rule coefficients on the device (cached: no copy inside a CUDA graph)."""
        key = tuple(values)
        c = self._coefs.get(key)
        if c is None:
            if len(self._coefs) > 64:
                self._coefs.clear()
                self.generation += 1
            c = self._coefs[key] = torch.tensor(values, dtype=torch.float32, device=self.device)
        return c

    def state_views(self, frame: Tensor, x: Tensor) -> list[Tensor]:
        """``[x, s_1, ..., s_n]``: the layers of a frame as (B, n_l) views."""
        return [x] + [frame[:, self.col[l]:self.col[l] + self.sizes[l]] for l in range(1, self.top + 1)]


def plan_key(spec: DenseSpec, device: torch.device, blocks: Blocks) -> tuple:
    """What a plan depends on: the device, the tiles and the parameters' identities
    (a replaced parameter rebuilds it)."""
    params = list(spec.matrices.values()) + [b for b in spec.biases if b is not None]
    if spec.readout is not None:  # W_f, b_f (M_f may be a fresh transposed view: not an identity)
        params += [p for p in spec.readout[:2] if p is not None]
    return ("dense-plan", device, blocks, tuple(id(p) for p in params))


class DenseTriton:
    """One call's Triton engine over a cached ``Plan``; the interface of
    ``DenseReference``, plus ``prepare`` (pack the weights, bind the grads)."""

    def __init__(self, spec: DenseSpec, plan: Plan, *, precision: str, persistent: bool, check_every: int):
        self.spec, self.plan, self.precision = spec, plan, precision
        self.persistent, self.check_every = persistent, check_every
        self.relax_k, self.update_k = kernel_module("relax"), kernel_module("update")
        self.accumulate = True
        self.w: Optional[Tensor] = None  # the packed weights (``pack``)

    def prepare(self, x: Tensor, *, graph: bool = False) -> None:
        """Before a step: bind every ``.grad`` to the plan's buffer and pack the weights.
        ``graph``: the captured step always accumulates, so fresh grads start at zero,
        and packs the weights itself (each replay), so nothing is packed here."""
        self.accumulate = self.plan.grads.bind()
        if not self.accumulate:
            if graph:
                self.plan.grads.flat.zero_()
                self.accumulate = True
            elif self.plan.n_link_params < len(self.plan.grads.params):
                # the update kernel overwrites the links' slices; the readout's are added to
                self.plan.grads.flat[self.plan.grads.slices[self.plan.n_link_params][0]:].zero_()
        if not graph:
            self.pack()

    def graph_key(self) -> tuple:
        """What a captured step of this engine bakes in beyond the net's options:
        precision, persistent kernels, tiles."""
        return (self.precision, self.persistent, self.plan.blocks)

    def graph_owner(self) -> tuple:
        """The buffers a captured step writes: the plan (frames, packed weights, grads)
        at its current generation (bumped when it drops frames)."""
        return (self.plan, self.plan.generation)

    def pack(self) -> None:
        """Copy the weights into the plan's packed buffers (inside a captured graph too)."""
        self.w, self.b = self.plan.pack(self.spec, self.precision)

    def grad_buffer(self) -> GradBuffer:
        return self.plan.grads

    def _phase(self, tag: str, start: Optional[Tensor], steps: int, *, nudge: int = 0, beta: float = 0.0,
               ramp: bool = False, tol: Optional[float] = None, schedule: str = "synchronous",
               **operands) -> tuple[Tensor, int]:
        """Up to ``steps`` steps from the frame ``start`` (None: zero states): (frame,
        steps run). ``ramp``: step t (0-based) is nudged by ``(t + 1) * beta``, a kernel
        argument like ``beta`` (no recompile). ``schedule``: ``"alternating"`` runs each
        step as one launch per group of layers (``Plan.group_tiles``), into the same
        output frame."""
        plan, bl, relax_k = self.plan, self.plan.blocks, self.relax_k
        alternating = self.spec.topology.update_order(schedule) is not None  # validates the name too
        frames = plan.frames(tag, self.x.shape[0])
        common = dict(activation=self.spec.activation, nudge=nudge, top=plan.top, beta=beta,
                      precision=self.precision, block_n=bl.relax_n, **operands)
        if alternating:
            common["alternating"] = True
        if self.persistent and tol is None:  # the whole phase in one launch
            tiles = plan.phase_tiles if alternating else plan.tiles
            return relax_k.relax_phase(start, frames, self.drive, self.w, self.b, tiles, plan.layers, plan.terms,
                                       steps, from_zero=start is None, block_b=bl.phase_b, block_k=bl.phase_k,
                                       num_warps=bl.phase_warps, beta_growth=beta if ramp else 0.0,
                                       n_first=plan.n_first, **common), steps
        common.update(block_b=bl.relax_b, block_k=bl.relax_k, num_warps=bl.num_warps)
        # one launch per step (synchronous) or per group and step, each with its tile table
        # and its rows of the squared changes; ``delta.sum(0)``: the whole step's, per sample
        if alternating:
            delta, deltas = plan.group_delta(self.x.shape[0])
            launches = list(zip(plan.group_tiles, deltas))
        else:
            delta, launches = self.delta, [(plan.tiles, self.delta)]
        cur = start
        for t in range(steps):
            out = frames[t % 2]
            track = tol is not None and (t + 1) % self.check_every == 0
            if ramp:
                common["beta"] = beta * (t + 1)
            for tiles, rows in launches:
                relax_k.relax_step(cur if cur is not None else out, out, self.drive, self.w, self.b, tiles,
                                   plan.layers, plan.terms, delta=rows if track else None, skip_terms=cur is None,
                                   **common)
            cur = out
            if track and delta.sum(0).max().item() < tol * tol:  # one host sync per check
                return cur, t + 1
        return cur, steps

    def free(self, x: Tensor, T: int, tol: Optional[float] = None, schedule: str = "synchronous"):
        """Free phase from zero: (frame (B, N), steps run); steps synchronous or
        alternating (``schedule``)."""
        if self.w is None:  # a free phase alone (relax): nothing packed yet
            self.pack()
        self.x = x.contiguous()
        C = self.spec.readout[0].shape[0] if self.spec.readout is not None else self.plan.sizes[self.plan.top]
        self.delta, self.logits_buf, self.err_buf, self.neuron_err = self.plan.scratch(x.shape[0], C)
        self.drive = self.spec.input_drive(self.x)
        frame, t = self._phase("free", None, T, tol=tol, schedule=schedule)
        # both paths ping-pong (step i writes frames[i % 2]): the other frame holds the step
        # before the last (zeros: t = 1)
        prev = self.plan.frames("free", x.shape[0])[t % 2] if t >= 2 else None
        self.residual = relative_residual([frame], [prev])
        return frame, t

    def readout_input(self, frame: Tensor) -> Tensor:
        return frame[:, self.plan.col[self.plan.top]:]

    def readout(self, frame: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(out, error) of the free frame: logits and ``y - p`` by the readout kernel
        (P-EP: the output rates and ``y - s_out``)."""
        top = self.readout_input(frame)
        if self.spec.readout is None:
            torch.sub(target, top, out=self.neuron_err)
            return top.clone(), self.neuron_err
        W_f, b_f, _ = self.spec.readout
        bl = self.plan.blocks
        self.relax_k.readout(frame, self.plan.col[self.plan.top], top.shape[1], W_f.detach(),
                             None if b_f is None else b_f.detach(), target.contiguous(), self.logits_buf,
                             self.err_buf, precision=self.precision, block_b=bl.relax_b, block_k=bl.relax_k,
                             num_warps=bl.num_warps)
        return self.logits_buf.clone(), self.err_buf

    def nudged(self, free: Tensor, target: Tensor, error: Tensor, beta: float, K: int, frozen: bool,
               tol: Optional[float], tag: str, ramp: bool = False, schedule: str = "synchronous"):
        """A nudged phase from the free frame: (frame, steps run). ``error`` is the free
        phase's (from ``readout``), used as it is when ``frozen``; ``ramp``: step k is
        nudged by ``k * beta``; ``schedule`` as ``free``'s."""
        r = self.relax_k
        target = target.contiguous()
        if self.spec.readout is None:
            return self._phase(tag, free, K, nudge=r.NUDGE_NEURON_GIVEN if frozen else r.NUDGE_NEURON, beta=beta,
                               ramp=ramp, tol=tol, schedule=schedule, target=target, error=error)
        W_f, b_f, M_f = self.spec.readout
        return self._phase(tag, free, K, nudge=r.NUDGE_SOFTMAX_GIVEN if frozen else r.NUDGE_SOFTMAX, beta=beta,
                           ramp=ramp, tol=tol, schedule=schedule, target=target, W_f=W_f.detach(),
                           b_f=None if b_f is None else b_f.detach(), M_f=M_f.detach(), error=error)

    def update(self, rule: str, a: Tensor, b: Tensor, free: Tensor, coefs: list[float]) -> None:
        """Every trained link's update (and bias) in one launch, into the grad buffer."""
        bl, plan = self.plan.blocks, self.plan
        self.update_k.contrastive_update(a, b, free, self.x, plan.grads.flat, plan.up_tiles, plan.link_table,
                                         plan.coefs(coefs), rule=rule, accumulate=self.accumulate,
                                         precision=self.precision, block_m=bl.update_m, block_n=bl.update_n,
                                         block_b=bl.update_b, num_warps=bl.update_warps)

    def views(self, frame: Tensor, x: Tensor) -> list[Tensor]:
        return self.plan.state_views(frame, x)
