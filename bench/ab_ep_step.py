"""Side-by-side wall clock of one ``ep_step`` in two checkouts of tritonep (A/B).

    python bench/ab_ep_step.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 6] [--steps 20]

Each round runs every checkout once, in its own process (so both see the same
machine state), timing ``--steps`` calls of ``ep_step`` on 784-512-512-10 at batch
500 (T=10, K=10, torch backend) after warm-up; prints, for the per-call median
and the per-call minimum of each process, each checkout's median over rounds and
the ratio of the second checkout to the first. Run on an idle machine; on a shared
one the minimum is the steadier of the two.
"""
import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time, json, statistics
sys.path.insert(0, sys.argv[1])
import torch
import tritonep
assert tritonep.__file__.startswith(sys.argv[1]), tritonep.__file__
torch.manual_seed(0)
net = tritonep.EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, T=10, K=10, backend="torch")
g = torch.Generator().manual_seed(0)
x, y = torch.rand(500, 784, generator=g), torch.randint(0, 10, (500,), generator=g)
for _ in range(3):
    net.ep_step(x, y)
times = []
for _ in range(int(sys.argv[2])):
    net.zero_grad(set_to_none=False)
    t = time.perf_counter()
    net.ep_step(x, y)
    times.append(time.perf_counter() - t)
print(json.dumps([statistics.median(times), min(times)]))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkouts", nargs=2, help="two source trees (each holding tritonep/ and kernels/)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    runs: dict[str, list[list[float]]] = {c: [] for c in args.checkouts}
    for _ in range(args.rounds):
        for c in args.checkouts:
            out = subprocess.run([sys.executable, "-c", CHILD, c, str(args.steps)], capture_output=True, text=True,
                                 check=True)
            runs[c].append(json.loads(out.stdout))
    a, b = args.checkouts
    result = {}
    for i, stat in enumerate(("median", "min")):  # min per call filters out the other jobs on a shared machine
        ms = {c: 1e3 * statistics.median(r[i] for r in v) for c, v in runs.items()}
        result[stat] = {"ms": {c: round(m, 2) for c, m in ms.items()}, "ratio_second_over_first": round(ms[b] / ms[a], 4),
                        "per_round_ms": {c: [round(1e3 * r[i], 2) for r in v] for c, v in runs.items()}}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
