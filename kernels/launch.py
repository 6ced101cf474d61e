"""How every tritonep kernel is launched: its tile configuration, autotuning on CUDA,
and a recorder of the specializations the library launches.

A launcher (``relax.relax_step``, ``update.contrastive_update``, ...) calls
``launch`` with the kernel's arguments, its fixed compile-time switches
(``consts``), the default tiles of the call (``config``: tunable constexprs and
``num_warps``) and, for kernels with one, the autotuning ``Space``:

- under the CPU interpreter, on CPU tensors, or with ``TRITONEP_AUTOTUNE=0``, the
  kernel runs with ``config``;
- on CUDA, ``triton.autotune`` picks among the space's configurations (those its
  ``fits`` keeps for the call's switches) once per value of the space's ``key``.

``recording()`` collects every launch as a ``Launch``, with every configuration a
CUDA run could compile (``config`` and the space's candidates): the GPU-free
compile check (``tritonep.compile_check``, ``kernels.aot``) compiles exactly those.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import triton


# The triton release the tile tables and autotuning spaces were verified with (the compile
# check: every specialization, sm_90 and sm_80, spill-free). Older releases compile them
# with a few spills, and triton 3.1 aborts (a C++ assertion, which kills the process) on
# some 8-warp tensor-core tiles, so before it the spaces keep their 4-warp tiles only.
VERIFIED_TRITON = (3, 9)
TRITON_VERSION = tuple(int(v) for v in triton.__version__.split(".")[:2])


def verified_triton() -> bool:
    """Whether the installed triton is at least the release the tiles were verified with."""
    return TRITON_VERSION >= VERIFIED_TRITON


@dataclass(frozen=True)
class Space:
    """A kernel's autotuning space. ``configs``: dicts of tunable constexprs plus
    ``num_warps``; ``key``: argument names whose values retune; ``restore``: output
    arguments the kernel accumulates into (restored between timing runs); ``fits``:
    ``(config, consts) -> bool``, False for a configuration a call's switches must not
    use (it spills there, per the compile check)."""

    configs: tuple
    key: tuple
    restore: tuple = ()
    fits: Optional[Callable[[dict, dict], bool]] = None

    def candidates(self, consts: dict) -> list[dict]:
        return [dict(c) for c in self.configs if self.fits is None or self.fits(c, consts)]


@dataclass
class Launch:
    """One launch as the compile check replays it: the kernel (module of
    ``tritonep.kernels`` and function name), its positional arguments described by
    ``describe``, its switches, and every configuration a CUDA run may use."""

    module: str
    kernel: str
    args: list
    consts: dict
    configs: list = field(default_factory=list)

    def key(self) -> tuple:
        """What makes two launches compile alike: the kernel, what Triton specializes
        the arguments on (not their values), the switches and the configurations."""
        return (self.module, self.kernel, tuple(_specialized(a) for a in self.args),
                tuple(sorted(self.consts.items())), tuple(tuple(sorted(c.items())) for c in self.configs))


def describe(arg) -> list:
    """An argument as the compile check rebuilds it, keeping what Triton specializes
    on: a tensor's dtype and 16-byte alignment; an int's value (Triton specializes on
    1, on divisibility by 16 and on 64-bit range); a float."""
    if hasattr(arg, "data_ptr"):
        return ["tensor", str(arg.dtype).replace("torch.", ""), arg.data_ptr() % 16 == 0]
    if isinstance(arg, bool):
        return ["bool", arg]
    if isinstance(arg, int):
        return ["int", arg]
    return ["float", float(arg)]


def _specialized(desc: list) -> tuple:
    if desc[0] == "int":
        v = desc[1]
        return ("int", v == 1, v % 16 == 0, -2**31 <= v < 2**31)
    if desc[0] == "float":
        return ("float",)
    return tuple(desc)


class Recorder:
    """The launches seen inside ``recording()``, deduplicated."""

    def __init__(self):
        self.launches: list[Launch] = []
        self._seen: set = set()

    def add(self, launch: Launch) -> None:
        k = launch.key()
        if k not in self._seen:
            self._seen.add(k)
            self.launches.append(launch)


_recorder: Optional[Recorder] = None
_tuned: dict = {}


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    """Record every launch inside the block instead of running it (outputs stay
    unwritten: what is launched depends on shapes and options, not on values, and
    the interpreter is slow at real sizes). While recording, the engines pick the
    tiles they use on CUDA (``as_cuda``)."""
    global _recorder
    outer, _recorder = _recorder, Recorder()
    try:
        yield _recorder
    finally:
        _recorder = outer


def as_cuda(device) -> bool:
    """Whether launches on ``device`` take CUDA's tiles: a CUDA device, or any while
    recording (the compile check replays them for a GPU)."""
    return device.type == "cuda" or _recorder is not None


def autotuning(kernel, first_arg) -> bool:
    """Whether a launch of ``kernel`` (whose first argument is ``first_arg``) is
    autotuned: on CUDA tensors, unless ``TRITONEP_AUTOTUNE=0``, and never under the
    interpreter (whose kernels are no ``JITFunction``)."""
    return (getattr(first_arg, "is_cuda", False) and os.environ.get("TRITONEP_AUTOTUNE", "1") != "0"
            and isinstance(kernel, triton.runtime.jit.JITFunction))


def launch(kernel, grid: Callable[[dict], tuple], args: tuple, consts: dict, config: dict,
           space: Optional[Space] = None) -> None:
    """Launch ``kernel[grid(cfg)](*args, **consts, **cfg)``; ``cfg`` is ``config``, or
    on CUDA with a ``space`` the configuration autotuning picks (``grid`` then gets
    the picked one)."""
    if _recorder is not None:
        configs = [dict(config)]
        if space is not None:
            configs += [c for c in space.candidates(consts) if c != config]
        mod = kernel.fn.__module__.rsplit(".", 1)[-1]
        _recorder.add(Launch(mod, kernel.fn.__name__, [describe(a) for a in args], dict(consts), configs))
        return
    if space is not None and autotuning(kernel, args[0]):
        tuned = _tuned.get(id(kernel))
        if tuned is None:
            tuned = _tuned[id(kernel)] = _autotuned(kernel, space)
        tuned[grid](*args, **consts)
        return
    kernel[grid(config)](*args, **consts, **config)


def _autotuned(kernel, space: Space):
    def prune(configs, named_args, **kwargs):
        consts = {**named_args, **kwargs}
        keep = [c for c in configs if space.fits is None or space.fits({**c.kwargs, "num_warps": c.num_warps}, consts)]
        return keep or configs[:1]

    configs = [triton.Config({k: v for k, v in c.items() if k != "num_warps"}, num_warps=c["num_warps"])
               for c in space.configs]
    extra = {"restore_value": list(space.restore)} if space.restore else {}
    return triton.autotune(configs=configs, key=list(space.key), prune_configs_by={"early_config_prune": prune},
                           **extra)(kernel)
