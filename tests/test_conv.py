"""Convolutional FRE-RNN: the dynamics against an independent autograd formulation,
the rules against their theory (FRE -> BP, classic EP -> BPTT), learning on real
MNIST, the presets and CLI, clear errors, and the fused Triton epilogue against
the reference (under the interpreter on CPU)."""
import json

import pytest
import torch
import torch.nn.functional as F

from tritonep import Dense, presets, train
from tritonep import reference as ref
from tritonep.conv import Conv, ConvEPNet, augment, bp_gradients, bptt_gradients, feedforward, parse_arch

DTYPE = torch.float64


def cos(a, b):
    """Cosine without torch's eps clamp (EP updates of the first layer are ~1e-10)."""
    a, b = a.flatten().double(), b.flatten().double()
    return (a @ b / (a.norm() * b.norm())).item()


def tiny(output="softmax", residual=None, **kw):
    """Odd shapes everywhere: 2x11x11 input, 3c3 -> 9x9 -P2-> 4x4, 5c2p1 -> 5x5 -P2-> 2x2,
    4c1 -> 2x2, FC 4 classes (residual: 1 -> 3 through a 2x2 stride-2 conv)."""
    layers = [Conv(2, 3, 3, pool=2), Conv(3, 5, 2, padding=1, pool=2), Conv(5, 4, 1, pool=1),
              Dense(16, 4, bias=True)]
    net = ConvEPNet(layers, input_shape=(2, 11, 11), output=output, residual=residual, **kw).to(DTYPE)
    return net


def tiny_unpooled(residual=None, **kw):
    """P-EP layout without pooling: 2x11x11 -> 3c3 9x9 -> 5c3p1 9x9 -> 4c1 9x9 -> 4 output neurons
    (synchronous steps through max-pooling with feedback 1 settle into period-2 cycles:
    the argmax of a window moves when its winner gets negative feedback)."""
    layers = [Conv(2, 3, 3, pool=1), Conv(3, 5, 3, padding=1, pool=1), Conv(5, 4, 1, pool=1), Dense(324, 4, bias=True)]
    return ConvEPNet(layers, input_shape=(2, 11, 11), output="neuron", residual=residual, **kw).to(DTYPE)


def inputs(net, B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, *net.input_shape, generator=g, dtype=DTYPE)
    y = torch.randint(0, net.num_classes, (B,), generator=g)
    return x, y


# ----------------------------------------------------------------------------- dynamics
def autograd_step(net, states, x, target=None, beta=0.0):
    """One step written as derivatives of scalar link energies, with autograd:
    pre_l = b_l + sum_{links c into l} scale_c d/ds_l <s_dst, op_c(maxpool(s_src))>
    (forward links: the conv of the pooled source; feedback links: the same pairing
    differentiated wrt the source, which autograd routes back through max_pool2d and
    the conv: no conv_transpose, no max_unpool), + beta d/ds_L [-CE(logits(s_L), y)].
    Uses only F.conv2d / F.max_pool2d / F.linear."""
    s = [t.detach().clone().requires_grad_(True) for t in states]
    s[0] = x

    def send(l):  # what layer l sends on
        p = net.pool_size(l)
        return F.max_pool2d(s[l], p) if p > 1 else s[l]

    def op(key, o):
        W = net.matrix(key)
        if key.startswith("skips."):
            r = W.shape[-1]
            return F.conv2d(o, W, stride=r)
        mod = net.layers[int(key.split(".")[1])]
        return F.linear(o.flatten(1), W) if isinstance(mod, Dense) else F.conv2d(o, W, padding=mod.padding)

    new = [x]
    for l in range(1, net.n_state + 1):
        pre = torch.zeros_like(s[l])
        b = net.layer_bias(l)
        if b is not None:
            pre = pre + (b.view(-1, 1, 1) if pre.dim() == 4 else b)
        for k in net.topology.links:
            if k.dst == l and k.kind == "forward":
                pre = pre + k.scale * op(k.weight, send(k.src) if k.src else x)
            if k.dst == l and k.kind == "feedback":  # weight joins l -> k.src forward
                energy = (s[k.src] * op(k.weight, send(l))).sum()
                pre = pre + k.scale * torch.autograd.grad(energy, s[l])[0]
        if target is not None and l == net.n_state:
            if net.output == "softmax":
                W_f, b_f, _ = net.readout_matrices()
                cost = F.cross_entropy(F.linear(send(l).flatten(1), W_f, b_f), target, reduction="sum")
                pre = pre - beta * torch.autograd.grad(cost, s[l])[0]
            else:
                pre = pre + beta * (F.one_hot(target, net.num_classes).to(DTYPE) - s[l])
        new.append(ref.activate(net.activation, pre))
    return [t.detach() for t in new]


@pytest.mark.parametrize("output,residual", [("softmax", None), ("softmax", [(1, 3)]), ("neuron", None)])
def test_step_matches_autograd_formulation(output, residual):
    net = tiny(output, residual, feedback=[0.3, 0.7] if output == "softmax" else [0.3, 0.7, 0.5],
               activation="tanh", alpha=0.8)
    x, y = inputs(net)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)  # larger weights: states away from 0, pools with clear winners
    # random states (not zeros) so every feedback and unpooling matters
    g = torch.Generator().manual_seed(1)
    states = [x] + [torch.rand(5, *m, generator=g, dtype=DTYPE) * 2 - 1 for m in net.maps[1:]]
    target = F.one_hot(y, 4).to(DTYPE)
    with torch.no_grad():
        free = net.step(states, net.drives(net._check_input(x)))
        nudged = net.step(states, net.drives(x), nudge=net.make_nudge(states, target, 0.37, False))
    want_free, want_nudged = autograd_step(net, states, x), autograd_step(net, states, x, y, 0.37)
    for l in range(1, net.n_state + 1):
        torch.testing.assert_close(free[l], want_free[l], rtol=1e-10, atol=1e-12, msg=f"free, layer {l}")
        torch.testing.assert_close(nudged[l], want_nudged[l], rtol=1e-10, atol=1e-12, msg=f"nudged, layer {l}")
    assert (nudged[-1] - free[-1]).abs().max() > 1e-3  # the nudge did something


def test_skip_terms_first_step_is_the_feedforward_drive():
    net = tiny()
    x, _ = inputs(net)
    with torch.no_grad():
        zero = net.zero_states(x)
        a = net.step(zero, net.drives(x), skip_terms=True)
        b = net.step(zero, net.drives(x))  # all states zero: feedback and forward terms vanish
    for l in range(1, net.n_state + 1):
        torch.testing.assert_close(a[l], b[l])


def test_weak_feedback_free_phase_approaches_the_feedforward_net():
    net = tiny(feedback=1e-6, T=12)
    x, _ = inputs(net)
    torch.testing.assert_close(net(x), feedforward(net, x).detach(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- rules
def test_fre_updates_tend_to_bp_as_nudges_vanish():
    """Appendix C on a conv net: Delta W_l / (beta_f prod beta) -> BP's gradient, per
    layer (weights and biases), float64."""
    net = tiny(feedback=[1e-3, 1e-3], nudge=1e-3, T=40, K=40)
    x, y = inputs(net, B=6)
    net.ep_step(x, y)
    bp = bp_gradients(net, x, y)
    # the nudge beta_f reaches layer 3 directly, layer 2 through beta_2, layer 1 through beta_2 beta_1
    hops = {0: 1e-9, 1: 1e-6, 2: 1e-3, 3: 1.0}  # by weight layer; 3 is the readout (exact gradient)
    for name, g in bp.items():
        ep = net.get_parameter(name).grad
        s = hops[int(name.split(".")[1])]
        assert g.norm() > 0, name
        assert cos(ep, g) > 0.99, (name, cos(ep, g))
        assert (ep.norm() / s / g.norm()).item() == pytest.approx(1.0, rel=0.02), name


def test_normalize_undoes_the_per_hop_shrinking():
    net = tiny(feedback=[1e-2, 1e-3], nudge=1e-3, T=40, K=40, normalize=True)
    x, y = inputs(net, B=6)
    net.ep_step(x, y)
    for name, g in bp_gradients(net, x, y).items():
        ep = net.get_parameter(name).grad
        assert cos(ep, g) > 0.98, (name, cos(ep, g))
        assert (ep.norm() / g.norm()).item() == pytest.approx(1.0, rel=0.05), name


@pytest.mark.parametrize("nudging,residual", [("positive", None), ("symmetric", None), ("symmetric", [(1, 3)])])
def test_classic_ep_matches_bptt_on_the_energy_based_pep_net(nudging, residual):
    """P-EP conv net (feedback 1, output neurons, MSE, classic rule): EP's updates equal
    BPTT's gradients as beta -> 0 once the dynamics have converged (GDU property),
    residual links between stages included (their feedback is the skip conv's adjoint)."""
    net = tiny_unpooled(residual, feedback=1.0, nudge=1e-5, rule="classic", nudging=nudging, T=60, K=60,
                        activation="pep_sigmoid")  # smooth: the hard sigmoid leaves most units at 0 here
    x, y = inputs(net, B=4)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)  # a contraction: T steps reach the fixed point
    a = [s.clone() for s in net.relax(x, T=60)]
    b = net.relax(x, T=61)
    assert max((u - v).abs().max().item() for u, v in zip(a[1:], b[1:])) < 1e-12
    net.ep_step(x, y)
    bptt = bptt_gradients(net, x, y, T=60)
    for name, g in bptt.items():
        ep = net.get_parameter(name).grad
        assert cos(ep, g) > 0.99, (name, cos(ep, g))
        assert (ep.norm() / g.norm()).item() == pytest.approx(1.0, rel=0.03), name


def test_fre_rule_by_hand_and_readout_gradient():
    """dW_2 = corr(O_1^0, s_2^beta - s_2^0) / B written as its negative; the readout
    gets the exact cross-entropy gradient at the free state."""
    net = tiny(feedback=0.3, nudge=0.2, T=7, K=4)
    x, y = inputs(net)
    net.ep_step(x, y)
    free = [s.clone() for s in net.relax(x, T=7)]
    target = F.one_hot(y, 4).to(DTYPE)
    nudged, _ = net._relax(free, net.drives(x), 4, nudge=net.make_nudge(free, target, 0.2, False))
    o1 = F.max_pool2d(free[1], 2)
    W = net.layers[1].weight.detach().clone().requires_grad_()
    pairing = ((nudged[2] - free[2]) * F.conv2d(o1, W, padding=1)).sum()  # d/dW <d, conv(O_1)>
    torch.testing.assert_close(net.layers[1].weight.grad, -torch.autograd.grad(pairing, W)[0] / 5)
    torch.testing.assert_close(net.layers[1].bias.grad, -(nudged[2] - free[2]).sum((0, 2, 3)) / 5)
    top = free[3].flatten(1).detach()
    Wf = net.layers[3].weight.detach().clone().requires_grad_()
    bf = net.layers[3].bias.detach().clone().requires_grad_()
    gW, gb = torch.autograd.grad(F.cross_entropy(F.linear(top, Wf, bf), y), (Wf, bf))
    torch.testing.assert_close(net.layers[3].weight.grad, gW)
    torch.testing.assert_close(net.layers[3].bias.grad, gb)


def test_grads_accumulate_like_backward_and_random_sign_flips():
    net = tiny(nudging="random-sign", nudge=0.05, T=10, K=10)
    x, y = inputs(net)
    grads = []
    for seed in range(8):
        torch.manual_seed(seed)
        net.zero_grad()
        net.ep_step(x, y)
        grads.append(net.layers[0].weight.grad.clone())
    torch.manual_seed(7)
    net.ep_step(x, y)  # no zero_grad: adds the same again
    torch.testing.assert_close(net.layers[0].weight.grad, 2 * grads[-1])
    assert min(cos(g, grads[0]) for g in grads) > 0.9  # -beta's update is divided by -beta: same direction
    assert len({tuple(g.flatten()[:3].tolist()) for g in grads}) == 2  # both signs were drawn
