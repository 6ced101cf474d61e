"""No host sync per step on the default CUDA path: ``ep_step`` (graph replay or
eager Triton) and the trainer's loop never read a device value back per step, and
bad values found on the device are still reported, a call later.

On CPU, CUDA is stood in for: ``value_checks.deferred`` and ``backend.can_capture``
say yes for CPU tensors, the graph API is ``test_cuda_graph``'s stand-in, and every
explicit read of a tensor's values made from tritonep's own code (``item``,
``tolist``, ``numpy``, ``bool``, ``int``, ``float``, ``index``) is recorded; on a
GPU, ``torch.cuda.set_sync_debug_mode("error")`` catches every sync instead.
"""
import sys
from pathlib import Path

import pytest
import torch

from tritonep import EPNet, presets
from tritonep import data as data_mod
from tritonep import train as train_mod
from tritonep.engine import backend as be
from tritonep.engine import value_checks as vc

from test_cuda_graph import fake_cuda  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
OURS = (str(REPO / "tritonep"), str(REPO / "kernels"))
READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


@pytest.fixture
def reads(monkeypatch):
    """Records (method, caller file:line) for every value read tritonep's code makes."""
    seen = []
    for name in READS:
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *a, _orig=orig, _name=name, **k):
            f = sys._getframe(1)
            if f.f_code.co_filename.startswith(OURS):
                seen.append((_name, f"{Path(f.f_code.co_filename).name}:{f.f_lineno}"))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return seen


@pytest.fixture
def on_device(monkeypatch):
    """Every tensor counts as a device tensor for the value checks."""
    monkeypatch.setattr(vc, "deferred", lambda t: True)


def data(n=9, bad=None):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(n, 13, generator=g), torch.randint(0, 10, (n,), generator=g)
    if bad == "input":
        x[2, 3] = float("nan")
    if bad == "labels":
        y[4] = 10
    return x, y


def net(**kw):
    torch.manual_seed(0)
    return EPNet([13, 21, 10], **{**dict(feedback=0.2, nudge=0.5, T=3, K=2, backend="triton", precision="ieee"), **kw})


@pytest.mark.skipif(not be.interpreting(), reason="stands in for CUDA with Triton's interpreter")
@pytest.mark.parametrize("cuda_graph", [True, False], ids=["graph", "eager"])
def test_a_step_reads_nothing_back(fake_cuda, on_device, reads, cuda_graph):  # noqa: F811
    n = net(cuda_graph=cuda_graph)
    x, y = data()
    n.ep_step(x, y)  # the first step may read (capture, autotuning); later ones must not
    reads.clear()
    for _ in range(3):
        n.zero_grad()
        n.ep_step(x, y)
    assert reads == []
    assert n.backend_state.graphs.captures == (1 if cuda_graph else 0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bad", ["input", "labels"])
def test_bad_values_found_on_the_device_are_raised_by_a_later_call(on_device, bad, backend):
    if backend == "triton" and not be.interpreting():
        pytest.skip("no GPU and no interpreter")
    n = net(backend=backend, cuda_graph=False)
    x, y = data(bad=bad)
    n.ep_step(x, y)  # the check runs on the device: this call does not wait for it
    good = data()
    what = "NaN or infinite" if bad == "input" else "labels out of range"
    with pytest.raises(ValueError, match=f"earlier call.*{what}"):
        n.ep_step(*good)
    n.ep_step(*good)  # reported once
    n.ep_step(x, y)
    with pytest.raises(ValueError, match=what):
        n.check_pending()


def test_on_the_host_bad_values_raise_at_once():
    n = net(backend="torch")
    for bad, what in (("input", "NaN or infinite"), ("labels", r"class indices in \[0, 9\]")):
        with pytest.raises(ValueError, match=what):
            n.ep_step(*data(bad=bad))


def test_the_trainers_reads_do_not_grow_with_the_batches(on_device, reads):
    """The loop keeps its sums on the device: the reads of an epoch are the same
    for 2 batches as for 6."""
    counts = []
    for n in (2, 6):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n * 8, 1, 28, 28), dtype=torch.uint8, generator=g)
        y = torch.randint(0, 10, (n * 8,), generator=g)
        ds = data_mod.Dataset("mnist", x, y, x[:8], y[:8], "synthetic")
        cfg = presets.get("mnist-2hl")
        cfg.update(hidden=[16], epochs=1, batch_size=8, T=3, K=2, backend="torch", device="cpu")
        reads.clear()
        train_mod.run(cfg, dataset=ds, progress=False)
        counts.append(len([r for r in reads if r[1].startswith("train.py")]))
    assert counts[0] == counts[1], (counts, reads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch's own sync detector")
def test_no_sync_on_cuda():
    n = EPNet([13, 21, 10], feedback=0.2, nudge=0.5, T=3, K=2).cuda()
    x, y = (t.cuda() for t in data())
    n.ep_step(x, y)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            n.zero_grad()
            n.ep_step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
