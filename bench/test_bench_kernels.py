"""pytest-benchmark cases for the backends: one relaxation step, one contrastive
update, one ``ep_step``, and a BP step of the same net in the same harness.

    pytest bench/test_bench_kernels.py --benchmark-json OUT.json

Backends: ``torch`` (the reference, eager), ``compile`` (``torch.compile`` of the
reference phases), ``triton`` (the kernels, one launch per step) and
``triton-graph`` (the whole ``ep_step`` replayed as one CUDA graph) and
``triton-persistent`` (one launch per phase, in a CUDA graph). The Triton
cases need CUDA (the CPU interpreter is for correctness, not speed); ``compile``
runs on CUDA, or on CPU with TRITONEP_BENCH_COMPILE=1. The batch/width scaling
sweep runs on CUDA, or on CPU with TRITONEP_BENCH_ALL=1.
Each case records its network, batch, T, K and backend in ``extra_info``;
``python bench/summarize.py OUT.json`` turns the JSON into a table of ratios.
"""
import os

import pytest
import torch
from harness import CUDA, DEVICE, bench  # bench/harness.py

from tritonep import EPNet, fused
from tritonep import reference as ref
from tritonep.baselines import feedforward

NETS = {  # name: (sizes, options, batch, T, K)
    "2hl-512-K10": ([784, 512, 512, 10], dict(feedback=0.01, nudge=0.1), 500, 10, 10),
    "2hl-512-K5": ([784, 512, 512, 10], dict(feedback=0.01, nudge=0.1), 500, 10, 5),
    "3hl-512": ([784, 512, 512, 512, 10], dict(feedback=0.01, nudge=0.1), 500, 18, 10),
    "10hl-64-res": ([784] + [64] * 10 + [10], dict(feedback=0.1, nudge=0.1, residual=3), 500, 100, 50),
}
BACKENDS = ["torch", "compile", "triton", "triton-graph", "triton-persistent"]
SCALING = [(b, 512) for b in (64, 256, 1024, 4096)] + [(500, w) for w in (256, 1024, 2048, 4096)]
# dry run (bench/gpu_check.py --dry-run): tiny nets, Triton cases in the CPU interpreter,
# to exercise every code path without a GPU; the numbers mean nothing
DRY = os.environ.get("TRITONEP_BENCH_DRY") == "1"
if DRY:
    NETS = {k: ([20] + [24] * (len(s) - 2) + [10], o, 19, 3, 2) for k, (s, o, _, _, _) in NETS.items()}
    SCALING = [(19, 24), (33, 40)]


def skip_reason(backend: str, scaling: bool = False):
    if backend.startswith("triton") and not CUDA and not (DRY and fused.interpreting()):
        return "Triton timings need CUDA (the interpreter is for correctness)"
    if backend == "compile" and not CUDA and not DRY and os.environ.get("TRITONEP_BENCH_COMPILE") != "1":
        return "torch.compile on CPU: set TRITONEP_BENCH_COMPILE=1"
    if scaling and not CUDA and not DRY and os.environ.get("TRITONEP_BENCH_ALL") != "1":
        return "scaling sweep on CPU: set TRITONEP_BENCH_ALL=1"
    return None



def build(sizes, opts, batch, T, K, backend):
    b = "torch" if backend in ("torch", "compile") else "triton"
    net = EPNet(sizes, T=T, K=K, backend=b, cuda_graph=backend in ("triton-graph", "triton-persistent"),
                persistent=backend == "triton-persistent", **opts).to(DEVICE)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.rand(batch, sizes[0], device=DEVICE, generator=g)
    y = torch.randint(0, sizes[-1], (batch,), device=DEVICE, generator=g)
    return net, x, y


def compiled_ep_step(net):
    """The reference EP step (positive nudge, FRE rule) as one function for
    ``torch.compile``: out-of-place phases, returns each trained link's update."""
    links = net.topology.trained_links()

    def step(x, target):
        drives, terms = net.drives(x), net.terms()
        free = ref.relax(net.zero_states(x), drives, terms, net.activation, net.T, from_zero=True)
        W_f, b_f, M_f = net.readout_matrices()
        nudge = ref.SoftmaxNudge(W_f, b_f, M_f, target, net.nudge)
        nudged = ref.relax(free, drives, terms, net.activation, net.K, nudge=nudge)
        return [(nudged[k.dst] - free[k.dst]).t() @ free[k.src] for k in links]

    return torch.compile(step)


def ep_callable(net, x, y, backend):
    if backend == "compile":
        fn = compiled_ep_step(net)
        target = torch.nn.functional.one_hot(y, net.num_classes).float()
        links = net.topology.trained_links()

        def run():
            with torch.no_grad():
                for k, g in zip(links, fn(x, target)):
                    net.matrix(k.weight).grad = g
        return run
    return lambda: net.ep_step(x, y)



# ----------------------------------------------------------------------------- ep_step
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(NETS))
def test_ep_step(benchmark, name, backend):
    if skip_reason(backend):
        pytest.skip(skip_reason(backend))
    if backend == "compile" and name != "2hl-512-K10" and not DRY:
        pytest.skip("compile time (minutes for unrolled phases) would dominate the GPU check: headline net only")
    sizes, opts, batch, T, K = NETS[name]
    net, x, y = build(sizes, opts, batch, T, K, backend)
    bench(benchmark, ep_callable(net, x, y, backend), case="ep_step", net=name, backend=backend, batch=batch,
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
    if skip_reason(backend):
        pytest.skip(skip_reason(backend))
    sizes, opts, batch, T, K = NETS[name]
    net, x, y = build(sizes, opts, batch, T, K, backend)
    with torch.no_grad():
        states = [s.clone() for s in net.relax(x, T=2)]
        if backend == "torch":
            drives, terms = net.drives(x), net.terms()
            out = [None] + [torch.empty_like(s) for s in states[1:]]
            fn = lambda: ref.step(states, drives, terms, net.activation, out=out)  # noqa: E731
        else:
            relax_k, _ = fused.kernels()
            prec = "tf32" if backend.endswith("tf32") else "ieee"
            plan = fused.plan_for(net, x.device)
            w, b = plan.pack(net, prec)
            f_in, f_out = plan.frames("bench", batch)
            for v, s in zip(fused.state_views(plan, f_in, x)[1:], states[1:]):
                v.copy_(s)
            drive, bl = net.layers[0](x), plan.blocks
            fn = lambda: relax_k.relax_step(  # noqa: E731
                f_in, f_out, drive, w, b, plan.tiles, plan.layers, plan.terms, plan.scales,
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


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("name", ["2hl-512-K10", "10hl-64-res"])
def test_contrastive_update(benchmark, name, backend):
    if skip_reason(backend):
        pytest.skip(skip_reason(backend))
    sizes, opts, batch, T, K = NETS[name]
    net, x, y = build(sizes, opts, batch, T, K, backend)
    with torch.no_grad():
        free = [s.clone() for s in net.relax(x, T=3)]
        nudged = [x] + [s + 0.01 * torch.randn_like(s) for s in free[1:]]
        if backend == "torch":
            fn = lambda: net._write_grads("fre", nudged, free, free, net.nudge, net.nudge, False)  # noqa: E731
        else:
            _, update_k = fused.kernels()
            plan = fused.plan_for(net, x.device)
            frames = []
            for i, states in enumerate((nudged, free)):
                f = plan.frames(f"bench{i}", batch)[0]
                for v, s in zip(fused.state_views(plan, f, x)[1:], states[1:]):
                    v.copy_(s)
                frames.append(f)
            coefs, bl = plan.coefs("fre", net.nudge, net.nudge, batch, None), plan.blocks
            plan.bind_grads()
            fn = lambda: update_k.contrastive_update(  # noqa: E731
                frames[0], frames[1], frames[1], x, plan.grads, plan.up_tiles, plan.link_table, coefs, rule="fre",
                accumulate=False, block_m=bl.update_m, block_n=bl.update_n, block_b=bl.update_b,
                num_warps=bl.num_warps)
    bench(benchmark, torch.no_grad()(fn), case="update", net=name, backend=backend, batch=batch)


# ----------------------------------------------------------------------------- scaling
@pytest.mark.parametrize("backend", ["torch", "triton-graph"])
@pytest.mark.parametrize("batch,width", SCALING, ids=[f"B{b}-W{w}" for b, w in SCALING])
def test_ep_step_scaling(benchmark, batch, width, backend):
    if skip_reason(backend, scaling=True):
        pytest.skip(skip_reason(backend, scaling=True))
    sizes = [20 if DRY else 784, width, width, 10]
    net, x, y = build(sizes, dict(feedback=0.01, nudge=0.1), batch, 10, 10, backend)
    bench(benchmark, ep_callable(net, x, y, backend), case="ep_step_scaling", net=f"2hl-{width}",
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
    if skip_reason(backend):
        pytest.skip(skip_reason(backend))
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
