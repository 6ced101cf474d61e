"""The relaxation's update schedule: ``"alternating"`` (odd layers, then even layers
from their new states) reaches the fixed point the synchronous steps reach, one of
its steps is the red-black step written out here, it settles in fewer steps, the
conv engines agree on it, and the default (synchronous) computes exactly what it
always did."""
import pytest
import torch

from tritonep import Conv, ConvEPNet, Dense, EPNet, cli, presets, train
from tritonep import reference as ref
from tritonep.engine.backend import interpreting
from tritonep.topology import layered

NETS = {
    "chain": dict(sizes=[13, 21, 17, 19, 10]),
    "residual3": dict(sizes=[13, 11, 12, 9, 14, 10, 8, 10], residual=3),
    # links join layers of one parity; weights halved: at full scale the synchronous steps
    # of this net fall into a period-2 cycle (a change of 1.9 after 400 steps) where the
    # alternating ones settle, and a test of equal fixed points needs both to settle
    "residual2": dict(sizes=[13, 11, 12, 9, 14, 10], residual=2, scale=0.5),
    "agt": dict(sizes=[13, 11, 12, 9, 14, 10], agt=0.5, agt_seed=3, feedback_weights="random"),
}


def make(name, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    opts = dict(NETS[name])
    sizes, scale = opts.pop("sizes"), opts.pop("scale", 1.0)
    net = EPNet(sizes, **{**dict(feedback=0.2, nudge=0.3, backend="torch", bias=True), **opts, **kw}).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def data(n_in, n=7, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, n_in, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def test_update_order():
    topo = layered([5, 4, 4, 4, 4, 3], feedback=0.1)
    assert topo.update_order("synchronous") is None
    assert topo.update_order("alternating") == [[1, 3, 5], [2, 4]]
    assert layered([5, 4], feedback=0.1).update_order("alternating") is None  # one state layer: nothing to order
    with pytest.raises(ValueError, match="schedule"):
        topo.update_order("gauss")


@pytest.mark.parametrize("name", list(NETS))
def test_alternating_reaches_the_synchronous_fixed_point(name):
    net = make(name)
    x, y = data(net.sizes[0])
    sync = [s.clone() for s in net.relax(x, T=400)]
    alt = [s.clone() for s in net.relax(x, T=400, schedule="alternating")]
    early = [s.clone() for s in net.relax(x, T=3, schedule="alternating")]
    for a, b, e in zip(alt[1:], sync[1:], early[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert max(float((e - b).abs().max()) for e, b in zip(early[1:], sync[1:])) > 1e-6  # not there after 3 steps
    # the nudged phase too: from the free fixed point, to the same nudged fixed point
    eng = net.reference_engine()
    target = net.check_target(y, x.shape[0])
    drives = eng.drives(x)
    fixed = {}
    for schedule in ("synchronous", "alternating"):
        nudge = eng.nudge(sync, target, 0.3, frozen=False)
        fixed[schedule], _ = eng.run(sync, drives, 400, nudge=nudge, schedule=schedule)
    for a, b in zip(fixed["alternating"][1:], fixed["synchronous"][1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def explicit_red_black_step(net, states, x, nudge=None):
    """One alternating step written out: every odd layer from the old states, then every
    even layer from the odd layers' new states and the old even ones."""
    W = {k: v for k, v in net.named_parameters()}
    drives = net.drives(x)
    terms = net.terms()
    n = net.n_state
    new = list(states)
    for parity in (1, 0):
        view = list(new)  # the new odd layers once they are done
        for l in range(1, n + 1):
            if l % 2 != parity:
                continue
            pre = drives[l] if drives[l] is not None else torch.zeros_like(states[l])
            pre = pre.expand_as(states[l]).clone()
            for src, M, scale in terms[l]:
                pre = pre + scale * view[src] @ M
            if nudge is not None and l == n:
                pre = nudge.add_to(pre, view[n], inplace=False)
            new[l] = ref.activate(net.activation, pre)
    assert W  # the net has parameters
    return new


@pytest.mark.parametrize("name", list(NETS))
def test_one_alternating_step_is_the_red_black_step(name):
    net = make(name)
    x, y = data(net.sizes[0])
    g = torch.Generator().manual_seed(2)
    states = [x] + [torch.rand(x.shape[0], n, generator=g, dtype=x.dtype) - 0.5 for n in net.sizes[1:]]
    eng = net.reference_engine()
    order = net.topology.update_order("alternating")
    nudge = eng.nudge(states, net.check_target(y, x.shape[0]), 0.3, frozen=False)
    for nz in (None, nudge):
        got = ref.step(states, net.drives(x), net.terms(), net.activation, nudge=nz, order=order)
        want = explicit_red_black_step(net, states, x, nz)
        for a, b in zip(got[1:], want[1:]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        sync = ref.step(states, net.drives(x), net.terms(), net.activation, nudge=nz)
        assert not torch.allclose(sync[2], got[2])  # the even layers read the new odd ones


def jacobi_step(states, drives, terms, act):
    """The synchronous step as it was written before schedules existed."""
    new = [states[0]]
    for l in range(1, len(terms)):
        pre = drives[l]
        for src, M, scale in terms[l]:
            pre = torch.mm(states[src], M) * scale if pre is None else torch.addmm(pre, states[src], M, alpha=scale)
        if pre is None:
            pre = states[l].new_zeros(states[l].shape)
        elif pre.dim() == 1:
            pre = pre.expand(states[l].shape[0], -1)
        new.append(ref.activate(act, pre))
    return new


def test_the_default_schedule_is_bit_identical_to_the_synchronous_step():
    net = make("residual3", dtype=torch.float32)
    x, y = data(net.sizes[0], dtype=torch.float32)
    states = net.zero_states(x)
    drives, terms = net.drives(x), net.terms()
    for t in range(6):
        want = jacobi_step(states, drives, terms, net.activation)
        got = ref.step(states, drives, terms, net.activation)
        assert all(torch.equal(a, b) for a, b in zip(got[1:], want[1:]))
        states = got
    a, b = make("chain", dtype=torch.float32), make("chain", dtype=torch.float32, schedule="synchronous")
    x, y = data(a.sizes[0], dtype=torch.float32)
    la, _ = a.ep_step(x, y)
    lb, _ = b.ep_step(x, y)
    assert torch.equal(la, lb) and all(torch.equal(p.grad, q.grad) for p, q in zip(a.parameters(), b.parameters()))


def test_alternating_settles_in_fewer_steps():
    """``tol`` with T as a maximum: the chain settles in at most about 55 % of the steps."""
    net = make("chain", dtype=torch.float32, feedback=0.1)
    x, y = data(net.sizes[0], n=64, dtype=torch.float32)
    steps = {}
    for schedule in ("synchronous", "alternating"):
        net.relax(x, T=200, tol=1e-6, schedule=schedule)
        steps[schedule] = net.last_steps["free"]
    assert steps["alternating"] <= 0.55 * steps["synchronous"] + 1, steps


def test_schedule_everywhere_an_option_is():
    net = make("chain", schedule="alternating")
    assert net.schedule == "alternating" and net.options.schedule == "alternating"
    x, y = data(net.sizes[0])
    net.ep_step(x, y, schedule="synchronous")  # per call
    with pytest.raises(ValueError, match="schedule"):
        net.ep_step(x, y, schedule="gauss")
    with pytest.raises(ValueError, match="schedule"):
        EPNet([4, 3, 2], schedule="red-black")
    assert presets.get("mnist-2hl")["schedule"] == "synchronous"  # every paper preset stays synchronous
    assert all(presets.get(k)["schedule"] == "synchronous" for k in presets.PRESETS if "-alt" not in k)
    alt = presets.get("mnist-2hl-alt")
    assert (alt["schedule"], alt["T"], alt["K"]) == ("alternating", 5, 3)
    args = cli._parser().parse_args(["train", "mnist-2hl", "--schedule", "alternating"])
    assert args.schedule == "alternating"
    cfg = presets.get("mnist-2hl")
    cfg.update(schedule="alternating", hidden=[8])
    from tritonep.build import build_net
    assert build_net(cfg).schedule == "alternating"
    # configs written before: "schedule" was the learning rate's
    old = {**presets.get("mnist-2hl"), "schedule": "cosine"}
    del old["lr_schedule"]
    up = presets.upgrade(old)
    assert up["lr_schedule"] == "cosine" and up["schedule"] == "synchronous"
    with pytest.raises(ValueError, match="schedule"):
        train.validate({**presets.get("mnist-2hl"), "schedule": "gauss"})


def conv_net(backend, **kw):
    torch.manual_seed(0)
    layers = [Conv(1, 3, 3, pool=2), Conv(3, 4, 2, padding=1, pool=1), Dense(4 * 5 * 5, 5, bias=True)]
    return ConvEPNet(layers, input_shape=(1, 10, 10), backend=backend, T=5, K=3, feedback=0.3, nudge=0.4,
                     cuda_graph=False, **kw)


def test_conv_alternating_reaches_the_synchronous_fixed_point():
    """hard_sigmoid (the conv default): with tanh this net's 2x2 max-pooling falls into a
    cycle under either schedule (a change of 5e-2 per step after 300), so no fixed point
    to compare."""
    net = conv_net("torch").to(torch.float64)
    x = torch.rand(3, 1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sync = [s.clone() for s in net.relax(x, T=300)]
    alt = [s.clone() for s in net.relax(x, T=300, schedule="alternating")]
    for a, b in zip(alt[1:], sync[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    early = net.relax(x, T=2, schedule="alternating")
    assert max(float((e - b).abs().max()) for e, b in zip(early[1:], sync[1:])) > 1e-6


@pytest.mark.skipif(not interpreting() and not torch.cuda.is_available(), reason="no GPU and no interpreter")
@pytest.mark.parametrize("opts", [dict(), dict(nudging="symmetric", error="frozen"), dict(nudge_schedule="ramp")])
def test_conv_backends_agree_alternating(opts):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = conv_net("torch", schedule="alternating", **opts).to(dev), conv_net("triton", schedule="alternating",
                                                                               **opts).to(dev)
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 1, 10, 10, generator=g).to(dev), torch.randint(0, 5, (5,), generator=g).to(dev)
    la, oa = a.ep_step(x, y)
    lb, ob = b.ep_step(x, y)
    torch.testing.assert_close(ob, oa, rtol=1e-5, atol=1e-6)
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)
    s = conv_net("torch", **opts).to(dev)
    s.load_state_dict(a.state_dict())
    s.ep_step(x, y)
    assert any(not torch.allclose(p.grad, q.grad) for p, q in zip(s.parameters(), a.parameters()))
