"""The GPU check's first and register steps (``bench/gpu_check.py`` runs both).

    python bench/gpu_smoke.py smoke [--out smoke.json]   # under 30 s: versions, nvidia-smi, the C
                                                          # compiler, one tiny and one autotuned launch
    python bench/gpu_smoke.py stats [--out kernels.json]  # registers and spills of every compiled kernel

``smoke`` fails fast (rc != 0) when the toolchain cannot run a kernel at all, so a
broken machine costs seconds, not the whole check. ``stats`` runs the headline net's
``ep_step`` at ieee and tf32 and reads each kernel Triton compiled in this process
(name, registers, spills, warps, shared memory): the GPU's own numbers beside the
ahead-of-time ones of ``bench/compile_check.py``. Without CUDA both run the same
code in Triton's interpreter (``--dry-run`` of the check), where ``stats`` finds no
compiled kernels.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"


@triton.jit
def _add_one(x_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(x_ptr + i, tl.load(x_ptr + i, mask=i < n) + 1.0, mask=i < n)


def compilers() -> dict:
    """The C compilers Triton may use for its launcher (``$CC``, else cc/gcc/clang on PATH)."""
    found = {c: shutil.which(c) for c in ("cc", "gcc", "clang")}
    return {"CC": os.environ.get("CC"), **found, "any": bool(os.environ.get("CC") or any(found.values()))}


def nvidia_smi() -> str:
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"nvidia-smi not run: {e}"


def smoke() -> dict:
    from tritonep import EPNet

    info = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0], "device": torch.cuda.get_device_name(0) if CUDA else "cpu",
            "compilers": compilers()}
    print(json.dumps(info), flush=True)
    print(nvidia_smi(), flush=True)
    t = time.perf_counter()
    x = torch.zeros(1000, device=DEVICE)
    _add_one[(triton.cdiv(1000, 256),)](x, 1000, BLOCK=256)
    assert float(x.sum()) == 1000.0, "tiny kernel computed a wrong sum"
    info["tiny_launch_s"] = time.perf_counter() - t
    print(f"tiny kernel: ok in {info['tiny_launch_s']:.2f} s (compile included)", flush=True)
    # one ep_step through the library's kernels (autotuned on CUDA) against the reference
    t = time.perf_counter()
    torch.manual_seed(0)
    x, y = torch.rand(37, 50, device=DEVICE), torch.randint(0, 10, (37,), device=DEVICE)
    ref = EPNet([50, 40, 10], T=5, K=3, backend="torch").to(DEVICE)
    tri = EPNet([50, 40, 10], T=5, K=3, backend="triton", precision="ieee", cuda_graph=False).to(DEVICE)
    tri.load_state_dict(ref.state_dict())
    ref.ep_step(x, y)
    tri.ep_step(x, y)
    err = max(float((a.grad - b.grad).abs().max()) for a, b in zip(ref.parameters(), tri.parameters()))
    info["ep_step_launch_s"], info["ep_step_max_grad_diff"] = time.perf_counter() - t, err
    print(f"ep_step (autotuned on CUDA): max |grad diff| vs reference {err:.2e} in "
          f"{info['ep_step_launch_s']:.2f} s", flush=True)
    assert err < 1e-4, f"Triton ep_step disagrees with the reference: max |grad diff| {err:.2e}"
    return info


def compiled_kernels() -> list[dict]:
    """Every kernel Triton compiled in this process for tritonep: name, registers,
    spills, warps, shared memory. Reads the JIT caches, whose layout differs by
    Triton version (``cache`` in 3.1, ``device_caches`` later)."""
    from tritonep.kernels import common, conv, relax, update

    rows = []
    for mod in (relax, update, conv, common):
        for name, fn in vars(mod).items():
            if not isinstance(fn, triton.runtime.jit.JITFunction):
                continue
            caches = getattr(fn, "device_caches", None)
            per_device = [c[0] for c in caches.values()] if caches else list(getattr(fn, "cache", {}).values())
            for cache in per_device:
                for k in cache.values():
                    if hasattr(k, "_init_handles"):
                        k._init_handles()  # registers and spills are read when the kernel is loaded
                    md = k.metadata
                    get = (lambda a: md.get(a)) if isinstance(md, dict) else (lambda a: getattr(md, a, None))
                    rows.append({"module": mod.__name__.rsplit(".", 1)[-1], "kernel": name,
                                 "n_regs": getattr(k, "n_regs", None), "n_spills": getattr(k, "n_spills", None),
                                 "num_warps": get("num_warps"), "shared": get("shared")})
    return rows


def stats() -> dict:
    from tritonep import EPNet

    torch.manual_seed(0)
    x, y = torch.rand(500, 784, device=DEVICE), torch.randint(0, 10, (500,), device=DEVICE)
    if not CUDA:
        x, y = x[:19, :20], y[:19]
    sizes = [784, 512, 512, 10] if CUDA else [20, 24, 24, 10]
    for precision in ("ieee", "tf32"):
        net = EPNet(sizes, T=10, K=10, feedback=0.01, nudge=0.1, backend="triton", precision=precision,
                    cuda_graph=False).to(DEVICE)
        net.ep_step(x, y)
    rows = compiled_kernels()
    for r in rows:
        print(json.dumps(r), flush=True)
    spilled = [r for r in rows if r["n_spills"]]
    print(f"{len(rows)} compiled kernels, {len(spilled)} with spills", flush=True)
    return {"kernels": rows, "with_spills": len(spilled)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("smoke", "stats"))
    ap.add_argument("--out", default=None, help="write the result here as JSON")
    args = ap.parse_args(argv)
    result = smoke() if args.what == "smoke" else stats()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
