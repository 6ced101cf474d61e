"""Steps a free phase needs to settle, synchronous against alternating updates.

    python bench/schedule_steps.py [--presets mnist-2hl,mnist-5hl,mnist-10hl-res] [--train-steps 300]
                                   [--data-dir ../shared/data] [--out bench/results/schedule-steps-cpu-DATE.json]

Each preset's net (its paper settings, synchronous) is trained for ``--train-steps``
Adam steps on MNIST (batch 500), so its dynamics are those of a net that has learned
something; then, on 500 held-out test images, its free phase runs from zero under
each schedule and records the relative residual of every step,
``max_b ||z_t - z_{t-1}|| / ||z_t||`` (``EPModule.last_residual``), and the first
step from which it stays under 1e-4 and under 1e-6.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import harness  # bench/harness.py
import torch

from tritonep import data, reference as ref
from tritonep.build import build_net, build_optimizer
from tritonep.presets import get

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (1e-4, 1e-6)


def residuals(net, x, steps: int, schedule: str) -> list[float]:
    """The relative residual after each of ``steps`` free steps from zero (float32)."""
    eng = net.reference_engine()
    drives, terms = eng.drives(x), eng.make_terms()
    order = net.topology.update_order(schedule)
    cur = eng.zero_states(x)
    out = []
    for t in range(steps):
        new = ref.step(cur, drives, terms, net.activation, skip_terms=t == 0, order=order)
        change = torch.sqrt(sum(((a - b) ** 2).sum(1) for a, b in zip(new[1:], cur[1:])))
        norm = torch.sqrt(sum((a ** 2).sum(1) for a in new[1:])).clamp_min(1e-30)
        out.append(float((change / norm).max()))
        cur = new
    return out


def settled_at(res: list[float], tol: float):
    """The first step t (1-based) from which every residual stays under ``tol``; None if never."""
    for t in range(len(res)):
        if all(r < tol for r in res[t:]):
            return t + 1
    return None


@torch.no_grad()
def measure(preset: str, ds, train_steps: int, horizon: int) -> dict:
    cfg = get(preset)
    cfg.update(backend="torch")
    torch.manual_seed(0)
    net = build_net(cfg)
    opt = build_optimizer(net, cfg)
    x_tr, y_tr = data.to_float(ds.x_train), ds.y_train
    batches = data.Batches(x_tr, y_tr, 500, seed=0)
    done = 0
    while done < train_steps:
        for xb, yb in batches.epoch(done):
            opt.zero_grad()
            net.ep_step(xb, yb)
            opt.step()
            done += 1
            if done == train_steps:
                break
    x = data.to_float(ds.x_test[:500])
    steps = max(horizon, 4 * net.T)
    row = {"T": net.T, "K": net.K, "train_steps": train_steps, "horizon": steps}
    for schedule in ("synchronous", "alternating"):
        res = residuals(net, x, steps, schedule)
        row[schedule] = {"residuals": res, **{f"steps_to_{tol:g}": settled_at(res, tol) for tol in THRESHOLDS}}
    for tol in THRESHOLDS:
        s, a = row["synchronous"][f"steps_to_{tol:g}"], row["alternating"][f"steps_to_{tol:g}"]
        row[f"ratio_{tol:g}"] = a / s if s and a else None
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="mnist-2hl,mnist-5hl,mnist-10hl-res")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--horizon", type=int, default=60)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    ds = data.load("mnist", args.data_dir, download=False)
    result = {**harness.provenance(torch.device("cpu")), "command": "python bench/schedule_steps.py " + " ".join(
        sys.argv[1:] if argv is None else argv), "presets": {}}
    for preset in args.presets.split(","):
        row = result["presets"][preset] = measure(preset, ds, args.train_steps, args.horizon)
        print(f"{preset}: " + "; ".join(
            f"to {tol:g}: sync {row['synchronous'][f'steps_to_{tol:g}']}, alt {row['alternating'][f'steps_to_{tol:g}']}"
            f" (ratio {row[f'ratio_{tol:g}']})" for tol in THRESHOLDS), flush=True)
    out = args.out or REPO / "bench" / "results" / f"schedule-steps-cpu-{datetime.date.today().isoformat()}.json"
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
