"""pytest-benchmark cases for the conv nets: one ``ep_step`` at batch 128 of the
paper's MNIST (32c5-P2-64c5-P2-FC10, T=20 K=10) and CIFAR-10
(32c3p1-P2-64c3p1-P2-128c3p1-P2-FC10, T=40 K=10) nets, the deep residual conv net
(T=40 K=20), one relaxation step alone, and a BP step of the same nets in the
same harness.

    pytest bench/test_bench_conv.py --benchmark-json OUT.json

Backends: ``torch`` (the reference, eager), ``compile`` (``torch.compile`` of the
reference phases and rule), ``triton`` (cuDNN convolutions + the fused Triton
epilogue per layer and step), ``triton-graph`` (the same, each ``ep_step``
replayed as one CUDA graph). Triton cases need CUDA; ``compile`` runs on CUDA, or
on CPU with TRITONEP_BENCH_COMPILE=1; the big nets run on CPU only with
TRITONEP_BENCH_ALL=1 (an ep_step of the CIFAR net takes seconds there).
TRITONEP_BENCH_DRY=1 shrinks every net and runs the Triton cases in the CPU
interpreter: every code path, numbers meaningless (``bench/gpu_check.py --dry-run``).
Each case records net, batch, T, K and backend in ``extra_info``.
"""
import os

import pytest
import torch
import harness  # bench/harness.py
from harness import CUDA, DEVICE, bench, ep_callable

from tritonep import ConvEPNet, feedforward
from tritonep.presets import CIFAR10_CONV, CIFAR10_DEEPCONV, MNIST_CONV

DRY = os.environ.get("TRITONEP_BENCH_DRY") == "1"
ALL = os.environ.get("TRITONEP_BENCH_ALL") == "1"
NETS = {  # name: (arch, input shape, options, batch, T, K)
    "mnist-conv": (MNIST_CONV, (1, 28, 28), dict(feedback=0.01, nudge=0.1), 128, 20, 10),
    "cifar10-conv": (CIFAR10_CONV, (3, 32, 32), dict(feedback=0.01, nudge=0.25), 128, 40, 10),
    "cifar10-deepconv": (CIFAR10_DEEPCONV, (3, 32, 32), dict(feedback=0.1, nudge=0.25, residual=[[1, 3], [2, 4]]),
                         128, 40, 20),
}
if DRY:  # same layouts, a few channels, 3 steps each
    NETS = {"mnist-conv": ("3c5-P2-4c5-P2-FC10", (1, 28, 28), dict(feedback=0.01, nudge=0.1), 5, 3, 2),
            "cifar10-deepconv": ("3c3p1-P2-4c3p1-P2-5c3p1-P2-6c3p1-P2-FC10", (3, 32, 32),
                                 dict(feedback=0.1, nudge=0.25, residual=[[1, 3], [2, 4]]), 5, 3, 2)}
BACKENDS = ["torch", "compile", "triton", "triton-graph"]


def require(backend: str, name: str) -> None:
    """Skip a case this machine cannot time meaningfully (``harness.require``, CUDA
    graphs without CUDA, and the big nets on CPU unless TRITONEP_BENCH_ALL=1)."""
    if backend == "triton-graph" and not CUDA:
        pytest.skip("CUDA graphs need CUDA")
    harness.require(backend, DRY)
    if not CUDA and not DRY and not ALL and name != "mnist-conv":
        pytest.skip("big conv nets on CPU: set TRITONEP_BENCH_ALL=1")



def build(name, backend):
    """(net, x, y) of a named case, skipped where it cannot be timed here."""
    require(backend, name)
    arch, shape, opts, batch, T, K = NETS[name]
    b = "triton" if backend.startswith("triton") else "torch"
    net = ConvEPNet.from_arch(arch, input_shape=shape, T=T, K=K, backend=b, cuda_graph=backend == "triton-graph",
                              **opts).to(DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.rand(batch, *shape, device=DEVICE, generator=g)
    y = torch.randint(0, 10, (batch,), device=DEVICE, generator=g)
    return net, x, y


def contrast(eng, k, nudged, free):
    """A conv link's FRE update: the correlation of O_pre^0 with s_post^beta - s_post^0."""
    sent = eng.pooled_states(free)[k.src][0]
    return eng.link_correlation(k.weight, sent, nudged[k.dst] - free[k.dst])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NETS))
def test_conv_ep_step(benchmark, name, backend):
    net, x, y = build(name, backend)
    _, _, _, batch, T, K = NETS[name]
    bench(benchmark, ep_callable(net, x, y, backend, contrast), case="conv_ep_step", net=name, backend=backend, batch=batch,
          T=T, K=K)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", list(NETS))
def test_conv_relax_step(benchmark, name, backend):
    """One synchronous step of every layer (free phase), from relaxed states."""
    net, x, y = build(name, backend)
    with torch.no_grad():
        xn = net.check_input(x)
        if backend == "torch":
            states = [s.clone() for s in net.relax(x, T=2)]
            drives = net.drives(xn)
            fn = lambda: net.step(states, drives)  # noqa: E731
        else:
            eng = net.triton_engine(xn)
            eng.free(xn, 2)
            cur, nxt = eng.free_frame, eng.frames.get("bench")
            fn = lambda: eng.fused_step(cur, nxt, xn, eng.drive)  # noqa: E731
    bench(benchmark, torch.no_grad()(fn), case="conv_relax_step", net=name, backend=backend, batch=x.shape[0])


@pytest.mark.parametrize("name", list(NETS))
def test_conv_bp_step(benchmark, name):
    net, x, y = build(name, "torch")

    def step():
        net.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(feedforward(net, x), y).backward()

    bench(benchmark, step, case="conv_bp_step", net=name, backend="torch", batch=x.shape[0])
