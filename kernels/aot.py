"""Ahead-of-time compilation of recorded launches for an NVIDIA GPU, without one.

``compile_launch`` replays one ``launch.Launch`` through Triton's own launcher
(``JITFunction.warmup``: the same binder, specialization and compiler a CUDA launch
uses) against a stand-in driver that names the target GPU, then reads the cubin
with the ``cuobjdump`` shipped in the triton wheel: registers, local memory (spill)
bytes per thread, shared memory, how the dots lowered and the PTX size.

``compile_all`` runs the compiles in worker processes (``python -m
tritonep.kernels.aot ITEMS.json OUT.jsonl``) in which Triton is *not* interpreting,
so it may be called from a process that is; ``tritonep.compile_check`` drives it.
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
import warnings
from concurrent.futures import ThreadPoolExecutor

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


def compile_all(launches: list, archs, jobs: int = 1) -> list:
    """Rows for every (launch, configuration, arch), in that order, compiled by
    ``jobs`` worker processes in which Triton is not interpreting (this process may
    be). A compiler that crashes its process (an assertion in Triton's C++ aborts
    it) costs only that row, reported as its error; the worker is restarted after it."""
    items = [(l, c, a) for l in launches for c in l["configs"] for a in archs]
    shards = [list(range(i, len(items), max(jobs, 1))) for i in range(min(max(jobs, 1), len(items)))]
    rows: list = [None] * len(items)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton >= 3.9 warns without it; 1 is its default
    with tempfile.TemporaryDirectory() as d, ThreadPoolExecutor(len(shards) or 1) as pool:
        list(pool.map(lambda k: _run_shard(items, shards[k], rows, os.path.join(d, str(k)), env), range(len(shards))))
    return rows


def _run_shard(items, todo: list, rows: list, stem: str, env: dict) -> None:
    while todo:
        with open(stem + ".json", "w") as f:
            json.dump([items[i] for i in todo], f)
        out = stem + ".jsonl"
        r = subprocess.run([sys.executable, "-m", "tritonep.kernels.aot", stem + ".json", out], env=env,
                           capture_output=True, text=True)
        done = []
        if os.path.exists(out):
            with open(out) as f:
                done = [json.loads(line) for line in f if line.strip()]
            os.remove(out)
        for i, row in zip(todo, done):
            rows[i] = row
        todo = todo[len(done):]
        if not todo:
            return
        lost = todo.pop(0)  # the item the worker died on
        launch, config, arch = items[lost]
        tail = " ".join((r.stderr.strip().splitlines() or ["no output"])[-1].split())
        rows[lost] = {"kernel": launch["kernel"], "module": launch["module"], "arch": arch, "consts": launch["consts"],
                      "config": config, "error": f"the compiler crashed its process (exit {r.returncode}): {tail}"[:400]}


def main(argv=None) -> int:
    """Worker: compile the (launch, configuration, arch) items of ITEMS.json in order,
    one JSON row per line of OUT.jsonl, flushed as each finishes."""
    p = argparse.ArgumentParser(prog="python -m tritonep.kernels.aot", description=main.__doc__.split("\n\n")[0])
    p.add_argument("items", help="JSON list of [launch, configuration, arch]")
    p.add_argument("out", help="JSON-lines file for the rows")
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("tritonep.kernels.aot: unset TRITON_INTERPRET (the interpreter compiles nothing)")
    why = unavailable()
    if why:
        sys.exit(f"tritonep.kernels.aot: {why}")
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
    with open(a.items) as f:
        items = json.load(f)
    with open(a.out, "w") as out:
        for launch, config, arch in items:
            out.write(json.dumps(compile_launch(launch, config, arch)) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
