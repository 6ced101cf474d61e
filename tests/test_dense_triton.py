"""The dense Triton engine and its kernels against the reference engine, on odd shapes (no size is a multiple of a
block). On CPU they run in Triton's interpreter (the conftest sets
TRITON_INTERPRET=1); with a GPU the same tests run on CUDA. Outputs are
NaN-poisoned before each launch, so an element a kernel fails to write fails.
Test data are drawn on the CPU, so a GPU run checks the very nets and batches the
CPU run does; torch's own matmuls run in fp32 (TF32 off) on CUDA, so the reference is fp32."""
import contextlib

import pytest
import torch

from tritonep import EPNet, rules
from tritonep import reference as ref
from tritonep.engine.backend import interpreting, kernel_module
from tritonep.engine.dense_triton import Blocks, Plan, default_blocks, plan_key
from tritonep.options import kernel_precision

from tf32 import (MODES, dot_rounding, interpreter_tf32, no_torch_tf32, round_module_, round_tf32, tf32_products,
                  tf32_reference)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(),
                                reason="no GPU and TRITON_INTERPRET is not set")
B = 37


@pytest.fixture(autouse=True, scope="module")
def _fp32_torch():
    """cuBLAS (and cuDNN) in fp32 for the whole module, restored after: on CUDA the
    reference's matmuls are what the kernels are checked against, and TF32 there would
    put a 1e-3 error into the reference (no effect on CPU)."""
    with no_torch_tf32():
        yield


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
    net = EPNet(sizes, backend=backend, **opts)
    with torch.no_grad():  # biases start at zero: make them count (drawn on the CPU, like the weights)
        for p in net.parameters():
            if p.dim() == 1:
                p.uniform_(-0.3, 0.3)
    return net.to(DEVICE)


def pair(name, **kw):
    """The same net on both backends."""
    a, b = make(name, "torch", **kw), make(name, "triton", **kw)
    b.load_state_dict(a.state_dict())
    return a, b


def batch(net, n=B, seed=0):
    """Inputs (n, n_in) in [0, 1) and labels (n,), drawn on the CPU from a seeded
    generator and moved to DEVICE: a GPU run tests on the batch the CPU run does
    (CUDA's generator draws other numbers, on which a test's margins were never checked)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, net.sizes[0], generator=g)
    y = torch.randint(0, net.num_classes, (n,), generator=g)
    return x.to(DEVICE), y.to(DEVICE)


def nudge_case(net, plan, relax_k, target, other, nudge: str, beta: float = -0.7):
    """(reference nudge, the relax kernel's nudge keywords) for a ``"dynamic"`` or
    ``"frozen"`` nudge of strength ``beta``, its frozen error taken at the states
    ``other``; (None, {}) for any other ``nudge``."""
    if nudge not in ("dynamic", "frozen"):
        return None, {}
    frozen, kw = nudge == "frozen", {}
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
    return nudge_ref, kw


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
    nudge_ref, kw = nudge_case(net, plan, relax_k, target, other, nudge)
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
    """Adam on the .grad each backend writes: same trajectory, and the loss falls.

    T=8 (not 4): with 4 free steps the 3-layer net is far from settled and 8 Adam
    steps only rescale the logits (the loss falls on the first steps and then wanders:
    last/first 0.91 median, up to 0.96, over 10 batches). With T=8 it trains: after 8
    steps the loss is 0.65 of the first on this batch and at most 0.77 on 10 batches
    (measured on CPU), hence the bar of 0.85, asserted on both backends.

    Parameters: Adam steps an element by about ``lr`` whatever its gradient's size, so
    an element whose gradient is near zero, where the two backends' fp32 sums differ in
    sign, moves differently (on CPU, 4 batches: up to 3.3e-4 = 3 % of a step, the
    updates' relative difference up to 1.6e-4). The bars: a tenth of one step per
    element, 1e-3 on each parameter's whole update."""
    lr = 1e-2
    nets = pair("chain", feedback=0.1, nudge=0.2)
    x, y = batch(nets[0], 64)
    start = [p.detach().clone() for p in nets[0].parameters()]
    runs = []
    for net in nets:
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        losses = []
        for _ in range(8):
            opt.zero_grad()
            loss, _ = net.ep_step(x, y, T=8, K=3)
            opt.step()
            losses.append(loss.item())
        runs.append(losses)
    for losses in runs:  # the reference too: a batch it cannot learn from is a test defect, not a kernel one
        assert losses[-1] < 0.85 * losses[0], runs
    assert runs[1] == pytest.approx(runs[0], rel=1e-4)
    for p, q, p0 in zip(*(n.parameters() for n in nets), start):
        assert rel(q - p0, p - p0) < 1e-3
        torch.testing.assert_close(q, p, rtol=0, atol=0.1 * lr)


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
@pytest.mark.parametrize("precision,tol", [("bf16", 5e-2)])
def test_reduced_precision_within_stated_tolerance(precision, tol):
    """bf16 against the fp32 reference. The kernels round both operands to bf16
    themselves (``kernels.common.dot``), so the interpreter computes what a GPU does.
    tf32: ``test_tf32_matches_a_tf32_rounded_reference``."""
    a, b = pair("chain", precision=precision)
    x, y = batch(a)
    a.ep_step(x, y)
    b.ep_step(x, y)
    errs = [rel(q.grad, p.grad) for p, q in zip(a.parameters(), b.parameters())]
    assert max(errs) < tol, errs


def test_tf32_helpers_round():
    """What the tf32 test rests on, each part able to fail: ``round_tf32`` keeps 10
    mantissa bits (1 + 2**-12 rounds to 1, 1 + 2**-10 survives) in each rounding mode;
    ``tf32_products`` really rounds torch's products; ``no_torch_tf32`` turns torch's
    TF32 off and back; and the ``tl.dot`` probe tells the interpreter's fp32 dot (and
    ``interpreter_tf32``'s rounding) apart, and on a GPU finds one rounding for both
    operands."""
    u = 2.0 ** -10  # a TF32 ulp at 1
    # 1 + u/2 and 3 + u (the ulp at 3 is 2u) are ties: away from zero (rna), to the even 1 and 3 (rne)
    x = torch.tensor([1 + u / 4, 1 + u, 1 + u / 2, 1 + 3 * u / 4, -(1 + 3 * u / 4), 3 + u, float("inf"), float("nan")])
    want = {"rna": [1, 1 + u, 1 + u, 1 + u, -(1 + u), 3 + 2 * u, float("inf"), float("nan")],
            "rne": [1, 1 + u, 1, 1 + u, -(1 + u), 3, float("inf"), float("nan")],
            "rz": [1, 1 + u, 1, 1, -1, 3, float("inf"), float("nan")]}
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4096, generator=g) * 100
    for mode in MODES:
        torch.testing.assert_close(round_tf32(x, mode), torch.tensor(want[mode]), rtol=0, atol=0, equal_nan=True)
        got = round_tf32(r, mode)
        assert ((got.view(torch.int32) & 0x1FFF) == 0).all()  # TF32 values: the low 13 bits clear
        err = ((got - r) / r).abs().max().item()
        assert 2.0 ** -13 < err <= (2.0 ** -11 if mode != "rz" else 2.0 ** -10), (mode, err)  # it rounds, by < 1 ulp

    a, b = torch.randn(7, 129, generator=g), torch.randn(129, 5, generator=g)
    want_ab = round_tf32(a) @ round_tf32(b)
    assert rel(a @ b, want_ab) > 1e-4
    with tf32_products():
        for got in (a @ b, torch.mm(a, b), torch.matmul(a, b), torch.addmm(torch.zeros(7, 5), a, b),
                    torch.zeros(7, 5).addmm_(a, b), torch.nn.functional.linear(a, b.t())):
            assert rel(got, want_ab) < 1e-6
        with pytest.raises(NotImplementedError):
            torch.einsum("ij,jk->ik", a, b)
    assert rel(a @ b, want_ab) > 1e-4  # outside, torch's own again

    # the module's fixture turned torch's TF32 off; no_torch_tf32 restores what it found
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with no_torch_tf32():
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    if DEVICE == "cpu":  # the interpreter multiplies fp32 whatever input_precision says; the patch makes it round
        assert dot_rounding(DEVICE) == ("ieee", "ieee")
        for mode in MODES:
            with interpreter_tf32(mode):
                assert dot_rounding(DEVICE) == (mode, mode)
    else:
        assert dot_rounding(DEVICE) in {(m, m) for m in MODES}


# The bars of test_tf32_matches_a_tf32_rounded_reference: the largest over the chain's three
# parameters of the gradient's relative error (rel), measured on CPU over 20 seeds (nets and
# batches) with TF32-exact weights and inputs:
#   reference rounded vs fp32 reference:  rna, rne 2.7e-4 - 4.4e-4 (seed 0: 3.7e-4); rz 1.5e-3 - 1.9e-3 (1.8e-3)
#   kernel (interpreter_tf32) vs the reference rounded the same way: 9e-7 - 5.1e-5 (seed 0: 4e-6 rna, 1.1e-5 rz),
#     summation order flipping the odd rounding of a state or state difference
#   kernel (plain interpreter, fp32) vs fp32 reference: 3.4e-7 - 4.7e-7
TF32_SHIFT = {"rna": (1e-4, 1e-3), "rne": (1e-4, 1e-3), "rz": (7e-4, 4e-3)}  # rounded reference vs fp32
TF32_LIKE_WITH_LIKE = 1e-4  # kernel vs the reference rounded as the kernel rounds
TF32_VS_FP32 = 5e-3  # TF32's stated error against fp32 (the H200, unrounded weights: 3.0e-3)


@pytest.mark.parametrize("mode", MODES)
def test_tf32_matches_a_tf32_rounded_reference(mode):
    """``precision="tf32"`` against a reference whose products take TF32 operands.

    A TF32 kernel's error against the fp32 reference (1e-3 here) says little: any
    error of the kernel's own below TF32's passes. So both nets get TF32-exact weights and
    inputs, and the reference runs under ``tf32_reference(mode)``: each product's
    operands rounded to TF32 (``mode``) where the kernels round them (the link scale
    folded into the matrix first, as the pack does; the readout gradient and input
    drive, torch's on both paths, in fp32). The kernel must then agree with that
    reference to summation order (``TF32_LIKE_WITH_LIKE``), far tighter than either is
    from fp32.

    On CUDA the kernel rounds in hardware, in the way the ``tl.dot`` probe
    (``dot_rounding``) finds; the case of that mode runs, the others skip. The H200's
    errors against fp32 (3.0e-3, 2.5e-3, 1.4e-3 on unrounded weights) are what
    truncation (``rz``) gives on CPU (2.4-2.9e-3, 2.0-2.5e-3, 0.9-1.7e-3 over 8
    seeds), not round-to-nearest (3-6e-4): as far as we can tell Triton hands the fp32
    bits to the tensor cores, which ignore the low 13, where cuBLAS rounds first
    (``cvt.rna``). On a GPU the bars are unmeasured: the probe and the CPU's figures say
    the rz case runs there at about 1e-5 against its bar of 1e-4.

    Under the interpreter ``tl.dot`` multiplies in fp32 whatever ``input_precision``
    says, so on CPU: (a) the rounded reference must differ from the fp32 one by what
    TF32 in ``mode`` gives (``TF32_SHIFT``: the rounding really rounds), (b) the plain
    interpreted kernel must match the fp32 reference as the ieee kernels do (1e-5),
    and (c) the kernel under ``interpreter_tf32(mode)``, which rounds ``tl.dot``'s
    operands as a GPU does, must match the rounded reference: the GPU's comparison,
    with the interpreter's summation order.
    """
    if DEVICE == "cuda":
        found = dot_rounding(DEVICE)  # test_tf32_helpers_round fails if it is not one of MODES
        if found != (mode, mode):
            pytest.skip(f"this GPU's tf32 tl.dot rounds its operands (a, b) {found}, not {mode}")
    a, b = pair("chain", precision="tf32")
    round_module_(a)
    b.load_state_dict(a.state_dict())
    x, y = batch(a)
    x = round_tf32(x)

    def grads(net, context=None):
        net.zero_grad()
        with context or contextlib.nullcontext():
            net.ep_step(x, y)
        return [p.grad.clone() for p in net.parameters()]

    def errs(got, want):
        return [rel(g, w) for g, w in zip(got, want)]

    fp32 = grads(a)
    rounded = grads(a, tf32_reference(mode))
    shift = errs(rounded, fp32)
    lo, hi = TF32_SHIFT[mode]
    assert lo < max(shift) < hi, shift
    if DEVICE == "cpu":
        assert max(errs(grads(b), fp32)) < 1e-5
        kernel = grads(b, interpreter_tf32(mode))
    else:
        kernel = grads(b)
    assert max(errs(kernel, rounded)) < TF32_LIKE_WITH_LIKE, (errs(kernel, rounded), shift)
    assert max(errs(kernel, fp32)) < TF32_VS_FP32, errs(kernel, fp32)


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
        if DEVICE == "cpu":  # the interpreter sums both launches' tiles in one order: equal to the last bits
            tol = dict(rtol=1e-6, atol=1e-9)
        else:
            # on a GPU the two kernels' tiles sum in different orders: the H200 gave 2.2e-9 absolute
            # (2e-4 relative at tiny elements) where max|grad| is 1e-2. fp32 summation noise, so a bar
            # scaled to the gradient: on CPU the kernels differ from torch (another order) by up to
            # 1.4e-5 of max|grad| (residual, layer 0, 3 seeds), the H200's two kernels by about 2e-7
            tol = dict(rtol=1e-5, atol=2e-5 * r.grad.abs().max().item())
        torch.testing.assert_close(p.grad, q.grad, **tol)
        assert rel(p.grad, r.grad) < 5e-5
    # logits: exact in the interpreter; on a GPU the bar of the kernels against torch
    # (test_forward_and_relax_agree), for the same reason
    tol = dict(rtol=1e-6, atol=1e-7) if DEVICE == "cpu" else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pers(x, T=5), step_net(x, T=5), **tol)


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


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need CUDA (tests/test_cuda_graph.py stands in for them on CPU)")
@pytest.mark.parametrize("name", ["chain", "residual"])
def test_cuda_graph_replays_the_eager_step(name):
    """Replays with new inputs and new weights give the eager step's grads; without
    zero_grad they add; a new nudge is captured anew, not replayed."""
    a, b = make(name, cuda_graph=False), make(name, cuda_graph=True)
    b.load_state_dict(a.state_dict())
    x, y = batch(a)
    for i in range(3):
        for net in (a, b):
            net.zero_grad()
            net.ep_step(x, y)
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7)
        with torch.no_grad():
            for p, q in zip(a.parameters(), b.parameters()):
                p.add_(0.01 * p.grad)
                q.copy_(p)
        x = torch.rand_like(x)
    a.nudge = b.nudge = 0.2
    for net in (a, b):
        net.zero_grad()
        net.ep_step(x, y)
        net.ep_step(x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7)
    assert b.backend_state.graphs.captures == 2 and not b.backend_state.graphs.off
