"""The nn.Module API: optimizers on .grad, state_dict, determinism, bad input."""
import io

import pytest
import torch
from torch import nn

from tritonep import Dense, EPNet, EPSequential


def blobs(n=600, d=10, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, d, generator=g) * 2
    y = torch.randint(0, C, (n,), generator=g)
    return torch.rand(n, d, generator=g) * 0.5 + centers[y] * 0.3, y


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_any_torch_optimizer_trains_on_the_grads(opt):
    x, y = blobs()
    net = EPNet([10, 16, 16, 3], feedback=0.1, nudge=0.1, T=8, K=8, normalize=opt == "sgd")
    optimizer = torch.optim.Adam(net.parameters(), 1e-2) if opt == "adam" else torch.optim.SGD(net.parameters(), 0.5)
    first = None
    for epoch in range(15):
        for i in range(0, 600, 50):
            optimizer.zero_grad()
            loss, _ = net.ep_step(x[i:i + 50], y[i:i + 50])
            first = first if first is not None else loss.item()
            optimizer.step()
    acc = (net(x).argmax(1) == y).float().mean().item()
    assert loss.item() < 0.5 * first
    assert acc > 0.9


def test_sequential_stack_keeps_linear_weights_and_matches_sizes():
    lin = nn.Linear(6, 5)
    net = EPSequential(lin, Dense(5, 4), Dense(4, 3), feedback=0.2)
    assert net.sizes == [6, 5, 4, 3]
    assert torch.equal(net.layers[0].weight, lin.weight) and torch.equal(net.layers[0].bias, lin.bias)
    with pytest.raises(ValueError, match="layer 1 takes 7 features but layer 0 gives 5"):
        EPSequential(Dense(6, 5), Dense(7, 3))


def test_state_dict_round_trip_gives_the_same_net():
    net = EPNet([8, 6, 6, 6, 6, 3], feedback=0.3, feedback_weights="random", agt=0.5, agt_seed=4, bias=True)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    other = EPNet([8, 6, 6, 6, 6, 3], feedback=0.3, feedback_weights="random", agt=0.5, agt_seed=4, bias=True)
    x = torch.rand(5, 8)
    assert not torch.allclose(net(x), other(x))
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    torch.testing.assert_close(net(x), other(x), rtol=0, atol=0)
    assert any(k.startswith("fixed.") for k in net.state_dict())  # random feedback travels too


def test_seeded_runs_are_identical():
    def run():
        torch.manual_seed(3)
        net = EPNet([10, 8, 8, 3], nudging="random-sign", rule="classic", feedback=0.5)
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        x, y = blobs(100)
        for _ in range(3):
            opt.zero_grad()
            net.ep_step(x, y)
            opt.step()
        return net.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_forward_returns_logits_of_the_relaxed_net():
    net = EPNet([10, 8, 8, 3], T=5)
    x = torch.rand(4, 10)
    states = net.relax(x, T=5)
    torch.testing.assert_close(net(x), states[-1] @ net.layers[-1].weight.t())
    assert net(x.reshape(4, 2, 5)).shape == (4, 3)  # trailing dims flattened


@pytest.mark.parametrize("call, match", [
    (lambda n: n.ep_step(torch.rand(4, 9), torch.zeros(4, dtype=torch.long)), r"shape \(batch, 10\)"),
    (lambda n: n.ep_step(torch.rand(4, 10), torch.tensor([0, 1, 2, 3])), r"class indices in \[0, 2\]"),
    (lambda n: n.ep_step(torch.rand(4, 10), torch.tensor([0, 1, -1, 0])), r"class indices in \[0, 2\]"),
    (lambda n: n.ep_step(torch.rand(4, 10), torch.zeros(3, dtype=torch.long)), "3 labels for a batch of 4"),
    (lambda n: n.ep_step(torch.full((4, 10), float("nan")), torch.zeros(4, dtype=torch.long)), "NaN"),
    (lambda n: n.ep_step(torch.rand(4, 10), torch.zeros(4, dtype=torch.long), T=0), "T must be a positive int"),
    (lambda n: n.ep_step(torch.rand(4, 10), torch.zeros(4, dtype=torch.long), K=-2), "K must be a positive int"),
    (lambda n: n(torch.randint(0, 255, (4, 10), dtype=torch.uint8)), "floating-point"),
    (lambda n: n.ep_step(torch.rand(4, 10), torch.rand(4)), "labels must be class indices"),
    (lambda n: n.ep_step(torch.rand(4, 10), torch.zeros(4, dtype=torch.long), rule="hebb"), "unknown rule"),
])
def test_bad_input_gives_a_clear_error(call, match):
    net = EPNet([10, 8, 8, 3])
    with pytest.raises((ValueError, TypeError), match=match):
        call(net)


@pytest.mark.parametrize("kw, match", [
    (dict(activation="relu"), "unknown activation 'relu'"),
    (dict(feedback=[0.1, 0.2, 0.3]), "expected one per layer that receives feedback: 1"),
    (dict(feedback=-0.1), "finite and >= 0"),
    (dict(nudge=0.0), "nudge must be a positive"),
    (dict(agt=0.2), "agt topology needs feedback_weights='random'"),
    (dict(residual=1), "needs k >= 2"),
    (dict(output="logits"), "output must be one of"),
    (dict(feedback_weights="transposed"), "feedback_weights must be one of"),
    (dict(backend="cuda"), "unknown backend"),
    (dict(precision="fp8"), "unknown precision"),
    (dict(tol=-1.0), "tol must be"),
    (dict(check_every=0), "check_every must be"),
])
def test_bad_options_give_a_clear_error(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        EPNet([10, 8, 8, 3], **kw)
