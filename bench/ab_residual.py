"""What watching the relaxation costs: one ``ep_step`` with and without the free
phase's residual, A/B in one process, alternating call by call.

    python bench/ab_residual.py [--calls 60] [--threads 1] [--batch 500]

A is the step with the residual replaced by a constant (what the engines computed
before ``last_residual`` existed); B is the shipped step. 784-512-512-10 (T=10,
K=10, the ``mnist-2hl`` shapes), torch backend. Prints per-call min and median of
each and the ratio B/A, and the residual's own cost (``relative_residual`` on the
free states, timed alone). Alternating call by call makes a shared machine's load
hit both variants alike.
"""
import argparse
import json
import statistics
import time

import torch

import tritonep
from tritonep.engine import dense_reference


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = tritonep.EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, T=10, K=10, backend="torch")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(args.batch, 784, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
    real = dense_reference.relative_residual
    zero = torch.zeros(())

    def off(cur, prev):
        return zero

    times = {"A (no residual)": [], "B (residual)": []}
    for i in range(args.calls + 3):
        for name, fn in (("A (no residual)", off), ("B (residual)", real)):
            dense_reference.relative_residual = fn
            net.zero_grad(set_to_none=False)
            t = time.perf_counter()
            net.ep_step(x, y)
            dt = time.perf_counter() - t
            if i >= 3:  # warm-up
                times[name].append(dt)
    dense_reference.relative_residual = real
    states = [s.clone() for s in net.relax(x)]
    alone = []
    for _ in range(args.calls):
        t = time.perf_counter()
        real(states[1:], states[1:])
        alone.append(time.perf_counter() - t)
    out = {k: {"min_ms": round(1e3 * min(v), 3), "median_ms": round(1e3 * statistics.median(v), 3)}
           for k, v in times.items()}
    a, b = times["A (no residual)"], times["B (residual)"]
    out["ratio_B_over_A"] = {"min": round(min(b) / min(a), 4), "median": round(statistics.median(b)
                                                                             / statistics.median(a), 4)}
    out["relative_residual_alone_ms"] = {"min": round(1e3 * min(alone), 3),
                                         "median": round(1e3 * statistics.median(alone), 3)}
    out["settings"] = vars(args)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
