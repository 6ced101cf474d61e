"""Relaxation you can watch: ``net.last_residual`` on both nets and both backends,
checked against the states themselves; and an empty batch is refused before any work."""
import copy

import pytest
import torch

from tritonep import Conv, ConvEPNet, Dense, EPNet
from tritonep.engine.backend import available, interpreting

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not available() or (DEVICE == "cpu" and not interpreting()),
                                  reason="the Triton kernels need CUDA or TRITON_INTERPRET=1")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]


def dense(backend, **kw):
    torch.manual_seed(0)
    opts = {**dict(feedback=0.8, T=3, K=2), **kw}  # strong feedback, few steps: far from settled
    return EPNet([12, 10, 9, 4], backend=backend, **opts).to(DEVICE)


def conv(backend, **kw):
    torch.manual_seed(0)
    opts = {**dict(feedback=0.8, T=3, K=2, nudge=0.5), **kw}
    return ConvEPNet([Conv(2, 3, 3, pool=2), Conv(3, 4, 2, padding=1, pool=1), Dense(36, 4)], input_shape=(2, 7, 7),
                     backend=backend, **opts).to(DEVICE)


def inputs(net):
    g = torch.Generator().manual_seed(1)
    n_in = net.sizes[0] if isinstance(net, EPNet) else 2 * 7 * 7
    return torch.rand(6, n_in, generator=g).to(DEVICE), torch.randint(0, 4, (6,), generator=g).to(DEVICE)


def by_hand(net, x, T):
    """max_b ||z_b[T] - z_b[T-1]|| / ||z_b[T]|| from two reference relaxations."""
    ref = copy.deepcopy(net)
    ref.backend = "torch"
    last = [s.clone().flatten(1) for s in ref.relax(x, T)[1:]]
    before = [s.clone().flatten(1) for s in ref.relax(x, T - 1)[1:]] if T > 1 else [torch.zeros_like(s) for s in last]
    change = sum((a - b).square().sum(1) for a, b in zip(last, before)).sqrt()
    norm = sum(a.square().sum(1) for a in last).sqrt()
    return (change / norm).max().item()


@pytest.mark.parametrize("make", [dense, conv], ids=["dense", "conv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_last_residual_is_the_relative_change_of_the_last_free_step(make, backend):
    net = make(backend)
    x, y = inputs(net)
    assert net.last_residual is None  # before any call
    want = by_hand(net, x, 3)
    assert want > 1e-2  # this net is far from its fixed point after 3 steps
    net.ep_step(x, y)
    assert net.last_residual == pytest.approx(want, rel=1e-4)
    r = net.last_residual_tensor
    assert r.dim() == 0 and r.device.type == torch.device(DEVICE).type  # on the device: no sync to keep it
    net.relax(x, T=1)  # the first step starts from zero: the whole state is change
    assert net.last_residual == pytest.approx(1.0, rel=1e-6)
    net(x, T=25)  # forward relaxes too; longer, it settles
    assert net.last_residual == pytest.approx(by_hand(net, x, 25), rel=1e-3, abs=1e-6)
    assert net.last_residual < 0.1 * want


@pytest.mark.parametrize("backend", BACKENDS)
def test_residual_of_a_phase_stopped_early_and_of_the_persistent_kernel(backend):
    net = dense(backend, feedback=0.1, T=40)
    x, y = inputs(net)
    net.ep_step(x, y, tol=1e-3)
    t = net.last_steps["free"]
    assert t < 40 and net.last_residual == pytest.approx(by_hand(net, x, t), rel=1e-3, abs=1e-7)
    if backend == "triton":
        p = dense(backend, persistent=True)
        p.ep_step(x, y)
        assert p.last_residual == pytest.approx(by_hand(p, x, 3), rel=1e-4)


@pytest.mark.parametrize("make", [dense, conv], ids=["dense", "conv"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_empty_batch_is_a_clear_error_before_any_work(make, backend):
    net = make(backend)
    x, y = inputs(net)
    for call in (lambda: net.ep_step(x[:0], y[:0]), lambda: net.relax(x[:0]), lambda: net(x[:0])):
        with pytest.raises(ValueError, match=r"empty batch: the input of shape \(0, \d+\) holds no samples"):
            call()
    assert all(p.grad is None for p in net.parameters())  # nothing ran
    assert net.last_steps is None and net.last_residual is None and not net.backend_state.buffers
