"""The GPU check: ONE command that tests the kernels on CUDA, benchmarks every
backend, times epochs and a 50-epoch mnist-2hl run, and writes one JSON summary.

    bash bench/gpu_check.sh                 # on a GPU machine; results under $OUT (or bench/results/gpu-check)
    python bench/gpu_check.py --dry-run     # on CPU: every step, shrunk, kernels in the interpreter

The summary also holds the static roofline (``bench/roofline.py``: each kernel's
floor on an H100 and H200 at the headline shape) beside the measured times.

Each step runs as a subprocess with its own time limit, so one failing or slow
step is recorded and the rest still run. The summary
(``gpu-check-DATE-GPU.json``) has the keys the kernels issue asks for: gpu,
torch, triton, commit, date, ep_step_speedup_vs_torch, ep_bp_epoch_ratio,
mnist_2hl_50ep_seconds, best_test_acc, the targets and whether each was reached,
the full benchmark table, and the conv steps (conv kernel tests, conv benchmarks,
``cifar10-conv`` for 50 epochs; ``--skip-conv`` leaves them out).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import roofline  # noqa: E402  (bench/ is on sys.path)
from summarize import bench_table, markdown as bench_markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = {  # the kernels issue's targets on an H100
    "ep_step_speedup_vs_torch": (">=", 5.0),
    "relax_fraction_of_cublas_tf32": (">=", 0.5),
    "mnist_2hl_50ep_seconds": ("<=", 3.0),
    "best_test_acc": (">=", 98.3),
    "ep_bp_epoch_ratio": ("<=", 2.0),
}


def find_data(given: str | None) -> str | None:
    for d in (given, os.environ.get("TRITONEP_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data"):
        if d and (Path(d) / "mnist.npz").is_file():
            return str(d)
    return None


DEADLINE = [float("inf")]  # time.perf_counter() by which every step must have ended (--budget)


def run_step(name: str, cmd: list[str], out: Path, timeout: int, env: dict) -> dict:
    """Run one step, log its output to ``out/NAME.log``; returns its record. The
    step's time limit is cut to what is left of the whole check's budget."""
    left = DEADLINE[0] - time.perf_counter()
    if left < 20:
        print(f"== {name}: skipped, the check's time budget is spent", flush=True)
        return {"command": " ".join(cmd), "rc": "skipped", "seconds": 0, "tail": "time budget spent"}
    timeout = int(min(timeout, left))
    print(f"== {name} (limit {timeout} s): {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else str(e.stdout or "")
    seconds = time.perf_counter() - t
    (out / f"{name}.log").write_text(text)
    tail = "\n".join(text.strip().splitlines()[-3:])
    print(f"   rc={rc} in {seconds:.1f} s\n   {tail}", flush=True)
    return {"command": " ".join(cmd), "rc": rc, "seconds": round(seconds, 2), "tail": tail}


def pick(rows, **match) -> float | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r["median_s"]
    return None


def ratio(a, b):
    return a / b if a is not None and b is not None and b > 0 else None


def summarize(out: Path, info: dict, steps: dict) -> dict:
    rows = bench_table(out / "bench.json")
    torch_ep = pick(rows, case="ep_step", net="2hl-512-K10", backend="torch")
    speedups = {b: ratio(torch_ep, pick(rows, case="ep_step", net="2hl-512-K10", backend=b))
                for b in ("compile", "triton", "triton-graph", "triton-graph-tf32", "triton-persistent")}
    best = max((v for v in speedups.values() if v is not None), default=None)
    cublas = pick(rows, case="cublas_tf32", net="2hl-512-K10")
    relax_frac = {b: ratio(cublas, pick(rows, case="relax_step", net="2hl-512-K10", backend=b))
                  for b in ("triton", "triton-tf32")}
    epoch = json.loads((out / "epoch.json").read_text()) if (out / "epoch.json").is_file() else None
    train = json.loads((out / "mnist-2hl.json").read_text()) if (out / "mnist-2hl.json").is_file() else None
    net = "2hl-512-K10"  # the roofline's headline shape; measured per launch (relax_step: one free step)
    measured = {(p, k): pick(rows, case=case, net=net, backend=b) for p, sfx in (("ieee", ""), ("tf32", "-tf32"))
                for k, case, b in (("relax_step", "relax_step", "triton" + sfx), ("update", "update", "triton" + sfx),
                                   ("ep_step", "ep_step", "triton-graph" + sfx))}
    roof = roofline.roofline()
    summary = {
        **info,
        "roofline": {**roof, "measured_s": {f"{p}/{k}": v for (p, k), v in measured.items()},
                     "table": roofline.table(roof, {k: v for k, v in measured.items() if v})},
        "ep_step_speedup_vs_torch": speedups["triton-graph"] if speedups["triton-graph"] else best,
        "ep_step_speedups_by_backend": speedups,
        "relax_fraction_of_cublas_tf32": relax_frac["triton-tf32"],
        "relax_fraction_of_cublas_tf32_by_precision": relax_frac,
        "ep_bp_epoch_ratio": epoch["results"]["ep_K10"]["ep_bp_ratio"] if epoch else None,
        "ep_bp_epoch_ratio_K5": epoch["results"]["ep_K5"]["ep_bp_ratio"] if epoch else None,
        "epoch": epoch,
        "mnist_2hl_50ep_seconds": train.get("train_seconds") if train else None,
        "mnist_2hl_wall_seconds": steps.get("train", {}).get("seconds"),
        "mnist_2hl_epochs": len(train["epochs"]) if train else None,
        "best_test_acc": train.get("best_test_acc") if train else None,
        "steps": steps,
        "benchmarks": rows,
        "conv_benchmarks": bench_table(out / "bench-conv.json"),
        "cifar10_conv": _run_summary(out / "cifar10-conv.json"),
    }
    reached = {}
    for key, (op, bound) in TARGETS.items():
        v = summary.get(key)
        reached[key] = None if v is None else (v >= bound if op == ">=" else v <= bound)
    summary["targets"] = {k: {"target": f"{op} {b}", "value": summary.get(k), "reached": reached[k]}
                          for k, (op, b) in TARGETS.items()}
    return summary


def _run_summary(path: Path):
    """Epochs done, training seconds and accuracies of a results JSON, or None."""
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    return {"epochs": len(r["epochs"]), "train_seconds": r.get("train_seconds"),
            "best_test_acc": r.get("best_test_acc"), "finished": r.get("finished")}


def markdown(summary: dict) -> str:
    lines = [bench_markdown(summary["benchmarks"] + summary["conv_benchmarks"]), "", "Static roofline (bench/roofline.py) "
             "beside the measured times:", "```", summary["roofline"]["table"], "```"]
    lines += ["", "| target | value | reached |", "|---|---|---|"]
    for k, t in summary["targets"].items():
        v = t["value"]
        lines.append(f"| {k} {t['target']} | {v if v is None else round(v, 3)} | {t['reached']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench" / "results" / "gpu-check"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--dry-run", action="store_true", help="run every step on CPU, shrunk (kernels in the interpreter)")
    ap.add_argument("--skip-conv", action="store_true", help="skip the conv steps (tests, benchmarks, cifar10-conv)")
    ap.add_argument("--conv-epochs", type=int, default=50, help="epochs of the cifar10-conv run (the issue: 50)")
    ap.add_argument("--budget", type=float, default=540,
                    help="seconds for the whole check (steps past it are skipped, a running one is cut; default "
                         "540: one device call of 10 minutes with room to spare)")
    args = ap.parse_args(argv)
    DEADLINE[0] = time.perf_counter() + args.budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run on CPU", file=sys.stderr)
        return 2
    env = dict(os.environ)
    py = sys.executable
    if args.dry_run:
        env.update(TRITON_INTERPRET="1", TRITONEP_BENCH_DRY="1")
    import triton

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (dry run)"
    commit = os.environ.get("TRITONEP_COMMIT") or subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or "unknown"
    info = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "commit": commit,
            "date": datetime.date.today().isoformat(), "python": sys.version.split()[0], "dry_run": args.dry_run,
            "cuda": torch.version.cuda}
    print(json.dumps(info), flush=True)
    data = find_data(args.data_dir)
    steps = {}
    tests = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_dense_triton.py"]
    steps["kernel_tests"] = run_step("kernel_tests", tests + (["-k", "backends_agree and chain"] if args.dry_run else []),
                                     out, 240, env)
    bench = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_bench_kernels.py",
             f"--benchmark-json={out / 'bench.json'}"]
    bench += ["--benchmark-min-rounds=1", "--benchmark-max-time=0.000001", "--benchmark-warmup=off"] if args.dry_run else [
        "--benchmark-min-rounds=5", "--benchmark-max-time=0.25", "--benchmark-warmup=on"]
    steps["bench"] = run_step("bench", bench, out, 300, env)
    if data is None:
        steps["data"] = {"rc": "skipped", "tail": "MNIST not found: pass --data-dir or set TRITONEP_DATA"}
    else:
        dev, backend = ("cpu", "torch") if args.dry_run else ("cuda", "triton")
        epoch = [py, "bench/epoch.py", "--data-dir", data, "--device", dev, "--backend", backend,
                 "--out", str(out / "epoch.json")] + (["--max-batches", "2"] if args.dry_run else [])
        steps["epoch"] = run_step("epoch", epoch, out, 150, env)
        train = [py, "-m", "tritonep", "train", "mnist-2hl", "--epochs", str(1 if args.dry_run else args.epochs),
                 "--backend", backend, "--device", dev, "--data-dir", data, "--no-download", "--quiet",
                 "--out", str(out / "mnist-2hl.json")]
        train += ["--limit-train", "1000", "--limit-test", "500"] if args.dry_run else []
        steps["train"] = run_step("train", train, out, 300, env)
    if not args.skip_conv:
        conv_tests = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_conv_triton.py"]
        steps["conv_tests"] = run_step("conv_tests", conv_tests, out, 180, env)
        conv_bench = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_bench_conv.py", "-k",
                      "not compile", f"--benchmark-json={out / 'bench-conv.json'}"]
        conv_bench += ["--benchmark-min-rounds=1", "--benchmark-max-time=0.000001", "--benchmark-warmup=off"] \
            if args.dry_run else ["--benchmark-min-rounds=3", "--benchmark-max-time=0.25"]
        steps["conv_bench"] = run_step("conv_bench", conv_bench, out, 240, env)
        if data is not None and (Path(data) / "cifar10_jpeg_lossy.npz").is_file():
            dev, backend = ("cpu", "torch") if args.dry_run else ("cuda", "triton")
            conv = [py, "-m", "tritonep", "train", "cifar10-conv", "--epochs",
                    str(1 if args.dry_run else args.conv_epochs), "--backend", backend, "--device", dev,
                    "--data-dir", data, "--no-download", "--quiet", "--out", str(out / "cifar10-conv.json")]
            conv += ["--limit-train", "256", "--limit-test", "256"] if args.dry_run else []
            steps["cifar10_conv"] = run_step("cifar10_conv", conv, out, 420, env)
        else:
            steps["cifar10_conv"] = {"rc": "skipped", "tail": "cifar10_jpeg_lossy.npz not found beside mnist.npz"}
    summary = summarize(out, info, steps)
    name = f"gpu-check-{info['date']}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}.json"
    (out / name).write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary) + "\n")
    print(markdown(summary))
    print(f"summary: {out / name}")
    return 0 if all(s.get("rc") == 0 or (s.get("rc") == "skipped" and "budget" not in s.get("tail", ""))
                    for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
