"""Figures of the analysis results, written as PNG and SVG.

matplotlib is optional (``pip install 'tritonep[plot]'``): it is imported when a
figure is made, and a missing install raises an ImportError with that hint.
Figures are built without pyplot, so no global backend is touched.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from .alignment import BASELINES
from .dynamics import PATIENCE
from .strict_json import reported_float


def figure(nrows: int, ncols: int, size: tuple[float, float]):
    """A matplotlib Figure with an (nrows, ncols) grid of axes; no pyplot, so no
    global backend is touched."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'tritonep[plot]' "
                          "(or pip install matplotlib)") from None
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig, path) -> list[str]:
    """Write ``fig`` as PATH.png and PATH.svg (a .png/.svg suffix on ``path`` is dropped)."""
    from matplotlib import rc_context

    stem = Path(path)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        p = Path(f"{stem}.{ext}")
        # text stays text in the SVG (searchable, and smaller than glyph paths)
        with rc_context({"svg.fonttype": "none"}):
            fig.savefig(p, dpi=150)
        paths.append(str(p))
    return paths


def _finite(values) -> list[float]:
    """Numbers for plotting: reported strings/None to floats, +-inf to nan (not drawn)."""
    out = []
    for v in values:
        f = reported_float(v)
        out.append(f if math.isfinite(f) else float("nan"))
    return out


def plot_dynamics(report: dict, path, title: Optional[str] = None) -> list[str]:
    """Two panels from a ``dynamics_report`` (with traces): the state change per
    step against the tolerance, and the Lyapunov growth per step with the FTMLE
    and asymptotic exponent. Returns the PNG and SVG paths."""
    if "state_change" not in report:
        raise ValueError("plot_dynamics needs a dynamics_report made with traces=True")
    fig, ax = figure(1, 2, (11, 4.2))
    steps = list(range(1, len(report["state_change"]) + 1))
    a = ax[0, 0]
    a.semilogy(steps, _finite(report["state_change"]), label="max over batch of ||z_t - z_(t-1)||")
    a.axhline(report["tol"], color="k", ls="--", lw=1, label=f"tolerance {report['tol']:g}")
    t_conv = report["convergence_time"]
    if t_conv is not None:
        a.axvline(t_conv, color="C2", lw=1, label=f"converged at step {t_conv}")
    else:
        a.plot([], [], " ", label=f"never converged in {report['horizon']} steps")
    a.set(xlabel="step t", ylabel="state change (rate units, log scale)", title="Free-phase convergence")
    a.legend(fontsize=8)
    b = ax[0, 1]
    b.plot(steps, _finite(report["log_growth"]), lw=1, label="log growth of tangent per step (mean over batch)")
    b.axhline(reported_float(report["ftmle"]), color="C1", ls="--", label=f"FTMLE, first {report['T']} steps: "
              f"{reported_float(report['ftmle']):.3f}")
    b.axhline(reported_float(report["asymptotic_exponent"]), color="C3", ls=":", label="asymptotic (2nd half): "
              f"{reported_float(report['asymptotic_exponent']):.3f}")
    b.axhline(0.0, color="k", lw=0.5)
    b.set(xlabel="step t", ylabel="log ||J_t v_t|| (nats per step)",
          title=f"Lyapunov exponent (spectral radius {reported_float(report['spectral_radius']):.3g})")
    b.legend(fontsize=8)
    fig.suptitle(title or "Free-phase dynamics")
    return save_figure(fig, path)


def plot_alignment(result, path, title: Optional[str] = None) -> list[str]:
    """Plot a ``gradient_alignment`` result (bars per trained matrix) or an
    ``alignment_sweep`` list (lines per hidden matrix against the swept value).
    Returns the PNG and SVG paths."""
    if isinstance(result, list):
        return _plot_alignment_sweep(result, path, title)
    baselines = [b for b in BASELINES if b in result]
    names = list(result[baselines[0]])
    labels = [result["labels"].get(n, n) for n in names]
    fig, ax = figure(1, 2, (max(8, 1.2 * len(names) + 4), 4.2))
    width = 0.8 / len(baselines)
    for i, b in enumerate(baselines):
        xs = [k + (i - (len(baselines) - 1) / 2) * width for k in range(len(names))]
        ax[0, 0].bar(xs, _finite(result[b][n]["cosine"] for n in names), width, label=f"EP vs {b.upper()}")
        ax[0, 1].bar(xs, _finite(result[b][n]["norm_ratio_normalized"] for n in names), width,
                     label=f"EP vs {b.upper()}")
    ax[0, 0].set(xticks=range(len(names)), ylim=(min(0.0, ax[0, 0].get_ylim()[0]), 1.05), ylabel="cosine similarity",
                 title="Direction: cosine(EP update, gradient)")
    ax[0, 0].set_xticklabels(labels, rotation=45, ha="right")
    ax[0, 1].axhline(1.0, color="k", ls="--", lw=1, label="gradient-sized")
    ax[0, 1].set(xticks=range(len(names)), yscale="log", ylabel="||EP|| / (expected scale x ||gradient||)",
                 title="Size, normalised by beta_f x beta_l per hop")
    ax[0, 1].set_xticklabels(labels, rotation=45, ha="right")
    for a in ax[0]:
        a.set_xlabel("trained matrix (source -> target layer)")
        a.legend(fontsize=8)
    fig.suptitle(title or "EP update vs BP / BPTT gradients")
    return save_figure(fig, path)


def _plot_alignment_sweep(points: list[dict], path, title: Optional[str]) -> list[str]:
    if not points:
        raise ValueError("nothing to plot: the sweep has no points")
    varied = [k for k in ("feedback", "nudge", "T", "K") if len({json.dumps(p[k]) for p in points}) > 1]
    if len(varied) == 1 and all(isinstance(p[varied[0]], (int, float)) for p in points):
        xs, xlabel = [p[varied[0]] for p in points], {"feedback": "feedback coefficient beta_l",
                                                       "nudge": "nudge beta_f", "T": "free steps T",
                                                       "K": "nudged steps K"}[varied[0]]
        log_x = min(xs) > 0 and max(xs) / min(xs) >= 20
    else:  # several parameters vary: one tick per grid point
        xs, xlabel, log_x = list(range(len(points))), "grid point (" + ", ".join(varied or ["none varied"]) + ")", False
    first = points[0]["alignment"]
    baselines = [b for b in BASELINES if b in first]
    fig, ax = figure(1, len(baselines) + 1, (5 * (len(baselines) + 1), 4.2))
    for i, name in enumerate(first["hidden"]):
        style = dict(marker="o", color=f"C{i % 10}", label=first["labels"][name])
        for j, b in enumerate(baselines):
            ax[0, j].plot(xs, _finite(p["alignment"][b][name]["cosine"] for p in points), **style)
        ax[0, -1].plot(xs, _finite(p["alignment"][baselines[0]][name]["norm_ratio_normalized"] for p in points),
                       **style)
    for j, b in enumerate(baselines):
        ax[0, j].set(ylabel="cosine similarity", title=f"cosine(EP update, {b.upper()} gradient)")
    ax[0, -1].axhline(1.0, color="k", ls="--", lw=1)
    ax[0, -1].set(yscale="log", ylabel="||EP|| / (expected scale x ||gradient||)",
                  title=f"Normalised size vs {baselines[0].upper()}")
    for a in ax[0]:
        a.set_xlabel(xlabel)
        if log_x:
            a.set_xscale("log")
        a.legend(fontsize=7, title="matrix")
    fig.suptitle(title or "EP update vs gradients across the sweep")
    return save_figure(fig, path)


def plot_feedback_sweep(result: dict, path, title: Optional[str] = None) -> list[str]:
    """Four panels from ``sweep_feedback``: spectral radius, Lyapunov exponents,
    convergence time and mean cosine to BP/BPTT, against the feedback coefficient,
    one colour per feedback-weight kind. Returns the PNG and SVG paths."""
    fig, ax = figure(2, 2, (11, 8))
    for i, kind in enumerate(result["weights"]):
        pts = [p for p in result["points"] if p["feedback_weights"] == kind]
        xs, c = [p["feedback"] for p in pts], f"C{i}"
        ax[0, 0].plot(xs, _finite(p["spectral_radius"] for p in pts), "o-", color=c, label=kind)
        ax[0, 1].plot(xs, _finite(p["ftmle"] for p in pts), "o-", color=c, label=f"{kind}: FTMLE (first T steps)")
        ax[0, 1].plot(xs, _finite(p["asymptotic_exponent"] for p in pts), "s:", color=c,
                      label=f"{kind}: asymptotic")
        conv = [p["convergence_time"] for p in pts]
        ax[1, 0].plot(xs, _finite(conv), "o-", color=c, label=kind)
        never = [x for x, t in zip(xs, conv) if t is None]
        if never:  # drawn at the horizon, staggered so the kinds do not hide each other
            ax[1, 0].plot(never, [pts[0]["horizon"] * (1 - 0.04 * i)] * len(never), "x+"[i % 2], color=c, ms=10,
                          mew=2, label=f"{kind}: never (within {pts[0]['horizon']} steps)")
        for b, ls in (("bp", "o-"), ("bptt", "s:")):
            if f"mean_cosine_{b}" in pts[0]:
                ax[1, 1].plot(xs, _finite(p[f"mean_cosine_{b}"] for p in pts), ls, color=c,
                              label=f"{kind}: vs {b.upper()}")
    ax[0, 0].axhline(1.0, color="k", ls="--", lw=1, label="radius 1")
    ax[0, 0].set(yscale="log", ylabel="spectral radius of scaled coupling", title="Spectral radius")
    ax[0, 1].axhline(0.0, color="k", lw=0.5)
    ax[0, 1].set(ylabel="exponent (nats per step)", title="Maximal Lyapunov exponent")
    ax[1, 0].set(ylabel="steps to settle", title=f"Convergence time (change < tol for {PATIENCE} steps)")
    ax[1, 1].set(ylabel="mean cosine over hidden matrices", title="Alignment of EP updates with gradients")
    for a in ax.flat:
        a.set(xscale="log", xlabel="feedback coefficient beta_l")
        a.legend(fontsize=7)
    fig.suptitle(title or "Sweep of the feedback coefficient")
    return save_figure(fig, path)


def plot_alpha_beta(result: dict, path, title: Optional[str] = None) -> list[str]:
    """Four heatmaps from ``sweep_alpha_beta`` (rows alpha, columns beta): spectral
    radius (log colour), asymptotic Lyapunov exponent, convergence time ("never"
    cells grey) and mean cosine to BP, values written in the cells."""
    fig, ax = figure(2, 2, (11, 9))  # first: a missing matplotlib gives the install hint
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    alphas, betas = result["alphas"], result["betas"]
    cell = {(p["alpha"], p["beta"]): p for p in result["points"]}

    def grid(key):
        return [[_finite([cell[(a, b)][key]])[0] for b in betas] for a in alphas]

    rho = grid("spectral_radius")
    exp = grid("asymptotic_exponent")
    span = max([abs(v) for r in exp for v in r if math.isfinite(v)] or [1.0])
    panels = [
        ("spectral_radius", "Spectral radius", "radius (log colour)",
         dict(cmap="viridis", norm=LogNorm(vmin=min(v for r in rho for v in r if v > 0) if any(
             v > 0 for r in rho for v in r) else 1e-3, vmax=max(max(r) for r in rho) or 1.0)), "{:.3g}"),
        ("asymptotic_exponent", "Asymptotic Lyapunov exponent", "nats per step",
         dict(cmap="coolwarm", vmin=-span, vmax=span), "{:.2f}"),
        ("convergence_time", f"Convergence time (within {result['points'][0]['horizon']} steps)",
         "steps (grey: never)",
         dict(cmap=colormaps["viridis"].with_extremes(bad="lightgrey")), "{:.0f}"),
        ("mean_cosine_bp", "Mean cosine EP vs BP (hidden matrices)", "cosine",
         dict(cmap="magma", vmin=-1.0, vmax=1.0), "{:.2f}"),
    ]
    for a, (key, name, unit, style, fmt) in zip(ax.flat, panels):
        values = grid(key) if key in result["points"][0] else [[float("nan")] * len(betas) for _ in alphas]
        im = a.imshow(values, origin="lower", aspect="auto", **style)
        fig.colorbar(im, ax=a, label=unit)
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                text = "never" if key == "convergence_time" and math.isnan(v) else (
                    "n/a" if math.isnan(v) else fmt.format(v))
                a.text(j, i, text, ha="center", va="center", fontsize=7, color="k",
                       bbox=dict(boxstyle="round,pad=0.1", fc="white", alpha=0.6, lw=0))
        a.set(xticks=range(len(betas)), yticks=range(len(alphas)), title=name,
              xlabel="feedback coefficient beta_l", ylabel="forward scale alpha")
        a.set_xticklabels([f"{b:g}" for b in betas])
        a.set_yticklabels([f"{v:g}" for v in alphas])
    fig.suptitle(title or "alpha x beta grid")
    return save_figure(fig, path)


def plot_update_norms(records: dict, path, title: Optional[str] = None) -> list[str]:
    """Heatmaps (weight matrix x epoch) of log10 update norms, one panel per record
    of ``{label: train_update_norms result}`` on a shared colour scale (e.g. with and
    without residual links). Returns the PNG and SVG paths."""
    if not records:
        raise ValueError("nothing to plot: no records")
    logs = {}
    for label, rec in records.items():
        logs[label] = [[math.log10(v) if v > 0 else float("nan") for v in _finite(row)] for row in rec["norms"]]
    finite = [v for g in logs.values() for r in g for v in r if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    rows = max(len(r["names"]) for r in records.values())
    fig, ax = figure(1, len(records), (5.5 * len(records), 1.8 + 0.35 * rows))
    for a, (label, rec) in zip(ax[0], records.items()):
        im = a.imshow(logs[label], aspect="auto", cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        a.set(xticks=range(len(rec["epochs"])), yticks=range(len(rec["names"])), title=label,
              xlabel="epoch", ylabel="weight matrix (input at top)")
        a.set_xticklabels([str(e) for e in rec["epochs"]])
        a.set_yticklabels(rec["labels"], fontsize=7)
        fig.colorbar(im, ax=a, label="log10 mean ||EP update||_F per batch")
    fig.suptitle(title or "Per-layer EP update norms over training")
    return save_figure(fig, path)
