"""pytest-benchmark cases for the tanh formulations the reference could use, with
their float32 accuracy against ``torch.tanh`` in ``extra_info``:

    pytest bench/test_bench_activations.py --benchmark-json OUT.json

``torch.tanh`` is what the reference computes (accurate); ``2 sigmoid(2x) - 1`` is
what it computed before (faster on CPU, but 100 % off for small |x|); ``expm1`` is
``expm1(2x) / (expm1(2x) + 2)`` on a clamped input (accurate too). Shape: one
hidden layer's pre-activations, (500, 512), as in the headline net.
"""
import pytest
import torch
from harness import DEVICE, bench

def _expm1(x, out):
    e = torch.expm1(torch.clamp(x, -20.0, 20.0, out=out).mul_(2.0), out=out)
    return torch.div(e, e + 2.0, out=out)


# each writes tanh(x) into ``out`` the way the reference's fast path would (in place, no autograd)
FORMS = {
    "torch.tanh": lambda x, out: torch.tanh(x, out=out),
    "2*sigmoid(2x)-1": lambda x, out: out.copy_(x).mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0),
    "expm1": _expm1,
}


def max_ulps(fn) -> float:
    """Largest error against torch.tanh in float32 ulps over tiny to saturating |x|."""
    mag = torch.cat([torch.logspace(-38, 1.7, 4001), torch.linspace(0.0, 12.0, 4001)])
    x = torch.cat([mag, -mag]).float()
    want = torch.tanh(x)
    spacing = (torch.nextafter(want.abs(), torch.tensor(float("inf"))) - want.abs()).clamp_min(1.17e-38)
    return ((fn(x, torch.empty_like(x)).double() - want.double()).abs() / spacing.double()).max().item()


@pytest.mark.parametrize("form", list(FORMS))
def test_tanh(benchmark, form):
    fn = FORMS[form]
    x = torch.randn(500, 512, device=DEVICE, generator=torch.Generator(device=DEVICE).manual_seed(0))
    out = torch.empty_like(x)
    bench(benchmark, lambda: fn(x, out), case="tanh", backend=form, shape=[500, 512], max_ulps=max_ulps(fn))
