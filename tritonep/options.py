"""Option names, their validation, and the options of one EP step.

The bottom of the package (it imports nothing from tritonep): every net, engine,
trainer and command line takes its option names and checks from here, so an option
is spelt and validated in one place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

OUTPUTS = ("softmax", "neuron")
ERRORS = ("dynamic", "frozen")
BACKENDS = ("auto", "torch", "triton")
PRECISIONS = ("auto", "ieee", "tf32", "bf16")
# "auto" follows torch.get_float32_matmul_precision(), the contract of torch's own fp32 matmuls
MATMUL_PRECISIONS = {"highest": "ieee", "high": "tf32", "medium": "bf16"}
RULES = ("fre", "classic")
NUDGINGS = ("positive", "symmetric", "random-sign")
# "ramp": the k-th nudged step (k = 1..K) is nudged by k * beta (the paper authors' graph model)
NUDGE_SCHEDULES = ("constant", "ramp")
# the softmax readout's update from p at the free state (its exact gradient) or at the end
# of the (positive) nudged phase (the authors' graph model)
READOUT_ERRORS = ("free", "nudged")
ACTIVATIONS = ("tanh", "hard_sigmoid", "pep_sigmoid")
# how a relaxation step updates the state layers: all from the previous step's states, or the
# odd layers then the even layers from the odd layers' new states (``Topology.update_order``)
SCHEDULES = ("synchronous", "alternating")


def kernel_precision(precision: str) -> str:
    """The operand precision the Triton kernels compute with: ``precision`` itself,
    or for ``"auto"`` the one ``torch.get_float32_matmul_precision()`` names
    (``"highest"`` -> ``"ieee"``, ``"high"`` -> ``"tf32"``, ``"medium"`` -> ``"bf16"``),
    read at each call."""
    if precision != "auto":
        return precision
    return MATMUL_PRECISIONS.get(torch.get_float32_matmul_precision(), "ieee")


def positive_int(name: str, v, what: str = "number of steps") -> int:
    """``v`` if it is an int >= 1 (not a bool), else a ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int ({what}), got {v!r}")
    return v


def positive_float(name: str, v) -> float:
    """``float(v)`` if it is a finite number > 0, else a ValueError naming ``name``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return float(v)


def optional_positive_float(name: str, v) -> Optional[float]:
    return None if v is None else positive_float(name, v)


def choice(name: str, v, options) -> str:
    """``v`` if it is one of ``options``, else a ValueError listing them."""
    if v not in options:
        raise ValueError(f"unknown {name} {v!r}; expected one of {tuple(options)}")
    return v


@dataclass(frozen=True)
class StepOptions:
    """What one ``ep_step`` runs: phase lengths, rule, nudging, error mode, nudge
    schedule, readout error, normalisation, the convergence tolerance and the update
    schedule of a relaxation step (``schedule``). A net
    holds its defaults as one of these; ``override`` applies (and validates) the
    per-call keywords."""

    T: int = 10
    K: int = 10
    rule: str = "fre"
    nudging: str = "positive"
    error: str = "dynamic"
    normalize: bool = False
    tol: Optional[float] = None
    nudge_schedule: str = "constant"
    readout_error: str = "free"
    schedule: str = "synchronous"

    def __post_init__(self):
        positive_int("T", self.T)
        positive_int("K", self.K)
        choice("rule", self.rule, RULES)
        choice("nudging", self.nudging, NUDGINGS)
        choice("error", self.error, ERRORS)
        choice("nudge_schedule", self.nudge_schedule, NUDGE_SCHEDULES)
        choice("readout_error", self.readout_error, READOUT_ERRORS)
        choice("schedule", self.schedule, SCHEDULES)
        object.__setattr__(self, "normalize", bool(self.normalize))
        object.__setattr__(self, "tol", optional_positive_float("tol", self.tol))

    @property
    def frozen(self) -> bool:
        """The output error stays at its free-phase value during the nudged phase."""
        return self.error == "frozen"

    @property
    def ramp(self) -> bool:
        """The k-th nudged step is nudged by k * beta (k = 1..K)."""
        return self.nudge_schedule == "ramp"

    def strength(self, beta: float) -> float:
        """The nudge strength the rules and ``normalize`` use: ``beta``, or with the ramp
        the last step's ``K * beta``."""
        return beta * self.K if self.ramp else beta

    def override(self, **changes) -> "StepOptions":
        """A copy with the keywords that are not None replaced (and validated)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **changes) if changes else self


def draw_sign(nudging: str) -> float:
    """The sign of the nudge for one step: -1 or +1 from torch's RNG for
    ``"random-sign"`` (so seeded runs repeat), +1 otherwise."""
    if nudging == "random-sign":
        return 1.0 if torch.rand(()).item() < 0.5 else -1.0
    return 1.0
