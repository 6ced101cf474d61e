"""Time whole MNIST epochs of the 2HL net (784-512-512-10, batch 500) against the
GEMM floor of the same work on this machine, and BP in the same harness.

    python bench/epoch.py [--data-dir ../shared/data] [--device cuda] [--backend triton]
                          [--max-batches N] [--out bench/results/epoch-DEVICE-DATE.json]

The floor is the time of the EP step's large matrix products alone (input drive,
2 per relaxation step after the first free one, the two weight updates), run
back to back at these shapes: what an EP epoch would cost if everything else
were free.
"""
import argparse
import sys
import time

import harness  # bench/harness.py
from harness import sync
import torch

from tritonep import EPNet, data
from tritonep.baselines import feedforward


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def gemm_floor(n_batches, B, T, K, device="cpu"):
    def r(*shape):
        return torch.rand(*shape, device=device)

    a, W, o = r(B, 512), r(512, 512), r(B, 512)
    x, W0, g0, g1 = r(B, 784), r(512, 784), r(512, 784), r(512, 512)

    def one():
        torch.mm(x, W0.t(), out=o)
        for _ in range(2 * (T - 1 + K)):
            torch.mm(a, W, out=o)
        torch.mm(o.t(), x, out=g0)
        torch.mm(o.t(), a, out=g1)

    one()
    return timed(lambda: [one() for _ in range(n_batches)], repeat=2)


def epoch_seconds(net, batches, step) -> float:
    """Best of two timed epochs of Adam on ``step(xb, yb)`` (which fills ``.grad``),
    after one warm-up epoch (kernel compilation, CUDA graph capture)."""
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def epoch():
        for xb, yb in batches.epoch(0):
            opt.zero_grad()
            step(xb, yb)
            opt.step()

    epoch()
    return timed(epoch, repeat=2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto", choices=("auto", "torch", "triton"))
    ap.add_argument("--max-batches", type=int, default=None, help="time only the first N batches of an epoch")
    args = ap.parse_args()
    dev = torch.device(args.device)
    ds = data.load("mnist", args.data_dir, download=False)
    n_train = None if args.max_batches is None else 500 * args.max_batches
    x, y = data.to_float(ds.x_train[:n_train], device=dev), ds.y_train[:n_train].to(dev)
    batches = data.Batches(x, y, 500, seed=0)
    n = len(batches)
    rows = {}
    for K in (5, 10):
        net = EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, T=10, K=K, backend=args.backend).to(dev)
        ep = epoch_seconds(net, batches, net.ep_step)
        floor = gemm_floor(n, 500, 10, K, dev)
        rows[f"ep_K{K}"] = {"epoch_seconds": ep, "gemm_floor_seconds": floor, "ratio_to_floor": ep / floor}
        print(f"EP T=10 K={K}: epoch {ep:.2f} s, GEMM floor {floor:.2f} s, ratio {ep / floor:.2f}", flush=True)
    net = EPNet([784, 512, 512, 10]).to(dev)
    bp = epoch_seconds(net, batches, lambda xb, yb: net.loss(
        feedforward(net, xb), torch.nn.functional.one_hot(yb, 10).float()).backward())
    rows["bp"] = {"epoch_seconds": bp}
    for K in (5, 10):
        rows[f"ep_K{K}"]["ep_bp_ratio"] = rows[f"ep_K{K}"]["epoch_seconds"] / bp
    print(f"BP: epoch {bp:.2f} s; EP/BP {rows['ep_K5']['ep_bp_ratio']:.1f} (K=5), "
          f"{rows['ep_K10']['ep_bp_ratio']:.1f} (K=10)")
    a, W = torch.rand(500, 512, device=dev), torch.rand(512, 512, device=dev)
    t = timed(lambda: [a @ W for _ in range(50)], repeat=3) / 50
    result = {
        **harness.provenance(dev), "backend": args.backend,
        "gemm_500x512x512_gflops": 2 * 500 * 512 * 512 / t / 1e9,
        "batches_per_epoch": n, "results": rows, "command": "python bench/epoch.py " + " ".join(sys.argv[1:]),
    }
    harness.report(result, args.out)


if __name__ == "__main__":
    main()
