"""Where an ``ep_step`` spends its time on CPU: matrix products, activations, copies and
element-wise work, and what is left (Python and dispatch), from ``torch.profiler``.

    python bench/profile_step.py [--T 10 --K 5] [--schedule alternating] [--batches 20] [--threads 2]
                                 [--out bench/results/profile-...json]

784-512-512-10 at batch 500 (the ``mnist-2hl`` net, frozen error, reference backend),
random inputs; one warm-up step, then ``--batches`` profiled ``ep_step`` + Adam steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from tritonep import EPNet

GROUPS = {  # operator name -> group (the rest is "other ops")
    "gemm": ("aten::mm", "aten::addmm", "aten::addmm_", "aten::matmul", "aten::linear", "aten::bmm"),
    "activation": ("aten::tanh", "aten::tanh_", "aten::softmax", "aten::_softmax", "aten::log_softmax",
                   "aten::_log_softmax"),
    "copy / fill": ("aten::copy_", "aten::clone", "aten::zero_", "aten::fill_", "aten::empty", "aten::empty_like",
                    "aten::zeros", "aten::zeros_like", "aten::cat", "aten::stack"),
    "element-wise": ("aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::mul", "aten::mul_", "aten::div",
                     "aten::div_", "aten::addcdiv_", "aten::addcmul_", "aten::sqrt", "aten::lerp_", "aten::pow",
                     "aten::_foreach_add_", "aten::_foreach_mul_", "aten::_foreach_addcdiv_",
                     "aten::_foreach_addcmul_", "aten::_foreach_lerp_", "aten::_foreach_sqrt",
                     "aten::_foreach_div_", "aten::_foreach_add", "aten::_foreach_mul", "aten::_foreach_div",
                     "aten::_foreach_sqrt_"),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=10)
    ap.add_argument("--K", type=int, default=5)
    ap.add_argument("--schedule", default="synchronous")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, T=args.T, K=args.K, error="frozen",
                backend="torch", schedule=args.schedule)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.rand(500, 784), torch.randint(0, 10, (500,))

    def step():
        opt.zero_grad()
        net.ep_step(x, y)
        opt.step()

    step()
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.batches):
            step()
    wall = (time.perf_counter() - t) / args.batches
    # self time per operator (children excluded), so nothing is counted twice
    per_op = {e.key: e.self_cpu_time_total / 1e6 / args.batches for e in prof.key_averages()}
    total = sum(per_op.values())
    groups = {g: sum(v for k, v in per_op.items() if k in names) for g, names in GROUPS.items()}
    groups["other ops"] = total - sum(groups.values())
    result = {"net": "784-512-512-10", "batch": 500, "T": args.T, "K": args.K, "schedule": args.schedule,
              "threads": args.threads, "step_seconds_profiled": wall, "op_self_seconds_per_step": total,
              "python_and_dispatch_seconds_per_step": max(0.0, wall - total), "groups": groups,
              "top_ops": dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:12])}
    print(f"T={args.T} K={args.K} {args.schedule}: {wall * 1e3:.1f} ms per step; " + ", ".join(
        f"{g} {v * 1e3:.1f} ms ({100 * v / wall:.0f} %)" for g, v in groups.items())
        + f", outside ops {max(0.0, wall - total) * 1e3:.1f} ms")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
