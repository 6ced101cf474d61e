"""Which state layers connect to which, through which matrix, with which scale.

Layer indices: 0 is the clamped input, 1..n are the state layers that relax (the
hidden layers, plus the output neurons for a P-EP net). Every connection is one
:class:`Link`; a step of the dynamics adds ``scale * s[src] @ M`` to the
pre-activation of ``dst`` for each link into it (see ``tritonep.reference``).

Matrices are named, not held: ``weight`` is a key the network resolves to a
tensor (``"layers.1"`` is the ``Dense`` feeding state layer 2, ``"skips.1_4"`` a
residual/AGT forward weight, ``"fixed.B2_1"`` a fixed random feedback matrix).
Every matrix is stored like an ``nn.Linear`` weight, shape ``(out, in)``. A link
uses it either as a linear map from ``src`` (``transpose=False``: the matrix is
``(n_dst, n_src)``) or transposed (``transpose=True``: symmetric feedback through
the forward weight, which is ``(n_src, n_dst)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .options import SCHEDULES, choice

FEEDBACK_WEIGHTS = ("symmetric", "random")


@dataclass(frozen=True)
class Link:
    """One directed connection ``src -> dst`` of the recurrent dynamics.

    kind: ``"forward"`` (src < dst) or ``"feedback"`` (src > dst).
    weight: key of the matrix (see module docstring).
    transpose: use the stored ``(out, in)`` matrix transposed (symmetric feedback).
    scale: alpha for forward links between state layers, the receiving layer's
        feedback coefficient for feedback links, 1 for the input drive.
    trained: whether the EP rule updates this matrix through this link (a
        symmetric feedback link reuses a forward weight and is not trained twice).
    """

    src: int
    dst: int
    kind: str
    weight: str
    transpose: bool
    scale: float
    trained: bool

    @property
    def feeds_bias(self) -> bool:
        """Whether this is the stack's layer feeding ``dst`` (``layers.{dst-1}``), whose
        bias is ``dst``'s bias, trained by the same rule."""
        return self.weight == f"layers.{self.dst - 1}"


@dataclass(frozen=True)
class Topology:
    """All links of a layered net, with helpers the dynamics and rules need.

    sizes: widths ``[n_in, n_1, ..., n_n]`` of the input and the state layers.
    links: every link, input drive included (``src == 0``).
    """

    sizes: tuple[int, ...]
    links: tuple[Link, ...]

    @property
    def n_state(self) -> int:
        return len(self.sizes) - 1

    def incoming(self, dst: int, *, include_input: bool = False) -> list[Link]:
        """Links into state layer ``dst``, the input drive only if asked for."""
        return [k for k in self.links if k.dst == dst and (include_input or k.src != 0)]

    def trained_links(self) -> list[Link]:
        return [k for k in self.links if k.trained]

    def skip_pairs(self) -> list[tuple[int, int]]:
        """(i, j) pairs of trained forward links that skip layers (residual and AGT)."""
        return [(k.src, k.dst) for k in self.links if k.trained and k.weight.startswith("skips.")]

    def fixed_matrices(self) -> dict[str, tuple[int, int]]:
        """Fixed random matrices the links use: key -> (out, in) shape."""
        return {
            k.weight: (self.sizes[k.dst], self.sizes[k.src])
            for k in self.links
            if k.weight.startswith("fixed.")
        }

    def update_order(self, schedule: str) -> Optional[list[list[int]]]:
        """The groups of state layers one relaxation step updates, one group after the
        other: None for ``"synchronous"`` (every layer reads the previous step's
        states); for ``"alternating"`` the odd layers, then the even layers, which read
        the odd layers' new states (red-black Gauss-Seidel). On a chain, and with
        residual links spanning an odd distance (every 3 layers), no link joins two
        layers of one group; a link that does (an AGT link or residual link spanning an
        even distance) reads its source as it was at the start of the half-step, as a
        synchronous step would."""
        if choice("schedule", schedule, SCHEDULES) == "synchronous" or self.n_state == 1:
            return None
        layers = range(1, self.n_state + 1)
        return [[l for l in layers if l % 2 == 1], [l for l in layers if l % 2 == 0]]

    def feedback_gain(self, top_gain: float = 1.0) -> list[float]:
        """How strongly a nudge on the top layer reaches each state layer.

        gain[n] = top_gain; gain[l] = max over feedback links m -> l of scale * gain[m]
        (the strongest path). Returns a list indexed by layer (index 0 unused, 0.0).
        Used by ``normalize=True`` to undo the per-hop shrinking of FRE updates.
        """
        n = self.n_state
        gain = [0.0] * (n + 1)
        gain[n] = float(top_gain)
        for dst in range(n - 1, 0, -1):
            gain[dst] = max(
                (abs(k.scale) * gain[k.src] for k in self.incoming(dst) if k.kind == "feedback"),
                default=0.0,
            )
        return gain


def feedback_coefficients(feedback: float | Sequence[float], n_state: int) -> list[float]:
    """Expand ``feedback`` to one coefficient per layer that receives feedback.

    Returns a list of length ``n_state + 1`` indexed by receiving layer (entries 0
    and ``n_state`` are unused, 0.0): layers 1..n_state-1 receive feedback.
    """
    n_fb = n_state - 1
    if isinstance(feedback, (int, float)) and not isinstance(feedback, bool):
        betas = [float(feedback)] * n_fb
    else:
        try:
            betas = [float(b) for b in feedback]
        except TypeError:
            raise TypeError(
                f"feedback must be a float or a sequence of floats, got {type(feedback).__name__}"
            ) from None
        if len(betas) != n_fb:
            raise ValueError(
                f"feedback has {len(betas)} coefficients, expected one per layer that receives "
                f"feedback: {n_fb} (state layers 1..{n_state - 1})"
            )
    for b in betas:
        if not b == b or b < 0:  # NaN or negative
            raise ValueError(f"feedback coefficients must be finite and >= 0, got {betas}")
    return [0.0] + betas + [0.0]


def residual_pairs(n_state: int, residual: int | Sequence[Sequence[int]] | None) -> list[tuple[int, int]]:
    """Residual links as (i, j) pairs with i < j.

    ``residual=k`` (int) links every k-th layer starting at layer 1: for 10 layers
    and k=3, (1,4), (4,7), (7,10), the paper's pattern. A sequence of pairs is taken
    as given. Pairs must join two state layers at least two apart.
    """
    if residual is None:
        return []
    if isinstance(residual, bool) or not isinstance(residual, (int, list, tuple)):
        raise TypeError(f"residual must be an int (link every k layers) or a list of (i, j) pairs, got {residual!r}")
    if isinstance(residual, int):
        if residual < 2:
            raise ValueError(f"residual=k links layers k apart and needs k >= 2, got {residual}")
        return [(i, i + residual) for i in range(1, n_state - residual + 1, residual)]
    pairs = []
    for p in residual:
        i, j = (int(v) for v in p)
        i, j = min(i, j), max(i, j)
        if not (1 <= i and j <= n_state and j - i >= 2):
            raise ValueError(
                f"residual pair {tuple(p)} must join state layers 1..{n_state} at least two apart"
            )
        pairs.append((i, j))
    return sorted(set(pairs))


def agt_pairs(n_state: int, p: float, seed: int) -> list[tuple[int, int]]:
    """Arbitrary-graph-topology links: each ordered pair (i, j), i != j, of state
    layers not already adjacent gets a link with probability ``p``, drawn from
    ``seed``. i < j are forward links, i > j feedback links."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"agt probability must be in [0, 1], got {p}")
    gen = torch.Generator().manual_seed(int(seed))
    pairs = []
    for i in range(1, n_state + 1):
        for j in range(1, n_state + 1):
            if abs(i - j) < 2:
                continue
            if torch.rand((), generator=gen).item() < p:
                pairs.append((i, j))
    return pairs


def agt_links(n_state: int, agt, seed: int) -> list[tuple[int, int]]:
    """The extra AGT links of ``agt``: a probability P (``agt_pairs``' seeded draw) or
    an explicit list of directed pairs ``[(i, j), ...]`` (a published graph rebuilt),
    each joining two state layers of 1..n at least two apart, i < j forward and i > j
    feedback, as the draw makes them."""
    if isinstance(agt, bool):
        raise TypeError(f"agt must be a probability or a list of (i, j) pairs, got {agt!r}")
    if isinstance(agt, (int, float)):
        return agt_pairs(n_state, float(agt), seed)
    if not isinstance(agt, (list, tuple)):
        raise TypeError(f"agt must be a probability or a list of (i, j) pairs, got {agt!r}")
    pairs = []
    for p in agt:
        if not isinstance(p, (list, tuple)) or len(p) != 2 or any(isinstance(v, bool) or not isinstance(v, int)
                                                                  for v in p):
            raise ValueError(f"agt link {p!r} must be a pair of ints (i, j)")
        i, j = p
        if not (1 <= i <= n_state and 1 <= j <= n_state and abs(i - j) >= 2):
            raise ValueError(f"agt link {tuple(p)} must join state layers 1..{n_state} at least two apart")
        if (i, j) in pairs:
            raise ValueError(f"agt link {tuple(p)} is listed twice")
        pairs.append((i, j))
    return pairs


def layered(
    sizes: Sequence[int],
    *,
    feedback: float | Sequence[float],
    feedback_weights: str = "symmetric",
    alpha: float = 1.0,
    residual: int | Sequence[Sequence[int]] | None = None,
    agt: float | Sequence[Sequence[int]] | None = None,
    agt_seed: int = 0,
) -> Topology:
    """Build the links of a layered net.

    sizes: ``[n_in, n_1, ..., n_n]`` (input and state layers; no softmax readout).
    feedback: beta_l, scale of feedback into layer l (float, or one per layer 1..n-1).
    feedback_weights: ``"symmetric"`` (W^T) or ``"random"`` (fixed random matrices).
    alpha: scale of forward links between state layers (not the input drive).
    residual: int k or list of (i, j) pairs of bidirectional long-range links.
    agt: probability of an extra link per ordered pair, or the directed pairs
    themselves (``agt_links``; needs random feedback).
    """
    if feedback_weights not in FEEDBACK_WEIGHTS:
        raise ValueError(f"feedback_weights must be one of {FEEDBACK_WEIGHTS}, got {feedback_weights!r}")
    n = len(sizes) - 1
    beta = feedback_coefficients(feedback, n)
    sym = feedback_weights == "symmetric"
    links = [Link(0, 1, "forward", "layers.0", False, 1.0, True)]

    def both_ways(i: int, j: int, weight: str) -> None:
        links.append(Link(i, j, "forward", weight, False, float(alpha), True))
        if sym:
            links.append(Link(j, i, "feedback", weight, True, beta[i], False))
        else:
            links.append(Link(j, i, "feedback", f"fixed.B{j}_{i}", False, beta[i], False))

    for l in range(1, n):
        both_ways(l, l + 1, f"layers.{l}")
    res = residual_pairs(n, residual)
    for i, j in res:
        both_ways(i, j, f"skips.{i}_{j}")
    if agt is not None:
        if sym:
            raise ValueError("agt topology needs feedback_weights='random' (its i>j links are fixed random feedback)")
        for i, j in agt_links(n, agt, agt_seed):
            if i < j and (i, j) not in res:
                links.append(Link(i, j, "forward", f"skips.{i}_{j}", False, float(alpha), True))
            elif i > j and (j, i) not in res:
                links.append(Link(i, j, "feedback", f"fixed.B{i}_{j}", False, beta[j], False))
    return Topology(tuple(int(s) for s in sizes), tuple(links))
