"""CUDA-graph replay of ``ep_step`` cannot corrupt: checked on CPU with a stand-in for
``torch.cuda``'s graph API (``CUDAGraph``, ``graph``, streams), the Triton kernels in
the interpreter (on a GPU the real API runs; ``test_dense_triton.py`` compares graph
and eager steps there).

The stand-in counts captures and replays; its "capture" runs the body eagerly (a
real one only records), and its replay does nothing, so these tests check what the
cache decides (capture, replay, drop) and what ``.grad`` holds after a failed
capture, not the numbers a replay computes.
"""
import contextlib
import warnings

import pytest
import torch

from tritonep import EPNet
from tritonep.engine import backend as be
from tritonep.engine.dense_triton import Plan

pytestmark = pytest.mark.skipif(not be.interpreting(), reason="stands in for CUDA on CPU: needs Triton's interpreter")


class FakeGraph:
    """``torch.cuda.CUDAGraph``: counts replays."""

    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


class FakeStream:
    def wait_stream(self, other):
        pass


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's graph API on CPU; ``state["fail"]`` makes the next capture raise."""
    state = {"fail": False, "graphs": []}

    @contextlib.contextmanager
    def graph(g):
        if state["fail"]:
            raise RuntimeError("operation not permitted when stream is capturing (stand-in)")
        state["graphs"].append(g)
        yield

    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(be, "can_capture", lambda x: True)
    return state


def make(**kw):
    torch.manual_seed(0)
    opts = dict(feedback=0.2, nudge=0.5, T=3, K=2, backend="triton", precision="ieee")
    return EPNet([13, 21, 10], **{**opts, **kw})


def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(9, 13, generator=g), torch.randint(0, 10, (9,), generator=g)


def grads(net):
    return [p.grad.clone() for p in net.parameters()]


def test_failed_capture_leaves_the_grads_of_one_eager_step(fake_cuda):
    """Two warm-up runs add into .grad before the capture fails; the eager step that
    follows must leave one step's grads, not three (and a .grad the user put there
    is kept)."""
    x, y = data()
    eager, graphed = make(cuda_graph=False), make(cuda_graph=True)
    for net in (eager, graphed):
        net.layers[0].weight.grad = torch.ones_like(net.layers[0].weight)  # kept and added to
    eager.ep_step(x, y)
    fake_cuda["fail"] = True
    with pytest.warns(RuntimeWarning, match=r"(?s)capture failed.*Traceback.*stand-in"):
        graphed.ep_step(x, y)
    for a, b in zip(grads(eager), grads(graphed)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
    assert graphed.backend_state.graphs.off  # the net then runs without graphs
    graphed.zero_grad()
    eager.zero_grad()
    eager.ep_step(x, y)
    graphed.ep_step(x, y)
    for a, b in zip(grads(eager), grads(graphed)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_a_replayed_step_captures_once_and_packs_inside_the_graph(fake_cuda, monkeypatch):
    x, y = data()
    net = make()
    packs = []
    pack = Plan.pack
    monkeypatch.setattr(Plan, "pack", lambda self, *a: (packs.append(1), pack(self, *a))[1])
    net.ep_step(x, y)
    graphs = net.backend_state.graphs
    assert graphs.captures == 1 and len(fake_cuda["graphs"]) == 1
    packs.clear()
    net.ep_step(x, y)
    net.ep_step(x, y)
    assert graphs.captures == 1 and fake_cuda["graphs"][0].replays == 3
    assert packs == []  # the captured body packs the weights; nothing is packed eagerly per step


@pytest.mark.parametrize("change", [
    lambda net: setattr(net, "nudge", 0.2),
    lambda net: setattr(net, "persistent", True),
    lambda net: setattr(net, "precision", "tf32"),
    lambda net: setattr(net, "activation", "hard_sigmoid"),
    lambda net: setattr(net, "K", 3),
    lambda net: setattr(net, "nudging", "symmetric"),
    lambda net: setattr(net, "rule", "classic"),
    lambda net: torch.set_float32_matmul_precision("high"),
], ids=["nudge", "persistent", "precision", "activation", "K", "nudging", "rule", "matmul-precision"])
def test_every_setting_a_capture_bakes_in_recaptures(fake_cuda, change):
    x, y = data()
    net = make()
    net.ep_step(x, y)
    assert net.backend_state.graphs.captures == 1
    old = torch.get_float32_matmul_precision()
    try:
        change(net)
        net.ep_step(x, y)
    finally:
        torch.set_float32_matmul_precision(old)
    assert net.backend_state.graphs.captures == 2


def test_a_new_batch_size_or_input_recaptures_and_the_same_replays(fake_cuda):
    x, y = data()
    net = make()
    net.ep_step(x, y)
    net.ep_step(x + 1, (y + 1) % 10)  # new values, same shapes: replayed
    assert net.backend_state.graphs.captures == 1
    net.ep_step(x[:5], y[:5])
    assert net.backend_state.graphs.captures == 2


def test_dropping_a_graphs_frames_drops_the_graph(fake_cuda):
    """Past 24 batch sizes the plan drops its frames; a graph that wrote them must
    never replay (it would write freed memory): the next step captures anew."""
    x, y = data()
    net = make()
    net.ep_step(x, y)
    plan = next(v for k, v in net.backend_state.buffers.items() if k[0] == "dense-plan")
    for b in range(1, 30):
        plan.frames("other", b)
    net.ep_step(x, y)
    graphs = net.backend_state.graphs
    assert graphs.captures == 2 and len(graphs) == 1
    assert fake_cuda["graphs"][0].replays == 1  # the old graph never replayed again


def test_evicting_cached_buffers_drops_the_graphs(fake_cuda):
    """``BackendState.cached`` evicting a kind (here the plans) drops every graph."""
    x, y = data()
    net = make()
    net.ep_step(x, y)
    state = net.backend_state
    for i in range(16):
        state.cached(("dense-plan", "other", i), object)
    assert len(state.graphs) == 0
    net.ep_step(x, y)
    assert state.graphs.captures == 2 and fake_cuda["graphs"][0].replays == 1


def test_a_capture_failure_in_a_later_key_still_restores_the_grads(fake_cuda):
    x, y = data()
    eager, graphed = make(cuda_graph=False), make(cuda_graph=True)
    graphed.ep_step(x, y)  # captured (the stand-in's replay computes nothing: zero the grads)
    graphed.zero_grad()
    fake_cuda["fail"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        graphed.ep_step(x[:4], y[:4])
    eager.ep_step(x[:4], y[:4])
    for a, b in zip(grads(eager), grads(graphed)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_a_conv_net_keeps_one_graph_per_batch_size(fake_cuda):
    """The last, shorter batch of an epoch gets its own graph; the full batch's graph
    survives it (no recapture every epoch), and a failed capture restores .grad."""
    from tritonep import Conv, ConvEPNet, Dense

    def conv_net(**kw):
        torch.manual_seed(0)
        layers = [Conv(1, 3, 3, pool=2), Dense(27, 4, bias=True)]
        return ConvEPNet(layers, input_shape=(1, 8, 8), T=3, K=2, feedback=0.3, nudge=0.5, backend="triton", **kw)

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 1, 8, 8, generator=g), torch.randint(0, 4, (5,), generator=g)
    net = conv_net()
    for b in (5, 3, 5, 3):
        net.ep_step(x[:b], y[:b])
    assert net.backend_state.graphs.captures == 2
    eager, graphed = conv_net(cuda_graph=False), conv_net()
    fake_cuda["fail"] = True
    with pytest.warns(RuntimeWarning, match="capture failed"):
        graphed.ep_step(x, y)
    eager.ep_step(x, y)
    for a, b in zip(grads(eager), grads(graphed)):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
