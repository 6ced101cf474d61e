"""The dense Triton engine and its kernels against the reference engine, on odd shapes (no size is a multiple of a
block). On CPU they run in Triton's interpreter (the conftest sets
TRITON_INTERPRET=1); with a GPU the same tests run on CUDA. Outputs are
NaN-poisoned before each launch, so an element a kernel fails to write fails."""
import pytest
import torch

from tritonep import EPNet, rules
from tritonep import reference as ref
from tritonep.engine.backend import interpreting, kernel_module
from tritonep.engine.dense_triton import Blocks, Plan, default_blocks, plan_key
from tritonep.options import kernel_precision

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(),
                                reason="no GPU and TRITON_INTERPRET is not set")
B = 37
NETS = {
    "chain": dict(sizes=[50, 129, 33, 10]),
    "chain-bias-random": dict(sizes=[50, 129, 33, 10], bias=True, feedback_weights="random"),
    "residual": dict(sizes=[23, 50, 17, 31, 40, 10], residual=2, bias=True),
    "agt": dict(sizes=[23, 50, 17, 31, 40, 10], feedback_weights="random", agt=0.6, agt_seed=1),
    "pep": dict(sizes=[50, 33, 12], output="neuron", activation="pep_sigmoid", bias=True),
    "hard-sigmoid": dict(sizes=[50, 129, 10], activation="hard_sigmoid"),
}


def make(name, backend="triton", **kw):
    opts = dict(NETS[name])
    sizes = opts.pop("sizes")
    opts = {**dict(feedback=0.3, nudge=0.5, T=3, K=2), **opts, **kw}
    net = EPNet(sizes, backend=backend, **opts).to(DEVICE)
    with torch.no_grad():  # biases start at zero: make them count
        for p in net.parameters():
            if p.dim() == 1:
                p.uniform_(-0.3, 0.3)
    return net


def pair(name, **kw):
    """The same net on both backends."""
    a, b = make(name, "torch", **kw), make(name, "triton", **kw)
    b.load_state_dict(a.state_dict())
    return a, b


def batch(net, n=B):
    x = torch.rand(n, net.sizes[0], device=DEVICE)
    y = torch.randint(0, net.num_classes, (n,), device=DEVICE)
    return x, y


SMALL = Blocks(relax_b=16, relax_n=32, relax_k=16, update_m=16, update_n=32, update_b=16)


def small_plan(net):
    """A plan with small tiles, so layers and links span several ragged tiles."""
    return Plan(net.spec(), torch.device(DEVICE), SMALL)


def slot(plan, p):
    """(offset, numel) of parameter ``p``'s gradient in the plan's flat buffer."""
    return plan.grads.slices[[id(q) for q in plan.grads.params].index(id(p))]


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def random_states(plan, net, x):
    lo = 0.0 if net.activation != "tanh" else -1.0
    return [x] + [torch.empty(B, n, device=DEVICE).uniform_(lo, 1.0) for n in net.topology.sizes[1:]]


def to_frame(plan, states):
    frame = torch.full((B, plan.width), float("nan"), device=DEVICE)
    for v, s in zip(plan.state_views(frame, states[0])[1:], states[1:]):
        v.copy_(s)
    return frame


# ----------------------------------------------------------------------------- relaxation step
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("nudge", ["none", "dynamic", "frozen"])
def test_relax_step_matches_reference(name, nudge):
    relax_k = kernel_module("relax")
    net = make(name)
    x, y = batch(net)
    target = torch.nn.functional.one_hot(y, net.num_classes).float()
    plan = small_plan(net)
    w, b = plan.pack(net.spec(), "ieee")
    states, other = random_states(plan, net, x), random_states(plan, net, x)
    beta = -0.7
    kw, nudge_ref = {}, None
    if nudge != "none":
        frozen = nudge == "frozen"
        if net.output == "softmax":
            W_f, b_f, M_f = net.readout_matrices()
            nudge_ref = ref.SoftmaxNudge(W_f, b_f, M_f, target, beta, frozen, other[-1])
            code = relax_k.NUDGE_SOFTMAX_GIVEN if frozen else relax_k.NUDGE_SOFTMAX
            kw = dict(W_f=W_f.detach(), b_f=None if b_f is None else b_f.detach(), M_f=M_f.detach())
            err = nudge_ref.frozen_error if frozen else None
        else:
            nudge_ref = ref.NeuronNudge(target, beta, frozen, other[-1])
            code = relax_k.NUDGE_NEURON_GIVEN if frozen else relax_k.NUDGE_NEURON
            err = nudge_ref.frozen_error
        kw.update(nudge=code, beta=beta, target=target, error=err, top=plan.top)
    with torch.no_grad():
        want = ref.step(states, net.drives(x), net.terms(), net.activation, nudge=nudge_ref)
    s_in = to_frame(plan, states)
    s_out = torch.full_like(s_in, float("nan"))
    delta = torch.full((plan.n_tiles, B), float("nan"), device=DEVICE)
    relax_k.relax_step(s_in, s_out, net.layers[0](x).detach(), w, b, plan.tiles, plan.layers, plan.terms,
                       activation=net.activation, delta=delta, block_b=16, block_n=32, block_k=16,
                       **kw)
    got = plan.state_views(s_out, x)
    for l in range(1, net.n_state + 1):
        torch.testing.assert_close(got[l], want[l], rtol=1e-5, atol=1e-6, msg=f"layer {l}")
    change = sum(((w_ - s) ** 2).sum(1) for w_, s in zip(want[1:], states[1:]))
    torch.testing.assert_close(delta.sum(0), change, rtol=1e-4, atol=1e-6)


def test_readout_matches_reference():
    relax_k = kernel_module("relax")
    net = make("chain-bias-random")
    x, y = batch(net)
    target = torch.softmax(torch.randn(B, 10, device=DEVICE), 1)  # soft targets too
    plan = small_plan(net)
    states = random_states(plan, net, x)
    frame = to_frame(plan, states)
    logits = torch.full((B, 10), float("nan"), device=DEVICE)
    err = torch.full_like(logits, float("nan"))
    W_f, b_f, _ = net.readout_matrices()
    relax_k.readout(frame, plan.col[plan.top], states[-1].shape[1], W_f.detach(), b_f.detach(), target, logits, err,
                    block_b=16, block_k=16)
    with torch.no_grad():
        want = ref.readout(states[-1], W_f, b_f)
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(err, target - torch.softmax(want, 1), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- contrastive update
@pytest.mark.parametrize("name", ["chain-bias-random", "residual", "agt", "pep"])
@pytest.mark.parametrize("rule", ["fre", "classic"])
@pytest.mark.parametrize("accumulate", [False, True])
def test_update_matches_reference(name, rule, accumulate):
    update_k = kernel_module("update")
    net = make(name)
    x, _ = batch(net)
    plan = small_plan(net)
    a, b0, free = (random_states(plan, net, x) for _ in range(3))
    coefs = torch.randn(len(plan.links), device=DEVICE)
    start = torch.randn(plan.grads.flat.numel(), device=DEVICE)
    grads = start.clone() if accumulate else torch.full_like(start, float("nan"))
    update_k.contrastive_update(to_frame(plan, a), to_frame(plan, b0), to_frame(plan, free), x, grads, plan.up_tiles,
                                plan.link_table, coefs, rule=rule, accumulate=accumulate, block_m=16, block_n=32,
                                block_b=16)
    want = start.clone() if accumulate else torch.zeros_like(start)
    for i, k in enumerate(plan.links):
        off, numel = slot(plan, net.matrix(k.weight))
        G = want[off:off + numel].view(net.matrix(k.weight).shape)
        c = coefs[i].item()
        rules.add_link_update(G, rule, a[k.dst], b0[k.dst], a[k.src], b0[k.src], free[k.src], c)
        bias = net.layer_bias(k.dst) if k.feeds_bias else None
        if bias is not None:
            off, numel = slot(plan, bias)
            want[off:off + numel] += c * (a[k.dst] - b0[k.dst]).sum(0)
    params = plan.grads.params
    n_links = plan.grads.slices[plan.n_link_params][0] if plan.n_link_params < len(params) else start.numel()
    torch.testing.assert_close(grads[:n_links], want[:n_links], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- whole ep_step
CASES = [
    ("chain", {}),
    ("chain", dict(rule="classic", nudging="symmetric")),
    ("chain-bias-random", dict(error="frozen")),
    ("chain-bias-random", dict(nudging="random-sign", normalize=True)),
    ("residual", dict(nudging="symmetric", normalize=True)),
    ("residual", dict(rule="classic")),
    ("agt", {}),
    ("agt", dict(rule="classic", error="frozen")),
    ("pep", dict(rule="classic", nudging="symmetric")),
    ("pep", dict(error="frozen")),
    ("hard-sigmoid", dict(nudging="symmetric")),
]


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in CASES])
def test_ep_step_backends_agree(name, opts):
    a, b = pair(name, **opts)
    x, y = batch(a)
    torch.manual_seed(3)
    la, oa = a.ep_step(x, y)
    torch.manual_seed(3)  # random-sign nudging draws its sign from torch's RNG
    lb, ob = b.ep_step(x, y)
    torch.testing.assert_close(ob, oa, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert q.grad is not None, n
        assert rel(q.grad, p.grad) < 1e-5, (n, rel(q.grad, p.grad))
    # written in place: every trained parameter's .grad is a view of the plan's buffer
    grads = b.triton_engine(x).grad_buffer()
    base = grads.flat.data_ptr()
    for p in grads.params:
        assert base <= p.grad.data_ptr() < base + 4 * grads.flat.numel()
    assert b.last_steps == a.last_steps == {"free": 3, "nudged": [2, 2] if opts.get("nudging") == "symmetric" else [2]}


def test_small_tiles_cross_every_edge(monkeypatch):
    """16-wide tiles: every layer and link spans several tiles, with ragged edges."""
    import tritonep.net

    monkeypatch.setattr(tritonep.net, "default_blocks", lambda device, precision: Blocks(16, 16, 16, 16, 16, 16))
    a, b = pair("residual", nudging="symmetric")
    x, y = batch(a)
    a.ep_step(x, y)
    b.ep_step(x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        assert rel(q.grad, p.grad) < 1e-5


def test_grads_accumulate_like_backward():
    a, b = pair("chain-bias-random")
    x, y = batch(a)
    b.ep_step(x, y)
    once = [p.grad.clone() for p in b.parameters()]
    b.ep_step(x, y)  # no zero_grad: adds
    for p, g in zip(b.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g)
    b.zero_grad(set_to_none=False)
    b.ep_step(x, y)
    for p, g in zip(b.parameters(), once):
        torch.testing.assert_close(p.grad, g)
    # a .grad the user put there is kept and added to
    b.zero_grad()
    user = torch.ones_like(b.layers[1].weight)
    b.layers[1].weight.grad = user
    b.ep_step(x, y)
    torch.testing.assert_close(b.layers[1].weight.grad, once[list(dict(b.named_parameters())).index("layers.1.weight")]
                               + 1)


def test_optimizer_trains_the_same_through_both_backends():
    """Adam on the .grad each backend writes: same trajectory, and the loss falls."""
    nets = pair("chain", feedback=0.1, nudge=0.2)
    x, y = batch(nets[0], 64)
    runs = []
    for net in nets:
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        losses = []
        for _ in range(8):
            opt.zero_grad()
            loss, _ = net.ep_step(x, y, T=4, K=3)
            opt.step()
            losses.append(loss.item())
        runs.append(losses)
    assert runs[1][-1] < 0.95 * runs[1][0], runs[1]
    assert runs[1] == pytest.approx(runs[0], rel=1e-4)
    for p, q in zip(*(n.parameters() for n in nets)):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_forward_and_relax_agree():
    a, b = pair("residual")
    x, _ = batch(a)
    torch.testing.assert_close(b(x, T=4), a(x, T=4), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- early stopping
def test_early_stopping_same_steps_both_backends():
    a, b = pair("chain", feedback=0.2, nudge=0.5, tol=1e-3, check_every=2)
    x, y = batch(a)
    a.ep_step(x, y, T=40, K=40)
    b.ep_step(x, y, T=40, K=40)
    assert a.last_steps == b.last_steps
    assert a.last_steps["free"] < 40 and a.last_steps["nudged"][0] < 40, a.last_steps
    assert a.last_steps["free"] % 2 == 0
    for p, q in zip(a.parameters(), b.parameters()):
        assert rel(q.grad, p.grad) < 1e-5
    b.ep_step(x, y, T=6, K=4, tol=1e3)  # a huge tolerance stops at the first check
    assert b.last_steps == {"free": 2, "nudged": [2]}
    b.ep_step(x, y, T=6, K=4, tol=1e-12)  # a tiny one never stops early
    assert b.last_steps == {"free": 6, "nudged": [4]}


# ----------------------------------------------------------------------------- precision and errors
@pytest.mark.parametrize("precision,tol", [("tf32", 3e-3), ("bf16", 5e-2)])
def test_reduced_precision_within_stated_tolerance(precision, tol):
    a, b = pair("chain", precision=precision)
    x, y = batch(a)
    a.ep_step(x, y)
    b.ep_step(x, y)
    errs = [rel(q.grad, p.grad) for p, q in zip(a.parameters(), b.parameters())]
    assert max(errs) < tol, errs


def test_clear_errors(monkeypatch):
    net = make("chain")
    x, y = batch(net)
    with pytest.raises(TypeError, match="float32"):
        make("chain").double().ep_step(x.double(), y)
    with pytest.raises(ValueError, match="precision"):
        EPNet([4, 5, 3], precision="fp8")
    with pytest.raises(ValueError, match="backend"):
        EPNet([4, 5, 3], backend="cuda")
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            net.ep_step(x, y)
        assert EPNet([4, 5, 3]).backend_for(torch.rand(2, 4)) == "torch"  # auto: the reference on CPU


def test_cli_trains_on_the_triton_backend_like_the_reference(tmp_path, data_dir):
    """`tritonep train --backend triton` (here in the interpreter) gives the run the
    reference gives: same losses and accuracies, epoch by epoch."""
    import json

    from tritonep.cli import main

    runs = {}
    for backend in ("torch", "triton"):
        out = tmp_path / f"{backend}.json"
        argv = ["train", "mnist-2hl", "--backend", backend, "--hidden", "40,24", "--epochs", "2", "--batch-size", "100",
                "--limit-train", "300", "--limit-test", "200", "--T", "4", "--K", "3", "--tol", "1e-3",
                "--check-every", "2", "--data-dir", str(data_dir), "--no-download", "--quiet", "--out", str(out)]
        assert main(argv + (["--device", DEVICE] if DEVICE == "cuda" else [])) == 0
        runs[backend] = json.loads(out.read_text())
    a, b = runs["torch"], runs["triton"]
    assert b["config"]["backend"] == "triton" and b["config"]["tol"] == 1e-3 and b["config"]["check_every"] == 2
    for ea, eb in zip(a["epochs"], b["epochs"]):
        assert eb["train_loss"] == pytest.approx(ea["train_loss"], rel=1e-4)
        assert abs(eb["test_acc"] - ea["test_acc"]) <= 0.5  # at most one of 200 images flips


@pytest.mark.parametrize("name,opts", [("residual", dict(nudging="symmetric")), ("pep", dict(error="frozen")),
                                       ("chain-bias-random", {})])
def test_persistent_kernel_agrees(name, opts):
    """One launch per phase (each program runs every step for its rows) computes
    what one launch per step computes, tile for tile; 16-row tiles so several
    programs share the batch."""
    blocks = Blocks(relax_b=16, relax_n=64, relax_k=64, update_m=64, update_n=64, update_b=64, phase_b=16,
                    phase_k=64)
    ref_net, step_net = pair(name, **opts)
    pers = make(name, persistent=True, **opts)
    pers.load_state_dict(ref_net.state_dict())
    for net in (step_net, pers):
        spec = net.spec()
        dev = torch.device(DEVICE)
        net.backend_state.buffers[plan_key(spec, dev, default_blocks(dev, kernel_precision(net.precision)))] = Plan(spec, dev, blocks)
    x, y = batch(ref_net)
    for net in (ref_net, step_net, pers):
        net.ep_step(x, y, T=4, K=3)
    for p, q, r in zip(pers.parameters(), step_net.parameters(), ref_net.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-9)
        assert rel(p.grad, r.grad) < 5e-5
    torch.testing.assert_close(pers(x, T=5), step_net(x, T=5), rtol=1e-6, atol=1e-7)


def test_deepcopy_and_pickle_leave_the_caches_behind():
    """A net that ran on the Triton path copies like any module (its tables, buffers
    and graphs are rebuilt on demand), and the copy computes the same grads."""
    import copy
    import io

    a, b = pair("chain")
    x, y = batch(a)
    b.ep_step(x, y)
    assert b.backend_state.buffers
    c = copy.deepcopy(b)
    assert not c.backend_state.buffers
    buf = io.BytesIO()
    torch.save(b, buf)
    buf.seek(0)
    d = torch.load(buf, weights_only=False)
    for net in (c, d):
        net.zero_grad()
        net.ep_step(x, y)
        for p, q in zip(b.parameters(), net.parameters()):
            torch.testing.assert_close(q.grad, p.grad)
