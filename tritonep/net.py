"""The dense nets: ``EPNet``, the layered recurrent net of FRE-RNN.

This module owns the parameters and validates input; ``EPModule`` runs the step;
the maths is in ``tritonep.engine.dense_reference`` (PyTorch) and
``tritonep.engine.dense_triton`` (Triton); which layers connect is in
``tritonep.topology``. Data flows one way: input -> drive -> free phase -> nudged
phase -> update -> ``.grad``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .engine.dense_reference import DenseReference, DenseSpec
from .engine.dense_triton import DenseTriton, Plan, default_blocks, plan_key
from .layers import Dense, as_dense
from .module import EPModule
from .options import PRECISIONS, choice, kernel_precision
from .topology import FEEDBACK_WEIGHTS, Topology, layered



class EPNet(EPModule):
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
            (arbitrary graph topology, drawn from ``agt_seed``), or an explicit list
            of directed links ``[(i, j), ...]`` to rebuild a given graph (i < j
            forward, trained; i > j fixed random feedback); needs
            ``feedback_weights="random"``.
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
        nudge_schedule: ``"constant"`` (default, Algorithm 1) or ``"ramp"``: the k-th
            nudged step (k = 1..K) is nudged by k * beta_f (the paper authors' graph
            model, with ``error="frozen"``); the rules, ``normalize`` and symmetric
            nudging then use the last step's strength K * beta_f.
        readout_error: ``"free"`` (default: the readout's exact gradient at the free
            state) or ``"nudged"`` (the error at the end of the positive nudged phase,
            as the graph model updates its readout; softmax output only).
        backend: ``"auto"`` (Triton on CUDA float32, the PyTorch reference otherwise),
            ``"torch"`` or ``"triton"`` (on CPU only under ``TRITON_INTERPRET=1``).
        precision: operands of the Triton kernels' products: ``"auto"`` (default:
            as torch's own fp32 matmuls, ``torch.get_float32_matmul_precision()``
            ``"highest"`` -> ``"ieee"``, ``"high"`` -> ``"tf32"``, ``"medium"`` ->
            ``"bf16"``, read at each call), ``"ieee"`` fp32, ``"tf32"``, or ``"bf16"``
            (fp32 accumulation in every case).
        cuda_graph: on CUDA, replay each ``ep_step`` as one captured CUDA graph
            (Triton backend, without ``tol``).
        persistent: Triton backend: run each phase as ONE launch of the persistent
            kernel (each program runs every step for its samples) instead of one
            launch per step. Off by default: on an H200 it was 4-6x slower than
            per-step launches replayed as a CUDA graph.
        schedule: how a relaxation step updates the state layers: ``"synchronous"``
            (default; every layer reads the previous step's states, as the paper) or
            ``"alternating"`` (odd layers, then even layers from the odd layers' new
            states: a chain settles in about half the steps; ``Topology.update_order``).
        tol: stop a phase early once every sample's state change over a step is
            below ``tol`` (checked every ``check_every`` steps); None runs T and K
            steps. ``net.last_steps`` reports the steps run.
        check_every: steps between convergence checks (each costs a host sync).
    """

    def __init__(self, sizes: Sequence[Union[int, nn.Module]], *,
                 feedback: Union[float, Sequence[float]] = 0.01, feedback_weights: str = "symmetric",
                 nudge: float = 0.1, activation: str = "tanh", residual: Union[int, Sequence[Sequence[int]], None] = None,
                 agt: Union[float, Sequence[Sequence[int]], None] = None, agt_seed: int = 0, alpha: float = 1.0, bias: bool = False,
                 output: str = "softmax", T: int = 10, K: int = 10, rule: str = "fre", nudging: str = "positive",
                 error: str = "dynamic", normalize: bool = False, tol: Optional[float] = None, check_every: int = 5,
                 backend: str = "auto", precision: str = "auto", cuda_graph: bool = True, persistent: bool = False,
                 nudge_schedule: str = "constant", readout_error: str = "free", schedule: str = "synchronous"):
        layers, widths = _stack(sizes, bias)
        super().__init__(output=output, activation=activation, nudge=nudge, T=T, K=K, rule=rule, nudging=nudging,
                         error=error, normalize=normalize, backend=backend, tol=tol, check_every=check_every,
                         cuda_graph=cuda_graph, nudge_schedule=nudge_schedule, readout_error=readout_error,
                         schedule=schedule)
        if feedback_weights not in FEEDBACK_WEIGHTS:
            raise ValueError(f"feedback_weights must be one of {FEEDBACK_WEIGHTS}, got {feedback_weights!r}")
        self.sizes = widths
        self.feedback_weights = feedback_weights
        self.precision = choice("precision", precision, PRECISIONS)
        self.persistent = bool(persistent)
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

    # ------------------------------------------------------------------ structure
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

    def readout_matrices(self) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """(W_f, b_f, M_f): readout weight (C, n_L), bias, and the nudge matrix
        ``M_f`` (C, n_L) that carries the error back (W_f itself, or fixed random)."""
        head = self.layers[-1]
        M_f = head.weight if self.feedback_weights == "symmetric" else self.fixed.B_out.t()
        return head.weight, head.bias, M_f

    def spec(self) -> DenseSpec:
        """What the dense engines read of this net now."""
        topo = self.topology
        return DenseSpec(topology=topo, activation=self.activation, output=self.output,
                         matrices={k.weight: self.matrix(k.weight) for k in topo.links},
                         biases=[None] + [self.layer_bias(l) for l in range(1, topo.n_state + 1)],
                         readout=self.readout_matrices() if self.output == "softmax" else None)

    def terms(self):
        """Per state layer, the (src, M, scale) terms of the dynamics (input excluded)."""
        return self.reference_engine().make_terms()

    def reference_engine(self) -> DenseReference:
        return DenseReference(self.spec(), self.backend_state.cached, self.check_every)

    def triton_engine(self, x: Tensor) -> DenseTriton:
        spec = self.spec()
        precision = kernel_precision(self.precision)
        blocks = default_blocks(x.device, precision)
        plan = self.backend_state.cached(plan_key(spec, x.device, blocks), lambda: Plan(spec, x.device, blocks))
        return DenseTriton(spec, plan, precision=precision, persistent=self.persistent,
                           check_every=self.check_every)

    # ------------------------------------------------------------------ validation
    def check_input(self, x: Tensor) -> Tensor:
        """(B, n_in), or (B, ...) with n_in features per sample, floats on the net's
        device -> (B, n_in) in the net's dtype."""
        if isinstance(x, Tensor):
            n_in = self.sizes[0]
            if x.dim() < 2 or math.prod(x.shape[1:]) != n_in:
                raise ValueError(f"input must have shape (batch, {n_in}) (or (batch, ...) with {n_in} features per "
                                 f"sample), got {tuple(x.shape)}")
        self._check_common(x)
        return self._check_finite(x.reshape(x.shape[0], self.sizes[0]).to(self.layers[0].weight.dtype))

    def extra_repr(self) -> str:
        n_links = len(self.topology.links)
        return (f"sizes={self.sizes}, output={self.output!r}, activation={self.activation!r}, "
                f"feedback={self.config['feedback']}, feedback_weights={self.feedback_weights!r}, "
                f"nudge={self.nudge}, T={self.T}, K={self.K}, rule={self.rule!r}, links={n_links}")


def _stack(sizes, bias: bool) -> tuple[list[Dense], list[int]]:
    """The Dense layers and widths ``[n_in, n_1, ..., n_out]`` of widths or a stack of layers."""
    layers = [as_dense(s) for s in sizes]
    if all(d is None for d in layers):
        widths = [int(s) for s in sizes]
        if len(widths) < 3 or min(widths) < 1:
            raise ValueError(f"sizes must list >= 3 positive widths [n_in, hidden..., n_out], got {list(sizes)}")
        return [Dense(a, b, bias=bias) for a, b in zip(widths[:-1], widths[1:])], widths
    if any(d is None for d in layers):
        raise TypeError("give EPNet either widths (ints) or layers (Dense/nn.Linear), not a mix")
    if len(layers) < 2:
        raise ValueError("an EPNet stack needs at least 2 layers (one hidden layer and the output)")
    for i in range(1, len(layers)):
        if layers[i].in_features != layers[i - 1].out_features:
            raise ValueError(f"layer {i} takes {layers[i].in_features} features but layer {i - 1} gives "
                             f"{layers[i - 1].out_features}")
    return layers, [layers[0].in_features] + [d.out_features for d in layers]
