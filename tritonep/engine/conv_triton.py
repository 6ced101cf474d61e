"""The Triton engine of the conv nets: ``conv_reference``'s relaxation with one
fused epilogue kernel (``tritonep.kernels.conv``) per conv layer and step.

Per step and conv layer l, the forward conv of ``O_{l-1}`` and the transposed conv
of ``s_{l+1}`` run in cuDNN (torch); ``conv_epilogue`` then adds bias, the scaled
feedback and the nudge, unpools them at the current maxima, applies rho and pools
the new state with its indices, in one pass. The updates and the readout are the
reference's (cuDNN weight-gradient correlations). A *frame* holds, per layer,
``s_l``, ``O_l`` and the int32 indices; each phase ping-pongs between two frames
(the free phase's last frame is read, never written, by the nudged phases). The
P-EP output layer (dense, C units) is updated by torch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference as ref
from .backend import kernel_module
from .conv_reference import ConvReference, ConvSpec
from .grads import GradBuffer
from .interface import relative_residual


class ConvFrames:
    """The frames of one net for one batch size on one device, reused across calls."""

    def __init__(self, spec: ConvSpec, batch: int, device: torch.device):
        self.frames: dict = {}
        self.batch, self.device, self.spec = batch, device, spec

    def get(self, tag: str) -> dict:
        f = self.frames.get(tag)
        if f is None:
            spec, B = self.spec, self.batch
            f = {"s": [None], "o": [None], "idx": [None]}
            for l in range(1, spec.topology.n_state + 1):
                f["s"].append(torch.empty(B, *spec.maps[l], device=self.device))
                pooled = spec.pools[l] > 1
                f["o"].append(torch.empty(B, *spec.pooled[l], device=self.device) if pooled else None)
                f["idx"].append(torch.empty(B, *spec.pooled[l], device=self.device, dtype=torch.int32)
                                if pooled else None)
            self.frames[tag] = f
        return f


class ConvTriton(ConvReference):
    """One call's conv Triton engine: the reference's interface, with ``free`` and
    ``nudged`` run by the fused epilogue; no early stopping (``tol``)."""

    def __init__(self, spec: ConvSpec, frames: ConvFrames, grads: GradBuffer, check_every: int = 5):
        super().__init__(spec, check_every)
        self.k, self.frames, self.grads = kernel_module("conv"), frames, grads

    def prepare(self, x: Tensor, *, graph: bool = False) -> None:
        """Before a step. ``graph``: a captured step adds into fixed buffers, so every
        ``.grad`` is bound to one (fresh ones zeroed)."""
        if graph and not self.grads.bind():
            self.grads.flat.zero_()

    def pack(self) -> None:
        """Nothing to pack: the convolutions read the parameters themselves."""

    def graph_key(self) -> tuple:
        """What a captured step bakes in beyond the net's options: its frames (one set
        per batch size), cuDNN's and cuBLAS's TF32 switches (read at each launch)."""
        return (id(self.frames), torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)

    def graph_owner(self) -> tuple:
        """The buffers every captured step writes: the grad buffer. (Frames are never
        dropped but with the net's cached buffers, which drop the graphs too.)"""
        return (self.grads,)

    def grad_buffer(self) -> GradBuffer:
        return self.grads

    @staticmethod
    def _sent(f: dict, l: int) -> Tensor:
        return f["s"][l] if f["o"][l] is None else f["o"][l]

    def fused_step(self, cur: Optional[dict], nxt: dict, x: Tensor, drive: Tensor, nudge=None,
                   order=None) -> None:
        """nxt = step(cur); cur None: the first step from zero states. order: groups of
        layers updated one after the other (``Topology.update_order``), a group reading
        the earlier groups' new states from ``nxt``; None: synchronous."""
        spec = self.spec
        n, B = spec.topology.n_state, x.shape[0]
        done: set = set()  # layers already updated this step: read from nxt
        for group in (order if order is not None else [range(1, n + 1)]):
            for l in group:
                self._layer(l, cur, nxt, done, x, drive, nudge, B)
            done.update(group)

    def _layer(self, l: int, cur: Optional[dict], nxt: dict, done: set, x: Tensor, drive: Tensor, nudge,
               B: int) -> None:
        """Layer l's new state into ``nxt``: sources in ``done`` from ``nxt``, the rest
        from ``cur`` (None: zero, so they add nothing)."""
        spec = self.spec
        n = spec.topology.n_state

        def frame(src):
            return nxt if src in done else cur

        A, g1, scale1 = (drive if l == 1 else None), None, 1.0
        fb_terms = []
        for k in self.incoming[l]:
            f = frame(k.src) if k.src else None
            if k.src and f is None:  # a zero state sends nothing
                continue
            if k.kind == "forward":
                term = self.link_forward(k.weight, self._sent(f, k.src) if k.src else x)
                A = term.mul_(k.scale) if A is None else A.add_(term, alpha=k.scale)
            else:
                fb_terms.append((k.scale, self.link_transpose(k.weight, f["s"][k.src])))
        if len(fb_terms) == 1:
            scale1, g1 = fb_terms[0]
        elif fb_terms:
            g1 = fb_terms[0][1].mul_(fb_terms[0][0])
            for sc, t in fb_terms[1:]:
                g1.add_(t, alpha=sc)
        bias = spec.biases[l] if l > 1 else None  # layer 1's bias is in its drive
        if l > spec.n_conv:  # the P-EP output neurons: dense, C units, in torch
            pre = A if A is not None else torch.zeros_like(nxt["s"][l])
            if bias is not None:
                pre = pre + bias
            if nudge is not None and cur is not None:
                pre = nudge.add_to(pre, cur["s"][l], inplace=False)
            ref.activate(spec.activation, pre, out=nxt["s"][l])
            return
        g2, scale2 = None, 1.0
        if nudge is not None and l == n and cur is not None:
            e = nudge.frozen_error if nudge.frozen_error is not None else nudge.error(
                self._sent(cur, l).flatten(1))
            g2, scale2 = (e @ nudge.M_f).view(B, *spec.pooled[l]), nudge.beta
        if A is None:
            A = torch.zeros_like(nxt["s"][l])
        self.k.conv_epilogue(
            A.contiguous(), nxt["s"][l], pool=spec.pools[l], activation=spec.activation,
            bias=None if bias is None else bias.detach(), g1=g1, scale1=scale1, g2=g2, scale2=scale2,
            idx_in=cur["idx"][l] if cur is not None else None, o_out=nxt["o"][l], idx_out=nxt["idx"][l])

    def _phase(self, start: Optional[dict], tag: str, steps: int, nudge=None, schedule: str = "synchronous") -> dict:
        frames = (self.frames.get(tag + "0"), self.frames.get(tag + "1"))
        order = self.spec.topology.update_order(schedule)
        cur = start
        for t in range(steps):
            self.fused_step(cur, frames[t % 2], self.x, self.drive, nudge.at(t) if nudge is not None else None,
                            order)
            cur = frames[t % 2]
        return cur

    @staticmethod
    def _no_tol(tol) -> None:
        if tol is not None:
            raise ValueError("tol (early stopping) is not supported on the conv Triton path; use backend='torch'")

    def free(self, x: Tensor, T: int, tol: Optional[float] = None, schedule: str = "synchronous"):
        self._no_tol(tol)
        self.x = x
        self.drive_list = self.drives(x)
        self.drive = self.drive_list[1].contiguous()
        self.free_frame = self._phase(None, "free", T, schedule=schedule)
        # the phase ping-pongs: the other frame holds the step before the last (zeros: T = 1)
        prev = self.frames.get("free" + str(T % 2))["s"][1:] if T >= 2 else [None] * (len(self.free_frame["s"]) - 1)
        self.residual = relative_residual(self.free_frame["s"][1:], prev)
        return self._states(self.free_frame), T

    def nudged(self, free, target: Tensor, error: Tensor, beta: float, K: int, frozen: bool,
               tol: Optional[float], tag: str, ramp: bool = False, schedule: str = "synchronous"):
        self._no_tol(tol)
        f = self._phase(self.free_frame, tag, K, self.nudge(free, target, beta, frozen, ramp), schedule)
        return self._states(f), K

    def _states(self, f: dict) -> list[Tensor]:
        """A frame's states ``[x, s_1, ..., s_n]``, as the reference holds them."""
        return [self.x] + f["s"][1:]
