"""``EPModule``: what the dense and conv nets share, written once.

Options and their per-call overrides (``StepOptions``), input and target checks,
loss, the ``ep_step`` skeleton (free phase -> nudged phase(s) by nudging mode ->
contrast -> local updates -> readout gradient -> ``.grad``), relaxation, the
first-use fallback of the Triton path, CUDA-graph replay and the backend state.
A net supplies its parameters and the engines that run it: ``spec()`` (what the
engines read), ``reference_engine()`` and ``triton_engine(x)``, and its own
``check_input``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import Tensor, nn

from . import rules
from .engine import backend as be
from .engine import value_checks as vc
from .options import BACKENDS, OUTPUTS, StepOptions, choice, draw_sign, positive_float, positive_int
from .reference import check_activation


def _step_option(name: str) -> property:
    """A field of ``net.options`` read and set as an attribute (``net.T = 20`` validates)."""
    def get(self):
        return getattr(self.options, name)

    def set_(self, value):
        self.options = replace(self.options, **{name: value})

    return property(get, set_, doc=f"Default ``{name}`` of ``ep_step`` (a field of ``options``).")


class EPModule(nn.Module):
    """Base of ``EPNet`` and ``ConvEPNet``; see those for the options.

    Attributes: ``options`` (the default ``StepOptions``; ``T``, ``K``, ``rule``,
    ``nudging``, ``error``, ``normalize``, ``tol``, ``nudge_schedule``,
    ``readout_error`` and ``schedule`` read and set its fields),
    ``nudge`` (beta_f), ``output``, ``activation``, ``backend``, ``check_every``,
    ``cuda_graph``, ``last_steps`` (``{"free": t, "nudged": [k, ...]}`` of the last
    call), ``last_residual`` (the last call's free-phase residual, see there) and
    ``last_residual_tensor`` (the same as a 0-dim tensor on the device), ``topology``.
    """

    def __init__(self, *, output: str, activation: str, nudge: float, T: int, K: int, rule: str, nudging: str,
                 error: str, normalize: bool, backend: str, tol: Optional[float], check_every: int,
                 cuda_graph: bool, nudge_schedule: str = "constant", readout_error: str = "free",
                 schedule: str = "synchronous"):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.activation = check_activation(activation)
        self.nudge = positive_float("nudge", nudge)
        self.options = StepOptions(T=T, K=K, rule=rule, nudging=nudging, error=error, normalize=normalize, tol=tol,
                                   nudge_schedule=nudge_schedule, readout_error=readout_error, schedule=schedule)
        self._check_readout_error(self.options)
        self.backend = choice("backend", backend, BACKENDS)
        self.check_every = positive_int("check_every", check_every)
        self.cuda_graph = bool(cuda_graph)
        self.last_steps: Optional[dict] = None
        self.last_residual_tensor: Optional[Tensor] = None
        self.backend_state = be.BackendState()

    # deepcopy/pickle: the backend state (tables, buffers, CUDA graphs) is left behind
    def __getstate__(self):
        state = dict(self.__dict__)
        state["backend_state"] = be.BackendState()
        return state

    def __setstate__(self, state):
        state.setdefault("backend_state", be.BackendState())
        state.setdefault("last_residual_tensor", None)
        super().__setstate__(state)

    @property
    def last_residual(self) -> Optional[float]:
        """How far the last ``relax`` / ``ep_step`` / ``forward`` free phase was from its
        fixed point: ``max_b ||z_b[t] - z_b[t-1]|| / ||z_b[t]||`` over the batch, z_b
        sample b's state layers at the phase's last step t (the largest per-sample change
        that ``tol`` checks, relative to the state's norm). ~1e-7 (float32) once settled;
        of order 0.1-1 for a relaxation that oscillates or diverges. None before any call.
        Reading it syncs with the device; ``last_residual_tensor`` is the same number as
        a 0-dim tensor, without a sync."""
        r = self.last_residual_tensor
        return None if r is None else float(r)

    T, K, rule, nudging = _step_option("T"), _step_option("K"), _step_option("rule"), _step_option("nudging")
    error, normalize, tol = _step_option("error"), _step_option("normalize"), _step_option("tol")
    nudge_schedule, readout_error = _step_option("nudge_schedule"), _step_option("readout_error")
    schedule = _step_option("schedule")

    def _check_readout_error(self, o: StepOptions) -> None:
        if o.readout_error == "nudged" and self.output != "softmax":
            raise ValueError("readout_error='nudged' needs a softmax readout (output='softmax'); output neurons "
                             "have no readout to update")

    # ------------------------------------------------------------------ what a net supplies
    def spec(self):
        """What the engines read of this net now (parameters, topology, readout)."""
        raise NotImplementedError

    def reference_engine(self):
        """The PyTorch reference engine over this net's current parameters."""
        raise NotImplementedError

    def triton_engine(self, x: Tensor):
        """The Triton engine for input ``x`` (its device, batch size), input unchecked."""
        raise NotImplementedError

    def check_input(self, x: Tensor) -> Tensor:
        """A validated input batch in the shape and dtype the engines take."""
        raise NotImplementedError

    def _reference_only(self, tol: Optional[float]) -> bool:
        """Whether ``auto`` must use the reference for this call (a Triton engine
        without some feature)."""
        return False

    # ------------------------------------------------------------------ structure, checks and cost
    @property
    def n_state(self) -> int:
        """Number of state layers that relax."""
        return self.topology.n_state

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features

    def layer_bias(self, l: int) -> Optional[Tensor]:
        """Bias of state layer l (that of the layer feeding it)."""
        return self.layers[l - 1].bias

    def readout_matrices(self) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """(W_f, b_f, M_f): readout weight (C, n_L), bias, and the matrix (C, n_L) that
        carries the error back (W_f itself; a dense net may use a fixed random one)."""
        head = self.layers[-1]
        return head.weight, head.bias, head.weight

    def _check_common(self, x: Tensor) -> None:
        """Type, dtype and device of an input (shapes are each net's)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() and x.shape[0] == 0:  # before any work: the updates divide by the batch size
            raise ValueError(f"empty batch: the input of shape {tuple(x.shape)} holds no samples; give at least one "
                             "(skip empty batches before calling)")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor (e.g. pixels scaled to [0, 1]), got {x.dtype}")
        W = self.layers[0].weight
        if x.device != W.device:
            raise ValueError(f"input is on {x.device} but the network is on {W.device}; move one of them")

    def _check_finite(self, x: Tensor) -> Tensor:
        """``x``, checked for NaN and inf: at once on the host, deferred on a GPU
        (``engine.value_checks``: no host sync). Every call starts here, so bad values
        an earlier call's deferred checks found are raised here."""
        self.backend_state.checks.raise_ready()
        if vc.deferred(x):
            self.backend_state.checks.add(vc.flag(~torch.isfinite(x).all(), vc.NONFINITE_INPUT))
        elif not torch.isfinite(x.sum()) and not torch.isfinite(x).all():  # one cheap pass first
            raise ValueError("input contains NaN or infinite values")
        return x

    def check_target(self, y: Tensor, batch: int) -> Tensor:
        """Labels (B,) int in [0, C) or class probabilities (B, C) -> (B, C) target.
        Values are checked at once on the host, deferred on a GPU (no host sync)."""
        if not isinstance(y, Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(y).__name__}")
        C = self.num_classes
        W = self.layers[0].weight
        if y.dim() == 1 and not y.is_floating_point() and y.dtype != torch.bool:
            if y.shape[0] != batch:
                raise ValueError(f"got {y.shape[0]} labels for a batch of {batch} inputs")
            if y.numel() and vc.deferred(y):
                lo, hi = torch.aminmax(y)
                self.backend_state.checks.add(vc.flag((lo < 0) | (hi >= C), vc.BAD_LABELS))
            elif y.numel() and (int(y.min()) < 0 or int(y.max()) >= C):
                raise ValueError(f"labels must be class indices in [0, {C - 1}], got values in "
                                 f"[{int(y.min())}, {int(y.max())}]")
            # a comparison, not one_hot: on CUDA one_hot asserts on the device (a dead context) for a bad label
            y = y.to(W.device)
            return (y.unsqueeze(1) == torch.arange(C, device=W.device)).to(W.dtype)
        if y.dim() == 2 and y.is_floating_point():
            if tuple(y.shape) != (batch, C):
                raise ValueError(f"target probabilities must have shape ({batch}, {C}), got {tuple(y.shape)}")
            if vc.deferred(y):
                self.backend_state.checks.add(vc.flag(~torch.isfinite(y).all(), vc.NONFINITE_TARGET))
            elif not torch.isfinite(y).all():
                raise ValueError("targets contain NaN or infinite values")
            return y.to(device=W.device, dtype=W.dtype)
        raise ValueError(f"labels must be class indices of shape (batch,) with an integer dtype, or target "
                         f"probabilities of shape (batch, {C}); got shape {tuple(y.shape)}, dtype {y.dtype}")

    def check_pending(self) -> None:
        """Raise now for any bad input that earlier calls found on a GPU (value checks
        there are deferred so that no step waits for the device; this waits)."""
        self.backend_state.checks.flush()

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """Mean cost over the batch: cross-entropy of softmax logits, or P-EP's
        0.5 * ||y - s_out||^2. out, target: (B, C)."""
        if self.output == "neuron":
            return 0.5 * ((target - out) ** 2).sum(1).mean()
        return -(target * torch.log_softmax(out, dim=1)).sum(1).mean()

    # ------------------------------------------------------------------ running
    def backend_for(self, x: Tensor, tol: Optional[float] = None) -> str:
        """The backend that runs for input ``x`` (and tolerance ``tol``): ``"triton"`` or ``"torch"``."""
        tol = self.tol if tol is None else tol
        return be.resolve(self.backend, x, self.backend_state, reference_only=self._reference_only(tol))

    def logits(self, states) -> Tensor:
        """Output of the net for relaxed states ``[x, s_1, ..., s_n]``: softmax logits
        (B, C), or the output neurons' rates for a P-EP net."""
        return self.reference_engine().logits(states)

    def zero_states(self, x: Tensor) -> list[Tensor]:
        """The free phase's start ``[x, 0, ..., 0]`` (zeros of each state layer's shape)."""
        return self.reference_engine().zero_states(x)

    def drives(self, x: Tensor) -> list[Optional[Tensor]]:
        """Per state layer, what the relaxation does not change: the input drive of
        layer 1 and the biases after (see the engines)."""
        return self.reference_engine().drives(x)

    @torch.no_grad()
    def relax(self, x: Tensor, T: Optional[int] = None, *, tol: Optional[float] = None,
              schedule: Optional[str] = None) -> list[Tensor]:
        """Free phase: T steps (default ``self.T``) from zero with the input clamped.

        Returns the states ``[x, s_1, ..., s_n]``, views of internal buffers that the
        next call may overwrite (clone to keep). tol: stop early on convergence
        (default ``self.tol``); schedule: the steps' update order (default ``self.schedule``).
        """
        x = self.check_input(x)
        o = self.options.override(T=T, tol=tol, schedule=schedule)

        def free(engine):
            states, t = engine.free(x, o.T, o.tol, o.schedule)
            return engine.views(states, x), t, engine.residual

        done = None
        if self.backend_for(x, o.tol) == "triton":
            done = self.backend_state.first_use(self.backend, lambda: free(self._checked_triton_engine(x)))
        states, t, self.last_residual_tensor = done if done is not None else free(self.reference_engine())
        self.last_steps = {"free": t, "nudged": []}
        return states

    def forward(self, x: Tensor, T: Optional[int] = None) -> Tensor:
        """Relax the free phase for T steps (default ``self.T``) and return the logits
        (B, C) (P-EP: output rates). No autograd: train with ``ep_step``; for a
        differentiable feedforward pass see ``tritonep.baselines``."""
        return self.logits(self.relax(x, T)).clone()

    @torch.no_grad()
    def ep_step(self, x: Tensor, y: Tensor, *, T: Optional[int] = None, K: Optional[int] = None,
                rule: Optional[str] = None, nudging: Optional[str] = None, error: Optional[str] = None,
                normalize: Optional[bool] = None, tol: Optional[float] = None, nudge_schedule: Optional[str] = None,
                readout_error: Optional[str] = None, schedule: Optional[str] = None) -> tuple[Tensor, Tensor]:
        """One EP step: free phase, nudged phase(s), local updates into ``.grad``.

        Like ``loss.backward()``, it accumulates into each trained parameter's
        ``.grad`` (call ``optimizer.zero_grad()`` between steps); what it adds is a
        descent direction, so ``optimizer.step()`` then trains with any optimizer.
        Fixed random feedback matrices are buffers and get nothing.

        x: (B, ...) inputs (see the net's ``check_input``).
        y: (B,) integer labels in [0, C), or (B, C) target probabilities.
        T, K, rule, nudging, error, normalize, tol, nudge_schedule, readout_error, schedule:
        override the net's defaults for this call. schedule ``"alternating"`` updates
        the odd layers, then the even layers from their new states, in every step of
        both phases (about half the steps to settle a chain; ``Topology.update_order``).
        nudge_schedule ``"ramp"`` nudges the k-th nudged step (k = 1..K) by
        ``k * beta_f`` (with the error ``error`` chooses; with ``error="frozen"`` the
        paper authors' graph model); the rules, ``normalize`` and symmetric nudging
        then use the last step's strength ``K * beta_f`` wherever they need one.
        readout_error ``"nudged"`` updates the softmax readout with the error at the
        end of the (positive) nudged phase, ``(p^beta - y)^T s_L^0 / B``, as that model
        does, instead of its exact gradient at the free state.
        Returns ``(loss, logits)``: the free phase's mean cost (scalar) and its
        logits (B, C), both detached. ``self.last_steps`` holds the steps each phase ran,
        ``self.last_residual`` how far the free phase was from settling.
        """
        x = self.check_input(x)
        target = self.check_target(y, x.shape[0])
        o = self.options.override(T=T, K=K, rule=rule, nudging=nudging, error=error, normalize=normalize, tol=tol,
                                  nudge_schedule=nudge_schedule, readout_error=readout_error, schedule=schedule)
        self._check_readout_error(o)
        sign = draw_sign(o.nudging)
        done = None
        if self.backend_for(x, o.tol) == "triton":
            done = self.backend_state.first_use(self.backend, self._triton_step, x, target, o, sign)
        if done is None:  # the reference (or an auto net whose Triton path failed on first use)
            done = self._watched_step(self.reference_engine(), x, target, o, sign)
        loss, out, (t_free, steps), self.last_residual_tensor = done
        self.last_steps = {"free": t_free, "nudged": steps}
        return loss, out

    def _checked_triton_engine(self, x: Tensor):
        """``triton_engine(x)`` once ``x`` is known to suit the kernels (device, float32)."""
        be.check_triton_input(x)
        return self.triton_engine(x)

    def _triton_step(self, x: Tensor, target: Tensor, o: StepOptions, sign: float):
        engine = self._checked_triton_engine(x)
        graphs = self.backend_state.graphs
        if self.cuda_graph and o.tol is None and be.can_capture(x) and not graphs.off:
            engine.prepare(x, graph=True)  # bind every .grad to the buffer the graph writes

            def body(sx, st):
                engine.pack()  # captured: each replay packs the weights as they are then
                return self._watched_step(engine, sx, st, o, sign)

            done = graphs.run(self._graph_key(engine, x, target, o, sign), engine.graph_owner(), (x, target), body,
                              engine.grad_buffer().flat)
            if done is not None:
                return done
        engine.prepare(x)
        return self._watched_step(engine, x, target, o, sign)

    def _graph_key(self, engine, x: Tensor, target: Tensor, o: StepOptions, sign: float) -> tuple:
        """Everything a captured ``ep_step`` bakes in: shapes and dtypes, the step's
        options and sign, the net's settings read inside the step (nudge, output,
        activation), the engine's (precision, tiles, ...), torch's fp32 matmul
        precision, and the parameters' and buffers' addresses."""
        params = list(self.parameters()) + list(self.buffers())
        return (tuple(x.shape), x.dtype, tuple(target.shape), target.dtype, o, sign, self.nudge, self.output,
                self.activation, engine.graph_key(), torch.get_float32_matmul_precision(),
                tuple(p.data_ptr() for p in params))

    def _watched_step(self, engine, x: Tensor, target: Tensor, o: StepOptions, sign: float):
        """``_step``'s results and the free phase's residual (a 0-dim device tensor: a
        CUDA graph returns it too)."""
        return (*self._step(engine, x, target, o, sign), engine.residual)

    def _step(self, engine, x: Tensor, target: Tensor, o: StepOptions, sign: float):
        """Phases, contrast, updates and readout gradient of ``ep_step`` on ``engine``
        (arguments validated; no host sync without ``tol``, so a CUDA graph can capture
        it). Returns (loss, logits, (free steps, [nudged steps, ...]))."""
        B = x.shape[0]
        free, t_free = engine.free(x, o.T, o.tol, o.schedule)
        out, error = engine.readout(free, target)
        loss = self.loss(out, target)
        steps: list[int] = []

        def nudged(beta: float, tag: str):
            states, k = engine.nudged(free, target, error, beta, o.K, o.frozen, o.tol, tag, o.ramp, o.schedule)
            steps.append(k)
            return states

        beta, strength = self.nudge, o.strength(self.nudge)  # strength: the ramp's last step, K beta
        if o.nudging == "symmetric":
            a, b, span = nudged(beta, "plus"), nudged(-beta, "minus"), 2 * strength
        else:
            a, b, span = nudged(sign * beta, "plus"), free, sign * strength
        gain = self.topology.feedback_gain(strength) if o.normalize else None
        engine.update(o.rule, a, b, free, rules.link_coefficients(self.topology.trained_links(), o.rule, strength,
                                                                  span, B, gain))
        if self.output == "softmax":  # readout: exact cross-entropy gradient at the free state, or
            W_f, b_f, _ = self.readout_matrices()  # the error at the end of the positive nudged phase
            if o.readout_error == "nudged" and sign > 0:  # a negative random sign has no positive phase
                error = engine.readout(a, target)[1]
            rules.add_readout_gradient(W_f, b_f, error, engine.readout_input(free), B)
        return loss, out, (t_free, steps)
