"""The ``nn.Module`` stack: layers, connections, and ``ep_step`` writing ``.grad``.

Data flows one way: input -> drive -> free phase -> nudged phase -> update -> ``.grad``.
The maths lives in ``tritonep.reference``; which layers connect lives in
``tritonep.topology``. This module owns the parameters and validates input.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import fused
from . import reference as ref
from .topology import FEEDBACK_WEIGHTS, Link, Topology, layered

OUTPUTS = ("softmax", "neuron")
ERRORS = ("dynamic", "frozen")
BACKENDS = ("auto", "torch", "triton")
PRECISIONS = fused.PRECISIONS


class Dense(nn.Module):
    """A dense layer of the stack: ``out = in @ weight^T (+ bias)``.

    in_features, out_features: widths of the layer it reads and the layer it feeds.
    weight: (out_features, in_features), Glorot-uniform; bias: (out_features,), zeros.
    In an ``EPNet`` the i-th ``Dense`` feeds state layer i+1 (its bias is that
    layer's bias); with ``output="softmax"`` the last one is the readout.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Dense {name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


def _as_dense(layer) -> Optional[Dense]:
    """A stack entry as a Dense (an nn.Linear keeps its weights); None for a width."""
    if isinstance(layer, Dense):
        return layer
    if isinstance(layer, nn.Linear):  # keep the user's weights
        d = Dense(layer.in_features, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            d.weight.copy_(layer.weight)
            if layer.bias is not None:
                d.bias.copy_(layer.bias)
        return d
    if isinstance(layer, int) and not isinstance(layer, bool):
        return None
    raise TypeError(f"EPNet layers must be ints (widths), tritonep.Dense or nn.Linear, got {type(layer).__name__}")


class EPNet(nn.Module):
    """A layered recurrent net trained by Equilibrium Propagation (FRE-RNN).

    ``EPNet([784, 512, 512, 10])``: input 784, two hidden state layers of 512 that
    relax together, and a softmax readout of 10 classes outside the dynamics.
    Layers may also be given as modules, like an ``nn.Sequential``:
    ``EPNet([Dense(784, 512), Dense(512, 512), Dense(512, 10)])`` (or ``EPSequential``).

    Args:
        sizes: widths ``[n_in, n_1, ..., n_L, n_classes]``, or the stack of
            ``Dense``/``nn.Linear`` layers (each one's in_features must equal the
            previous one's out_features).
        feedback: feedback coefficient beta_l scaling the feedback into hidden
            layer l (float, or one per layer 1..L-1). The paper: 0.01 for <= 3
            hidden layers, 0.1 deeper; P-EP uses 1.
        feedback_weights: ``"symmetric"`` (feedback through W^T, and the nudge
            through W_f^T) or ``"random"`` (fixed random matrices, never trained).
        nudge: beta_f, strength of the output nudge in the second phase.
        activation: ``"tanh"`` (default), ``"hard_sigmoid"`` or ``"pep_sigmoid"``.
        residual: bidirectional long-range links: int k links layers 1<->1+k,
            1+k<->1+2k, ... (the paper's 10-layer net: k=3), or a list of (i, j).
        agt: probability P of an extra link per ordered pair of hidden layers
            (arbitrary graph topology; needs ``feedback_weights="random"``).
        agt_seed: seed of the AGT draw (and nothing else).
        alpha: scale of the forward links between hidden layers.
        bias: give every layer built from ``sizes`` a trained bias (default False,
            as in the paper's FC nets).
        output: ``"softmax"`` (FRE: readout outside the dynamics, cross-entropy)
            or ``"neuron"`` (P-EP: the last layer relaxes with the net, MSE cost).
        T, K: default free and nudged phase lengths (steps).
        rule: ``"fre"`` (Delta W = (s_post^beta - s_post^0) s_pre^0^T) or
            ``"classic"`` ((rho rho^T at beta - at 0) / beta).
        nudging: ``"positive"``, ``"symmetric"`` (+beta and -beta phases) or
            ``"random-sign"`` (sign of beta drawn per batch from torch's RNG).
        error: ``"dynamic"`` (p recomputed at every nudged step, Algorithm 1) or
            ``"frozen"`` (error kept at its free-phase value, the authors' code).
        normalize: divide each layer's update by the nudge and feedback strength
            that reaches it, so its scale is that of a gradient.
        backend: ``"auto"`` (Triton on CUDA float32, the PyTorch reference otherwise),
            ``"torch"`` or ``"triton"`` (on CPU only under ``TRITON_INTERPRET=1``).
        precision: operands of the Triton kernels' products: ``"ieee"`` fp32
            (default), ``"tf32"``, or ``"bf16"`` (fp32 accumulation in every case).
        cuda_graph: on CUDA, replay each ``ep_step`` as one captured CUDA graph
            (Triton backend, without ``tol``).
        persistent: Triton backend: run each phase as ONE launch of the persistent
            kernel (each program runs every step for its samples) instead of one
            launch per step. Experimental: checked in the interpreter, not yet on a GPU.
        tol: stop a phase early once every sample's state change over a step is
            below ``tol`` (checked every ``check_every`` steps); None runs T and K
            steps. ``net.last_steps`` reports the steps run.
        check_every: steps between convergence checks (each costs a host sync).
    """

    def __init__(
        self,
        sizes: Sequence[Union[int, nn.Module]],
        *,
        feedback: Union[float, Sequence[float]] = 0.01,
        feedback_weights: str = "symmetric",
        nudge: float = 0.1,
        activation: str = "tanh",
        residual: Union[int, Sequence[Sequence[int]], None] = None,
        agt: Optional[float] = None,
        agt_seed: int = 0,
        alpha: float = 1.0,
        bias: bool = False,
        output: str = "softmax",
        T: int = 10,
        K: int = 10,
        rule: str = "fre",
        nudging: str = "positive",
        error: str = "dynamic",
        normalize: bool = False,
        backend: str = "auto",
        precision: str = "ieee",
        cuda_graph: bool = True,
        persistent: bool = False,
        tol: Optional[float] = None,
        check_every: int = 5,
    ):
        super().__init__()
        layers = [_as_dense(s) for s in sizes]
        if all(d is None for d in layers):
            widths = [int(s) for s in sizes]
            if len(widths) < 3 or min(widths) < 1:
                raise ValueError(f"sizes must list >= 3 positive widths [n_in, hidden..., n_out], got {list(sizes)}")
            layers = [Dense(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])]
        elif any(d is None for d in layers):
            raise TypeError("give EPNet either widths (ints) or layers (Dense/nn.Linear), not a mix")
        else:
            if len(layers) < 2:
                raise ValueError("an EPNet stack needs at least 2 layers (one hidden layer and the output)")
            for i in range(1, len(layers)):
                if layers[i].in_features != layers[i - 1].out_features:
                    raise ValueError(
                        f"layer {i} takes {layers[i].in_features} features but layer {i - 1} gives "
                        f"{layers[i - 1].out_features}"
                    )
            widths = [layers[0].in_features] + [d.out_features for d in layers]
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if feedback_weights not in FEEDBACK_WEIGHTS:
            raise ValueError(f"feedback_weights must be one of {FEEDBACK_WEIGHTS}, got {feedback_weights!r}")
        self.sizes = widths
        self.output = output
        self.feedback_weights = feedback_weights
        self.activation = ref.check_activation(activation)
        self.nudge = _positive_float("nudge", nudge)
        self.T, self.K = _positive_int("T", T), _positive_int("K", K)
        self.rule, self.nudging, self.error = _choice("rule", rule, ref.RULES), _choice(
            "nudging", nudging, ref.NUDGINGS), _choice("error", error, ERRORS)
        self.normalize = bool(normalize)
        self.backend = _choice("backend", backend, BACKENDS)
        self.precision = _choice("precision", precision, PRECISIONS)
        self.cuda_graph = bool(cuda_graph)
        self.persistent = bool(persistent)
        self.tol = None if tol is None else _positive_float("tol", tol)
        self.check_every = _positive_int("check_every", check_every)
        self.last_steps: Optional[dict] = None  # {"free": t, "nudged": [k, ...]} of the last call
        self.layers = nn.ModuleList(layers)

        # state layers: hidden layers, plus the output neurons of a P-EP net
        state_sizes = widths if output == "neuron" else widths[:-1]
        self.topology: Topology = layered(
            state_sizes, feedback=feedback, feedback_weights=feedback_weights, alpha=alpha,
            residual=residual, agt=agt, agt_seed=agt_seed,
        )
        self.config = dict(feedback=feedback, feedback_weights=feedback_weights, residual=residual,
                           agt=agt, agt_seed=agt_seed, alpha=alpha, output=output)
        self.skips = nn.ModuleDict({
            f"{i}_{j}": Dense(state_sizes[i], state_sizes[j]) for i, j in self.topology.skip_pairs()
        })
        self.fixed = nn.Module()  # fixed random feedback matrices: buffers, never trained
        for key, shape in self.topology.fixed_matrices().items():
            self.fixed.register_buffer(key.split(".", 1)[1], nn.init.xavier_uniform_(torch.empty(shape)))
        if output == "softmax" and feedback_weights == "random":
            self.fixed.register_buffer("B_out", nn.init.xavier_uniform_(torch.empty(widths[-2], widths[-1])))
        self._work: dict = {}

    def __getstate__(self):  # deepcopy/pickle: leave the per-device caches behind
        return fused.getstate(self)

    # ------------------------------------------------------------------ structure
    @property
    def n_state(self) -> int:
        """Number of state layers that relax (hidden layers, + output for P-EP)."""
        return self.topology.n_state

    @property
    def num_classes(self) -> int:
        return self.sizes[-1]

    def matrix(self, key: str) -> Tensor:
        """The stored ``(out, in)`` matrix a link names (``layers.i``, ``skips.i_j``, ``fixed.B…``)."""
        group, name = key.split(".", 1)
        if group == "layers":
            return self.layers[int(name)].weight
        if group == "skips":
            return self.skips[name].weight
        return getattr(self.fixed, name)

    def layer_bias(self, l: int) -> Optional[Tensor]:
        """Bias of state layer l (that of the Dense feeding it)."""
        return self.layers[l - 1].bias

    def terms(self) -> list[list[ref.Term]]:
        """Per state layer, the (src, M, scale) terms of the dynamics (input excluded)."""
        out: list[list[ref.Term]] = [[] for _ in range(self.n_state + 1)]
        for k in self.topology.links:
            if k.src != 0:
                W = self.matrix(k.weight)
                out[k.dst].append((k.src, W if k.transpose else W.t(), k.scale))
        return out

    def drives(self, x: Tensor) -> list[Optional[Tensor]]:
        """Per state layer: input drive ``x @ W0^T`` (layer 1) plus bias, computed once."""
        d: list[Optional[Tensor]] = [None] * (self.n_state + 1)
        W0 = self.layers[0]
        d[1] = W0(x)
        for l in range(2, self.n_state + 1):
            d[l] = self.layer_bias(l)
        return d

    def readout_matrices(self) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """(W_f, b_f, M_f): readout weight (C, n_L), bias, and the nudge matrix
        ``M_f`` (C, n_L) that carries the error back (W_f itself, or fixed random)."""
        head = self.layers[-1]
        M_f = head.weight if self.feedback_weights == "symmetric" else self.fixed.B_out.t()
        return head.weight, head.bias, M_f

    # ------------------------------------------------------------------ validation
    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        n_in = self.sizes[0]
        if x.dim() < 2 or math.prod(x.shape[1:]) != n_in:
            raise ValueError(
                f"input must have shape (batch, {n_in}) (or (batch, ...) with {n_in} features per sample), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor (e.g. pixels scaled to [0, 1]), got {x.dtype}")
        W = self.layers[0].weight
        if x.device != W.device:
            raise ValueError(f"input is on {x.device} but the network is on {W.device}; move one of them")
        x = x.reshape(x.shape[0], n_in).to(W.dtype)
        if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():  # one cheap pass first
            raise ValueError("input contains NaN or infinite values")
        return x

    def _check_target(self, y: Tensor, batch: int) -> Tensor:
        """Labels (B,) int in [0, C) or class probabilities (B, C) -> (B, C) target."""
        if not isinstance(y, Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(y).__name__}")
        C = self.num_classes
        W = self.layers[0].weight
        if y.dim() == 1 and not y.is_floating_point() and y.dtype != torch.bool:
            if y.shape[0] != batch:
                raise ValueError(f"got {y.shape[0]} labels for a batch of {batch} inputs")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= C):
                raise ValueError(f"labels must be class indices in [0, {C - 1}], got values in "
                                 f"[{int(y.min())}, {int(y.max())}]")
            return nn.functional.one_hot(y.to(W.device), C).to(W.dtype)
        if y.dim() == 2 and y.is_floating_point():
            if tuple(y.shape) != (batch, C):
                raise ValueError(f"target probabilities must have shape ({batch}, {C}), got {tuple(y.shape)}")
            if not torch.isfinite(y).all():
                raise ValueError("targets contain NaN or infinite values")
            return y.to(device=W.device, dtype=W.dtype)
        raise ValueError(f"labels must be class indices of shape (batch,) with an integer dtype, or target "
                         f"probabilities of shape (batch, {C}); got shape {tuple(y.shape)}, dtype {y.dtype}")

    # ------------------------------------------------------------------ dynamics
    def _workspace(self, tag: str, batch: int, like: Tensor) -> tuple[list, list]:
        """Two preallocated state lists (ping-pong) for a phase, reused across calls."""
        key = (tag, batch, like.dtype, like.device)
        bufs = self._work.get(key)
        if bufs is None:
            if len(self._work) > 16:  # many batch sizes seen: drop the old buffers
                self._work.clear()
            bufs = tuple([None] + [like.new_empty(batch, n) for n in self.topology.sizes[1:]] for _ in range(2))
            self._work[key] = bufs
        return bufs

    def backend_for(self, x: Tensor) -> str:
        """The backend that runs for input ``x``: ``"triton"`` or ``"torch"``."""
        return fused.resolve_backend(self, x)

    @torch.no_grad()
    def relax(self, x: Tensor, T: Optional[int] = None, *, tol: Optional[float] = None) -> list[Tensor]:
        """Free phase: T steps from zero with the input clamped.

        x: (B, n_in). Returns the states ``[x, s_1, ..., s_n]`` (s_l: (B, n_l)),
        views of internal buffers that the next call overwrites (clone to keep).
        tol: stop early on convergence (default ``self.tol``; see the class doc).
        """
        x = self._check_input(x)
        T = self.T if T is None else _positive_int("T", T)
        tol = self.tol if tol is None else _positive_float("tol", tol)
        done = None
        if self.backend_for(x) == "triton":
            done = fused.first_use_guard(self, fused.relax, self, x, T, precision=self.precision, tol=tol,
                                check_every=self.check_every)
        states, t = done if done is not None else self._free(x, self.drives(x), self.terms(), T, tol)
        self.last_steps = {"free": t, "nudged": []}
        return states

    def zero_states(self, x: Tensor) -> list[Tensor]:
        """The free phase's start: ``[x, 0, ..., 0]`` (zeros (B, n_l) per state layer)."""
        return [x] + [x.new_zeros(x.shape[0], n) for n in self.topology.sizes[1:]]

    def _free(self, x, drives, terms, T, tol=None):
        return ref.relax_until(self.zero_states(x), drives, terms, self.activation, T, tol=tol,
                               check_every=self.check_every, buffers=self._workspace("free", x.shape[0], x),
                               from_zero=True)

    def logits(self, states: Sequence[Tensor]) -> Tensor:
        """Output of the net for relaxed states: softmax logits (B, C), or the output
        neurons' rates for a P-EP net."""
        if self.output == "neuron":
            return states[-1]
        W_f, b_f, _ = self.readout_matrices()
        return ref.readout(states[-1], W_f, b_f)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean cost over the batch: cross-entropy of softmax logits, or P-EP's
        0.5 * ||y - s_out||^2. out, target: (B, C)."""
        if self.output == "neuron":
            return 0.5 * ((target - out) ** 2).sum(1).mean()
        return -(target * torch.log_softmax(out, dim=1)).sum(1).mean()

    def forward(self, x: Tensor, T: Optional[int] = None) -> Tensor:
        """Relax the free phase for T steps (default ``self.T``) and return the
        logits (B, C) (P-EP: output rates). No autograd: train with ``ep_step``;
        for a differentiable feedforward pass see ``tritonep.baselines``."""
        return self.logits(self.relax(x, T)).clone()

    # ------------------------------------------------------------------ learning
    @torch.no_grad()
    def ep_step(
        self,
        x: Tensor,
        y: Tensor,
        *,
        T: Optional[int] = None,
        K: Optional[int] = None,
        rule: Optional[str] = None,
        nudging: Optional[str] = None,
        error: Optional[str] = None,
        normalize: Optional[bool] = None,
        tol: Optional[float] = None,
    ) -> tuple[Tensor, Tensor]:
        """One EP step: free phase, nudged phase(s), local updates into ``.grad``.

        Like ``loss.backward()``, it accumulates into each trained parameter's
        ``.grad`` (call ``optimizer.zero_grad()`` between steps); what it adds is a
        descent direction, so ``optimizer.step()`` then trains with any optimizer.
        Fixed random feedback matrices are buffers and get nothing.

        x: (B, n_in) inputs (or (B, ...) with n_in features per sample).
        y: (B,) integer labels in [0, C), or (B, C) target probabilities.
        T, K, rule, nudging, error, normalize, tol: override the net's defaults for this call.
        Returns ``(loss, logits)``: the free phase's mean cost (scalar) and its
        logits (B, C), both detached. ``self.last_steps`` holds the steps each phase ran.
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
        if self.backend_for(x) == "triton":
            done = fused.first_use_guard(self, fused.ep_step, self, x, target, T=T, K=K, rule=rule, nudging=nudging, frozen=frozen,
                                normalize=normalize, precision=self.precision, tol=tol, check_every=self.check_every,
                                graph=self.cuda_graph)
            if done is not None:
                loss, out, (t, ks) = done
                self.last_steps = {"free": t, "nudged": ks}
                return loss, out

        drives, terms = self.drives(x), self.terms()
        free, t_free = self._free(x, drives, terms, T, tol)
        steps: list[int] = []
        out = self.logits(free).clone()
        loss = self.loss(out, target)

        def nudged(beta: float, tag: str) -> list[Tensor]:
            if self.output == "neuron":
                nudge = ref.NeuronNudge(target, beta, frozen, free[-1])
            else:
                W_f, b_f, M_f = self.readout_matrices()
                nudge = ref.SoftmaxNudge(W_f, b_f, M_f, target, beta, frozen, free[-1])
            states, k = ref.relax_until(free, drives, terms, self.activation, K, tol=tol,
                                        check_every=self.check_every, nudge=nudge,
                                        buffers=self._workspace(tag, x.shape[0], x))
            steps.append(k)
            return states

        beta = self.nudge
        if nudging == "symmetric":
            a, b, span = nudged(beta, "plus"), nudged(-beta, "minus"), 2 * beta
        else:
            sign = 1.0
            if nudging == "random-sign":
                sign = 1.0 if torch.rand(()).item() < 0.5 else -1.0
            a, b, span = nudged(sign * beta, "plus"), free, sign * beta
        self._write_grads(rule, a, b, free, span, beta, normalize)
        if self.output == "softmax":  # readout: exact cross-entropy gradient at the free state
            head = self.layers[-1]
            err = torch.softmax(out, dim=1) - target
            _accumulate(head.weight, err.t(), free[-1], 1.0 / x.shape[0])
            if head.bias is not None:
                _accumulate_bias(head.bias, err, 1.0 / x.shape[0])
        self.last_steps = {"free": t_free, "nudged": steps}
        return loss, out

    def _write_grads(self, rule, a, b, free, span, beta, normalize):
        B = free[0].shape[0]
        gain = self.topology.feedback_gain(beta) if normalize else None
        diffs: dict[int, Tensor] = {}
        for k in self.topology.trained_links():
            if rule == "fre" and k.dst not in diffs:
                diffs[k.dst] = a[k.dst] - b[k.dst]
            g = gain[k.dst] if gain is not None else None
            if g is not None and g == 0.0:
                raise ValueError(f"normalize=True but no feedback path reaches layer {k.dst}")
            coef = ref.link_coefficient(rule, beta, span, B, g)
            ref.add_link_update(_grad(self.matrix(k.weight)), rule, a[k.dst], b[k.dst], a[k.src], b[k.src],
                                free[k.src], coef,
                                post_diff=diffs.get(k.dst))
            bias = self.layer_bias(k.dst) if k.weight == f"layers.{k.dst - 1}" else None
            if bias is not None:
                # a bias is a weight on a constant input of 1: the same rule, both phases
                _accumulate_bias(bias, diffs[k.dst] if rule == "fre" else a[k.dst] - b[k.dst], coef)

    def extra_repr(self) -> str:
        n_links = len(self.topology.links)
        return (f"sizes={self.sizes}, output={self.output!r}, activation={self.activation!r}, "
                f"feedback={self.config['feedback']}, feedback_weights={self.feedback_weights!r}, "
                f"nudge={self.nudge}, T={self.T}, K={self.K}, rule={self.rule!r}, links={n_links}")


class EPSequential(EPNet):
    """``EPNet`` built like an ``nn.Sequential``: the layers in order, connection
    options as keywords.

    >>> net = EPSequential(Dense(784, 512), Dense(512, 512), Dense(512, 10), feedback=0.01, nudge=0.1)

    Takes ``tritonep.Dense`` or ``nn.Linear`` layers (an ``nn.Linear``'s weights are
    kept); every keyword of ``EPNet`` applies. A stack with conv layers
    (``tritonep.Conv`` or ``nn.Conv2d``) builds a ``tritonep.ConvEPNet`` instead
    (give ``input_shape=(C, H, W)``):

    >>> net = EPSequential(Conv(1, 32, 5, pool=2), Conv(32, 64, 5, pool=2), 10, input_shape=(1, 28, 28))
    """

    def __new__(cls, *layers, **options):
        if any(isinstance(layer, nn.Conv2d) for layer in layers):
            from .conv import ConvEPNet

            return ConvEPNet(list(layers), **options)
        return super().__new__(cls)

    def __init__(self, *layers: nn.Module, **options):
        super().__init__(list(layers), **options)


def _grad(param: Tensor) -> Tensor:
    """``param.grad``, allocated as zeros on first use (like autograd), to accumulate into."""
    if param.grad is None:
        param.grad = torch.zeros_like(param)
    return param.grad


def _accumulate(param: Tensor, a: Tensor, b: Tensor, coef: float) -> None:
    """param.grad += coef * a @ b."""
    _grad(param).addmm_(a, b, alpha=coef)


def _accumulate_bias(param: Tensor, d: Tensor, coef: float) -> None:
    """param.grad += coef * d summed over the batch."""
    _grad(param).add_(d.sum(0), alpha=coef)


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int (number of steps), got {v!r}")
    return v


def _positive_float(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def _choice(name: str, v, options) -> str:
    if v not in options:
        raise ValueError(f"unknown {name} {v!r}; expected one of {tuple(options)}")
    return v
