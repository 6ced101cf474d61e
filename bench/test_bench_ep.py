"""pytest-benchmark cases: one EP step and one BP step of 784-512-512-10 at batch
500 (the paper's 2HL net), on the reference path.

    pytest bench/ --benchmark-json bench/results/bench-$(date +%F).json

The EP/BP ratio is printed by ``bench/epoch.py``, which also times whole epochs.
"""
import pytest
import torch

from tritonep import EPNet
from tritonep.baselines import feedforward

SIZES = [784, 512, 512, 10]
B = 500


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(B, 784, generator=g), torch.randint(0, 10, (B,), generator=g)


@pytest.mark.parametrize("K", [5, 10])
def test_ep_step(benchmark, batch, K):
    net = EPNet(SIZES, feedback=0.01, nudge=0.1, T=10, K=K)
    x, y = batch
    benchmark.extra_info.update(T=10, K=K, batch=B, sizes=SIZES)
    benchmark(lambda: (net.zero_grad(set_to_none=False), net.ep_step(x, y)))


def test_bp_step(benchmark, batch):
    net = EPNet(SIZES)
    x, y = batch

    def step():
        net.zero_grad(set_to_none=False)
        out = feedforward(net, x)
        net.loss(out, torch.nn.functional.one_hot(y, 10).float()).backward()

    benchmark.extra_info.update(batch=B, sizes=SIZES)
    benchmark(step)
