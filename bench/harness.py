"""What every pytest-benchmark suite in ``bench/`` shares: the device, a timed call
that waits for the GPU and keeps warm-up (JIT, cuDNN autotuning, CUDA graph capture)
outside the timing, and the ``ep_step`` callables of each backend."""
import datetime
import json
import os
import subprocess
from pathlib import Path

import torch

from tritonep.engine.backend import interpreting

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def sync():
    if CUDA:
        torch.cuda.synchronize()


def bench(benchmark, fn, **info):
    """Time ``fn`` with pytest-benchmark after one warm-up call; ``info`` goes to
    ``extra_info`` (with the device)."""
    fn()
    sync()
    benchmark.extra_info.update(device=DEVICE, **info)

    def timed():
        fn()
        sync()

    benchmark(timed)


def require(backend: str, dry: bool) -> None:
    """Skip a timing this machine cannot make meaningfully: Triton cases without CUDA
    (the interpreter is for correctness; ``dry`` runs them there anyway, to exercise
    the code), ``torch.compile`` on CPU unless TRITONEP_BENCH_COMPILE=1."""
    if backend.startswith("triton") and not CUDA and not (dry and interpreting()):
        import pytest

        pytest.skip("Triton timings need CUDA (the interpreter is for correctness)")
    if backend == "compile" and not CUDA and not dry and os.environ.get("TRITONEP_BENCH_COMPILE") != "1":
        import pytest

        pytest.skip("torch.compile on CPU: set TRITONEP_BENCH_COMPILE=1")


def compiled_ep_step(net, contrast):
    """The reference EP step of ``net`` (positive nudge, FRE rule) as one function for
    ``torch.compile``: out-of-place phases through the net's reference engine; returns
    each trained link's update ``contrast(engine, link, nudged, free)``."""
    eng = net.reference_engine()
    links = net.topology.trained_links()

    def step(x, target):
        drives = eng.drives(x)
        free, _ = eng.run(eng.zero_states(x), drives, net.T, from_zero=True)
        nudged, _ = eng.run(free, drives, net.K, nudge=eng.nudge(free, target, net.nudge, False))
        return [contrast(eng, k, nudged, free) for k in links]

    return torch.compile(step)


def ep_callable(net, x, y, backend, contrast):
    """What one timed ``ep_step`` call runs: the net's own ``ep_step`` (every backend
    but ``compile``), or the compiled reference step writing each link's ``.grad``."""
    if backend != "compile":
        return lambda: (net.zero_grad(set_to_none=False), net.ep_step(x, y))
    fn = compiled_ep_step(net, contrast)
    xn = net.check_input(x)
    target = torch.nn.functional.one_hot(y, net.num_classes).to(xn.dtype)
    links = net.topology.trained_links()

    def run():
        with torch.no_grad():
            for k, g in zip(links, fn(xn, target)):
                net.matrix(k.weight).grad = g

    return run


def provenance(dev: torch.device) -> dict:
    """Where a result was measured: date, git commit, device and versions."""
    from tritonep.runinfo import device_name, versions

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    return {"date": datetime.date.today().isoformat(), "commit": commit, "device": device_name(dev),
            "versions": versions()}


def report(result: dict, out=None) -> None:
    """Print a result as JSON, and write it to ``out`` when given."""
    print(json.dumps(result, indent=2))
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
