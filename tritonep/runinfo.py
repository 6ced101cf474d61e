"""Where a run happens: the device it asks for, the machine's name, the versions.

Results and reports record ``device_name(dev)`` and ``versions()`` so that a
number can be traced to the hardware and software that produced it.
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from .version import __version__


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU) or a torch device name;
    raises ValueError where CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here")
    return dev


def device_name(dev: torch.device) -> str:
    """The GPU's name, or ``"CPU: MODEL (N cores, M threads)"``."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


SOURCE = Path(__file__).resolve().parent  # the package's own folder: a checkout's, or site-packages'


@functools.lru_cache(maxsize=None)
def _commit(source: Path) -> tuple:
    git = shutil.which("git")
    if git is None:
        return None, None

    def ask(*args) -> str:
        return subprocess.run([git, "-C", str(source), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        top = Path(ask("rev-parse", "--show-toplevel")).resolve()
        if top != source.parent:  # an installed copy inside some other repository
            return None, None
        return ask("rev-parse", "HEAD"), bool(ask("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):  # not a checkout, no commit yet, git too slow
        return None, None


def commit(source: Path = SOURCE) -> dict:
    """The tritonep commit a run came from: ``{"commit": SHA, "dirty": bool}`` where the
    package runs from a git checkout (dirty: tracked files differ from the commit),
    ``{"commit": None, "dirty": None}`` otherwise (an installed wheel, no git)."""
    sha, dirty = _commit(Path(source).resolve())
    return {"commit": sha, "dirty": dirty}


def versions() -> dict:
    """Versions of tritonep, torch, triton (None where unusable), Python and numpy,
    and the tritonep commit (``commit``, ``dirty``: see ``commit()``)."""
    try:
        import triton

        triton_v = triton.__version__
    except Exception:  # not installed, or no usable build on this machine
        triton_v = None
    return {"tritonep": __version__, "torch": torch.__version__, "triton": triton_v,
            "python": platform.python_version(), "numpy": np.__version__, **commit()}
