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
from harness import CUDA, DEVICE, bench  # bench/harness.py

from tritonep import fused
from tritonep.conv import ConvEPNet, feedforward
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


def skip_reason(backend: str, name: str):
    if backend == "triton-graph" and not CUDA:
        return "CUDA graphs need CUDA"
    if backend == "triton" and not CUDA and not (DRY and fused.interpreting()):
        return "Triton timings need CUDA (the interpreter is for correctness)"
    if backend == "compile" and not CUDA and not DRY and os.environ.get("TRITONEP_BENCH_COMPILE") != "1":
        return "torch.compile on CPU: set TRITONEP_BENCH_COMPILE=1"
    if not CUDA and not DRY and not ALL and name != "mnist-conv":
        return "big conv nets on CPU: set TRITONEP_BENCH_ALL=1"
    return None



def build(name, backend):
    arch, shape, opts, batch, T, K = NETS[name]
    b = "triton" if backend.startswith("triton") else "torch"
    net = ConvEPNet.from_arch(arch, input_shape=shape, T=T, K=K, backend=b, cuda_graph=backend == "triton-graph",
                              **opts).to(DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.rand(batch, *shape, device=DEVICE, generator=g)
    y = torch.randint(0, 10, (batch,), device=DEVICE, generator=g)
    return net, x, y


def compiled_ep_step(net):
    """The reference EP step (positive nudge, FRE rule) as one function for
    ``torch.compile``: out-of-place phases, returns each trained link's update."""
    links = net.topology.trained_links()

    def step(x, target):
        drives = net.drives(x)
        free, _ = net._relax(net.zero_states(x), drives, net.T, from_zero=True)
        nudged, _ = net._relax(free, drives, net.K, nudge=net.make_nudge(free, target, net.nudge, False))
        sent = [o for o, _ in net.pooled_states(free)]
        return [net.link_correlation(k.weight, sent[k.src], nudged[k.dst] - free[k.dst]) for k in links]

    return torch.compile(step)


def ep_callable(net, x, y, backend):
    if backend == "compile":
        fn = compiled_ep_step(net)
        xn = net._check_input(x)
        target = torch.nn.functional.one_hot(y, net.num_classes).float()
        links = net.topology.trained_links()

        def run():
            with torch.no_grad():
                for k, g in zip(links, fn(xn, target)):
                    net.matrix(k.weight).grad = g
        return run
    return lambda: (net.zero_grad(set_to_none=False), net.ep_step(x, y))



@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NETS))
def test_conv_ep_step(benchmark, name, backend):
    if skip_reason(backend, name):
        pytest.skip(skip_reason(backend, name))
    net, x, y = build(name, backend)
    _, _, _, batch, T, K = NETS[name]
    bench(benchmark, ep_callable(net, x, y, backend), case="conv_ep_step", net=name, backend=backend, batch=batch,
          T=T, K=K)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", list(NETS))
def test_conv_relax_step(benchmark, name, backend):
    """One synchronous step of every layer (free phase), from relaxed states."""
    if skip_reason(backend, name):
        pytest.skip(skip_reason(backend, name))
    net, x, y = build(name, backend)
    with torch.no_grad():
        xn = net._check_input(x)
        if backend == "torch":
            states = [s.clone() for s in net.relax(x, T=2)]
            drives = net.drives(xn)
            fn = lambda: net.step(states, drives)  # noqa: E731
        else:
            from tritonep.conv import _triton_runner

            run = _triton_runner(net, xn)
            run.free(xn, 2)
            cur, nxt = run.free_frame, run.frame("bench")
            fn = lambda: run.step(cur, nxt, xn, run.drive)  # noqa: E731
    bench(benchmark, torch.no_grad()(fn), case="conv_relax_step", net=name, backend=backend, batch=x.shape[0])


@pytest.mark.parametrize("name", list(NETS))
def test_conv_bp_step(benchmark, name):
    if skip_reason("torch", name):
        pytest.skip(skip_reason("torch", name))
    net, x, y = build(name, "torch")

    def step():
        net.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(feedforward(net, x), y).backward()

    bench(benchmark, step, case="conv_bp_step", net=name, backend="torch", batch=x.shape[0])
