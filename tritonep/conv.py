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
the forward map it mirrors: ConvT is the adjoint of the convolution, Unpool the
adjoint of max-pooling at fixed indices. With ``output="neuron"`` (P-EP) the last
layer is a dense state layer of C output neurons instead, nudged by
``beta (y - s_out)`` and feeding back through ``W_f^T``.

Which layers connect, with which scale, is the ``tritonep.topology`` of the FC
nets (one ``Link`` per connection, keyed ``layers.i`` / ``skips.i_j``); only the
maps differ: a link applies ``conv2d`` forward, ``conv_transpose2d`` as feedback
and the weight-gradient correlation in the rule (``dW = corr(O_pre^0, s_post^beta
- s_post^0)``, the conv form of ``(s_post^beta - s_post^0) s_pre^0^T``).
Residual links between stages are ``kernel = stride = r`` convolutions where the
source's pooled map is r times larger than the destination's map.

The Triton path (``backend="triton"``) keeps the convolutions in cuDNN and fuses
each layer's epilogue (bias, feedback, unpooled nudge, activation, pooling with
its indices) into one kernel, ``tritonep.kernels.conv``.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reference as ref
from .net import EPNet, Dense, _accumulate_bias, _choice, _grad, _positive_float, _positive_int
from .topology import Topology, layered

OUTPUTS = ("softmax", "neuron")
ERRORS = ("dynamic", "frozen")
BACKENDS = ("auto", "torch", "triton")
# CIFAR-10 input normalisation of the paper's code (its std is 3x the usual one)
CIFAR10_NORM = ((0.4914, 0.4822, 0.4465), (3 * 0.2023, 3 * 0.1994, 3 * 0.2010))
INPUT_NORMS = {"cifar10": CIFAR10_NORM}


class Conv(nn.Conv2d):
    """A conv state layer: ``s = rho(conv2d(in, weight, padding) + bias + feedback)``,
    sent on through a ``pool x pool`` max-pooling (stride ``pool``; 1 = none).

    weight: (out_channels, in_channels, k, k), bias: (out_channels,), PyTorch's
    default ``nn.Conv2d`` initialisation. Stride 1, no dilation, no groups.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, padding: int = 0, pool: int = 2,
                 bias: bool = True):
        for name, v, lo in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("kernel_size", kernel_size, 1), ("padding", padding, 0), ("pool", pool, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"Conv {name} must be an int >= {lo}, got {v!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.pool = pool

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pool={self.pool}"


def parse_arch(spec: str) -> tuple[list[tuple[int, int, int, int]], Optional[int]]:
    """``"32c5-P2-64c5-P2-FC10"`` -> ([(channels, kernel, padding, pool), ...], classes).

    Tokens, ``-``-separated: ``<C>c<k>`` or ``<C>c<k>p<pad>`` a conv layer, ``P<k>`` a
    max-pooling after the conv before it, ``FC<C>`` the readout (last, optional).
    """
    convs: list[list[int]] = []
    classes = None
    for tok in str(spec).split("-"):
        m = re.fullmatch(r"(\d+)c(\d+)(?:p(\d+))?", tok)
        if m and classes is None:
            convs.append([int(m[1]), int(m[2]), int(m[3] or 0), 1])
            continue
        m = re.fullmatch(r"P(\d+)", tok)
        if m and convs and convs[-1][3] == 1 and classes is None:
            convs[-1][3] = int(m[1])
            continue
        m = re.fullmatch(r"FC(\d+)", tok)
        if m and convs and classes is None:
            classes = int(m[1])
            continue
        raise ValueError(f"bad conv architecture {spec!r} at {tok!r}: expected tokens like 32c5, 64c3p1, P2 "
                         f"(after a conv), FC10 (last), e.g. '32c5-P2-64c5-P2-FC10'")
    if not convs:
        raise ValueError(f"conv architecture {spec!r} has no conv layer")
    return [tuple(c) for c in convs], classes


def _as_layer(layer):
    """A stack entry as Conv / Dense / pool size (int from nn.MaxPool2d) / classes (int)."""
    if isinstance(layer, (Conv, Dense)):
        return layer
    if isinstance(layer, nn.Conv2d):  # keep the user's weights
        ok = (layer.stride == (1, 1) and layer.dilation == (1, 1) and layer.groups == 1
              and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
              and layer.kernel_size[0] == layer.kernel_size[1] and layer.padding[0] == layer.padding[1])
        if not ok:
            raise ValueError(f"ConvEPNet takes square stride-1 convolutions with symmetric zero padding, got {layer}")
        c = Conv(layer.in_channels, layer.out_channels, layer.kernel_size[0], padding=layer.padding[0], pool=1,
                 bias=layer.bias is not None)
        c.load_state_dict(layer.state_dict())
        return c
    if isinstance(layer, nn.MaxPool2d):
        k, s = layer.kernel_size, layer.stride
        k = k if isinstance(k, int) else k[0]
        s = s if isinstance(s, int) else s[0]
        if layer.kernel_size not in (k, (k, k)) or s != k or layer.padding not in (0, (0, 0)) or layer.ceil_mode \
                or layer.dilation not in (1, (1, 1)):
            raise ValueError(f"ConvEPNet takes max-pooling with stride = kernel, no padding, floor mode; got {layer}")
        return ("pool", k)
    if isinstance(layer, nn.Linear):
        d = Dense(layer.in_features, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            d.weight.copy_(layer.weight)
            if layer.bias is not None:
                d.bias.copy_(layer.bias)
        return d
    if isinstance(layer, int) and not isinstance(layer, bool) and layer >= 1:
        return layer
    raise TypeError(f"ConvEPNet layers must be tritonep.conv.Conv / nn.Conv2d, nn.MaxPool2d, and a last "
                    f"Dense / nn.Linear (or the number of classes), got {layer!r}")


def pool(s: Tensor, k: int) -> tuple[Tensor, Optional[Tensor]]:
    """Max-pool ``s`` (B, C, H, W) with kernel = stride = k (floor mode) -> (O, indices);
    k = 1 or a dense layer (B, n): (s, None)."""
    if k == 1 or s.dim() != 4:
        return s, None
    return F.max_pool2d(s, k, return_indices=True)


def unpool(g: Tensor, idx: Optional[Tensor], k: int, size: Sequence[int]) -> Tensor:
    """Adjoint of ``pool`` at fixed indices: (B, C, H/k, W/k) -> (B, C, H, W), each value
    where the max was taken, zeros elsewhere (also in rows/columns a floor-mode pool skips)."""
    if idx is None:
        return g
    return F.max_unpool2d(g, idx, k, output_size=tuple(size[-2:]))


class ConvEPNet(nn.Module):
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
            captured CUDA graph (opt-in: checked by the GPU tests, not on CPU).
    """

    def __init__(
        self,
        layers: Sequence[Union[nn.Module, int]],
        *,
        input_shape: Sequence[int],
        feedback: Union[float, Sequence[float]] = 0.01,
        nudge: float = 0.1,
        activation: str = "hard_sigmoid",
        residual=None,
        alpha: float = 1.0,
        output: str = "softmax",
        T: int = 20,
        K: int = 10,
        rule: str = "fre",
        nudging: str = "positive",
        error: str = "dynamic",
        normalize: bool = False,
        input_norm=None,
        backend: str = "auto",
        tol: Optional[float] = None,
        check_every: int = 5,
        cuda_graph: bool = False,
    ):
        super().__init__()
        shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
        if shape is None or len(shape) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                   for v in shape):
            raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
        self.input_shape = shape
        self.output = _choice("output", output, OUTPUTS)
        self.activation = ref.check_activation(activation)
        self.nudge = _positive_float("nudge", nudge)
        self.T, self.K = _positive_int("T", T), _positive_int("K", K)
        self.rule = _choice("rule", rule, ref.RULES)
        self.nudging = _choice("nudging", nudging, ref.NUDGINGS)
        self.error = _choice("error", error, ERRORS)
        self.normalize = bool(normalize)
        self.backend = _choice("backend", backend, BACKENDS)
        self.tol = None if tol is None else _positive_float("tol", tol)
        self.check_every = _positive_int("check_every", check_every)
        self.cuda_graph = bool(cuda_graph)
        self.last_steps: Optional[dict] = None

        # ---- the stack: convs (each with its pooling), then the readout / output layer
        entries = [_as_layer(m) for m in layers]
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
        self._incoming = [self.topology.incoming(l) for l in range(self.n_state + 1)]

    def __getstate__(self):  # deepcopy/pickle: leave the per-device caches behind
        from . import fused

        return fused.getstate(self)

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
    @property
    def n_state(self) -> int:
        """Number of state layers that relax (conv layers, + output neurons for P-EP)."""
        return self.topology.n_state

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    def matrix(self, key: str) -> Tensor:
        """The weight a link names (``layers.i`` or ``skips.i_j``)."""
        group, name = key.split(".", 1)
        return (self.layers[int(name)] if group == "layers" else self.skips[name]).weight

    def layer_bias(self, l: int) -> Optional[Tensor]:
        """Bias of state layer l (that of the layer feeding it)."""
        return self.layers[l - 1].bias

    def pool_size(self, l: int) -> int:
        """Pooling after state layer l (1: none; the input and dense layers have none)."""
        return self.layers[l - 1].pool if 1 <= l <= self.n_conv else 1

    def readout_matrices(self) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """(W_f, b_f, M_f): readout weight (C, n_flat), bias, and the nudge matrix (W_f)."""
        head = self.layers[-1]
        return head.weight, head.bias, head.weight

    # ---- the three maps of a link: forward, its adjoint (feedback), its weight correlation (rule)
    def _conv_args(self, key: str) -> dict:
        if key in self._stride:
            return dict(stride=self._stride[key])
        return dict(padding=self.layers[int(key.split(".")[1])].padding)

    def _is_dense(self, key: str) -> bool:
        return key == f"layers.{self.n_conv}"  # only the P-EP output link is dense inside the dynamics

    def link_forward(self, key: str, o_src: Tensor) -> Tensor:
        """Forward map of a link (no bias): conv2d of the pooled source ``o_src``
        (B, C_src, H', W') -> (B, C_dst, H_dst, W_dst); the dense output link: (B, C)."""
        W = self.matrix(key)
        if self._is_dense(key):
            return o_src.flatten(1) @ W.t()
        return F.conv2d(o_src, W, None, **self._conv_args(key))

    def link_transpose(self, key: str, s_dst: Tensor) -> Tensor:
        """Adjoint of ``link_forward``: the destination's state (B, C_dst, H, W) ->
        a map of the source's pooled shape (B, C_src, H', W')."""
        W = self.matrix(key)
        if self._is_dense(key):
            return (s_dst @ W).view(s_dst.shape[0], *self.pooled[self.n_conv])
        return F.conv_transpose2d(s_dst, W, None, **self._conv_args(key))

    def link_correlation(self, key: str, o_src: Tensor, post: Tensor) -> Tensor:
        """sum over the batch of ``post`` (destination shape) correlated with ``o_src``:
        the gradient of <post, link_forward(o_src)> wrt the weight, shape of the weight."""
        W = self.matrix(key)
        if self._is_dense(key):
            return post.t() @ o_src.flatten(1)
        return torch.nn.grad.conv2d_weight(o_src, W.shape, post, **self._conv_args(key))

    # ------------------------------------------------------------------ validation
    def _check_input(self, x: Tensor) -> Tensor:
        """(B, C, H, W) or (B, C*H*W) floats -> (B, C, H, W), normalised if the net says so."""
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        C, H, W = self.input_shape
        if x.dim() == 4 and tuple(x.shape[1:]) != (C, H, W):
            what = (f"{x.shape[1]} channels where it takes {C}" if x.shape[1] != C
                    else f"{x.shape[2]}x{x.shape[3]} maps where it takes {H}x{W}")
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit this net: {what} "
                             f"(input_shape {self.input_shape}; give (batch, {C}, {H}, {W}) or (batch, {C * H * W}))")
        if not (x.dim() == 4 or (x.dim() == 2 and x.shape[1] == C * H * W)):
            raise ValueError(f"input must have shape (batch, {C}, {H}, {W}) or (batch, {C * H * W}) flattened, "
                             f"got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor (e.g. pixels scaled to [0, 1]), got {x.dtype}")
        W0 = self.layers[0].weight
        if x.device != W0.device:
            raise ValueError(f"input is on {x.device} but the network is on {W0.device}; move one of them")
        x = x.reshape(x.shape[0], C, H, W).to(W0.dtype)
        if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            raise ValueError("input contains NaN or infinite values")
        if self.input_mean is not None:
            x = (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)
        return x

    _check_target = EPNet._check_target  # labels (B,) or probabilities (B, C) -> (B, C)
    loss = EPNet.loss                    # cross-entropy of logits, or P-EP's MSE

    # ------------------------------------------------------------------ dynamics
    def zero_states(self, x: Tensor) -> list[Tensor]:
        """``[x, 0, ..., 0]``: zeros of each state layer's shape."""
        return [x] + [x.new_zeros(x.shape[0], *m) for m in self.maps[1:]]

    def drives(self, x: Tensor) -> list[Optional[Tensor]]:
        """Per state layer, what does not change during the relaxation: the input drive
        ``conv_1(x) + b_1`` (B, C_1, H_1, W_1) for layer 1, the bias (C_l, 1, 1) (or (C,)) after."""
        d: list[Optional[Tensor]] = [None] * (self.n_state + 1)
        d[1] = F.conv2d(x, self.layers[0].weight, self.layers[0].bias, padding=self.layers[0].padding)
        for l in range(2, self.n_state + 1):
            b = self.layer_bias(l)
            d[l] = None if b is None else (b.view(-1, 1, 1) if l <= self.n_conv else b)
        return d

    def pooled_states(self, states: Sequence[Tensor]) -> list[tuple[Tensor, Optional[Tensor]]]:
        """``[(O_l, indices_l)]`` for l = 0..n: what each layer sends on (index 0: the input)."""
        return [(states[0], None)] + [pool(states[l], self.pool_size(l)) for l in range(1, self.n_state + 1)]

    def make_nudge(self, states: Sequence[Tensor], target: Tensor, beta: float, frozen: bool):
        """The nudge of the top layer: ``reference.SoftmaxNudge`` on the flattened pooled
        top map (its error projected back by ``W_f``), or P-EP's ``NeuronNudge``."""
        if self.output == "neuron":
            return ref.NeuronNudge(target, beta, frozen, states[-1])
        W_f, b_f, M_f = self.readout_matrices()
        top = pool(states[self.n_conv], self.pool_size(self.n_conv))[0].flatten(1)
        return ref.SoftmaxNudge(W_f, b_f, M_f, target, beta, frozen, top)

    def step(self, states: Sequence[Tensor], drives: Sequence[Optional[Tensor]], *, nudge=None,
             skip_terms: bool = False) -> list[Tensor]:
        """One synchronous step of every state layer (out of place, so autograd can run
        through it). states: ``[x, s_1, ..., s_n]``; drives: from ``drives``; nudge: from
        ``make_nudge`` or None (free phase); skip_terms: every state is zero (first step)."""
        n = self.n_state
        out = self.pooled_states(states)
        new = [states[0]]
        for l in range(1, n + 1):
            pre = drives[l]
            fb = None  # feedback at the pooled resolution of layer l
            for k in ([] if skip_terms else self._incoming[l]):
                if k.kind == "forward":
                    term = self.link_forward(k.weight, out[k.src][0])
                    pre = term * k.scale if pre is None else pre + k.scale * term
                else:
                    term = k.scale * self.link_transpose(k.weight, states[k.src])
                    fb = term if fb is None else fb + term
            if nudge is not None and l == n:
                if self.output == "neuron":  # the output neurons themselves: + beta (y - s_out)
                    base = pre if pre is not None else states[l].new_zeros(states[l].shape)
                    pre = nudge.add_to(base.expand_as(states[l]), states[l], inplace=False)
                else:
                    e = nudge.frozen_error if nudge.frozen_error is not None else nudge.error(out[l][0].flatten(1))
                    term = (nudge.beta * (e @ nudge.M_f)).view(out[l][0].shape)
                    fb = term if fb is None else fb + term
            if fb is not None:
                fb = unpool(fb, out[l][1], self.pool_size(l), self.maps[l])
                pre = fb if pre is None else pre + fb
            if pre is None:
                pre = states[l].new_zeros(states[l].shape)
            new.append(ref.activate(self.activation, pre.expand_as(states[l])))
        return new

    def _relax(self, states, drives, steps: int, *, nudge=None, tol=None, from_zero: bool = False):
        """``steps`` steps (or fewer, on convergence under ``tol``): (final states, steps run)."""
        cur = list(states)
        for t in range(steps):
            prev = cur
            cur = self.step(cur, drives, nudge=nudge, skip_terms=from_zero and t == 0)
            if tol is not None and (t + 1) % self.check_every == 0:
                if ref.largest_change(cur, prev) < tol:
                    return cur, t + 1
        return cur, steps

    def backend_for(self, x: Tensor) -> str:
        """The backend that runs for input ``x``: ``"triton"`` or ``"torch"`` (``auto``
        with ``tol`` set: the reference, as the Triton conv path has no early stop)."""
        from . import fused

        return fused.resolve_backend(self, x, reference_only=self.tol is not None)

    @torch.no_grad()
    def relax(self, x: Tensor, T: Optional[int] = None, *, tol: Optional[float] = None) -> list[Tensor]:
        """Free phase: T steps from zero with the input clamped. x: (B, C, H, W) or
        flattened. Returns ``[x, s_1, ..., s_n]`` (x normalised, s_l (B, C_l, H_l, W_l))."""
        x = self._check_input(x)
        T = self.T if T is None else _positive_int("T", T)
        tol = self.tol if tol is None else _positive_float("tol", tol)
        from . import fused

        done = None
        if self.backend_for(x) == "triton":
            if tol is not None and self.backend == "triton":
                raise ValueError("tol (early stopping) is not supported on the conv Triton path; use backend='torch'")
            if tol is None:
                done = fused.first_use_guard(self, lambda: _triton_runner(self, x).free(x, T))
        states, t = done if done is not None else self._relax(self.zero_states(x), self.drives(x), T, tol=tol,
                                                               from_zero=True)
        self.last_steps = {"free": t, "nudged": []}
        return states

    def logits(self, states: Sequence[Tensor]) -> Tensor:
        """Softmax logits (B, C) of relaxed states (P-EP: the output neurons' rates)."""
        if self.output == "neuron":
            return states[-1]
        W_f, b_f, _ = self.readout_matrices()
        top = pool(states[self.n_conv], self.pool_size(self.n_conv))[0]
        return ref.readout(top.flatten(1), W_f, b_f)

    def forward(self, x: Tensor, T: Optional[int] = None) -> Tensor:
        """Relax the free phase and return the logits (B, C). No autograd: train with
        ``ep_step``; for BP use ``tritonep.conv.feedforward``."""
        return self.logits(self.relax(x, T)).clone()

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def ep_step(self, x: Tensor, y: Tensor, *, T: Optional[int] = None, K: Optional[int] = None,
                rule: Optional[str] = None, nudging: Optional[str] = None, error: Optional[str] = None,
                normalize: Optional[bool] = None, tol: Optional[float] = None) -> tuple[Tensor, Tensor]:
        """One EP step: free phase, nudged phase(s), local updates added to ``.grad``
        (a descent direction; call ``zero_grad`` between steps, like ``backward``).

        x: (B, C, H, W) (or (B, C*H*W)); y: (B,) labels or (B, C) target probabilities.
        Returns ``(loss, logits)`` of the free phase, detached. See ``EPNet.ep_step``.
        """
        x = self._check_input(x)
        target = self._check_target(y, x.shape[0])
        T = self.T if T is None else _positive_int("T", T)
        K = self.K if K is None else _positive_int("K", K)
        rule = self.rule if rule is None else _choice("rule", rule, ref.RULES)
        nudging = self.nudging if nudging is None else _choice("nudging", nudging, ref.NUDGINGS)
        frozen = (self.error if error is None else _choice("error", error, ERRORS)) == "frozen"
        normalize = self.normalize if normalize is None else bool(normalize)
        tol = self.tol if tol is None else _positive_float("tol", tol)
        sign = 1.0
        if nudging == "random-sign":  # drawn from torch's RNG, like EPNet
            sign = 1.0 if torch.rand(()).item() < 0.5 else -1.0
        args = (T, K, rule, nudging, sign, frozen, normalize, tol)
        if self.cuda_graph and tol is None and x.is_cuda and self.backend_for(x) == "triton" \
                and not self.__dict__.get("_graph_off"):
            done = _graphed(self, x, target, args)
            if done is not None:
                loss, out, (t_free, steps) = done
                self.last_steps = {"free": t_free, "nudged": steps}
                return loss, out
        from . import fused

        done = None
        if self.backend_for(x) == "triton" and (tol is None or self.backend == "triton"):
            done = fused.first_use_guard(self, self._ep_body, x, target, *args)
        if done is None:  # the reference (or an auto net whose Triton path failed on first use)
            done = self._ep_body(x, target, *args, backend="torch")
        loss, out, (t_free, steps) = done
        self.last_steps = {"free": t_free, "nudged": steps}
        return loss, out

    def _ep_body(self, x, target, T, K, rule, nudging, sign, frozen, normalize, tol, backend=None):
        """Phases, rules and readout gradient of ``ep_step`` (arguments validated; no host
        sync without ``tol``, so a CUDA graph can capture it). Returns (loss, logits, steps)."""
        if (backend or self.backend_for(x)) == "triton":
            if tol is not None:
                raise ValueError("tol (early stopping) is not supported on the conv Triton path; use backend='torch'")
            run = _triton_runner(self, x)
            free, t_free = run.free(x, T)
            relax_nudged = lambda beta: run.nudged(free, target, beta, K, frozen)  # noqa: E731
        else:
            drives = self.drives(x)
            free, t_free = self._relax(self.zero_states(x), drives, T, tol=tol, from_zero=True)

            def relax_nudged(beta):
                return self._relax(free, drives, K, nudge=self.make_nudge(free, target, beta, frozen), tol=tol)

        out = self.logits(free).clone()
        loss = self.loss(out, target)
        steps: list[int] = []

        def nudged(beta: float) -> list[Tensor]:
            states, k = relax_nudged(beta)
            steps.append(k)
            return states

        beta = self.nudge
        if nudging == "symmetric":
            a, b, span = nudged(beta), nudged(-beta), 2 * beta
        else:
            a, b, span = nudged(sign * beta), free, sign * beta
        self._write_grads(rule, a, b, free, span, beta, normalize)
        if self.output == "softmax":  # readout: exact cross-entropy gradient at the free state
            head = self.layers[-1]
            top = pool(free[self.n_conv], self.pool_size(self.n_conv))[0].flatten(1)
            err = torch.softmax(out, dim=1) - target
            _grad(head.weight).addmm_(err.t(), top, alpha=1.0 / x.shape[0])
            if head.bias is not None:
                _accumulate_bias(head.bias, err, 1.0 / x.shape[0])
        return loss, out, (t_free, steps)

    def _write_grads(self, rule, a, b, free, span, beta, normalize):
        """Each trained link: fre ``coef * corr(O_src^0, s_dst^a - s_dst^b)``; classic
        ``coef * (corr(O_src^a, s_dst^a) - corr(O_src^b, s_dst^b))``; the bias of a chain
        link gets the same rule with a constant input of 1 (summed over batch and map)."""
        B = free[0].shape[0]
        gain = self.topology.feedback_gain(beta) if normalize else None
        o_free = [o for o, _ in self.pooled_states(free)]
        o_a = o_b = None
        if rule == "classic":
            o_a = [o for o, _ in self.pooled_states(a)]
            o_b = o_free if b is free else [o for o, _ in self.pooled_states(b)]
        diffs: dict[int, Tensor] = {}
        for k in self.topology.trained_links():
            if k.dst not in diffs:
                diffs[k.dst] = a[k.dst] - b[k.dst]
            g = gain[k.dst] if gain is not None else None
            if g is not None and g == 0.0:
                raise ValueError(f"normalize=True but no feedback path reaches layer {k.dst}")
            coef = ref.link_coefficient(rule, beta, span, B, g)
            G = _grad(self.matrix(k.weight))
            if rule == "fre":
                G.add_(self.link_correlation(k.weight, o_free[k.src], diffs[k.dst]), alpha=coef)
            else:
                G.add_(self.link_correlation(k.weight, o_a[k.src], a[k.dst]), alpha=coef)
                G.sub_(self.link_correlation(k.weight, o_b[k.src], b[k.dst]), alpha=coef)
            bias = self.layer_bias(k.dst) if k.weight == f"layers.{k.dst - 1}" else None
            if bias is not None:
                d = diffs[k.dst]
                _accumulate_bias(bias, d.sum(dim=(2, 3)) if d.dim() == 4 else d, coef)

    def extra_repr(self) -> str:
        return (f"input_shape={self.input_shape}, output={self.output!r}, activation={self.activation!r}, "
                f"feedback={self.config['feedback']}, residual={self.config['residual']}, nudge={self.nudge}, "
                f"T={self.T}, K={self.K}, rule={self.rule!r}")


# ----------------------------------------------------------------------------- baselines
def feedforward(net: ConvEPNet, x: Tensor) -> Tensor:
    """The net with its feedback removed, layer by layer, differentiable (BP):
    ``s_l = rho(conv_l(O_{l-1}) + b_l + alpha * skips)``, ``O_l = P_l(s_l)``; returns the
    logits (B, C) (P-EP: the output neurons' rates). x: (B, C, H, W) or flattened."""
    x = net._check_input(x)
    s: list[Tensor] = [x]
    out: list[Tensor] = [x]
    for l in range(1, net.n_state + 1):
        b = net.layer_bias(l)
        pre = None if b is None else (b.view(-1, 1, 1) if l <= net.n_conv else b)
        for k in net.topology.incoming(l, include_input=True):
            if k.kind == "forward":
                term = k.scale * net.link_forward(k.weight, out[k.src])
                pre = term if pre is None else pre + term
        s.append(ref.activate(net.activation, pre))
        out.append(pool(s[-1], net.pool_size(l))[0])
    if net.output == "neuron":
        return s[-1]
    W_f, b_f, _ = net.readout_matrices()
    return ref.readout(out[net.n_conv].flatten(1), W_f, b_f)


def _named_grads(net: nn.Module, loss: Tensor) -> dict[str, Tensor]:
    names, params = zip(*[(n, p) for n, p in net.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(p)) for n, p, g in zip(names, params, grads)}


def bp_gradients(net: ConvEPNet, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """BP's gradients of the feedforward conv net's mean cost, keyed like
    ``net.named_parameters()``. x: (B, C, H, W); y: (B,) labels or (B, C) targets."""
    with torch.enable_grad():
        out = feedforward(net, x)
        return _named_grads(net, net.loss(out, net._check_target(y, out.shape[0])))


def bptt_gradients(net: ConvEPNet, x: Tensor, y: Tensor, T: Optional[int] = None) -> dict[str, Tensor]:
    """Gradients of the cost after T free steps from zero, by backprop through the
    unrolled relaxation (the gradient EP estimates once the dynamics converge)."""
    x = net._check_input(x)
    T = net.T if T is None else T
    with torch.enable_grad():
        s, _ = net._relax(net.zero_states(x), net.drives(x), T, from_zero=True)
        return _named_grads(net, net.loss(net.logits(s), net._check_target(y, x.shape[0])))


def augment(x: Tensor, *, pad: int = 4, generator: Optional[torch.Generator] = None) -> Tensor:
    """Random crop (zero padding ``pad``, a shift per image) and random horizontal flip,
    on a batch (B, C, H, W); draws from
    torch's RNG on x's device (saved in checkpoints) unless ``generator`` is given."""
    if x.dim() != 4:
        raise ValueError(f"augment takes images (B, C, H, W), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B,), device=x.device, generator=generator)
    flip = torch.rand(B, device=x.device, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(H, device=x.device)[None, :])                     # (B, H)
    cols = dx[:, None] + torch.arange(W, device=x.device)[None, :]                       # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_r = rows[:, None, :, None].expand(B, C, H, W + 2 * pad)
    out = padded.gather(2, idx_r)
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


# ----------------------------------------------------------------------------- Triton path
class _Captured:
    """One captured conv ep_step: static inputs, outputs, and the grads it accumulates into."""

    def __init__(self, graph, x, target, loss, out, steps, grads):
        self.graph, self.x, self.target, self.loss, self.out, self.steps, self.grads = (
            graph, x, target, loss, out, steps, grads)


def _graphed(net: ConvEPNet, x: Tensor, target: Tensor, args):
    """``ep_step`` replayed from a CUDA graph captured once per batch size and options
    (the many small launches of T + K steps cost more than their work at batch 128).
    Returns None, and turns graphs off for the net with a warning, if capture fails."""
    import warnings

    graphs = net.__dict__.setdefault("_graphs", {})
    params = [p for p in net.parameters()]
    key = (x.shape[0], x.device, target.dtype, args, tuple(p.data_ptr() for p in params))
    cap = graphs.get(key)
    if cap is None:
        if len(graphs) > 8:
            graphs.clear()
        try:
            cap = graphs[key] = _capture(net, x, target, args, params)
        except Exception as e:  # an optimisation: fall back to plain launches
            warnings.warn(f"tritonep: CUDA graph capture of the conv ep_step failed ({type(e).__name__}: {e}); "
                          "running without graphs", RuntimeWarning, stacklevel=3)
            net.__dict__["_graph_off"] = True
            return None
    for p, g in zip(params, cap.grads):  # the graph adds into its own buffers: start them like .grad
        if p.grad is None:
            g.zero_()
        elif p.grad is not g:
            g.copy_(p.grad)
        p.grad = g
    cap.x.copy_(x)
    cap.target.copy_(target)
    cap.graph.replay()
    return cap.loss.clone(), cap.out.clone(), cap.steps


def _capture(net: ConvEPNet, x: Tensor, target: Tensor, args, params) -> _Captured:
    sx, st = x.clone(), target.clone()
    grads = [torch.zeros_like(p) for p in params]
    saved = [p.grad for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # Triton JIT and cuDNN plans outside the capture
            for _ in range(2):
                net._ep_body(sx, st, *args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loss, out, steps = net._ep_body(sx, st, *args)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return _Captured(graph, sx, st, loss, out, steps, grads)


def _triton_runner(net: ConvEPNet, x: Tensor) -> "_Fused":
    """The net's fused runner for x's batch size, device and dtype (buffers reused across calls)."""
    from . import fused

    fused.check_device(x)
    if x.dtype != torch.float32:
        raise TypeError(f"backend='triton' computes in float32; the net is {x.dtype} (use backend='torch')")
    cache = net.__dict__.setdefault("_runners", {})
    key = (x.shape[0], x.device)
    r = cache.get(key)
    if r is None:
        if len(cache) > 8:
            cache.clear()
        r = cache[key] = _Fused(net, x.shape[0], x.device)
    return r


class _Fused:
    """The conv relaxation with one fused epilogue kernel per conv layer and step.

    Per step and conv layer l: the forward conv of ``O_{l-1}`` and the transposed
    conv of ``s_{l+1}`` run in cuDNN (torch); ``tritonep.kernels.conv.conv_epilogue``
    then adds bias, the scaled feedback and the nudge, unpools them at the current
    maxima, applies rho and pools the new state with its indices, in one pass.
    A *frame* holds, per layer, ``s_l``, ``O_l`` and the int32 indices; each phase
    ping-pongs between two frames (the free phase's last frame is read, never
    written, by the nudged phases). The P-EP output layer (dense, C units) is
    updated by torch.
    """

    def __init__(self, net: ConvEPNet, batch: int, device: torch.device):
        from .kernels import conv as conv_k

        self.net, self.k, self.batch, self.device = net, conv_k, batch, device
        self.frames: dict = {}

    def frame(self, tag: str) -> dict:
        f = self.frames.get(tag)
        if f is None:
            net, B = self.net, self.batch
            f = {"s": [None], "o": [None], "idx": [None]}
            for l in range(1, net.n_state + 1):
                f["s"].append(torch.empty(B, *net.maps[l], device=self.device))
                pooled = net.pool_size(l) > 1
                f["o"].append(torch.empty(B, *net.pooled[l], device=self.device) if pooled else None)
                f["idx"].append(torch.empty(B, *net.pooled[l], device=self.device, dtype=torch.int32)
                                if pooled else None)
            self.frames[tag] = f
        return f

    def _sent(self, f: dict, l: int) -> Tensor:
        return f["s"][l] if f["o"][l] is None else f["o"][l]

    def step(self, cur: Optional[dict], nxt: dict, x: Tensor, drive: Tensor, nudge=None) -> None:
        """nxt = step(cur); cur None: the first step from zero states (drives only)."""
        net = self.net
        n = net.n_state
        for l in range(1, n + 1):
            A, g1, scale1 = (drive if l == 1 else None), None, 1.0
            fb_terms = []
            if cur is not None:
                for k in net._incoming[l]:
                    if k.kind == "forward":
                        term = net.link_forward(k.weight, self._sent(cur, k.src) if k.src else x)
                        A = term.mul_(k.scale) if A is None else A.add_(term, alpha=k.scale)
                    else:
                        fb_terms.append((k.scale, net.link_transpose(k.weight, cur["s"][k.src])))
            if len(fb_terms) == 1:
                scale1, g1 = fb_terms[0]
            elif fb_terms:
                g1 = fb_terms[0][1].mul_(fb_terms[0][0])
                for sc, t in fb_terms[1:]:
                    g1.add_(t, alpha=sc)
            bias = net.layer_bias(l) if l > 1 else None  # layer 1's bias is in its drive
            if l > net.n_conv:  # the P-EP output neurons: dense, C units, in torch
                pre = A if A is not None else torch.zeros_like(nxt["s"][l])
                if bias is not None:
                    pre = pre + bias
                if nudge is not None and cur is not None:
                    pre = nudge.add_to(pre, cur["s"][l], inplace=False)
                ref.activate(net.activation, pre, out=nxt["s"][l])
                continue
            g2, scale2 = None, 1.0
            if nudge is not None and l == n and cur is not None:
                e = nudge.frozen_error if nudge.frozen_error is not None else nudge.error(
                    self._sent(cur, l).flatten(1))
                g2, scale2 = (e @ nudge.M_f).view(self.batch, *net.pooled[l]), nudge.beta
            if A is None:
                A = torch.zeros_like(nxt["s"][l])
            self.k.conv_epilogue(
                A.contiguous(), nxt["s"][l], pool=net.pool_size(l), activation=net.activation,
                bias=None if bias is None else bias.detach(), g1=g1, scale1=scale1, g2=g2, scale2=scale2,
                idx_in=cur["idx"][l] if cur is not None else None, o_out=nxt["o"][l], idx_out=nxt["idx"][l])

    def _phase(self, start: Optional[dict], tag: str, x: Tensor, drive: Tensor, steps: int, nudge=None) -> dict:
        frames = (self.frame(tag + "0"), self.frame(tag + "1"))
        cur = start
        for t in range(steps):
            self.step(cur, frames[t % 2], x, drive, nudge)
            cur = frames[t % 2]
        return cur

    def states(self, f: dict, x: Tensor) -> list[Tensor]:
        return [x] + f["s"][1:]

    def free(self, x: Tensor, T: int):
        self.x = x
        self.drive = self.net.drives(x)[1].contiguous()
        self.free_frame = self._phase(None, "free", x, self.drive, T)
        return self.states(self.free_frame, x), T

    def nudged(self, free: list, target: Tensor, beta: float, K: int, frozen: bool):
        tag = "plus" if beta > 0 else "minus"
        nudge = self.net.make_nudge(free, target, beta, frozen)
        f = self._phase(self.free_frame, tag, self.x, self.drive, K, nudge)
        return self.states(f, self.x), K


# ----------------------------------------------------------------------------- configs
INPUT_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def build_net(cfg: dict) -> ConvEPNet:
    """The ``ConvEPNet`` a training config describes (``cfg["conv"]`` an architecture
    string, the input shape from ``cfg["dataset"]``); see ``tritonep.presets``."""
    if cfg["dataset"] not in INPUT_SHAPES:
        raise ValueError(f"no conv input shape for data set {cfg['dataset']!r}")
    return ConvEPNet.from_arch(
        cfg["conv"], input_shape=INPUT_SHAPES[cfg["dataset"]], feedback=cfg["feedback"], nudge=cfg["nudge"],
        activation=cfg["activation"], residual=cfg.get("residual"), alpha=cfg.get("alpha", 1.0),
        output=cfg["output"], T=cfg["T"], K=cfg["K"], rule=cfg["rule"], nudging=cfg["nudging"], error=cfg["error"],
        normalize=cfg["normalize"], input_norm=cfg.get("input_norm"), backend=cfg.get("backend", "auto"),
        tol=cfg.get("tol"), check_every=cfg.get("check_every", 5), cuda_graph=cfg.get("cuda_graph", False))
