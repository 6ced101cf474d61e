"""The backend state both nets share (``EPModule``, ``engine.backend``): the buffer
cache, and the first-use fallback: an ``auto`` net whose
Triton path fails on its first call (a kernel that does not compile on some GPU)
warns once and stays on the reference, with the reference's grads; an explicit
``backend="triton"`` raises. The Triton engine is replaced by one that fails, so
this runs anywhere."""
import pytest
import torch

from tritonep import ConvEPNet, EPNet
from tritonep.engine.backend import BackendState

NETS = {
    "dense": (lambda backend: EPNet([50, 129, 33, 10], feedback=0.3, nudge=0.5, T=3, K=2, backend=backend),
              lambda: (torch.rand(37, 50), torch.randint(0, 10, (37,)))),
    "conv": (lambda backend: ConvEPNet.from_arch("4c3-P2-6c3-P2-FC10", input_shape=(1, 13, 13), backend=backend),
             lambda: (torch.rand(5, 1, 13, 13), torch.randint(0, 10, (5,)))),
}


def broken(net, x):
    raise RuntimeError("PTX compile failed (simulated)")


@pytest.mark.parametrize("kind", list(NETS))
def test_auto_net_falls_back_when_the_first_triton_call_fails(monkeypatch, kind):
    make, data = NETS[kind]
    torch.manual_seed(0)
    a, b = make("torch"), make("auto")
    b.load_state_dict(a.state_dict())
    x, y = data()
    a.ep_step(x, y)
    cls = type(b)
    # as on a GPU: auto resolves to Triton until the net's first Triton call has failed
    monkeypatch.setattr(cls, "backend_for", lambda self, x, tol=None: "torch" if self.backend_state.triton_off
                        else "triton")
    monkeypatch.setattr(cls, "triton_engine", broken)
    with pytest.warns(RuntimeWarning, match="simulated"):
        b.ep_step(x, y)
    assert b.backend_state.triton_off
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q.grad, p.grad)
    c = make("triton")  # explicit backend="triton": the error propagates
    monkeypatch.setattr(cls, "backend_for", lambda self, x, tol=None: "triton")
    with pytest.raises(RuntimeError, match="simulated"):
        c.ep_step(x, y)


def test_buffer_cache_drops_only_the_kind_that_overflows():
    """Many batch sizes overflow the workspaces; the plan (another kind) is kept."""
    state = BackendState()
    plan = state.cached(("dense-plan", "cpu"), object)
    made = [state.cached(("dense", "free", b), object, limit=4) for b in range(4)]
    assert state.cached(("dense", "free", 3), object, limit=4) is made[3]  # a hit makes nothing
    state.cached(("dense", "free", 99), object, limit=4)  # the fifth workspace: the four old ones go
    assert [k for k in state.buffers if k[0] == "dense"] == [("dense", "free", 99)]
    assert state.cached(("dense-plan", "cpu"), object) is plan
