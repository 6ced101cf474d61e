"""Training checkpoints: model, optimizer, epoch, history, config and RNG states.

A checkpoint is one ``torch.save`` file holding a dict with the keys ``model``,
``optimizer`` (state dicts), ``epoch`` (epochs done), ``rng`` (``rng_state()``),
``history`` (the per-epoch records), ``config`` and ``world_size``. Files are
written atomically (a temporary file, then a rename), so an interrupted write
never leaves a half file where a good one was.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch


def rng_state() -> dict:
    """The state of every random generator a run draws from: torch (CPU and
    CUDA), Python's ``random`` and numpy's."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(s: dict) -> None:
    """Restore what ``rng_state`` returned (CUDA's only where CUDA is here)."""
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a file next to ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save(path: Path, *, net: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, history: list,
         config: dict, world_size: int) -> None:
    """Write a checkpoint after ``epoch`` epochs, with the current RNG states."""
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "rng": rng_state(), "history": history, "config": config, "world_size": world_size}
    atomic_write(path, lambda p: torch.save(state, p))


def load(path: os.PathLike, map_location=None) -> dict:
    """Read a checkpoint ``save`` wrote (tensors onto ``map_location``)."""
    return torch.load(path, map_location=map_location, weights_only=False)  # our own file: holds RNG states
