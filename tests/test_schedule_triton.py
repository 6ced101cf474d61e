"""The alternating schedule (odd layers, then even layers from the odd layers' new
states) in the dense Triton engine, against the reference engine, on odd shapes
with ragged tiles (the style of ``test_dense_triton``): the step kernel one group
per launch, the persistent kernel alternating inside its launch, early stopping,
the nudges; and the synchronous default left as it was. On CPU the kernels run in
Triton's interpreter; outputs are NaN-poisoned, so an element a kernel fails to
write (or an uninitialised one it reads) fails."""
import copy

import pytest
import torch

from tritonep import EPNet
from tritonep import reference as ref
from tritonep.engine.backend import interpreting, kernel_module
from tritonep.engine.dense_triton import Blocks, Plan, default_blocks, plan_key
from tritonep.options import kernel_precision

from test_cuda_graph import fake_cuda  # noqa: F401  (the fixture)
from test_dense_triton import nudge_case
from test_host_sync import on_device, reads  # noqa: F401  (the fixtures)
from tf32 import no_torch_tf32

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(),
                                reason="no GPU and TRITON_INTERPRET is not set")
B = 37
ALT = "alternating"
NETS = {
    "chain": dict(sizes=[50, 129, 33, 10]),
    "chain4-bias-random": dict(sizes=[50, 40, 33, 29, 10], bias=True, feedback_weights="random"),
    # residual=2 links join layers of one parity (one group: Jacobi within it); residual=3 an odd and an even
    "residual2": dict(sizes=[23, 50, 17, 31, 40, 10], residual=2, bias=True),
    "residual3": dict(sizes=[23, 50, 17, 31, 40, 10], residual=3, bias=True),
    "agt": dict(sizes=[23, 50, 17, 31, 40, 10], feedback_weights="random", agt=0.6, agt_seed=1),
    "pep": dict(sizes=[50, 33, 12], output="neuron", activation="pep_sigmoid", bias=True),
}
# the kernel-level tests' tiles: every layer and link spans several ragged tiles
SMALL = Blocks(relax_b=16, relax_n=32, relax_k=16, update_m=16, update_n=32, update_b=16, phase_b=16, phase_k=16)
# the persistent kernel's test: 16-row programs, several per batch (as test_dense_triton's)
PHASE = Blocks(relax_b=64, relax_n=64, relax_k=64, update_m=64, update_n=64, update_b=64, phase_b=16, phase_k=64)


@pytest.fixture(autouse=True, scope="module")
def _fp32_torch():
    with no_torch_tf32():
        yield


def make(name, backend="triton", **kw):
    opts = dict(NETS[name])
    sizes = opts.pop("sizes")
    opts = {**dict(feedback=0.3, nudge=0.5, T=3, K=2), **opts, **kw}
    torch.manual_seed(0)
    net = EPNet(sizes, backend=backend, **opts)
    with torch.no_grad():  # biases start at zero: make them count
        for p in net.parameters():
            if p.dim() == 1:
                p.uniform_(-0.3, 0.3)
    return net.to(DEVICE)


def with_tiles(net, blocks):
    """Give ``net`` a plan with ``blocks``' tiles, where the engine looks its plan up."""
    spec, dev = net.spec(), torch.device(DEVICE)
    key = plan_key(spec, dev, default_blocks(dev, kernel_precision(net.precision)))
    net.backend_state.buffers[key] = Plan(spec, dev, blocks)
    return net


def pair(name, blocks=None, **kw):
    """The same net on both backends (the Triton one with ``blocks``' tiles, else the
    default ones: 64 wide in the interpreter, ragged on these widths)."""
    a, b = make(name, "torch", **kw), make(name, "triton", **kw)
    b.load_state_dict(a.state_dict())
    return a, (with_tiles(b, blocks) if blocks is not None else b)


def batch(net, n=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, net.sizes[0], generator=g)
    y = torch.randint(0, net.num_classes, (n,), generator=g)
    return x.to(DEVICE), y.to(DEVICE)


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def grads(net, x, y, **kw):
    net.zero_grad()
    torch.manual_seed(3)  # random-sign nudging draws from torch's RNG
    loss, out = net.ep_step(x, y, **kw)
    return loss, out, [p.grad.clone() for p in net.parameters()]


def assert_same_step(a, b, x, y, **kw):
    """One ep_step on each net: the outputs, loss and every grad agree, and so do the
    steps run. The bars are test_dense_triton's (1e-5 relative per grad), except where
    the fp32 reference is itself further than half that from an fp64 run of it: there
    twice its own error. (An alternating step carries the nudge further in K steps, so
    a layer far from the top gets a grad made of state differences near fp32's
    resolution: residual2, symmetric nudging, layers.1 is 9e-6 from fp64 in either
    backend, 1.05e-5 from each other.)"""
    la, oa, ga = grads(a, x, y, **kw)
    lb, ob, gb = grads(b, x, y, **kw)
    torch.testing.assert_close(ob, oa, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
    exact = copy.deepcopy(a).double()
    _, _, g64 = grads(exact, x.double(), y, **kw)
    for (n, _), p, q, r in zip(a.named_parameters(), ga, gb, g64):
        bar = max(1e-5, 2 * rel(p.double(), r))
        assert rel(q, p) < bar, (n, rel(q, p), bar)
    assert b.last_steps == a.last_steps
    return ga, gb


# ----------------------------------------------------------------------------- tables
@pytest.mark.parametrize("name", ["residual2", "agt"])
def test_plan_tables_split_the_layers_into_groups(name):
    net = make(name)
    plan = Plan(net.spec(), torch.device(DEVICE), SMALL)
    c = kernel_module("common")
    odd, even = net.topology.update_order(ALT)
    assert plan.order == [odd, even]
    tiles = [t.tolist() for t in plan.group_tiles]
    assert sorted(tiles[0] + tiles[1]) == sorted(plan.tiles.tolist())  # every tile once
    assert {r[c.TILE_LAYER] for r in tiles[0]} == set(odd) and {r[c.TILE_LAYER] for r in tiles[1]} == set(even)
    layers, terms = plan.layers.tolist(), plan.terms.tolist()
    col_to_layer = {plan.col[l]: l for l in range(1, net.n_state + 1)}
    for l in range(1, net.n_state + 1):
        for t in terms[layers[l][c.LAYER_TERM_BEGIN]:layers[l][c.LAYER_TERM_END]]:
            src = col_to_layer[t[c.TERM_SRC_COL]]
            assert t[c.TERM_SRC_NEW] == (src % 2 == 1 and l % 2 == 0), (src, l)
    buf, views = plan.group_delta(B)
    assert [v.shape[0] for v in views] == [len(t) for t in tiles] and not buf.any()
    assert all(v.data_ptr() % 16 == 0 for v in views)


# ----------------------------------------------------------------------------- the step kernel, per group
@pytest.mark.parametrize("name", ["chain", "residual2", "agt", "pep"])
@pytest.mark.parametrize("nudge", ["none", "dynamic", "frozen", "from-zero"])
def test_alternating_step_matches_reference(name, nudge):
    """Both groups' launches make ``reference.step(..., order)``: the second group reads
    the first's new states (and, same-parity links, its own group's old ones); the
    nudge reads the top layer's old state; from zero states the input frame (NaN
    here) is never read; the per-tile squared changes sum to the step's."""
    relax_k = kernel_module("relax")
    net = make(name)
    x, y = batch(net)
    target = torch.nn.functional.one_hot(y, net.num_classes).float()
    plan = Plan(net.spec(), torch.device(DEVICE), SMALL)
    w, b = plan.pack(net.spec(), "ieee")
    order = net.topology.update_order(ALT)
    lo = 0.0 if net.activation != "tanh" else -1.0

    def states():
        return [x] + [torch.empty(B, n, device=DEVICE).uniform_(lo, 1.0) for n in net.topology.sizes[1:]]

    cur, other = states(), states()
    nudge_ref, kw = nudge_case(net, plan, relax_k, target, other, nudge)
    skip = nudge == "from-zero"
    if skip:
        cur = [x] + [torch.zeros_like(s) for s in cur[1:]]
    with torch.no_grad():
        want = ref.step(cur, net.drives(x), net.terms(), net.activation, nudge=nudge_ref, skip_terms=skip,
                        order=order)
        sync = ref.step(cur, net.drives(x), net.terms(), net.activation, nudge=nudge_ref, skip_terms=skip)
    s_in = torch.full((B, plan.width), float("nan"), device=DEVICE)
    if not skip:
        for v, s in zip(plan.state_views(s_in, x)[1:], cur[1:]):
            v.copy_(s)
    s_out = torch.full_like(s_in, float("nan"))
    delta, rows = plan.group_delta(B)
    for r in rows:
        r.fill_(float("nan"))
    for tiles, d in zip(plan.group_tiles, rows):
        relax_k.relax_step(s_in, s_out, net.layers[0](x).detach(), w, b, tiles, plan.layers, plan.terms,
                           activation=net.activation, delta=d, skip_terms=skip, alternating=True, block_b=16,
                           block_n=32, block_k=16, **kw)
    got = plan.state_views(s_out, x)
    for l in range(1, net.n_state + 1):
        torch.testing.assert_close(got[l], want[l], rtol=1e-5, atol=1e-6, msg=f"layer {l}")
    change = sum(((w_ - s) ** 2).sum(1) for w_, s in zip(want[1:], cur[1:]))
    torch.testing.assert_close(delta.sum(0), change, rtol=1e-4, atol=1e-6)
    # the schedule shows: the even layers differ from a synchronous step's
    assert max((want[l] - sync[l]).abs().max().item() for l in order[1]) > 1e-3


# ----------------------------------------------------------------------------- whole ep_step
CASES = [
    ("chain", {}),
    ("chain", dict(rule="classic", nudging="symmetric", nudge_schedule="ramp")),
    ("chain4-bias-random", dict(error="frozen")),
    ("chain4-bias-random", dict(nudging="random-sign", normalize=True, nudge_schedule="ramp", error="frozen")),
    ("residual2", dict(nudging="symmetric", normalize=True)),
    ("residual3", dict(rule="classic")),
    ("agt", {}),
    ("agt", dict(rule="classic", error="frozen")),
    ("pep", dict(rule="classic", nudging="symmetric")),
    ("pep", dict(error="frozen", nudge_schedule="ramp")),
]


@pytest.mark.parametrize("name,opts", CASES,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in CASES])
def test_alternating_ep_step_backends_agree(name, opts):
    a, b = pair(name, schedule=ALT, **opts)
    x, y = batch(a)
    assert_same_step(a, b, x, y)
    assert b.last_steps == {"free": 3, "nudged": [2, 2] if opts.get("nudging") == "symmetric" else [2]}


def test_small_tiles_cross_every_edge():
    """16-32 wide tiles and 16-row batch tiles: every layer and link spans several
    ragged tiles in both groups' launches."""
    a, b = pair("residual2", SMALL, schedule=ALT, nudging="symmetric")
    x, y = batch(a)
    assert_same_step(a, b, x, y)


@pytest.mark.parametrize("name,opts", [("residual2", dict(nudging="symmetric")), ("pep", dict(error="frozen")),
                                       ("agt", dict(error="dynamic", nudge_schedule="ramp"))])
def test_alternating_persistent_kernel_agrees(name, opts):
    """One launch per phase, each program alternating the groups for its rows (16-row
    tiles: several programs), computes what one launch per group and step computes."""
    ref_net, step_net = pair(name, PHASE, schedule=ALT, **opts)
    pers = with_tiles(make(name, persistent=True, schedule=ALT, **opts), PHASE)
    x, y = batch(ref_net)
    _, _, g_ref = grads(ref_net, x, y, T=4, K=3)
    _, _, g_step = grads(step_net, x, y, T=4, K=3)
    _, _, g_pers = grads(pers, x, y, T=4, K=3)
    for p, q, r in zip(g_pers, g_step, g_ref):
        if DEVICE == "cpu":  # the interpreter sums both kernels' tiles in one order
            tol = dict(rtol=1e-6, atol=1e-9)
        else:  # fp32 summation orders differ on a GPU: test_dense_triton's bar
            tol = dict(rtol=1e-5, atol=2e-5 * r.abs().max().item())
        torch.testing.assert_close(p, q, **tol)
        assert rel(p, r) < 5e-5
    tol = dict(rtol=1e-6, atol=1e-7) if DEVICE == "cpu" else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pers(x, T=5), step_net(x, T=5), **tol)


def test_alternating_early_stopping_same_steps_both_backends():
    """tol: the check's change is the whole step's (both groups), per sample."""
    a, b = pair("chain", feedback=0.2, nudge=0.5, tol=1e-3, check_every=2, schedule=ALT)
    x, y = batch(a)
    assert_same_step(a, b, x, y, T=40, K=40)
    assert a.last_steps["free"] < 40 and a.last_steps["nudged"][0] < 40, a.last_steps
    assert a.last_steps["free"] % 2 == 0
    # the persistent net falls back to the step kernel under tol, with the same steps
    p = make("chain", feedback=0.2, nudge=0.5, tol=1e-3, check_every=2, schedule=ALT, persistent=True)
    p.load_state_dict(a.state_dict())
    assert_same_step(a, p, x, y, T=40, K=40)
    b.ep_step(x, y, T=6, K=4, tol=1e3)  # a huge tolerance stops at the first check
    assert b.last_steps == {"free": 2, "nudged": [2]}
    b.ep_step(x, y, T=6, K=4, tol=1e-12)  # a tiny one never stops early
    assert b.last_steps == {"free": 6, "nudged": [4]}


def test_alternating_settles_in_fewer_steps():
    """What the schedule is for: on a chain it settles in fewer steps than the
    synchronous one (both backends agree on how many)."""
    a, b = pair("chain4-bias-random", feedback=0.2, tol=1e-4, check_every=1)
    x, _ = batch(a)
    steps = {}
    for schedule in ("synchronous", ALT):
        for net in (a, b):
            net.relax(x, 60, schedule=schedule)
        assert a.last_steps["free"] == b.last_steps["free"]
        steps[schedule] = a.last_steps["free"]
    assert steps[ALT] < steps["synchronous"] < 60, steps


@pytest.mark.parametrize("name", ["residual2", "pep"])
def test_relax_states_and_residual(name):
    a, b = pair(name)
    x, _ = batch(a)
    for T in (1, 2, 5):
        sa = [s.clone() for s in a.relax(x, T, schedule=ALT)]
        sb = b.relax(x, T, schedule=ALT)
        for l in range(1, a.n_state + 1):
            torch.testing.assert_close(sb[l], sa[l], rtol=1e-5, atol=1e-6)
        # the residual: the last full step against the one before (T = 1: against zeros)
        assert b.last_residual == pytest.approx(a.last_residual, rel=1e-4, abs=1e-7)


# ----------------------------------------------------------------------------- the switch is real, the default kept
def test_alternating_differs_and_synchronous_is_unchanged():
    """The schedule changes what both backends compute (so the tests above cannot pass
    with the switch ignored); the synchronous default still matches the reference at
    test_dense_triton's bars, on the same net, after alternating steps ran (the plan
    and its cached tables are shared)."""
    a, b = pair("residual2")
    x, y = batch(a)
    _, out_alt, g_alt = grads(b, x, y, schedule=ALT)
    _, out_ref_alt, _ = grads(a, x, y, schedule=ALT)
    ga, gb = assert_same_step(a, b, x, y)  # the default: synchronous
    assert a.schedule == b.schedule == "synchronous"
    _, out_sync, _ = grads(b, x, y)
    assert (out_alt - out_sync).abs().max().item() > 1e-3
    assert max(rel(p, q) for p, q in zip(g_alt, gb)) > 1e-2
    torch.testing.assert_close(out_alt, out_ref_alt, rtol=1e-5, atol=1e-6)
    f_sync = b(x, T=4)  # forward: relax + readout
    torch.testing.assert_close(f_sync, a(x, T=4), rtol=1e-5, atol=1e-6)
    a.schedule = b.schedule = ALT  # the net's default schedule
    f_alt = b(x, T=4)
    torch.testing.assert_close(f_alt, a(x, T=4), rtol=1e-5, atol=1e-6)
    assert (f_alt - f_sync).abs().max().item() > 1e-3
    a.schedule = b.schedule = "synchronous"
    # the persistent kernel's synchronous phases, likewise
    p = with_tiles(make("residual2", persistent=True), PHASE)
    p.load_state_dict(a.state_dict())
    assert_same_step(a, p, x, y)


def test_a_single_state_layer_steps_synchronously():
    """One state layer is one group: alternating is the synchronous step (no tables)."""
    torch.manual_seed(0)
    a = EPNet([20, 17, 10], backend="torch", feedback=0.3, nudge=0.5, T=3, K=2).to(DEVICE)
    b = EPNet([20, 17, 10], backend="triton", feedback=0.3, nudge=0.5, T=3, K=2).to(DEVICE)
    b.load_state_dict(a.state_dict())
    x, y = batch(a)
    assert_same_step(a, b, x, y, schedule=ALT)
    assert b.triton_engine(x).plan.group_tiles is None


@pytest.mark.skipif(DEVICE != "cpu", reason="the stand-in for CUDA's graph API runs on CPU (test_cuda_graph)")
def test_alternating_step_is_captured_without_host_reads(fake_cuda, on_device, reads):  # noqa: F811
    """A CUDA graph can capture the alternating step (one launch per group and step):
    nothing is read back per step without tol (test_host_sync's check), and the
    schedule is part of what a capture bakes in (a change recaptures)."""
    net = make("chain", cuda_graph=True, schedule=ALT)
    x, y = batch(net)
    net.ep_step(x, y)  # the first step may read (capture); later ones must not
    reads.clear()
    for _ in range(2):
        net.zero_grad()
        net.ep_step(x, y)
    assert reads == []
    graphs = net.backend_state.graphs
    assert graphs.captures == 1 and not graphs.off
    net.ep_step(x, y, schedule="synchronous")
    assert graphs.captures == 2
