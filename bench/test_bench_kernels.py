"""pytest-benchmark cases for the backends: one relaxation step, one contrastive
update, one ``ep_step``, and a BP step of the same net in the same harness.

    pytest bench/test_bench_kernels.py --benchmark-json OUT.json

Backends: ``torch`` (the reference, eager), ``compile`` (``torch.compile`` of the
reference phases), ``triton`` (the kernels, one launch per step) and
``triton-graph`` (the whole ``ep_step`` replayed as one CUDA graph) and
``triton-persistent`` (one launch per phase, in a CUDA graph). Triton backends
compute with ``precision="ieee"``; a ``-tf32`` suffix (``triton-graph-tf32``,
``triton-tf32``) runs the same case with tf32 operands. The Triton
cases need CUDA (the CPU interpreter is for correctness, not speed); ``compile``
runs on CUDA, or on CPU with TRITONEP_BENCH_COMPILE=1. The batch/width scaling
sweep runs on CUDA, or on CPU with TRITONEP_BENCH_ALL=1.
Each case records its network, batch, T, K and backend in ``extra_info``;
``python bench/summarize.py OUT.json`` turns the JSON into a table of ratios.
"""
import os

import pytest
import torch
import harness  # bench/harness.py
from harness import CUDA, DEVICE, bench, ep_callable

from tritonep import EPNet, rules
from tritonep import reference as ref
from tritonep.baselines import feedforward

NETS = {  # name: (sizes, options, batch, T, K)
    "2hl-512-K10": ([784, 512, 512, 10], dict(feedback=0.01, nudge=0.1), 500, 10, 10),
    "2hl-512-K5": ([784, 512, 512, 10], dict(feedback=0.01, nudge=0.1), 500, 10, 5),
    # alternating updates (odd layers, then even layers) at about half the steps
    "2hl-512-alt-T5K3": ([784, 512, 512, 10], dict(feedback=0.01, nudge=0.1, schedule="alternating"), 500, 5, 3),
    "3hl-512": ([784, 512, 512, 512, 10], dict(feedback=0.01, nudge=0.1), 500, 18, 10),
    "10hl-64-res": ([784] + [64] * 10 + [10], dict(feedback=0.1, nudge=0.1, residual=3), 500, 100, 50),
}
BACKENDS = ["torch", "compile", "triton", "triton-tf32", "triton-graph", "triton-graph-tf32", "triton-persistent"]
SCALING = [(b, 512) for b in (64, 256, 1024, 4096)] + [(500, w) for w in (256, 1024, 2048, 4096)]
# dry run (bench/gpu_check.py --dry-run): tiny nets, Triton cases in the CPU interpreter,
# to exercise every code path without a GPU; the numbers mean nothing
DRY = os.environ.get("TRITONEP_BENCH_DRY") == "1"
if DRY:
    NETS = {k: ([20] + [24] * (len(s) - 2) + [10], o, 19, 3, 2) for k, (s, o, _, _, _) in NETS.items()}
    SCALING = [(19, 24), (33, 40)]


def require(backend: str, scaling: bool = False) -> None:
    """Skip a case this machine cannot time meaningfully (``harness.require``, and the
    scaling sweep on CPU unless TRITONEP_BENCH_ALL=1)."""
    harness.require(backend, DRY)
    if scaling and not CUDA and not DRY and os.environ.get("TRITONEP_BENCH_ALL") != "1":
        pytest.skip("scaling sweep on CPU: set TRITONEP_BENCH_ALL=1")



def case(name: str, backend: str):
    """(net, x, y, batch) of a named case, skipped where it cannot be timed here."""
    require(backend)
    sizes, opts, batch, T, K = NETS[name]
    return (*build(sizes, opts, batch, T, K, backend), batch)


def precision(backend: str) -> str:
    """The Triton precision a backend name asks for: ``tf32`` with a ``-tf32`` suffix, else ``ieee``."""
    return "tf32" if backend.endswith("-tf32") else "ieee"


def build(sizes, opts, batch, T, K, backend):
    b = "torch" if backend in ("torch", "compile") else "triton"
    net = EPNet(sizes, T=T, K=K, backend=b, precision=precision(backend),
                cuda_graph=backend.startswith(("triton-graph", "triton-persistent")),
                persistent=backend.startswith("triton-persistent"), **opts).to(DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.rand(batch, sizes[0], device=DEVICE, generator=g)
    y = torch.randint(0, sizes[-1], (batch,), device=DEVICE, generator=g)
    return net, x, y


def contrast(eng, k, nudged, free):
    """A dense link's FRE update (s_post^beta - s_post^0)^T s_pre^0."""
    return (nudged[k.dst] - free[k.dst]).t() @ free[k.src]


# ----------------------------------------------------------------------------- ep_step
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NETS))
def test_ep_step(benchmark, name, backend):
    require(backend)
    if backend == "compile" and name != "2hl-512-K10" and not DRY:
        pytest.skip("compile time (minutes for unrolled phases) would dominate the GPU check: headline net only")
    sizes, opts, batch, T, K = NETS[name]
    net, x, y = build(sizes, opts, batch, T, K, backend)
    bench(benchmark, ep_callable(net, x, y, backend, contrast), case="ep_step", net=name, backend=backend, batch=batch,
          T=T, K=K, sizes=sizes)


@pytest.mark.parametrize("name", list(NETS))
def test_bp_step(benchmark, name):
    sizes, opts, batch, T, K = NETS[name]
    net, x, y = build(sizes, opts, batch, T, K, "torch")
    target = torch.nn.functional.one_hot(y, sizes[-1]).float()

    def step():
        net.zero_grad(set_to_none=False)
        net.loss(feedforward(net, x), target).backward()

    bench(benchmark, step, case="bp_step", net=name, backend="torch", batch=batch, sizes=sizes)


# ----------------------------------------------------------------------------- one step, one update
@pytest.mark.parametrize("backend", ["torch", "triton", "triton-tf32"])
@pytest.mark.parametrize("name", ["2hl-512-K10", "3hl-512"])
def test_relax_step(benchmark, name, backend):
    net, x, y, batch = case(name, backend)
    with torch.no_grad():
        states = [s.clone() for s in net.relax(x, T=2)]
        if backend == "torch":
            drives, terms = net.drives(x), net.terms()
            out = [None] + [torch.empty_like(s) for s in states[1:]]
            fn = lambda: ref.step(states, drives, terms, net.activation, out=out)  # noqa: E731
        else:
            eng = net.triton_engine(x)
            relax_k, plan = eng.relax_k, eng.plan
            prec = precision(backend)
            w, b = plan.pack(net.spec(), prec)
            f_in, f_out = plan.frames("bench", batch)
            for v, s in zip(plan.state_views(f_in, x)[1:], states[1:]):
                v.copy_(s)
            drive, bl = net.layers[0](x), plan.blocks
            fn = lambda: relax_k.relax_step(  # noqa: E731
                f_in, f_out, drive, w, b, plan.tiles, plan.layers, plan.terms,
                activation=net.activation, precision=prec, block_b=bl.relax_b, block_n=bl.relax_n,
                block_k=bl.relax_k, num_warps=bl.num_warps)
    flops = 2 * batch * sum(net.topology.sizes[k.src] * net.topology.sizes[k.dst]
                            for k in net.topology.links if k.src != 0)
    bench(benchmark, torch.no_grad()(fn), case="relax_step", net=name, backend=backend, batch=batch, flops=flops)


@pytest.mark.parametrize("name", ["2hl-512-K10", "3hl-512"])
def test_cublas_tf32_same_gemms(benchmark, name):
    """The relaxation step's products alone, as cuBLAS TF32 GEMMs: the throughput
    the fused step is measured against."""
    if not CUDA:
        pytest.skip("cuBLAS needs CUDA")
    sizes, opts, batch, T, K = NETS[name]
    net, x, _ = build(sizes, opts, batch, T, K, "torch")
    shapes = [(net.topology.sizes[k.src], net.topology.sizes[k.dst]) for k in net.topology.links if k.src != 0]
    ops = [(torch.rand(batch, a, device=DEVICE), torch.rand(a, b, device=DEVICE)) for a, b in shapes]
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        bench(benchmark, lambda: [s @ m for s, m in ops], case="cublas_tf32", net=name, backend="cublas-tf32",
              batch=batch, flops=2 * batch * sum(a * b for a, b in shapes))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("backend", ["torch", "triton", "triton-tf32"])
@pytest.mark.parametrize("name", ["2hl-512-K10", "10hl-64-res"])
def test_contrastive_update(benchmark, name, backend):
    net, x, y, batch = case(name, backend)
    with torch.no_grad():
        free = [s.clone() for s in net.relax(x, T=3)]
        nudged = [x] + [s + 0.01 * torch.randn_like(s) for s in free[1:]]
        coefs = rules.link_coefficients(net.topology.trained_links(), "fre", net.nudge, net.nudge, batch, None)
        if backend == "torch":
            eng = net.reference_engine()
            fn = lambda: eng.update("fre", nudged, free, free, coefs)  # noqa: E731
        else:
            eng = net.triton_engine(x)
            update_k, plan = eng.update_k, eng.plan
            frames = []
            for i, states in enumerate((nudged, free)):
                f = plan.frames(f"bench{i}", batch)[0]
                for v, s in zip(plan.state_views(f, x)[1:], states[1:]):
                    v.copy_(s)
                frames.append(f)
            coefs, bl = plan.coefs(coefs), plan.blocks
            plan.grads.bind()
            fn = lambda: update_k.contrastive_update(  # noqa: E731
                frames[0], frames[1], frames[1], x, plan.grads.flat, plan.up_tiles, plan.link_table, coefs, rule="fre",
                accumulate=False, precision=precision(backend), block_m=bl.update_m, block_n=bl.update_n,
                block_b=bl.update_b, num_warps=bl.update_warps)
    bench(benchmark, torch.no_grad()(fn), case="update", net=name, backend=backend, batch=batch)


# ----------------------------------------------------------------------------- scaling
@pytest.mark.parametrize("backend", ["torch", "triton-graph"])
@pytest.mark.parametrize("batch,width", SCALING, ids=[f"B{b}-W{w}" for b, w in SCALING])
def test_ep_step_scaling(benchmark, batch, width, backend):
    require(backend, scaling=True)
    sizes = [20 if DRY else 784, width, width, 10]
    net, x, y = build(sizes, dict(feedback=0.01, nudge=0.1), batch, 10, 10, backend)
    bench(benchmark, ep_callable(net, x, y, backend, contrast), case="ep_step_scaling", net=f"2hl-{width}",
          backend=backend, batch=batch, width=width, T=10, K=10)


# ----------------------------------------------------------------------------- one epoch of MNIST
def _mnist(n):
    from pathlib import Path

    from tritonep import data

    for d in (os.environ.get("TRITONEP_DATA"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        if d and (Path(d) / "mnist.npz").is_file():
            ds = data.load("mnist", d, download=False)
            return data.to_float(ds.x_train[:n], device=DEVICE), ds.y_train[:n].to(DEVICE)
    pytest.skip("MNIST not found: set TRITONEP_DATA")


@pytest.mark.parametrize("backend", ["torch", "triton-graph", "bp"])
def test_epoch(benchmark, backend):
    """One epoch of MNIST (2HL-512, batch 500, T=10, K=10, Adam): EP on each backend, and BP."""
    require(backend)
    if not CUDA and not DRY and os.environ.get("TRITONEP_BENCH_ALL") != "1":
        pytest.skip("a CPU epoch takes seconds per round: set TRITONEP_BENCH_ALL=1 (or use bench/epoch.py)")
    from tritonep import data

    sizes, opts, batch, T, K = NETS["2hl-512-K10"]
    x, y = _mnist(2 * batch if DRY else None)
    x = x[:, :sizes[0]]
    net, _, _ = build(sizes, opts, batch, T, K, "torch" if backend == "bp" else backend)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    batches = data.Batches(x, y, batch, seed=0)

    def epoch():
        for xb, yb in batches.epoch(0):
            opt.zero_grad()
            if backend == "bp":
                net.loss(feedforward(net, xb), torch.nn.functional.one_hot(yb, 10).float()).backward()
            else:
                net.ep_step(xb, yb)
            opt.step()

    bench(benchmark, epoch, case="epoch", net="2hl-512-K10", backend=backend, batch=batch, T=T, K=K,
          batches=len(batches))
