"""Convolutional FRE-RNN (the paper's Algorithm S2) on the same API as ``EPNet``.

State layers are feature maps ``s_l`` (B, C_l, H_l, W_l), firing rates after the
activation (hard sigmoid by default), updated synchronously. Each conv layer may be
followed by a max-pooling ``P_l`` (kernel = stride = p_l); what layer l sends on
is its pooled map ``O_l = P_l(s_l)`` (``O_0`` is the input). One step reads the
previous step's states only:

    pre_l = conv_l(O_{l-1}) + b_l                                   (layer 1: computed once per batch)
          + alpha * sum_{skips i -> l} skip_il(O_i)
          + Unpool_l( beta_l * ConvT_{l+1}(s_{l+1})                 (feedback through W_{l+1}^T)
                      + beta_l * sum_{skips l -> j} SkipT_lj(s_j)
                      + beta_f * reshape(W_f^T (y - softmax(logits)))   on the top layer, nudged phase )
    s_l   = rho(pre_l)
    logits = W_f flatten(O_L) + b_f                                  (softmax readout, outside the dynamics)

``Unpool_l`` puts each pooled value back where ``P_l(s_l)`` took its maximum (the
indices of the current state), so every feedback term is the exact transpose of
the forward map it mirrors. With ``output="neuron"`` (P-EP) the last layer is a
dense state layer of C output neurons instead, nudged by ``beta (y - s_out)`` and
feeding back through ``W_f^T``.

Which layers connect, with which scale, is the ``tritonep.topology`` of the FC
nets (one ``Link`` per connection, keyed ``layers.i`` / ``skips.i_j``). This module
owns the parameters and checks input; the maths is in
``tritonep.engine.conv_reference`` and ``tritonep.engine.conv_triton`` (cuDNN
convolutions with one fused Triton epilogue per layer).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .engine.conv_reference import ConvReference, ConvSpec
from .engine.conv_triton import ConvFrames, ConvTriton
from .engine.grads import GradBuffer
from .layers import Conv, Dense, as_conv_entry, parse_arch
from .module import EPModule
from .topology import Topology, layered

# CIFAR-10 input normalisation of the paper's code (its std is 3x the usual one)
CIFAR10_NORM = ((0.4914, 0.4822, 0.4465), (3 * 0.2023, 3 * 0.1994, 3 * 0.2010))
INPUT_NORMS = {"cifar10": CIFAR10_NORM}


class ConvEPNet(EPModule):
    """A convolutional recurrent net trained by Equilibrium Propagation (FRE-RNN).

    ``ConvEPNet.from_arch("32c5-P2-64c5-P2-FC10", input_shape=(1, 28, 28))`` is the
    paper's MNIST net; or give the stack like an ``nn.Sequential``:
    ``ConvEPNet([Conv(1, 32, 5, pool=2), Conv(32, 64, 5, pool=2), Dense(1024, 10, bias=True)],
    input_shape=(1, 28, 28))`` (``nn.Conv2d``, ``nn.MaxPool2d`` and ``nn.Linear`` work too;
    the last entry may be the number of classes).

    Same methods and options as ``EPNet`` (``ep_step``, ``forward``, ``relax``, ``T``,
    ``K``, ``rule``, ``nudging``, ``error``, ``normalize``, ``tol``, ``backend``), and:

    Args:
        layers: conv layers, then the readout (softmax) or the output layer (P-EP).
        input_shape: (C, H, W) of one input; inputs may also come flattened (B, C*H*W).
        feedback: beta_l, scale of the feedback into conv layer l (float, or one per
            layer 1..n-1 of the state layers). The paper: 0.01; P-EP: 1.
        nudge: beta_f. activation: ``"hard_sigmoid"`` (default, the paper's), ``"tanh"``,
            ``"pep_sigmoid"``.
        residual: links between conv stages in both directions (int k or (i, j) pairs,
            as ``EPNet``), each a kernel = stride = r convolution from ``O_i`` into layer j.
        alpha: scale of the forward skip links.
        output: ``"softmax"`` or ``"neuron"`` (P-EP: dense output neurons relax with the
            net, MSE cost; the last layer must then be a Dense).
        input_norm: ``(mean, std)`` per channel applied to every input, or
            ``"cifar10"`` (the paper's code: std 3x the usual); None: none.
        cuda_graph: on CUDA with the Triton backend, replay each ``ep_step`` as one
            captured CUDA graph (as ``EPNet``; 3-4x faster than plain launches on an H200).
        schedule: ``"synchronous"`` or ``"alternating"`` (odd layers, then even layers), as ``EPNet``.
        nudge_schedule, readout_error: as ``EPNet`` (the ramp of the authors' graph
            model, and the readout updated from the nudged phase's error).
    """

    def __init__(self, layers: Sequence[Union[nn.Module, int]], *, input_shape: Sequence[int],
                 feedback: Union[float, Sequence[float]] = 0.01, nudge: float = 0.1, activation: str = "hard_sigmoid",
                 residual=None, alpha: float = 1.0, output: str = "softmax", input_norm=None,
                 T: int = 20, K: int = 10, rule: str = "fre", nudging: str = "positive", error: str = "dynamic",
                 normalize: bool = False, tol: Optional[float] = None, check_every: int = 5,
                 backend: str = "auto", cuda_graph: bool = True, nudge_schedule: str = "constant",
                 readout_error: str = "free", schedule: str = "synchronous"):
        super().__init__(output=output, activation=activation, nudge=nudge, T=T, K=K, rule=rule, nudging=nudging,
                         error=error, normalize=normalize, backend=backend, tol=tol, check_every=check_every,
                         cuda_graph=cuda_graph, nudge_schedule=nudge_schedule, readout_error=readout_error,
                         schedule=schedule)
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
        if shape is None or len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                   for v in shape):
            raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
        self.input_shape = shape

        # ---- the stack: convs (each with its pooling), then the readout / output layer
        entries = [as_conv_entry(m) for m in layers]
        convs: list[Conv] = []
        head = None
        for i, e in enumerate(entries):
            if head is not None:
                raise ValueError("the readout (Dense / nn.Linear / number of classes) must be the last layer")
            if isinstance(e, Conv):
                convs.append(e)
            elif isinstance(e, tuple):  # ("pool", k) after a conv
                if not convs or convs[-1].pool != 1:
                    raise ValueError(f"layer {i}: a max-pooling must follow a conv layer (one pooling per conv)")
                convs[-1].pool = e[1]
            else:
                head = e
        if not convs:
            raise ValueError("a ConvEPNet needs at least one conv layer")
        if head is None:
            raise ValueError("the stack must end with the readout: a Dense / nn.Linear or the number of classes")

        # ---- map sizes: s_l (C_l, H_l, W_l) and its pooled O_l
        self.maps: list[tuple[int, ...]] = [shape]       # state shapes, index 0 = input
        self.pooled: list[tuple[int, ...]] = [shape]     # what layer l sends on
        for l, c in enumerate(convs, start=1):
            cin, h, w = self.pooled[-1]
            if c.in_channels != cin:
                raise ValueError(f"conv layer {l} takes {c.in_channels} channels but gets {cin} "
                                 f"({'the input' if l == 1 else f'conv layer {l - 1}'} has {cin})")
            kh, kw = c.kernel_size
            ph, pw = c.padding
            H, W = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
            if H < 1 or W < 1:
                raise ValueError(f"conv layer {l}: a {kh}x{kw} kernel with padding {ph} does not fit its "
                                 f"{h}x{w} input maps")
            if H < c.pool or W < c.pool:
                raise ValueError(f"conv layer {l}: its {H}x{W} maps are smaller than its {c.pool}x{c.pool} pooling")
            self.maps.append((c.out_channels, H, W))
            self.pooled.append((c.out_channels, H // c.pool, W // c.pool))
        n_flat = math.prod(self.pooled[-1])
        if isinstance(head, int):
            head = Dense(n_flat, head, bias=True)
        if head.in_features != n_flat:
            raise ValueError(f"the readout takes {head.in_features} features but the last conv layer gives "
                             f"{self.pooled[-1][0]}x{self.pooled[-1][1]}x{self.pooled[-1][2]} = {n_flat}")
        self.n_conv = len(convs)
        self.layers = nn.ModuleList(convs + [head])
        if output == "neuron":
            self.maps.append((head.out_features,))
            self.pooled.append((head.out_features,))

        # ---- links: the FC nets' topology over the flattened layer sizes
        state_sizes = [math.prod(m) for m in self.maps]
        self.topology: Topology = layered(state_sizes, feedback=feedback, alpha=alpha, residual=residual)
        self.config = dict(feedback=feedback, residual=residual, alpha=alpha, output=output)
        self.skips = nn.ModuleDict()
        self._stride: dict[str, int] = {}
        for i, j in self.topology.skip_pairs():
            if j > self.n_conv:
                raise ValueError(f"residual link ({i}, {j}): skip links join conv layers (1..{self.n_conv})")
            (ci, hi, wi), (cj, hj, wj) = self.pooled[i], self.maps[j]
            r = hi // hj
            if r < 1 or hi != r * hj or wi != r * wj:
                raise ValueError(f"residual link ({i}, {j}): layer {i} sends {hi}x{wi} maps, not an integer multiple "
                                 f"of layer {j}'s {hj}x{wj}")
            self.skips[f"{i}_{j}"] = nn.Conv2d(ci, cj, r, stride=r, bias=False)
            self._stride[f"skips.{i}_{j}"] = r
        if isinstance(input_norm, str):
            if input_norm not in INPUT_NORMS:
                raise ValueError(f"unknown input_norm {input_norm!r}; expected one of {tuple(INPUT_NORMS)} or "
                                 "(mean, std)")
            input_norm = INPUT_NORMS[input_norm]
        if input_norm is not None:
            mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in input_norm)
            if mean.numel() != shape[0] or std.numel() != shape[0] or not bool((std > 0).all()):
                raise ValueError(f"input_norm must give {shape[0]} means and {shape[0]} positive stds")
            self.register_buffer("input_mean", mean.view(-1, 1, 1))
            self.register_buffer("input_std", std.view(-1, 1, 1))
        else:
            self.input_mean = self.input_std = None

    @classmethod
    def from_arch(cls, spec: str, *, input_shape: Sequence[int], classes: Optional[int] = None, **options):
        """Build from an architecture string, e.g. ``"32c3p1-P2-64c3p1-P2-128c3p1-P2-FC10"``
        (see ``parse_arch``); ``classes`` if the string has no ``FC`` token (default 10)."""
        convs, fc = parse_arch(spec)
        if fc is not None and classes is not None and fc != classes:
            raise ValueError(f"{spec!r} ends in FC{fc} but classes={classes}")
        layers: list = []
        cin = int(input_shape[0]) if len(input_shape) == 3 else None
        for ch, k, pad, p in convs:
            layers.append(Conv(cin, ch, k, padding=pad, pool=p))
            cin = ch
        layers.append(fc or classes or 10)
        return cls(layers, input_shape=input_shape, **options)

    # ------------------------------------------------------------------ structure
    def matrix(self, key: str) -> Tensor:
        """The weight a link names (``layers.i`` or ``skips.i_j``)."""
        group, name = key.split(".", 1)
        return (self.layers[int(name)] if group == "layers" else self.skips[name]).weight

    def pool_size(self, l: int) -> int:
        """Pooling after state layer l (1: none; the input and dense layers have none)."""
        return self.layers[l - 1].pool if 1 <= l <= self.n_conv else 1

    def spec(self) -> ConvSpec:
        """What the conv engines read of this net now."""
        topo = self.topology
        conv_args = {k: dict(stride=r) for k, r in self._stride.items()}
        conv_args.update({f"layers.{i}": dict(padding=self.layers[i].padding) for i in range(self.n_conv)})
        return ConvSpec(topology=topo, activation=self.activation, output=self.output, n_conv=self.n_conv,
                        maps=self.maps, pooled=self.pooled, pools=[self.pool_size(l) for l in range(topo.n_state + 1)],
                        conv_args=conv_args, matrices={k.weight: self.matrix(k.weight) for k in topo.links},
                        biases=[None] + [self.layer_bias(l) for l in range(1, topo.n_state + 1)],
                        readout=self.readout_matrices() if self.output == "softmax" else None)

    def reference_engine(self) -> ConvReference:
        return ConvReference(self.spec(), self.check_every)

    def triton_engine(self, x: Tensor) -> ConvTriton:
        spec, cached = self.spec(), self.backend_state.cached
        frames = cached(("conv-frames", x.shape[0], x.device), lambda: ConvFrames(spec, x.shape[0], x.device), limit=8)
        params = list(self.parameters())
        grads = cached(("conv-grads", x.device, tuple(id(p) for p in params)), lambda: GradBuffer(params, x.device))
        return ConvTriton(spec, frames, grads, self.check_every)

    def _reference_only(self, tol: Optional[float]) -> bool:
        return tol is not None  # the conv Triton path has no early stopping

    # ------------------------------------------------------------------ validation
    def check_input(self, x: Tensor) -> Tensor:
        """(B, C, H, W) or (B, C*H*W) floats -> (B, C, H, W), normalised if the net says so."""
        if isinstance(x, Tensor):
            C, H, W = self.input_shape
            if x.dim() == 4 and tuple(x.shape[1:]) != (C, H, W):
                what = (f"{x.shape[1]} channels where it takes {C}" if x.shape[1] != C
                        else f"{x.shape[2]}x{x.shape[3]} maps where it takes {H}x{W}")
                raise ValueError(f"input of shape {tuple(x.shape)} does not fit this net: {what} "
                                 f"(input_shape {self.input_shape}; give (batch, {C}, {H}, {W}) or (batch, "
                                 f"{C * H * W}))")
            if not (x.dim() == 4 or (x.dim() == 2 and x.shape[1] == C * H * W)):
                raise ValueError(f"input must have shape (batch, {C}, {H}, {W}) or (batch, {C * H * W}) flattened, "
                                 f"got {tuple(x.shape)}")
        self._check_common(x)
        x = self._check_finite(x.reshape(x.shape[0], *self.input_shape).to(self.layers[0].weight.dtype))
        if self.input_mean is not None:
            x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        return x

    # ------------------------------------------------------------------ the reference's maps, for analysis and tests
    def step(self, states: Sequence[Tensor], drives, *, nudge=None, skip_terms: bool = False) -> list[Tensor]:
        """One synchronous step of the reference (out of place): see ``ConvReference.step``."""
        return self.reference_engine().step(states, drives, nudge=nudge, skip_terms=skip_terms)

    def make_nudge(self, states: Sequence[Tensor], target: Tensor, beta: float, frozen: bool):
        """The top layer's nudge of strength ``beta`` (see ``ConvReference.nudge``)."""
        return self.reference_engine().nudge(states, target, beta, frozen)

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, output={self.output!r}, activation={self.activation!r}, "
                f"feedback={self.config['feedback']}, residual={self.config['residual']}, nudge={self.nudge}, "
                f"T={self.T}, K={self.K}, rule={self.rule!r}")
