"""The paper authors' variants as options: ``nudge_schedule="ramp"`` (the k-th nudged
step nudged by k * beta) and ``readout_error="nudged"``. In float64 the
ramp/frozen/nudged-readout step equals an independent step-by-step implementation of
the graph model's equations (models_LN_G.py, ``EPNN_LN``), written here; both
backends and both nets agree on it; the defaults leave every result unchanged."""
import pytest
import torch

from tritonep import ConvEPNet, EPNet
from tritonep.engine.backend import interpreting

NETS = {
    "chain": dict(sizes=[23, 40, 17, 10]),
    "residual": dict(sizes=[23, 30, 17, 21, 19, 10], residual=2),
}
GRAPH = dict(nudge_schedule="ramp", error="frozen", readout_error="nudged")


def make(name, dtype=torch.float64, backend="torch", **kw):
    opts = dict(NETS[name])
    sizes = opts.pop("sizes")
    torch.manual_seed(0)
    return EPNet(sizes, feedback=0.3, nudge=0.4, T=6, K=5, backend=backend, **opts, **kw).to(dtype)


def graph_model_grads(net: EPNet, x, labels, T: int, K: int, beta: float) -> dict:
    """The graph model's updates, from its equations: all hidden states in one vector
    z updated as z <- tanh(z A + hb); the nudged phase adds ``-(p_free - y) E beta`` to
    the top layer's hb at EVERY step (so step k is nudged by k beta); hidden grads
    z_pre^0^T (z_post^0 - z_post^beta) / B, the readout's z_top^0^T (p^beta - y) / B."""
    sizes = net.topology.sizes
    off = [0] * (len(sizes) + 1)
    for l in range(1, len(sizes)):
        off[l + 1] = off[l] + sizes[l]
    blk = lambda l: slice(off[l], off[l + 1])  # noqa: E731  (hidden layer l's columns)
    dim, top, B = off[len(sizes)], len(sizes) - 1, x.shape[0]
    A = x.new_zeros(dim, dim)  # contribution of layer i to layer j: z[:, i] @ A[i, j]
    for k in net.topology.links:
        if k.src == 0:
            continue
        W = net.matrix(k.weight)
        A[blk(k.src), blk(k.dst)] += k.scale * (W if k.transpose else W.t())
    W0, (W_f, _, E) = net.matrix("layers.0"), net.readout_matrices()
    y = torch.nn.functional.one_hot(labels, W_f.shape[0]).to(x.dtype)
    hb = x.new_zeros(B, dim)
    hb[:, blk(1)] = x @ W0.t()
    z = x.new_zeros(B, dim)
    for _ in range(T):
        z = torch.tanh(z @ A + hb)
    ef = torch.softmax(z[:, blk(top)] @ W_f.t(), 1) - y  # frozen: the free error, every step
    s, hbn = z.clone(), hb.clone()
    for _ in range(K):
        hbn[:, blk(top)] += -(ef @ E) * beta
        s = torch.tanh(s @ A + hbn)
    ef_nudged = torch.softmax(s[:, blk(top)] @ W_f.t(), 1) - y
    e = z - s
    grads = {}
    for k in net.topology.trained_links():
        pre = x if k.src == 0 else z[:, blk(k.src)]
        grads[k.weight] = e[:, blk(k.dst)].t() @ pre / B
    grads["readout"] = ef_nudged.t() @ z[:, blk(top)] / B
    return grads


@pytest.mark.parametrize("name", sorted(NETS))
def test_graph_model_step_equals_its_equations_float64(name):
    net = make(name, **GRAPH)
    x = torch.rand(13, net.sizes[0], dtype=torch.float64)
    labels = torch.randint(0, 10, (13,))
    net.ep_step(x, labels)
    want = graph_model_grads(net, x, labels, net.T, net.K, net.nudge)
    for k in net.topology.trained_links():
        got = net.matrix(k.weight).grad
        assert (got - want[k.weight]).abs().max() < 1e-10 * max(1.0, want[k.weight].abs().max().item()), k.weight
    assert (net.layers[-1].weight.grad - want["readout"]).abs().max() < 1e-12
    # each variant on its own changes the step: the ramp the hidden updates, the readout error its update
    for change in (dict(nudge_schedule="constant"), dict(readout_error="free")):
        other = make(name, **{**GRAPH, **change})
        other.ep_step(x, labels)
        differs = [not torch.allclose(p.grad, q.grad) for p, q in zip(net.parameters(), other.parameters())]
        assert any(differs), change


@torch.no_grad()
def test_ramp_nudges_step_k_by_k_beta():
    """With a frozen error the ramp's K-step phase equals K constant phases of one step
    each, with strengths beta, 2 beta, ... K beta, chained."""
    net = make("chain", nudge_schedule="ramp", error="frozen")
    x, labels = torch.rand(7, 23, dtype=torch.float64), torch.randint(0, 10, (7,))
    eng = net.reference_engine()
    target = torch.nn.functional.one_hot(labels, 10).double()
    free, _ = eng.free(x, net.T)
    free = [s.clone() for s in free]
    _, error = eng.readout(free, target)
    ramped, _ = eng.nudged(free, target, error, net.nudge, net.K, True, None, "plus", ramp=True)
    ramped = [s.clone() for s in ramped]
    nudge = eng.nudge(free, target, net.nudge, True)  # the free error, frozen
    cur = free
    for k in range(1, net.K + 1):
        nudge.beta = k * net.nudge
        cur, _ = eng.run(cur, eng.drive_list, 1, nudge=nudge)
    for a, b in zip(ramped[1:], cur[1:]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


def test_defaults_leave_results_unchanged():
    """``nudge_schedule="constant"`` and ``readout_error="free"`` are what a net did before."""
    x, labels = torch.rand(9, 23, dtype=torch.float64), torch.randint(0, 10, (9,))
    a, b = make("residual"), make("residual", nudge_schedule="constant", readout_error="free")
    a.ep_step(x, labels)
    b.ep_step(x, labels, nudge_schedule="constant", readout_error="free")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_variant_errors_and_overrides():
    with pytest.raises(ValueError, match="nudge_schedule"):
        EPNet([4, 5, 3], nudge_schedule="linear")
    with pytest.raises(ValueError, match="readout_error"):
        EPNet([4, 5, 3], readout_error="end")
    with pytest.raises(ValueError, match="softmax readout"):
        EPNet([4, 5, 3], output="neuron", readout_error="nudged")
    net = EPNet([4, 5, 3])
    net.nudge_schedule = "ramp"
    assert net.options.nudge_schedule == "ramp" and net.options.strength(0.1) == pytest.approx(0.1 * net.K)


# ----------------------------------------------------------------------------- both backends
triton_only = pytest.mark.skipif(not interpreting(), reason="the Triton backend runs here under the interpreter")


@triton_only
@pytest.mark.parametrize("name,persistent,opts", [
    ("chain", False, GRAPH), ("residual", False, GRAPH), ("residual", True, GRAPH),
    ("chain", False, dict(nudge_schedule="ramp", error="dynamic", nudging="symmetric")),
    ("residual", True, dict(nudge_schedule="ramp", error="dynamic", readout_error="nudged")),
])
def test_variants_backends_agree(name, persistent, opts):
    ref = make(name, torch.float32, "torch", **opts)
    tri = make(name, torch.float32, "triton", persistent=persistent, **opts)
    tri.load_state_dict(ref.state_dict())
    x, labels = torch.rand(37, ref.sizes[0]), torch.randint(0, 10, (37,))
    for net in (ref, tri):
        net.ep_step(x, labels)
    for p, q in zip(ref.parameters(), tri.parameters()):
        assert (q.grad - p.grad).norm() <= 2e-5 * p.grad.norm()


@triton_only
@pytest.mark.parametrize("opts", [GRAPH, dict(nudge_schedule="ramp", error="dynamic")])
def test_conv_variants_backends_agree(opts):
    kw = dict(input_shape=(1, 12, 12), feedback=0.2, nudge=0.3, T=4, K=3, **opts)
    torch.manual_seed(0)
    ref = ConvEPNet.from_arch("5c3-P2-7c3-FC10", backend="torch", **kw)
    tri = ConvEPNet.from_arch("5c3-P2-7c3-FC10", backend="triton", **kw)
    tri.load_state_dict(ref.state_dict())
    x, labels = torch.rand(6, 1, 12, 12), torch.randint(0, 10, (6,))
    for net in (ref, tri):
        net.ep_step(x, labels)
    for p, q in zip(ref.parameters(), tri.parameters()):
        assert (q.grad - p.grad).norm() <= 1e-4 * p.grad.norm().clamp_min(1e-12)


def test_agt_takes_an_explicit_graph():
    """``agt=[(i, j), ...]`` rebuilds a given graph: the same links as the draw that
    made it, and clear errors for impossible ones."""
    from tritonep.topology import agt_pairs

    drawn = EPNet([9, 8, 7, 6, 5, 4, 3], feedback_weights="random", agt=0.5, agt_seed=3)
    pairs = agt_pairs(5, 0.5, 3)
    assert pairs  # the draw made some links
    given = EPNet([9, 8, 7, 6, 5, 4, 3], feedback_weights="random", agt=[list(p) for p in pairs])
    assert given.topology.links == drawn.topology.links
    assert set(given.state_dict()) == set(drawn.state_dict())
    one = EPNet([9, 8, 7, 6, 5, 4, 3], feedback_weights="random", agt=[(1, 4), (5, 2)])
    extra = {(k.src, k.dst, k.kind) for k in one.topology.links} - {
        (k.src, k.dst, k.kind) for k in EPNet([9, 8, 7, 6, 5, 4, 3], feedback_weights="random").topology.links}
    assert extra == {(1, 4, "forward"), (5, 2, "feedback")}
    for bad, match in (([(1, 2)], "two apart"), ([(1, 9)], "1..5"), ([(1, 4), (1, 4)], "twice"), ([(1,)], "pair"),
                       ("1,4", "probability or a list")):
        with pytest.raises((ValueError, TypeError), match=match):
            EPNet([9, 8, 7, 6, 5, 4, 3], feedback_weights="random", agt=bad)


def test_cli_options_reach_the_config(capsys):
    """``--nudge-schedule``, ``--readout-error`` and ``--residual-threshold`` override the
    preset's settings, and a bad threshold is one line with exit 2."""
    import argparse

    from tritonep import cli
    from tritonep.cli import train as train_cli

    ap = train_cli.add_arguments(argparse.ArgumentParser())
    args = ap.parse_args(["mnist-10hl", "--nudge-schedule", "constant", "--readout-error", "free",
                          "--residual-threshold", "0.05"])
    cfg = train_cli._config(args)
    assert (cfg["nudge_schedule"], cfg["readout_error"], cfg["residual_threshold"]) == ("constant", "free", 0.05)
    assert train_cli._config(ap.parse_args(["mnist-10hl"]))["nudge_schedule"] == "ramp"  # the preset's
    assert cli.main(["train", "mnist-2hl", "--residual-threshold", "-1", "--epochs", "1", "--limit-train", "50",
                     "--limit-test", "20", "--no-download", "--quiet"]) == 2
    assert "residual_threshold must be a positive number" in capsys.readouterr().err
