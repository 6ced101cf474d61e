"""Shared fixtures. Real data comes from $TRITONEP_DATA, else ../shared/data beside
the checkout; tests that need it skip with a reason where none is found, except
when TRITONEP_REQUIRE_DATA=1 (set by .ci/run), where a missing copy fails."""
import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which must be chosen
# before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]


def _data_dir():
    for d in (os.environ.get("TRITONEP_DATA"), REPO.parent / "shared" / "data"):
        if d and (Path(d) / "mnist.npz").is_file():
            return Path(d)
    return None


@pytest.fixture(scope="session")
def data_dir():
    d = _data_dir()
    if d is None:
        msg = "real data not found: set TRITONEP_DATA to a directory holding mnist.npz (see README)"
        if os.environ.get("TRITONEP_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def mnist(data_dir):
    from tritonep import data

    return data.load("mnist", data_dir, download=False)


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on a shared 2-core machine: one intra-op thread is faster than two
    (no OpenMP barriers between threads that other jobs keep descheduling). Modules opt
    in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
