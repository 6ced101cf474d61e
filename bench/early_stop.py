"""What convergence-aware relaxation saves at equal accuracy.

Trains the same preset (same seed, same batches) with fixed T/K and with early
stopping at several tolerances (T and K become maxima), and records the mean
steps each phase ran, the test accuracy after each epoch and the wall time.

    python bench/early_stop.py --preset mnist-2hl --epochs 3 --tols 1e-2,1e-3,1e-4 \
        --out bench/results/early-stop-cpu-DATE.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

import harness  # bench/harness.py
import torch

from tritonep import data, presets
from tritonep.build import build_net, build_optimizer
from tritonep.runinfo import resolve_device
from tritonep.train import evaluate


def train(cfg, tol, check_every, x, y, x_test, y_test, epochs):
    torch.manual_seed(cfg["seed"])
    net = build_net(cfg).to(x.device)
    net.tol, net.check_every = tol, check_every
    opt = build_optimizer(net, cfg)
    batches = data.Batches(x, y, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
    history = []
    for e in range(epochs):
        free, nudged, n, t0 = 0, 0, 0, time.perf_counter()
        for xb, yb in batches.epoch(e):
            opt.zero_grad()
            net.ep_step(xb, yb)
            opt.step()
            free += net.last_steps["free"]
            nudged += sum(net.last_steps["nudged"])
            n += 1
        seconds = time.perf_counter() - t0
        acc = evaluate(net, x_test, y_test, "ep")  # evaluation relaxes for the full T (tol applies too)
        history.append({"epoch": e + 1, "test_acc": acc, "train_seconds": round(seconds, 2),
                        "mean_free_steps": free / n, "mean_nudged_steps": nudged / n})
        print(f"tol={tol} epoch {e + 1}: acc {acc:.2f} %, {seconds:.1f} s, steps free {free / n:.2f} "
              f"nudged {nudged / n:.2f}", flush=True)
    return history


def time_steps(cfg, tols, check_every, x, y, rounds=7, calls=5):
    """Median seconds per ep_step on one batch (untrained net, same weights throughout:
    no optimizer step), fixed T/K against each tolerance, interleaved round by round
    so machine noise hits all alike; with the steps each phase ran."""
    torch.manual_seed(cfg["seed"])
    net = build_net(cfg).to(x.device)
    names = ["fixed"] + [f"tol={t:g}" for t in tols]
    times, steps = {n: [] for n in names}, {}
    for _ in range(rounds):
        for name, tol in zip(names, [None] + list(tols)):
            net.tol, net.check_every = tol, check_every
            net.ep_step(x, y)  # warm
            t0 = time.perf_counter()
            for _ in range(calls):
                net.zero_grad(set_to_none=False)
                net.ep_step(x, y)
            times[name].append((time.perf_counter() - t0) / calls)
            steps[name] = net.last_steps
    med = {n: sorted(v)[len(v) // 2] for n, v in times.items()}
    return {n: {"ep_step_ms": 1e3 * m, "ratio_to_fixed": m / med["fixed"], "steps": steps[n]} for n, m in med.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-2hl")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tols", default="1e-2,1e-3,1e-4")
    ap.add_argument("--check-every", type=int, default=1)
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--timing-only", action="store_true",
                    help="only time ep_step on one batch (fixed vs each tol), merged into an existing --out JSON")
    args = ap.parse_args()
    cfg = presets.get(args.preset)
    dev = resolve_device(args.device)
    ds = data.load(cfg["dataset"], args.data_dir, download=False)
    n = args.limit_train
    x, y = data.to_float(ds.x_train[:n], device=dev), ds.y_train[:n].to(dev)
    x_test, y_test = data.to_float(ds.x_test, device=dev), ds.y_test.to(dev)
    tols = [float(t) for t in args.tols.split(",")]
    timing = time_steps(cfg, tols, args.check_every, x[:cfg["batch_size"]], y[:cfg["batch_size"]])
    print(json.dumps(timing, indent=2))
    if args.timing_only:
        if args.out and Path(args.out).is_file():
            result = json.loads(Path(args.out).read_text())
            result["ep_step_timing"] = timing
            result["timing_command"] = "python bench/early_stop.py " + " ".join(sys.argv[1:])
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return
    runs = {"fixed": train(cfg, None, 1, x, y, x_test, y_test, args.epochs)}
    for tol in tols:
        runs[f"tol={tol:g}"] = train(cfg, tol, args.check_every, x, y, x_test, y_test, args.epochs)
    base = runs["fixed"]
    summary = {
        name: {"final_test_acc": h[-1]["test_acc"], "acc_change_vs_fixed": h[-1]["test_acc"] - base[-1]["test_acc"],
               "mean_free_steps": sum(r["mean_free_steps"] for r in h) / len(h),
               "mean_nudged_steps": sum(r["mean_nudged_steps"] for r in h) / len(h),
               "train_seconds": sum(r["train_seconds"] for r in h),
               "time_vs_fixed": sum(r["train_seconds"] for r in h) / sum(r["train_seconds"] for r in base)}
        for name, h in runs.items()
    }
    result = {
        **harness.provenance(dev), "preset": args.preset,
        "T": cfg["T"], "K": cfg["K"], "check_every": args.check_every, "epochs": args.epochs,
        "train_size": x.shape[0], "summary": summary, "ep_step_timing": timing, "runs": runs,
        "command": "python bench/early_stop.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(summary, indent=2))  # the whole result (every run) goes to the file
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
