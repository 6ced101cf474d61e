"""Learning rules against their theory: FRE -> BP (paper Appendix C), classic EP
-> BPTT (Ernoult et al. 2019), and the bookkeeping of .grad."""
import pytest
import torch
from torch.nn.functional import cosine_similarity

from tritonep import EPNet, bp_gradients, bptt_gradients
from tritonep.baselines import feedforward


def cos(a, b):
    return cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def grads(net):
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def data(n_in=12, C=4, B=16, dtype=torch.float64):
    return torch.rand(B, n_in, dtype=dtype), torch.randint(0, C, (B,))


def converged(net, x, T, scale=0.5):
    """Shrink the weights so the relaxation is a contraction, and check that T
    steps reach the fixed point: EP's theory speaks of fixed points only."""
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    a = [s.clone() for s in net.relax(x, T=T)]
    b = net.relax(x, T=T + 1)
    assert max((u - v).abs().max().item() for u, v in zip(a[1:], b[1:])) < 1e-12
    return net


def test_fre_updates_tend_to_bp_as_nudges_vanish():
    """Appendix C: Delta W_0 / (beta_1 beta_f) -> BP's gradient, per layer."""
    x, y = data()
    beta1, beta_f = 1e-3, 1e-3
    net = EPNet([12, 10, 8, 4], feedback=beta1, nudge=beta_f, T=80, K=80).double()
    net.ep_step(x, y)
    ep, bp = grads(net), bp_gradients(net, x, y)
    scale = {"layers.0.weight": beta1 * beta_f, "layers.1.weight": beta_f, "layers.2.weight": 1.0}
    for name, s in scale.items():
        assert cos(ep[name], bp[name]) > 0.99, name
        assert (ep[name].norm() / s / bp[name].norm()).item() == pytest.approx(1.0, rel=0.02), name


def test_fre_update_shrinks_by_the_feedback_coefficient_per_hop():
    x, y = data()
    net = EPNet([12, 10, 8, 6, 4], feedback=0.05, nudge=0.01, T=60, K=60).double()
    net.ep_step(x, y)
    ep, bp = grads(net), bp_gradients(net, x, y)
    rel = [(ep[f"layers.{i}.weight"].norm() / bp[f"layers.{i}.weight"].norm()).item() for i in range(3)]
    assert rel[1] / rel[2] == pytest.approx(0.05, rel=0.15)
    assert rel[0] / rel[1] == pytest.approx(0.05, rel=0.15)


def test_normalize_undoes_the_per_hop_shrinking():
    x, y = data()
    net = EPNet([12, 10, 8, 6, 4], feedback=0.01, nudge=0.01, T=60, K=60, normalize=True).double()
    net.ep_step(x, y)
    ep, bp = grads(net), bp_gradients(net, x, y)
    for name in bp:
        assert (ep[name].norm() / bp[name].norm()).item() == pytest.approx(1.0, rel=0.05), name
        assert cos(ep[name], bp[name]) > 0.98, name


@pytest.mark.parametrize("nudging", ["positive", "symmetric"])
def test_classic_ep_matches_bptt_on_an_energy_based_net(nudging):
    """P-EP net (symmetric weights, feedback 1, output neurons, MSE): the classic
    rule's updates equal BPTT's gradients as beta -> 0 (GDU property)."""
    x, y = data()
    net = EPNet([12, 10, 8, 4], feedback=1.0, nudge=1e-4, output="neuron", activation="pep_sigmoid",
                rule="classic", nudging=nudging, bias=True, T=200, K=200).double()
    converged(net, x, 200).ep_step(x, y)
    ep, bptt = grads(net), bptt_gradients(net, x, y, T=200)
    for name in bptt:
        assert cos(ep[name], bptt[name]) > 0.99, name
        assert (ep[name].norm() / bptt[name].norm()).item() == pytest.approx(1.0, rel=0.02), name


def test_classic_ep_on_softmax_readout_matches_bptt():
    x, y = data()
    net = EPNet([12, 10, 8, 4], feedback=1.0, nudge=1e-4, rule="classic", T=150, K=150).double()
    converged(net, x, 150, scale=0.3).ep_step(x, y)
    ep, bptt = grads(net), bptt_gradients(net, x, y, T=150)
    for name in bptt:
        assert cos(ep[name], bptt[name]) > 0.99, name


def test_symmetric_nudging_is_more_accurate_than_one_sided_at_large_beta():
    x, y = data()
    errs = {}
    for nudging in ("positive", "symmetric"):
        net = EPNet([12, 10, 8, 4], feedback=1.0, nudge=0.5, output="neuron", activation="pep_sigmoid",
                    rule="classic", nudging=nudging, T=150, K=150).double()
        converged(net, x, 150).ep_step(x, y)
        ref = bptt_gradients(net, x, y, T=150)
        errs[nudging] = sum((net.get_parameter(n).grad - g).norm().item() / g.norm().item() for n, g in ref.items())
    assert errs["symmetric"] < 0.5 * errs["positive"]


def test_random_sign_nudging_flips_sign_but_keeps_the_direction():
    x, y = data()
    net = EPNet([12, 10, 8, 4], feedback=1.0, nudge=1e-2, rule="classic", nudging="random-sign", T=150, K=150).double()
    converged(net, x, 150, scale=0.3)
    bptt = bptt_gradients(net, x, y, T=150)
    net.zero_grad()
    net.ep_step(x, y, nudging="positive")
    positive = net.layers[0].weight.grad.clone()
    seen = []
    for seed in range(12):
        torch.manual_seed(seed)
        net.zero_grad()
        net.ep_step(x, y)
        for name, g in bptt.items():
            assert cos(net.get_parameter(name).grad, g) > 0.98, name
        seen.append(net.layers[0].weight.grad.clone())
    same = [torch.equal(g, positive) for g in seen]
    assert any(same) and not all(same)  # both signs drawn, and -beta really nudged the other way
    assert all(torch.allclose(g, seen[same.index(False)]) for g, s in zip(seen, same) if not s)


def test_readout_gets_the_exact_cross_entropy_gradient():
    x, y = data(dtype=torch.float32)
    net = EPNet([12, 10, 8, 4], feedback=0.3, bias=True)
    net.ep_step(x, y)
    s = net.relax(x)[-1].clone().requires_grad_(False)
    W, b = net.layers[-1].weight.detach().clone().requires_grad_(), net.layers[-1].bias.detach().clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(s @ W.t() + b, y)
    gW, gb = torch.autograd.grad(loss, (W, b))
    torch.testing.assert_close(net.layers[-1].weight.grad, gW, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.layers[-1].bias.grad, gb, rtol=1e-5, atol=1e-6)


def test_fre_rule_by_hand_on_one_layer():
    """Delta W_1 = (s2^beta - s2^0)(s1^0)^T / B, written as its negative into .grad."""
    x, y = data(dtype=torch.float32)
    net = EPNet([12, 10, 8, 4], feedback=0.3, nudge=0.2, T=7, K=4)
    net.ep_step(x, y)
    from tritonep import reference as ref
    free = [s.clone() for s in net.relax(x, T=7)]
    W_f, b_f, M_f = net.readout_matrices()
    target = torch.nn.functional.one_hot(y, 4).float()
    nudged = ref.relax(free, net.drives(x), net.terms(), "tanh", 4, nudge=ref.SoftmaxNudge(W_f, b_f, M_f, target, 0.2))
    expect = -(nudged[2] - free[2]).t() @ free[1] / x.shape[0]
    torch.testing.assert_close(net.layers[1].weight.grad, expect, rtol=1e-5, atol=1e-7)
    expect0 = -(nudged[1] - free[1]).t() @ x / x.shape[0]
    torch.testing.assert_close(net.layers[0].weight.grad, expect0, rtol=1e-5, atol=1e-8)


def test_random_feedback_matrices_get_no_update_and_skips_do():
    x, y = data(n_in=12, dtype=torch.float32)
    net = EPNet([12] + [6] * 6 + [4], feedback=0.3, nudge=0.5, feedback_weights="random", agt=0.4, agt_seed=2,
                T=20, K=20)
    before = {n: b.clone() for n, b in net.fixed.named_buffers()}
    net.ep_step(x, y)
    assert before and all(b.grad is None for b in net.fixed.buffers())
    assert all(torch.equal(before[n], b) for n, b in net.fixed.named_buffers())
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_grad_accumulates_like_backward():
    x, y = data(dtype=torch.float32)
    net = EPNet([12, 10, 8, 4])
    net.ep_step(x, y)
    once = grads(net)
    net.ep_step(x, y)
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[n])


def test_feedback_alignment_sends_errors_through_the_fixed_matrices():
    x, y = data(dtype=torch.float64)
    net = EPNet([12, 10, 8, 4], feedback_weights="random").double()
    fa, bp = bp_gradients(net, x, y, alignment=True), bp_gradients(net, x, y)
    torch.testing.assert_close(fa["layers.2.weight"], bp["layers.2.weight"])  # last layer: same
    assert cos(fa["layers.0.weight"], bp["layers.0.weight"]) < 0.95  # errors took another path
    # by hand: delta_2 = (p - y) B_out^T ... through the EP net's own random feedback matrices
    W0, W1, Wf = (net.layers[i].weight for i in range(3))
    s1 = torch.tanh(x @ W0.t()); s2 = torch.tanh(s1 @ W1.t())
    e = (torch.softmax(s2 @ Wf.t(), 1) - torch.nn.functional.one_hot(y, 4)) / x.shape[0]
    d2 = (e @ net.fixed.B_out.t()) * (1 - s2 ** 2)
    d1 = (d2 @ net.fixed.B2_1.t()) * (1 - s1 ** 2)
    torch.testing.assert_close(fa["layers.0.weight"], d1.t() @ x)
    from tritonep.topology import agt_pairs
    seed = next(s for s in range(100) if any(i < j and (j, i) not in agt_pairs(5, 0.5, s) for i, j in agt_pairs(5, 0.5, s)))
    unpaired = EPNet([12] + [6] * 5 + [4], feedback_weights="random", agt=0.5, agt_seed=seed)
    with pytest.raises(ValueError, match="feedback alignment needs"):
        feedforward(unpaired, x.float(), alignment=True)
