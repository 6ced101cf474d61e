"""What every pytest-benchmark suite in ``bench/`` shares: the device, and a timed
call that waits for the GPU and keeps warm-up (JIT, cuDNN autotuning, CUDA graph
capture) outside the timing."""
import torch

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def sync():
    if CUDA:
        torch.cuda.synchronize()


def bench(benchmark, fn, **info):
    """Time ``fn`` with pytest-benchmark after one warm-up call; ``info`` goes to
    ``extra_info`` (with the device)."""
    fn()
    sync()
    benchmark.extra_info.update(device=DEVICE, **info)

    def timed():
        fn()
        sync()

    benchmark(timed)
