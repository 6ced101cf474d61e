"""The step equations against an independent block-matrix formulation, and the
topology builders."""
import pytest
import torch

from tritonep import EPNet
from tritonep import reference as ref
from tritonep.topology import agt_pairs, residual_pairs


def block_step(net, x, z, nudge_vec=None):
    """z <- rho(z @ (W o mask) + drive) over all state layers at once.

    Built straight from the parameters: W holds alpha * W_ij^T above the diagonal
    (forward) and beta_i * (W_ij or the fixed B_ji^T) below it (feedback)."""
    sizes = net.topology.sizes[1:]
    off = [0]
    for n in sizes:
        off.append(off[-1] + n)
    N = off[-1]
    W = torch.zeros(N, N, dtype=x.dtype)
    mask = torch.zeros(N, N, dtype=x.dtype)
    for k in net.topology.links:
        if k.src == 0:
            continue
        M = net.matrix(k.weight)
        blk = M if k.transpose else M.t()  # (n_src, n_dst)
        rs, cs = slice(off[k.src - 1], off[k.src]), slice(off[k.dst - 1], off[k.dst])
        W[rs, cs] += k.scale * blk
        mask[rs, cs] = 1
    drive = torch.zeros(x.shape[0], N, dtype=x.dtype)
    drive[:, : off[1]] = x @ net.layers[0].weight.t()
    for l in range(1, len(sizes) + 1):
        b = net.layer_bias(l)
        if b is not None:
            drive[:, off[l - 1]: off[l]] += b
    if nudge_vec is not None:
        drive[:, off[-2]:] += nudge_vec
    pre = z @ (W * mask) + drive
    return ref.activate(net.activation, pre), off


NETS = [
    dict(sizes=[7, 5, 6, 4, 3], feedback=0.3),
    dict(sizes=[7, 5, 6, 4, 5, 6, 3], feedback=[0.2, 0.5, 0.1, 0.3], residual=3, bias=True),
    dict(sizes=[7, 5, 6, 4, 5, 6, 4, 3], feedback=0.25, feedback_weights="random", agt=0.5, agt_seed=3),
    dict(sizes=[7, 5, 6, 4, 3], feedback=0.7, alpha=0.8, activation="hard_sigmoid", residual=[(1, 3)]),
    dict(sizes=[7, 5, 6, 4], feedback=1.0, output="neuron", activation="pep_sigmoid", bias=True),
]


@pytest.mark.parametrize("kw", NETS)
def test_relaxation_matches_block_matrix_form(kw):
    net = EPNet(**kw).double()
    for p in net.parameters():  # nonzero biases, so a dropped bias would show
        torch.nn.init.uniform_(p, -0.8, 0.8)
    x = torch.rand(9, kw["sizes"][0], dtype=torch.float64)
    states = [s.clone() for s in net.relax(x, T=6)]
    z = torch.zeros(9, sum(net.topology.sizes[1:]), dtype=torch.float64)
    for _ in range(6):
        z, off = block_step(net, x, z)
    for l in range(1, net.n_state + 1):
        torch.testing.assert_close(states[l], z[:, off[l - 1]: off[l]], rtol=1e-12, atol=1e-12)


def test_nudged_step_matches_block_form_with_output_error():
    net = EPNet([6, 5, 4, 3], feedback=0.4, nudge=0.3).double()
    x = torch.rand(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    free = net.relax(x, T=5)
    z = torch.cat([s.clone() for s in free[1:]], 1)
    W_f, _, M_f = net.readout_matrices()
    nudge = ref.SoftmaxNudge(W_f, None, M_f, torch.nn.functional.one_hot(y, 3).double(), 0.3)
    s = ref.relax(list(free), net.drives(x), net.terms(), net.activation, 3, nudge=nudge)
    for _ in range(3):  # error recomputed from the current state at every step
        e = torch.nn.functional.one_hot(y, 3).double() - torch.softmax(z[:, -4:] @ W_f.t(), 1)
        z, off = block_step(net, x, z, nudge_vec=0.3 * e @ W_f)
    torch.testing.assert_close(torch.cat(s[1:], 1), z, rtol=1e-12, atol=1e-12)


def test_frozen_error_keeps_free_phase_error():
    net = EPNet([6, 5, 4, 3], feedback=0.4, nudge=0.5).double()
    x = torch.rand(4, 6, dtype=torch.float64)
    target = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 2]), 3).double()
    free = [s.clone() for s in net.relax(x, T=5)]
    W_f, _, M_f = net.readout_matrices()
    frozen = ref.SoftmaxNudge(W_f, None, M_f, target, 0.5, frozen=True, free_top=free[-1])
    dynamic = ref.SoftmaxNudge(W_f, None, M_f, target, 0.5)
    a = ref.relax(free, net.drives(x), net.terms(), net.activation, 4, nudge=frozen)
    b = ref.relax(free, net.drives(x), net.terms(), net.activation, 4, nudge=dynamic)
    z = torch.cat(free[1:], 1)
    e0 = target - torch.softmax(free[-1] @ W_f.t(), 1)
    for _ in range(4):
        z, off = block_step(net, x, z, nudge_vec=0.5 * e0 @ W_f)
    torch.testing.assert_close(torch.cat(a[1:], 1), z, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(a[-1], b[-1], atol=1e-6)  # the two options really differ


def test_inplace_and_autograd_paths_agree():
    net = EPNet([8, 6, 5, 4, 3], feedback=0.2, residual=[(1, 3)], bias=True)
    x = torch.rand(5, 8)
    fast = [s.clone() for s in net.relax(x, T=7)]
    zero = [x] + [x.new_zeros(5, n) for n in net.topology.sizes[1:]]
    slow = ref.relax(zero, net.drives(x), net.terms(), net.activation, 7)
    for a, b in zip(fast[1:], slow[1:]):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-6)


def test_tanh_identity_matches_torch_tanh():
    x = torch.linspace(-8, 8, 10001, dtype=torch.float64)
    torch.testing.assert_close(ref.activate("tanh", x), torch.tanh(x), rtol=0, atol=1e-15)
    y = x.clone()
    torch.testing.assert_close(ref.activate("tanh", y, out=y), torch.tanh(x), rtol=0, atol=1e-15)


def test_activations():
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 2.0])
    torch.testing.assert_close(ref.activate("hard_sigmoid", x), torch.tensor([0.0, 0.0, 0.25, 0.5, 1.0]))
    torch.testing.assert_close(ref.activate("pep_sigmoid", x), 1 / (1 + torch.exp(-4 * (x - 0.5))))


def test_residual_pairs_follow_the_paper():
    assert residual_pairs(10, 3) == [(1, 4), (4, 7), (7, 10)]
    assert residual_pairs(20, 3) == [(1, 4), (4, 7), (7, 10), (10, 13), (13, 16), (16, 19)]
    net = EPNet([784] + [64] * 10 + [10], feedback=0.1, residual=3)
    fwd = {(k.src, k.dst) for k in net.topology.links if k.kind == "forward" and k.src}
    fb = {(k.src, k.dst): k.scale for k in net.topology.links if k.kind == "feedback"}
    assert {(1, 4), (4, 7), (7, 10)} <= fwd and fb[(4, 1)] == 0.1 and fb[(10, 7)] == 0.1
    assert sorted(n for n, _ in net.named_parameters() if n.startswith("skips")) == [
        "skips.1_4.weight", "skips.4_7.weight", "skips.7_10.weight"]


def test_agt_draw_is_seeded_and_has_the_asked_density():
    a, b, c = agt_pairs(10, 0.2, seed=1), agt_pairs(10, 0.2, seed=1), agt_pairs(10, 0.2, seed=2)
    assert a == b and a != c
    assert all(abs(i - j) >= 2 for i, j in a)
    n_pairs = 10 * 9 - 2 * 9  # ordered pairs not already adjacent
    dens = sum(len(agt_pairs(10, 0.2, seed=s)) for s in range(50)) / (50 * n_pairs)
    assert 0.17 < dens < 0.23
    net = EPNet([20] + [8] * 10 + [4], feedback=0.1, feedback_weights="random", agt=0.2, agt_seed=1)
    trained = {n for n, _ in net.named_parameters()}
    for i, j in a:
        if i < j:
            assert f"skips.{i}_{j}.weight" in trained
        else:
            assert hasattr(net.fixed, f"B{i}_{j}") and f"fixed.B{i}_{j}" not in trained


def test_feedback_gain_shrinks_per_hop_and_residual_shortcuts_it():
    chain = EPNet([5] + [4] * 7 + [3], feedback=0.1).topology.feedback_gain(0.1)
    torch.testing.assert_close(torch.tensor(chain[1:]), torch.tensor([0.1 ** (8 - l) for l in range(1, 8)]))
    res = EPNet([5] + [4] * 7 + [3], feedback=0.1, residual=3).topology.feedback_gain(0.1)
    assert res[4] == pytest.approx(0.1 * 0.1)  # 7 -> 4 in one hop, not three
    assert res[1] == pytest.approx(0.1 ** 3)  # 7 -> 4 -> 1
