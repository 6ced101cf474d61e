"""Ahead-of-time compilation of recorded launches for an NVIDIA GPU, without one.

``compile_launch`` replays one ``launch.Launch`` through Triton's own launcher
(``JITFunction.warmup``: the same binder, specialization and compiler a CUDA launch
uses) against a stand-in driver that names the target GPU, then reads the cubin
with the ``cuobjdump`` shipped in the triton wheel: registers, local memory (spill)
bytes per thread, shared memory, how the dots lowered and the PTX size.

Run it in a process where Triton is *not* interpreting (``TRITON_INTERPRET`` unset
before the kernels are imported): ``python -m tritonep.kernels.aot IN.json OUT.json
--arch 90,80 --jobs N`` reads recorded launches and writes one row per (launch,
configuration, arch). ``tritonep.compile_check`` drives it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

# Per-block shared memory (opt-in maximum) of each arch, bytes: CUDA C Programming Guide, compute capabilities.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}


def unavailable() -> str:
    """Why the compile check cannot run with the installed triton ("" if it can)."""
    try:
        import triton
        from triton.backends import backends
    except ImportError as e:
        return f"triton is not installed ({e})"
    if "nvidia" not in backends:
        return f"the installed triton {triton.__version__} has no NVIDIA backend"
    if not os.path.isfile(_tool("cuobjdump")):
        return f"the installed triton {triton.__version__} ships no cuobjdump ({_tool('cuobjdump')})"
    if not hasattr(triton.runtime.jit.JITFunction, "warmup"):
        return f"triton {triton.__version__} has no JITFunction.warmup"
    return ""


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


class _TargetDriver:
    """What Triton's launcher asks the active driver before compiling: the target
    (and a device and stream, never used since nothing is launched). The device is
    the arch: Triton caches the target and compiled kernels per device, so each arch
    gets its own cache."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.arch, self.target = arch, GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return self.arch

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")


def _argument(desc):
    """A stand-in argument with what Triton specializes on (see ``launch.describe``)."""
    import torch

    kind = desc[0]
    if kind == "tensor":
        t = torch.empty(64, dtype=getattr(torch, desc[1]))
        return t if desc[2] else t[1:]  # an element past a 64-byte-aligned start: not 16-byte aligned
    return desc[1]


def _dots(ptx: str, ttir: str) -> str:
    """How the kernel's dots lowered: "wgmma" (sm_90 tensor cores), "mma" (sm_80-style
    tensor cores), "fma" (CUDA cores) or "none" (no dot)."""
    if "tt.dot" not in ttir:
        return "none"
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    if re.search(r"\bmma\.sync", ptx):
        return "mma"
    return "fma"


def _resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
    fields = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out))
    return {"registers": int(fields.get("REG", -1)), "local_bytes": int(fields.get("LOCAL", 0)),
            "stack_bytes": int(fields.get("STACK", 0))}


def compile_launch(launch: dict, config: dict, arch: int) -> dict:
    """Compile one recorded launch (``Launch`` as a dict) with one configuration for
    sm_``arch``; a row of the report (``error`` set where it does not compile)."""
    from triton.runtime import driver

    row = {"kernel": launch["kernel"], "module": launch["module"], "arch": arch, "consts": launch["consts"],
           "config": config, "error": ""}
    driver.set_active(_TargetDriver(arch))
    kernel = getattr(importlib.import_module(f"tritonep.kernels.{launch['module']}"), launch["kernel"])
    args = [_argument(a) for a in launch["args"]]
    start = time.perf_counter()
    try:
        k = kernel.warmup(*args, grid=(1,), **launch["consts"], **config)
    except Exception as e:  # the row reports it; the check fails on it
        row["error"] = _reason(e)
        return row
    row.update(_resources(k.asm["cubin"]))
    row.update(shared=int(k.metadata.shared), shared_limit=SHARED_LIMIT.get(arch, 0), dots=_dots(k.asm["ptx"],
               k.asm["ttir"]), ptx_bytes=len(k.asm["ptx"]), seconds=round(time.perf_counter() - start, 2))
    return row


def _reason(e: BaseException) -> str:
    """The compile error in one line: the exception and the root cause it chains to
    (a CompilationError's own text is the source excerpt)."""
    root = e
    while root.__cause__ or root.__context__:
        root = root.__cause__ or root.__context__
    where = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__} {where}"
    if root is not e:
        text += f": {type(root).__name__}: {' '.join(str(root).split())}"
    return text[:400]


def _job(item):
    return compile_launch(*item)


def compile_all(launches: list, archs: list, jobs: int = 1) -> list:
    """Rows for every (launch, configuration, arch), compiled ``jobs`` at a time."""
    items = [(l, c, a) for l in launches for c in l["configs"] for a in archs]
    if jobs <= 1:
        return [_job(i) for i in items]
    with ProcessPoolExecutor(jobs) as pool:
        return list(pool.map(_job, items, chunksize=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonep.kernels.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("launches", help="JSON list of recorded launches")
    p.add_argument("out", help="JSON file for the rows")
    p.add_argument("--arch", default="90,80", help="compute capabilities, e.g. 90,80")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("tritonep.kernels.aot: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    why = unavailable()
    if why:
        sys.exit(f"tritonep.kernels.aot: {why}")
    with open(a.launches) as f:
        launches = json.load(f)
    rows = compile_all(launches, [int(x) for x in a.arch.split(",")], a.jobs)
    with open(a.out, "w") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
