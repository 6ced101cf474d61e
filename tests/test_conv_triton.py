"""The conv Triton engine against the conv reference: the fused epilogue kernel on
ragged maps, whole ep_steps through both backends, CUDA-graph replay, errors and the
first-use fallback (under the interpreter on CPU; the same tests run on CUDA)."""
import pytest
import torch
import torch.nn.functional as F

from tritonep import Conv, ConvEPNet, Dense
from tritonep import reference as ref
from tritonep.engine.backend import interpreting

from tf32 import no_torch_tf32

pytestmark = pytest.mark.usefixtures("one_thread")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(),
                                  reason="no GPU and TRITON_INTERPRET is not set")


@pytest.fixture(autouse=True, scope="module")
def _fp32_torch():
    """cuDNN's convolutions and cuBLAS's matmuls in fp32 for the whole module, restored
    after. cuDNN runs fp32 convolutions in TF32 by default on Ampere and later
    (``torch.backends.cudnn.allow_tf32``), which would put a 1e-3 error into the conv
    reference these tests compare the kernels with at 1e-5; fp32 against fp32 here
    (no effect on CPU)."""
    with no_torch_tf32():
        yield


@needs_triton
@pytest.mark.parametrize("P,act,terms", [(2, "hard_sigmoid", "g1+g2+bias"), (3, "tanh", "g1"), (2, "pep_sigmoid", "g2"),
                                         (1, "hard_sigmoid", "g1+bias"), (2, "tanh", "none")])
def test_conv_epilogue_matches_reference(P, act, terms):
    """13x13 maps (ragged under 2x2 and 3x3 pooling), 3 channels, batch 5; outputs
    NaN-poisoned so an element the kernel fails to write fails."""
    from tritonep.kernels import conv as conv_k

    g = torch.Generator(device=DEVICE).manual_seed(0)
    B, C, H, W = 5, 3, 13, 13
    A = torch.randn(B, C, H, W, device=DEVICE, generator=g)
    bias = torch.randn(C, device=DEVICE, generator=g) if "bias" in terms else None
    Hp, Wp = H // P, W // P
    g1 = torch.randn(B, C, Hp, Wp, device=DEVICE, generator=g) if "g1" in terms else None
    g2 = torch.randn(B, C, Hp, Wp, device=DEVICE, generator=g) if "g2" in terms else None
    state = torch.rand(B, C, H, W, device=DEVICE, generator=g).round_(decimals=1)  # ties: first max wins
    idx = F.max_pool2d(state, P, return_indices=True)[1] if P > 1 else None
    fb = sum(sc * t for sc, t in ((0.3, g1), (-0.7, g2)) if t is not None)
    pre = A + (bias.view(-1, 1, 1) if bias is not None else 0)
    if g1 is not None or g2 is not None:
        pre = pre + (F.max_unpool2d(fb, idx, P, output_size=(H, W)) if P > 1 else fb)
    want = ref.activate(act, pre)
    s = torch.full_like(A, float("nan"))
    o = torch.full((B, C, Hp, Wp), float("nan"), device=DEVICE) if P > 1 else None
    i_out = torch.full((B, C, Hp, Wp), -7, dtype=torch.int32, device=DEVICE) if P > 1 else None
    conv_k.conv_epilogue(A, s, pool=P, activation=act, bias=bias, g1=g1, scale1=0.3, g2=g2, scale2=-0.7,
                         idx_in=None if idx is None else idx.to(torch.int32), o_out=o, idx_out=i_out, block=32)
    torch.testing.assert_close(s, want, rtol=1e-5, atol=1e-6)
    if P > 1:
        o_want, i_want = F.max_pool2d(want, P, return_indices=True)
        torch.testing.assert_close(o, o_want, rtol=1e-5, atol=1e-6)
        assert torch.equal(i_out.long(), i_want)


def odd_net(backend, output="softmax", residual=None, **kw):
    """3x15x15 input -> 5c3 13x13 -P2-> 6x6 -> 6c2p1 7x7 -P2-> 3x3 -> 4c1 3x3 -> 4 classes."""
    torch.manual_seed(0)
    layers = [Conv(3, 5, 3, pool=2), Conv(5, 6, 2, padding=1, pool=2), Conv(6, 4, 1, pool=1), Dense(36, 4, bias=True)]
    opts = {**dict(T=4, K=3, feedback=0.3, nudge=0.5), **kw}
    return ConvEPNet(layers, input_shape=(3, 15, 15), output=output, residual=residual, backend=backend,
                     **opts).to(DEVICE)


BACKEND_CASES = [("softmax", [(1, 3)], dict(nudging="symmetric")),
                 ("neuron", None, dict(rule="classic", error="frozen", activation="pep_sigmoid")),
                 ("softmax", None, dict(error="frozen", nudging="random-sign", activation="tanh"))]


@needs_triton
@pytest.mark.parametrize("output,residual,opts", BACKEND_CASES, ids=["residual-symmetric", "pep-classic", "frozen"])
def test_ep_step_backends_agree(output, residual, opts):
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32  # fp32 reference
    a, b = odd_net("torch", output, residual, **opts), odd_net("triton", output, residual, **opts)
    assert b.backend_for(torch.zeros(1, device=DEVICE)) == "triton"
    g = torch.Generator(device=DEVICE).manual_seed(1)
    x, y = torch.rand(5, 3, 15, 15, device=DEVICE, generator=g), torch.randint(0, 4, (5,), device=DEVICE, generator=g)
    torch.manual_seed(3)
    la, oa = a.ep_step(x, y)
    torch.manual_seed(3)
    lb, ob = b.ep_step(x, y)
    torch.testing.assert_close(ob, oa, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
    # classic: the difference of two nearly equal correlations; both float32 paths are ~2e-4
    # from float64 there (measured), so the bar is looser than for fre
    tol = 1e-3 if opts.get("rule") == "classic" else 1e-5
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert ((q.grad - p.grad).norm() / p.grad.norm()).item() < tol, n
    assert a.last_steps == b.last_steps
    torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_cuda_graph_replays_the_same_step():
    a = odd_net("triton", cuda_graph=False, nudging="symmetric")
    b = odd_net("triton", cuda_graph=True, nudging="symmetric")
    x, y = torch.rand(5, 3, 15, 15, device=DEVICE), torch.randint(0, 4, (5,), device=DEVICE)
    for _ in range(3):  # new inputs every replay; .grad set to None in between, as optimizers do
        a.zero_grad()
        b.zero_grad()
        la, oa = a.ep_step(x, y)
        lb, ob = b.ep_step(x, y)
        torch.testing.assert_close(ob, oa)
        torch.testing.assert_close(lb, la)
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=n)
        x = torch.rand_like(x)
    once = [q.grad.clone() for q in b.parameters()]
    b.ep_step(x, y)
    b.ep_step(x, y)  # no zero_grad: the replays add, like backward
    a.zero_grad()
    a.ep_step(x, y)
    for p, q, g in zip(a.parameters(), b.parameters(), once):
        torch.testing.assert_close(q.grad, g + 2 * p.grad, rtol=1e-5, atol=1e-7)
    assert not b.backend_state.graphs.off and len(b.backend_state.graphs) == 1


def test_triton_path_errors(monkeypatch):
    net = odd_net("triton")
    x = torch.rand(2, 3, 15, 15, device=DEVICE)
    with pytest.raises(TypeError, match="float32"):
        odd_net("triton").double().ep_step(x.double(), torch.zeros(2, dtype=torch.long, device=DEVICE))
    if DEVICE == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            net(x)
        assert odd_net("auto").backend_for(x) == "torch"
