"""The GPU check: ONE command that runs what a GPU machine is lent for, ordered by
value per minute, and writes one JSON summary after every step.

    bash bench/gpu_check.sh                 # on a GPU machine; results in $OUT/gpu-check.tgz (or bench/results/gpu-check)
    python bench/gpu_check.py --dry-run     # on CPU: every step, shrunk, kernels in the interpreter

Steps (``STEPS``), each a subprocess with its own time limit, its output (stdout and
stderr together, unbuffered) streamed to ``NAME.log`` as it runs:

1. ``smoke`` (seconds): versions, ``nvidia-smi``, the C compiler, a tiny and an autotuned launch;
2. ``headline``: the ``ep_step`` timing of 784-512-512-10, batch 500, T=10, K=10:
   torch eager, triton, triton with CUDA graph, at ieee and tf32;
3. ``epoch``: ``bench/epoch.py`` (EP and BP epochs);
4. ``train``: ``tritonep train mnist-2hl`` for 50 epochs on the Triton backend;
   ``headline_k5``: the headline cases at K=5; ``train_fast``: ``mnist-2hl-alt`` (alternating
   updates at T=5, K=3) at tf32 for 50 epochs;
5. ``kernel_stats``: registers and spills of every kernel compiled (``bench/gpu_smoke.py stats``);
6. ``kernel_tests_fixed`` (autotuning off) then ``kernel_tests`` (on), with ``-x``;
7. the rest: the other benchmarks (persistent kernel, scaling, cuBLAS, updates),
   conv tests and benchmarks, a short ``cifar10-conv`` run.

A failed smoke step ends the check (nothing after it can run). The summary
(``gpu-check-DATE-GPU.json``, and ``summary.md``) holds gpu, torch, triton, commit,
date, ep_step_speedup_vs_torch, ep_bp_epoch_ratio, mnist_2hl_50ep_seconds,
best_test_acc, the targets and whether each was reached, the benchmark tables, the
static roofline (``bench/roofline.py``) beside the measured times, and each step's
record; it is rewritten after every step, so a check killed mid-step still leaves
the numbers of every step before it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
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
    for d in (given, os.environ.get("TRITONEP_DATA"), REPO.parent / "shared" / "data", REPO / "shared" / "data",
              REPO / "device-data"):
        if d and (Path(d) / "mnist.npz").is_file():
            return str(d)
    return None


DEADLINE = [float("inf")]  # time.perf_counter() by which every step must have ended (--budget)


def run_step(name: str, cmd: list[str], out: Path, timeout: int, env: dict) -> dict:
    """Run one step with its output (stdout and stderr together) streamed to
    ``out/NAME.log`` as it runs; returns its record. The step's time limit is cut to
    what is left of the whole check's budget; at the limit the step gets SIGINT (so
    pytest and Python print where they were), then SIGKILL 10 s later."""
    left = DEADLINE[0] - time.perf_counter()
    if left < 20:
        print(f"== {name}: skipped, the check's time budget is spent", flush=True)
        return {"command": " ".join(cmd), "rc": "skipped", "seconds": 0, "tail": "time budget spent"}
    timeout = int(min(timeout, left))
    print(f"== {name} (limit {timeout} s): {' '.join(cmd)}", flush=True)
    log = out / f"{name}.log"
    t = time.perf_counter()
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
            for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(p.pid, sig)
                    p.wait(timeout=wait)
                    break
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    continue
    seconds = time.perf_counter() - t
    text = log.read_bytes().decode("utf-8", errors="replace")
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
    rows = sum((bench_table(out / f) for f in ("headline.json", "headline-k5.json", "bench.json")), [])
    torch_ep = pick(rows, case="ep_step", net="2hl-512-K10", backend="torch")
    speedups = {b: ratio(torch_ep, pick(rows, case="ep_step", net="2hl-512-K10", backend=b))
                for b in ("compile", "triton", "triton-tf32", "triton-graph", "triton-graph-tf32", "triton-persistent")}
    best = max((v for v in speedups.values() if v is not None), default=None)
    cublas = pick(rows, case="cublas_tf32", net="2hl-512-K10")
    relax_frac = {b: ratio(cublas, pick(rows, case="relax_step", net="2hl-512-K10", backend=b))
                  for b in ("triton", "triton-tf32")}
    epoch, train = load(out / "epoch.json"), load(out / "mnist-2hl.json")
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
        "mnist_2hl_alt_tf32": _run_summary(out / "mnist-2hl-alt.json"),
        "best_test_acc": train.get("best_test_acc") if train else None,
        "steps": steps,
        "benchmarks": rows,
        "conv_benchmarks": bench_table(out / "bench-conv.json"),
        "cifar10_conv": _run_summary(out / "cifar10-conv.json"),
        "kernels": load(out / "kernels.json"),
        "smoke": load(out / "smoke.json"),
    }
    reached = {}
    for key, (op, bound) in TARGETS.items():
        v = summary.get(key)
        reached[key] = None if v is None else (v >= bound if op == ">=" else v <= bound)
    summary["targets"] = {k: {"target": f"{op} {b}", "value": summary.get(k), "reached": reached[k]}
                          for k, (op, b) in TARGETS.items()}
    return summary


def load(path: Path):
    """A step's JSON, or None where it is missing or cut short (a step killed mid-write)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run_summary(path: Path):
    """Epochs done, training seconds and accuracies of a results JSON, or None."""
    r = load(path)
    if r is None:
        return None
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


# (name, time limit in seconds): the order the steps run in, by value per minute
STEPS = [("smoke", 60), ("headline", 150), ("epoch", 120), ("train", 200), ("headline_k5", 90), ("train_fast", 120),
         ("kernel_stats", 60),
         ("kernel_tests_fixed", 150), ("kernel_tests", 150), ("bench", 240), ("conv_tests", 120),
         ("conv_bench", 180), ("cifar10_conv", 240)]
# the headline ep_step cases of bench/test_bench_kernels.py (-k expression; K10 or K5 after it)
HEADLINE = ("test_ep_step and 2hl-512-{K} and (torch or triton or triton-tf32 or triton-graph or triton-graph-tf32) "
            "and not persistent and not compile")


def commands(args, data: str | None, out: Path) -> dict:
    """Each step's command, or a string saying why the step is skipped."""
    py, dry = sys.executable, args.dry_run
    dev, backend = ("cpu", "torch") if dry else ("cuda", "triton")
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    timing = (["--benchmark-min-rounds=1", "--benchmark-max-time=0.000001", "--benchmark-warmup=off"] if dry
              else ["--benchmark-min-rounds=5", "--benchmark-max-time=0.25"])
    no_data = "MNIST not found: pass --data-dir or set TRITONEP_DATA"
    cifar = data is not None and (Path(data) / "cifar10_jpeg_lossy.npz").is_file()
    kernel_tests = pytest + ["-x", "tests/test_dense_triton.py", "tests/test_schedule_triton.py", "tests/test_host_sync.py"] \
        + (["-k", "backends_agree and chain"] if dry else [])
    cmds = {
        "smoke": [py, "bench/gpu_smoke.py", "smoke", "--out", str(out / "smoke.json")],
        "headline": pytest + ["bench/test_bench_kernels.py", "-k", HEADLINE.format(K="K10"),
                              f"--benchmark-json={out / 'headline.json'}"] + timing,
        "headline_k5": pytest + ["bench/test_bench_kernels.py", "-k", HEADLINE.format(K="K5"),
                                 f"--benchmark-json={out / 'headline-k5.json'}"] + timing,
        "epoch": [py, "bench/epoch.py", "--data-dir", str(data), "--device", dev, "--backend", backend,
                  "--out", str(out / "epoch.json")] + (["--max-batches", "2"] if dry else []) if data else no_data,
        "train": [py, "-m", "tritonep", "train", "mnist-2hl", "--epochs", str(1 if dry else args.epochs),
                  "--backend", backend, "--device", dev, "--data-dir", str(data), "--no-download", "--quiet",
                  "--out", str(out / "mnist-2hl.json")]
        + (["--limit-train", "1000", "--limit-test", "500"] if dry else []) if data else no_data,
        # the fastest configuration: alternating updates at half of T and K, tf32 products
        "train_fast": [py, "-m", "tritonep", "train", "mnist-2hl-alt", "--precision", "tf32",
                       "--epochs", str(1 if dry else args.epochs), "--backend", backend, "--device", dev,
                       "--data-dir", str(data), "--no-download", "--quiet", "--out", str(out / "mnist-2hl-alt.json")]
        + (["--limit-train", "1000", "--limit-test", "500"] if dry else []) if data else no_data,
        "kernel_stats": [py, "bench/gpu_smoke.py", "stats", "--out", str(out / "kernels.json")],
        "kernel_tests_fixed": kernel_tests,
        "kernel_tests": kernel_tests,
        "bench": pytest + ["bench/test_bench_kernels.py", "-k", f"not ({HEADLINE.format(K='K')})", f"--benchmark-json={out / 'bench.json'}"]
        + timing,
        "conv_tests": pytest + ["-x", "tests/test_conv_triton.py"],
        "conv_bench": pytest + ["bench/test_bench_conv.py", "-k", "not compile",
                                f"--benchmark-json={out / 'bench-conv.json'}"] + timing,
        "cifar10_conv": [py, "-m", "tritonep", "train", "cifar10-conv", "--epochs", str(1 if dry else args.conv_epochs),
                         "--backend", backend, "--device", dev, "--data-dir", str(data), "--no-download", "--quiet",
                         "--out", str(out / "cifar10-conv.json")]
        + (["--limit-train", "256", "--limit-test", "256"] if dry else []) if cifar
        else "cifar10_jpeg_lossy.npz not found beside mnist.npz (bench/device_data.py prepares a subset)",
    }
    if args.skip_conv:
        for k in ("conv_tests", "conv_bench", "cifar10_conv"):
            cmds[k] = "--skip-conv"
    return cmds


def write_summary(out: Path, info: dict, steps: dict) -> Path:
    """Write the summary JSON and ``summary.md`` of the steps run so far; returns the JSON's path."""
    summary = summarize(out, info, steps)
    name = f"gpu-check-{info['date']}-{re.sub(r'[^A-Za-z0-9]+', '-', info['gpu']).strip('-').lower()}.json"
    (out / name).write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary) + "\n")
    return out / name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.environ["OUT"], "gpu-check") if os.environ.get("OUT")
                    else str(REPO / "bench" / "results" / "gpu-check"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--dry-run", action="store_true", help="run every step on CPU, shrunk (kernels in the interpreter)")
    ap.add_argument("--skip-conv", action="store_true", help="skip the conv steps (tests, benchmarks, cifar10-conv)")
    ap.add_argument("--conv-epochs", type=int, default=3, help="epochs of the short cifar10-conv run")
    ap.add_argument("--only", default=None, help="comma-separated step names to run (default: all, in order)")
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
    data = find_data(args.data_dir)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
    if data:
        env["TRITONEP_DATA"] = data  # the tests and benchmarks that need MNIST find it
    if args.dry_run:
        env.update(TRITON_INTERPRET="1", TRITONEP_BENCH_DRY="1")
    import triton

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (dry run)"
    commit = os.environ.get("TRITONEP_COMMIT") or subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip() or "unknown"
    info = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "commit": commit,
            "date": datetime.date.today().isoformat(), "python": sys.version.split()[0], "dry_run": args.dry_run,
            "cuda": torch.version.cuda, "data_dir": data}
    print(json.dumps(info), flush=True)
    cmds = commands(args, data, out)
    only = set(args.only.split(",")) if args.only else None
    if only and only - set(cmds):
        ap.error(f"--only names unknown steps {sorted(only - set(cmds))}; the steps are {[n for n, _ in STEPS]}")
    steps: dict = {}
    path = write_summary(out, info, steps)
    for name, limit in STEPS:
        if only and name not in only:
            continue
        cmd = cmds[name]
        if isinstance(cmd, str):
            steps[name] = {"rc": "skipped", "tail": cmd}
        else:
            step_env = dict(env, TRITONEP_AUTOTUNE="0") if name == "kernel_tests_fixed" else env
            steps[name] = run_step(name, cmd, out, limit, step_env)
        path = write_summary(out, info, steps)
        if name == "smoke" and steps[name]["rc"] != 0:
            print("smoke step failed: the toolchain cannot run a kernel; see smoke.log", flush=True)
            break
    print((out / "summary.md").read_text())
    print(f"summary: {path}")
    return 0 if all(s.get("rc") == 0 or (s.get("rc") == "skipped" and "budget" not in s.get("tail", ""))
                    for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
