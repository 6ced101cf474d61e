"""Training checkpoints: model, optimizer, epoch, history, config and RNG states.

A checkpoint is one ``torch.save`` file holding a dict with the keys ``model``,
``optimizer`` (state dicts), ``epoch`` (epochs done), ``rng`` (``rng_state()``),
``history`` (the per-epoch records), ``config`` and ``world_size``. Everything in
it is a tensor or a plain value (dict, list, tuple, str, number, bool, None), so
``load`` reads it with ``torch.load(..., weights_only=True)``: loading a file never
runs code from it. Files of tritonep 0.1.0, whose numpy RNG state is a numpy
array, still load: exactly the numpy names such an array needs are allowed, for
that one call. Files are written atomically (a temporary file, then a rename), so
an interrupted write never leaves a half file where a good one was.
"""
from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

KEYS = ("model", "optimizer", "epoch", "rng", "history", "config", "world_size")


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint (corrupt, foreign, or from another run);
    the message names the file and what is wrong."""


def rng_state() -> dict:
    """The state of every random generator a run draws from: torch (CPU and
    CUDA), Python's ``random`` and numpy's, as tensors and plain values."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}


def set_rng_state(s: dict) -> None:
    """Restore what ``rng_state`` returned (CUDA's only where CUDA is here); the
    numpy state may also be numpy's own tuple (checkpoints of tritonep 0.1.0)."""
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    random.setstate(s["python"])
    name, keys, pos, has_gauss, gauss = s["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, gauss))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a file next to ``path``, then rename it onto ``path``; if
    ``write`` fails, ``path`` is untouched and the temporary file removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save(path: Path, *, net: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, history: list,
         config: dict, world_size: int) -> None:
    """Write a checkpoint after ``epoch`` epochs, with the current RNG states."""
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "rng": rng_state(), "history": history, "config": config, "world_size": world_size}
    atomic_write(Path(path), lambda p: torch.save(state, p))


def _numpy_array_globals() -> list:
    """What unpickling one numpy array needs (the RNG state of 0.1.0 checkpoints),
    under the names numpy 1 and numpy 2 write: array and dtype construction only."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"),
               (_reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype]
    return allowed + [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64)]


def _refusal(path: Path, error: Exception) -> str:
    """Why the weights-only unpickler refused a file, in a few words: the globals it
    names (code a crafted file would run), or the unpickler's own reason."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip archive: nothing to list
        names = []
    if names:
        return (f"it holds Python objects a checkpoint never contains ({', '.join(names[:3])}"
                f"{', ...' if len(names) > 3 else ''}), and loading them could run code")
    text = str(error)
    reason = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0] if "WeightsUnpickler error:" in text \
        else "not written by torch.save"
    return f"not a checkpoint tritonep writes ({reason[:200]})"


def load(path: os.PathLike, map_location=None) -> dict:
    """Read a checkpoint ``save`` wrote (tensors onto ``map_location``), never running
    code from the file. Raises ``CheckpointError`` naming the file when it is
    missing, corrupt, holds anything but tensors and plain values, or is not a
    tritonep training checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a foreign pickle: refused below
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise CheckpointError(f"checkpoint {path}: refused, {_refusal(path, e)}") from None
        raise CheckpointError(f"checkpoint {path}: not a torch checkpoint file (corrupt or another format: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    except Exception as e:  # truncated zip, text file, ...: torch's own message, first line
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"checkpoint {path}: unreadable, corrupt or not a torch checkpoint "
                              f"({type(e).__name__}: {first[:200]})") from None
    check(ck, path)
    return ck


def check(ck, path) -> None:
    """Raise ``CheckpointError`` unless ``ck`` has the keys and types ``save`` writes."""
    if not isinstance(ck, dict):
        raise CheckpointError(f"checkpoint {path}: not a tritonep training checkpoint (it holds a "
                              f"{type(ck).__name__}, not the dict `tritonep train` writes)")
    missing = [k for k in KEYS if k not in ck]
    if missing:
        found = ", ".join(sorted(map(str, ck))[:6]) or "nothing"
        raise CheckpointError(f"checkpoint {path}: not a tritonep training checkpoint (no {', '.join(missing)}; "
                              f"it holds {found}{', ...' if len(ck) > 6 else ''})")
    types = {"model": dict, "optimizer": dict, "epoch": int, "rng": dict, "history": list, "config": dict,
             "world_size": int}
    for key, kind in types.items():
        if not isinstance(ck[key], kind) or isinstance(ck[key], bool):
            raise CheckpointError(f"checkpoint {path}: its {key!r} is a {type(ck[key]).__name__}, expected a "
                                  f"{kind.__name__}")
    if ck["epoch"] < 0 or any(k not in ck["rng"] for k in ("torch", "python", "numpy")):
        raise CheckpointError(f"checkpoint {path}: damaged (epoch {ck['epoch']}, RNG keys {sorted(ck['rng'])})")
