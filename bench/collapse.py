"""What precedes a deep net's collapse: one training run with per-epoch diagnostics.

    python bench/collapse.py [--preset mnist-20hl-res] [--seed 0] [--out bench/results/collapse/RUN.json]
                             [--data-dir ../shared/data] [--resume] [--guard R]

Trains a preset as ``tritonep reproduce`` does (the paper's variant, its full budget)
through ``train.run`` and adds to each epoch's record (``diag``):

- ``coupling_radius``: spectral radius of the scaled state-to-state matrix C
  (``analysis.dynamics.spectral_radius``);
- ``jacobian_radius``: the largest spectral radius, over 4 fixed probe samples, of
  one free step's Jacobian diag(rho') C at the state the free phase reached after
  T steps: under 1 the fixed point attracts, and 1 - radius is its rate;
- ``probe_residual``: the free phase's relative last-step residual on the probe
  batch (500 training images) after T steps and after 4T steps;
- ``contrast``: per state layer, ||s^beta - s^0|| / ||s^0|| on the probe batch, the
  EP signal a residual competes with (first, middle and last hidden layer);
- ``weight_norm`` and ``step``: per weight matrix, ||W||_F and ||W_e - W_{e-1}||_F / ||W_{e-1}||_F;
- ``adam_ratio``: per weight matrix, the mean |m_hat| / (sqrt(v_hat) + eps) of Adam's
  state (1: every element moves by the full learning rate).

It keeps the last three epochs' checkpoints (``RUN.eE.ckpt``) besides the run's own,
so the epochs around a collapse can be probed again.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import torch

from tritonep import data, train
from tritonep.analysis import dynamics
from tritonep.paper import ROWS
from tritonep.reproduce import row_config

REPO = Path(__file__).resolve().parents[1]


def probe(ds, n=500):
    x = data.to_float(ds.x_train[:n])
    return x, ds.y_train[:n]


def relative(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@torch.no_grad()
def free_residual(net, x, T):
    states = [s.clone() for s in net.relax(x, T=T)]
    nxt = net.relax(x, T=T + 1)
    cur = torch.cat([s.flatten(1) for s in states[1:]], 1)
    new = torch.cat([s.flatten(1) for s in nxt[1:]], 1)
    return float(((new - cur).norm(dim=1) / new.norm(dim=1).clamp_min(1e-30)).max()), states


@torch.no_grad()
def contrast(net, x, y, free) -> dict:
    """||s^beta - s^0|| / ||s^0|| per hidden layer (first, middle, last) after the
    net's nudged phase (its nudge, error mode and schedule), on the reference engine."""
    eng = net.reference_engine()
    o = net.options
    target = net.check_target(y, x.shape[0])
    drives = eng.drives(x)
    nudge = eng.nudge(free, target, net.nudge, o.frozen, o.ramp)
    nudged, _ = eng.run([s.clone() for s in free], drives, net.K, nudge=nudge)
    L = net.n_state
    return {l: relative(nudged[l], free[l]) for l in sorted({1, max(1, L // 2), L})}


class Diagnostics:
    """The ``on_epoch`` hook: adds ``diag`` to each epoch's record and keeps checkpoints."""

    def __init__(self, x, y, ckpt: Path):
        self.x, self.y, self.ckpt, self.prev = x, y, ckpt, None

    def __call__(self, rec, net, opt):
        x, y = self.x.to(net.layers[0].weight.device), self.y.to(net.layers[0].weight.device)
        names = [n for n, p in net.named_parameters() if n.endswith("weight")]
        weights = {n: net.get_parameter(n).detach().clone() for n in names}
        d = {"coupling_radius": dynamics.spectral_radius(net)}
        r_T, free = free_residual(net, x, net.T)
        d["probe_residual"] = [r_T, free_residual(net, x, 4 * net.T)[0]]
        off = dynamics.state_offsets(net)
        z = torch.cat([s.flatten(1) for s in free[1:]], 1)
        d["jacobian_radius"] = max(float(torch.linalg.eigvals(dynamics.step_jacobian(net, x[i:i + 1], z[i])).abs().max())
                                   for i in range(4))
        d["contrast"] = contrast(net, x, y, free)
        d["weight_norm"] = {n: float(w.norm()) for n, w in weights.items()}
        if self.prev is not None:
            d["step"] = {n: relative(w, self.prev[n]) for n, w in weights.items()}
        self.prev = weights
        ratios = {}
        for n in names:
            st = opt.state.get(net.get_parameter(n), {})
            if "exp_avg" in st:
                g = opt.param_groups[0]
                b1, b2 = g["betas"]
                t = float(st["step"])
                m = st["exp_avg"] / (1 - b1 ** t)
                v = st["exp_avg_sq"] / (1 - b2 ** t)
                ratios[n] = float((m.abs() / (v.sqrt() + g["eps"])).mean())
        d["adam_ratio"] = ratios
        rec["diag"] = d
        print(f"epoch {rec['epoch']}: test {rec['test_acc']:.2f} loss {rec['train_loss']:.4f} "
              f"C-radius {d['coupling_radius']:.3f} J-radius {d['jacobian_radius']:.4f} "
              f"probe residual {r_T:.1e} (4T {d['probe_residual'][1]:.1e}) "
              f"max step {max(d.get('step', {0: 0}).values()):.2e} "
              f"max adam {max(ratios.values(), default=math.nan):.3f}", file=sys.stderr, flush=True)
        if self.ckpt.is_file():  # the previous epoch's checkpoint, kept before it is overwritten
            shutil.copyfile(self.ckpt, self.ckpt.with_name(f"{self.ckpt.stem}.e{rec['epoch'] - 1}.ckpt"))
            old = self.ckpt.with_name(f"{self.ckpt.stem}.e{rec['epoch'] - 4}.ckpt")
            old.unlink(missing_ok=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-20hl-res")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    ap.add_argument("--guard", type=float, default=None, help="guard_residual: skip the update of unsettled batches")
    ap.add_argument("--start", default=None, help="continue from this checkpoint (e.g. RUN.e14.ckpt kept by a run)")
    ap.add_argument("--clip", type=float, default=None, help="clip the global norm of .grad (the config's clip)")
    ap.add_argument("--lr", type=float, default=None, help="another learning rate")
    args = ap.parse_args(argv)
    row = ROWS[args.preset]
    cfg = row_config(row, args.seed, {"epochs": args.epochs, "limit_train": args.limit_train})
    cfg["guard_residual"] = args.guard
    if args.clip is not None:
        cfg["clip"] = args.clip
    if args.lr is not None:
        cfg["lr"] = args.lr
    out = Path(args.out or REPO / "bench" / "results" / "collapse" / f"{args.preset}-seed{args.seed}.json")
    ckpt = out.with_suffix(".ckpt")
    ds = data.load(cfg["dataset"], args.data_dir, download=False)
    x, y = probe(ds)
    resume = args.start or (ckpt if args.resume and ckpt.is_file() else None)
    train.run(cfg, out=out, checkpoint=ckpt, resume=resume, dataset=ds, progress=False, on_epoch=Diagnostics(x, y, ckpt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
