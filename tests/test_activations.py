"""Accurate activations on both backends: the reference's and the kernels' rho are
within a few ulp of ``torch.tanh`` / ``torch.sigmoid`` over the whole float32 range,
small |x| included (where a deep net's learning signal lives)."""
import pytest
import torch

from tritonep import reference as ref
from tritonep.engine.backend import interpreting


def grid() -> torch.Tensor:
    """float32 points over the whole range: tiny, small, moderate and saturating, both signs."""
    mag = torch.cat([torch.logspace(-38, 1.7, 4001), torch.linspace(0.0, 12.0, 4001)])
    return torch.cat([mag, -mag, torch.tensor([0.0, 0.625, -0.625, 0.62499994, 44.0, -90.0, 1e4])]).float()


def ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """|got - want| in units of the last place of ``want`` (float32), subnormals as the smallest normal."""
    spacing = torch.nextafter(want.abs(), torch.tensor(float("inf"))) - want.abs()
    return (got.double() - want.double()).abs() / spacing.clamp_min(torch.finfo(torch.float32).tiny).double()


if interpreting():  # a kernel applying the kernels' rho elementwise (jit code reads module globals)
    import triton
    import triton.language as tl

    from tritonep.kernels.common import activate

    @triton.jit
    def rho(X, Y, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(Y + r, activate(tl.load(X + r, mask=r < n), ACT), mask=r < n)


EXACT = {"tanh": torch.tanh, "pep_sigmoid": lambda x: torch.sigmoid(4.0 * (x - 0.5)),
         "hard_sigmoid": lambda x: x.clamp(0.0, 1.0)}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_reference_activation_within_two_ulp(name):
    x = grid()
    assert ulps(ref.activate(name, x), EXACT[name](x)).max() == 0  # out of place: torch's own
    buf = x.clone()
    assert ulps(ref.activate(name, buf, out=buf), EXACT[name](x)).max() <= 2  # the fast path, in place
    assert ulps(ref.activate(name, x, out=torch.empty_like(x)), EXACT[name](x)).max() <= 2


def test_the_sigmoid_form_of_tanh_would_fail():
    """What the reference computed before: 2 sigmoid(2x) - 1 is 100 % off at small |x|."""
    x = grid()
    assert ulps(2.0 * torch.sigmoid(2.0 * x) - 1.0, torch.tanh(x)).max() > 1e6


@pytest.mark.skipif(not interpreting(), reason="the kernels' rho, checked in Triton's interpreter")
@pytest.mark.parametrize("name", sorted(EXACT))
def test_kernel_activation_within_a_few_ulp(name):
    import triton

    from tritonep.kernels import common

    x = grid()
    y = torch.full_like(x, float("nan"))
    rho[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), ACT=common.ACTIVATION_CODES[name], BLOCK=1024)
    u = ulps(y, EXACT[name](x))
    assert u.max() <= 4, f"{name}: {u.max():.1f} ulp at x = {x[u.argmax()].item()!r}"
