"""``kernels.launch``: the autotuned path CUDA takes by default computes what the
explicit tiles compute (run here in the interpreter, timed by a stand-in
benchmarker), without double-counting the accumulating update's timing runs; and
what decides between the two paths."""
import time

import pytest
import torch

from tritonep import EPNet
from tritonep.engine.backend import interpreting
from tritonep.kernels import launch, relax, update

pytestmark = pytest.mark.skipif(not interpreting(), reason="drives the autotuner in Triton's interpreter")


class _CPUTimer:
    """The part of a Triton driver the autotuner asks for: a benchmarker (one timed call)."""

    def get_benchmarker(self):
        def bench(fn, quantiles=None, **kw):
            t = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t) * 1e3
            return [ms] * len(quantiles) if quantiles else ms

        return bench


@pytest.fixture
def cpu_timer(monkeypatch):
    """The autotuner's benchmarker on CPU, and a fresh cache of autotuned kernels."""
    import triton

    monkeypatch.setattr(launch, "_tuned", {})
    old = triton.runtime.driver._active
    triton.runtime.driver.set_active(_CPUTimer())
    yield
    triton.runtime.driver.set_active(old)


@pytest.mark.parametrize("precision,rule", [("tf32", "fre"), ("ieee", "classic")])
def test_autotuned_launches_agree_with_explicit_tiles(cpu_timer, monkeypatch, precision, rule):
    torch.manual_seed(0)
    kw = dict(backend="triton", precision=precision, rule=rule, T=4, K=3, residual=2)
    explicit, tuned = EPNet([20, 33, 17, 21, 10], **kw), EPNet([20, 33, 17, 21, 10], **kw)
    tuned.load_state_dict(explicit.state_dict())
    x, y = torch.rand(37, 20), torch.randint(0, 10, (37,))
    seen = []
    for net, on in ((explicit, False), (tuned, True)):
        monkeypatch.setattr(launch, "autotuning", lambda kernel, first_arg, on=on: on and not seen.append(kernel))
        for _ in range(2):  # the second step accumulates into .grad: the timing runs must be undone
            net.ep_step(x, y)
    assert {k.fn.__name__ for k in seen} == {"_relax_step_kernel", "_readout_kernel", "_update_kernel"}
    spaces = {"_relax_step_kernel": relax.STEP_SPACE, "_readout_kernel": relax.READOUT_SPACE,
              "_update_kernel": update.UPDATE_SPACE}
    assert {len(t.configs) for t in launch._tuned.values()} == {len(s.configs) for s in spaces.values()}
    for p, q in zip(explicit.parameters(), tuned.parameters()):  # other tiles: other rounding, nothing counted twice
        assert (q.grad - p.grad).norm() <= 1e-4 * p.grad.norm(), (q.grad - p.grad).norm() / p.grad.norm()


def test_autotuning_only_for_compiled_kernels_on_cuda(monkeypatch):
    x = torch.zeros(2)
    assert not launch.autotuning(relax._relax_step_kernel, x)  # CPU tensor, interpreted kernel
    monkeypatch.setenv("TRITONEP_AUTOTUNE", "0")
    assert not launch.autotuning(relax._relax_step_kernel, x)
