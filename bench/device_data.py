"""Prepare the data that travels with the working tree to a GPU machine.

    python bench/device_data.py [--src ../shared/data] [--dst device-data]
                                [--cifar-train 8000] [--cifar-test 2000]

The tree that travels is capped at 64 MiB, so the 171 MB CIFAR-10 copy cannot go
whole: this writes ``mnist.npz`` (copied, 11 MB) and a stratified CIFAR-10 subset
(equal images per class, the first ones of each class in the stored order) as
``cifar10_jpeg_lossy.npz`` into ``device-data/`` (git-ignored), and prints the
folder's size. ``bench/gpu_check.sh`` finds it there; name it in the device call's
``carry``.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LIMIT_MB = 64


def stratified(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n // 10`` images of each class, in their stored order: (x[n], y[n])."""
    per = n // 10
    idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:per] for c in range(10)]))
    return x[idx], y[idx]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--dst", default=str(REPO / "device-data"))
    ap.add_argument("--cifar-train", type=int, default=8000, help="CIFAR-10 training images (0: none)")
    ap.add_argument("--cifar-test", type=int, default=2000, help="CIFAR-10 test images")
    args = ap.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    dst.mkdir(parents=True, exist_ok=True)
    if not (src / "mnist.npz").is_file():
        ap.error(f"{src / 'mnist.npz'} not found: pass --src, the folder holding mnist.npz")
    shutil.copyfile(src / "mnist.npz", dst / "mnist.npz")
    if args.cifar_train > 0 and (src / "cifar10_jpeg_lossy.npz").is_file():
        with np.load(src / "cifar10_jpeg_lossy.npz") as f:
            xtr, ytr = stratified(f["x_train"], f["y_train"], args.cifar_train)
            xte, yte = stratified(f["x_test"], f["y_test"], args.cifar_test)
        np.savez_compressed(dst / "cifar10_jpeg_lossy.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    mb = sum(p.stat().st_size for p in dst.iterdir()) / 2**20
    print(f"{dst}: {', '.join(sorted(p.name for p in dst.iterdir()))}, {mb:.1f} MiB (the tree's limit is {LIMIT_MB} MiB)")
    if mb > LIMIT_MB - 10:
        print("warning: leaves under 10 MiB for the rest of the tree; pass smaller --cifar-train/--cifar-test")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
