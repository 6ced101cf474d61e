"""Named training configurations: the rows of the FRE-RNN paper's tables.

Each preset is a flat dict keyed like the CLI options. Sources: the paper
(Liu & Chen, arXiv 2508.11659) and its authors' code for FRE-RNN rows; Ernoult
et al. 2019 for the P-EP rows. Deep rows: 64 units per layer, T = 10 L, K = 5 L.
"""
from __future__ import annotations

import copy

# Defaults every preset starts from (then overridden per row, then by the CLI).
BASE = dict(
    dataset="mnist",
    hidden=[512, 512],
    method="ep",                  # ep | bp | fa
    activation="tanh",
    output="softmax",             # softmax (FRE) | neuron (P-EP)
    feedback=0.01,                # beta_l
    feedback_weights="symmetric",  # symmetric | random
    nudge=0.1,                    # beta_f
    alpha=1.0,
    residual=None,
    agt=None,
    bias=False,
    rule="fre",
    nudging="positive",
    error="dynamic",
    normalize=False,
    T=10,
    K=10,
    optimizer="adam",
    lr=1e-3,                      # float, or one per weight layer from input to output
    weight_decay=0.0,
    batch_size=500,
    epochs=50,
    seed=0,
    limit_train=None,
    limit_test=None,
    device="auto",
    backend="auto",
    description="",
)


def _row(**kw) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg.update(kw)
    return cfg


def _build() -> dict[str, dict]:
    p: dict[str, dict] = {}
    p["mnist-2hl"] = _row(description="Table 1, 2HL: 784-512-512-10, T=10 K=10 (the authors' code runs K=5)")
    p["mnist-3hl"] = _row(hidden=[512] * 3, T=18, K=10, description="Table 1, 3HL with Adam")
    p["mnist-3hl-sgd"] = _row(hidden=[512] * 3, T=18, K=10, optimizer="sgd", lr=0.1, batch_size=20, epochs=100,
                              description="Table 1, 3HL with SGD lr 0.1, batch 20, 100 epochs")
    p["mnist-2hl-pep"] = _row(output="neuron", activation="pep_sigmoid", feedback=1.0, nudge=0.5, rule="classic",
                              T=100, K=20, optimizer="sgd", lr=[0.2, 0.05, 0.005], batch_size=20, epochs=50,
                              description="P-EP baseline (Ernoult et al. 2019), 2HL")
    p["mnist-3hl-pep"] = _row(hidden=[512] * 3, output="neuron", activation="pep_sigmoid", feedback=1.0, nudge=0.5,
                              rule="classic", T=180, K=20, optimizer="sgd", lr=[0.2, 0.05, 0.01, 0.002],
                              batch_size=20, epochs=100, description="P-EP baseline (Ernoult et al. 2019), 3HL")
    for ds, lr in (("mnist", 1e-3), ("cifar10", 2e-4)):
        deep = dict(dataset=ds, feedback=0.1, nudge=0.1, lr=lr)
        for L in (5, 10):
            p[f"{ds}-{L}hl"] = _row(hidden=[64] * L, T=10 * L, K=5 * L, **deep,
                                    description=f"Table 2, {L}HL symmetric")
            p[f"{ds}-{L}hl-asym"] = _row(hidden=[64] * L, T=10 * L, K=5 * L, feedback_weights="random", **deep,
                                         description=f"Table 2, {L}HL asymmetric (fixed random feedback)")
        for L in (10, 20):
            p[f"{ds}-{L}hl-res"] = _row(hidden=[64] * L, T=10 * L, K=5 * L, residual=3, **deep,
                                        description=f"Table 2, {L}HL with residual links every 3 layers")
        p[f"{ds}-10hl-agt"] = _row(hidden=[64] * 10, T=100, K=50, feedback_weights="random", agt=0.2, **deep,
                                   description="Table 2, 10HL asymmetric with AGT links (P=0.2)")
    # BP on the same architecture, and feedback alignment for the asymmetric rows
    for name in [n for n in p if not n.endswith("-pep")]:
        p[f"{name}-bp"] = {**copy.deepcopy(p[name]), "method": "bp",
                           "description": p[name]["description"] + "; trained by BP"}
        if name.endswith("-asym"):
            p[f"{name}-fa"] = {**copy.deepcopy(p[name]), "method": "fa",
                               "description": p[name]["description"] + "; trained by feedback alignment"}
    return dict(sorted(p.items()))


PRESETS = _build()


def get(name: str) -> dict:
    """A fresh copy of preset ``name``; unknown names raise with the close matches."""
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown preset {name!r}{hint} (`tritonep train --list` lists them)")
    return copy.deepcopy(PRESETS[name])
