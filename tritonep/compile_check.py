"""Do the kernels tritonep launches compile, and compile well, for NVIDIA GPUs? Checked
without a GPU.

``record`` drives the library's own code paths (``ep_step``, ``relax``) on nets
built from the presets, under Triton's CPU interpreter, with the tiles and warps
used on CUDA (``kernels.launch.recording``), and collects every specialization
launched with every configuration a CUDA run may pick (the default tiles and the
autotuning candidates). ``compile_launches`` compiles each for sm_90 and sm_80
through ``tritonep.kernels.aot`` in a process that is not interpreting.
``problems`` lists what fails the check:

- a compile error;
- shared memory over the arch's per-block limit;
- local memory (spills) in any kernel;
- a tf32 or bf16 dot that does not lower to tensor-core instructions (``wgmma`` or
  ``mma``).

Driven runs take shortened phases (T = K = 3: ``steps`` is a runtime argument) and
conv nets a batch of 32 (the batch is specialized only on divisibility by 16, as
the presets' 128 is). Run it as ``python bench/compile_check.py [--grid full]``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from .build import INPUT_SHAPES, build_net
from .engine.backend import interpreting
from .kernels import aot, launch
from .presets import PRESETS, get

# what a tf32 or bf16 dot must lower to (``kernels.aot``'s names): sm_90's wgmma, sm_80's mma
TENSOR_CORE_DOTS = ("wgmma", "mma")


@dataclass(frozen=True)
class Case:
    """One driven configuration: a preset, the Triton precision, and overrides of
    the preset's options (``tol``, ``error``, ``rule``, ``persistent``, ...)."""

    preset: str
    precision: str = "ieee"
    overrides: tuple = ()
    calls: tuple = ("ep_step",)

    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.overrides)
        return f"{self.preset}/{self.precision}" + (f"/{extra}" if extra else "")


PRECISIONS = ("ieee", "tf32", "bf16")


ALTERNATING = (("schedule", "alternating"),)


def _quick() -> list[Case]:
    """The headline net in every precision, with a convergence check and a frozen
    error; P-EP; a residual deep net; the MNIST conv net; the persistent kernel; the
    alternating schedule's kernels (step, with a convergence check, persistent)."""
    cases = [Case("mnist-2hl", p) for p in PRECISIONS]
    cases += [Case("mnist-2hl", "ieee", (("tol", 1e-4), ("check_every", 1), ("error", "frozen")), ("ep_step", "relax")),
              Case("mnist-2hl", "tf32", (("rule", "classic"), ("nudging", "symmetric"))),
              Case("mnist-2hl-pep", "ieee"), Case("mnist-10hl-res", "tf32"), Case("mnist-conv", "ieee"),
              Case("mnist-2hl", "ieee", (("persistent", True),))]
    cases += [Case("mnist-10hl-res", "tf32", ALTERNATING), Case("mnist-2hl", "bf16", ALTERNATING),
              Case("mnist-2hl", "ieee", ALTERNATING + (("tol", 1e-4), ("check_every", 1)), ("ep_step", "relax")),
              Case("mnist-2hl", "ieee", ALTERNATING + (("persistent", True),)),
              Case("mnist-2hl", "ieee", ALTERNATING + (("persistent", True), ("error", "dynamic")))]
    return cases


def _full() -> list[Case]:
    """Every EP preset in every precision, with and without a convergence check; the
    other rules, nudgings and errors; the persistent kernel everywhere it applies; the
    dense nets' alternating schedule, per step (with a convergence check) and persistent."""
    cases = []
    for name in sorted(PRESETS):
        cfg = get(name)
        if cfg["method"] != "ep":
            continue
        for p in PRECISIONS if not cfg.get("conv") else ("ieee",):  # conv kernels compute no dots
            cases.append(Case(name, p))
            if not cfg.get("conv"):  # the conv Triton path has no early stopping
                cases.append(Case(name, p, (("tol", 1e-4), ("check_every", 1)), ("ep_step", "relax")))
            cases.append(Case(name, p, (("error", "frozen"), ("rule", "classic" if cfg["rule"] == "fre" else "fre"),
                                        ("nudging", "symmetric"))))
            if not cfg.get("conv"):
                cases.append(Case(name, p, (("persistent", True),)))
                cases.append(Case(name, p, ALTERNATING + (("tol", 1e-4), ("check_every", 1)), ("ep_step", "relax")))
                cases.append(Case(name, p, ALTERNATING))
                cases.append(Case(name, p, ALTERNATING + (("persistent", True),)))
    return cases


GRIDS = {"quick": _quick, "full": _full}


def _drive(case: Case) -> None:
    cfg = get(case.preset)
    over = dict(case.overrides)
    persistent = over.pop("persistent", False)
    cfg.update(backend="triton", precision=case.precision, T=3, K=3, **over)
    torch.manual_seed(0)
    net = build_net(cfg)
    if persistent:
        net.persistent = True
    batch = min(cfg["batch_size"], 32) if cfg.get("conv") else cfg["batch_size"]
    shape = INPUT_SHAPES[cfg["dataset"]] if cfg.get("conv") else (net.sizes[0],)
    x = torch.rand(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    for call in case.calls:
        if call == "ep_step":
            net.ep_step(x, y)
            net.ep_step(x, y)  # into the grads the first wrote: the accumulating update (as CUDA graphs run)
        else:
            net.relax(x)


def record(cases: list[Case]) -> list[dict]:
    """Every distinct launch (``kernels.launch.Launch`` as a dict) that driving
    ``cases`` makes, with the configurations a CUDA run may compile (the kernels are
    recorded, not run). Call it with ``TRITON_INTERPRET=1`` set before tritonep's
    kernels were imported, so the Triton engines accept CPU tensors."""
    if not interpreting():
        raise RuntimeError("compile_check.record drives the kernels in Triton's interpreter: set TRITON_INTERPRET=1 "
                           "before importing tritonep")
    with launch.recording() as rec:
        for case in cases:
            _drive(case)
    return [asdict(l) for l in rec.launches]


def compile_launches(launches: list[dict], archs=(90, 80), jobs: Optional[int] = None) -> list[dict]:
    """Compile the recorded ``launches`` for each arch (``kernels.aot.compile_all``, in
    processes where Triton does not interpret); one row per (launch, configuration, arch)."""
    return aot.compile_all(launches, archs, jobs or os.cpu_count() or 1)


def problems(rows: list[dict], spills: Optional[bool] = None) -> list[str]:
    """What fails the check, one line per row at fault (empty: all good). ``spills``:
    whether a spill is a fault (default: with the triton release the tiles were
    verified with or a newer one, ``kernels.launch.VERIFIED_TRITON``; older releases
    spill a little on them, which ``spilled`` lists)."""
    spills = launch.verified_triton() if spills is None else spills
    bad = []
    for r in rows:
        what = f"{r['kernel']} sm_{r['arch']} {_short(r)}"
        if r["error"]:
            bad.append(f"{what}: does not compile: {r['error']}")
            continue
        if r["shared_limit"] and r["shared"] > r["shared_limit"]:
            bad.append(f"{what}: {r['shared']} B of shared memory, over the {r['shared_limit']} B per block")
        if spills and (r["local_bytes"] or r["stack_bytes"]):
            bad.append(f"{what}: spills ({r['local_bytes']} B local, {r['stack_bytes']} B stack per thread; "
                       f"{r['registers']} registers)")
        if r["consts"].get("PRECISION") in ("tf32", "bf16") and r["dots"] not in TENSOR_CORE_DOTS + ("none",):
            bad.append(f"{what}: {r['consts']['PRECISION']} dots lowered to {r['dots']}, not tensor cores")
    return bad


def spilled(rows: list[dict]) -> list[str]:
    """The rows that spill, one line each (a fault with ``problems`` on a verified triton)."""
    return [f"{r['kernel']} sm_{r['arch']} {_short(r)}: {r['local_bytes'] + r['stack_bytes']} B spilled"
            for r in rows if not r["error"] and (r["local_bytes"] or r["stack_bytes"])]


_SWITCHES = ("ACT", "NUDGE", "HAS_BF", "SKIP_TERMS", "TRACK", "FROM_ZERO", "ALTERNATING", "W_BF16", "RULE",
             "ACCUMULATE", "P", "HAS_G1", "HAS_G2", "WRITE_POOL")


def _short(r: dict) -> str:
    c = r["consts"]
    sw = " ".join(f"{k}={int(c[k])}" for k in _SWITCHES if k in c)
    cfg = " ".join(f"{k.replace('BLOCK_', 'B')}={v}" for k, v in r["config"].items())
    return f"{c.get('PRECISION', '-')} [{sw}] ({cfg})"


def table(rows: list[dict]) -> str:
    """The report: one line per compiled (launch, configuration, arch)."""
    head = f"{'kernel':<26} {'arch':>5} {'regs':>4} {'spill':>5} {'smem':>7} {'dots':>5} {'ptx KB':>6}  switches (tiles)"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["kernel"], r["arch"], _short(r))):
        if r["error"]:
            lines.append(f"{r['kernel']:<26} {r['arch']:>5}  ERROR {r['error'][:80]}  {_short(r)}")
            continue
        lines.append(f"{r['kernel']:<26} {r['arch']:>5} {r['registers']:>4} {r['local_bytes'] + r['stack_bytes']:>5} "
                     f"{r['shared']:>7} {r['dots']:>5} {r['ptx_bytes'] / 1024:>6.0f}  {_short(r)}")
    return "\n".join(lines)


def summary(rows: list[dict]) -> dict:
    """Per kernel and arch: specializations compiled, most registers, most spill bytes."""
    out: dict = {}
    for r in rows:
        if r["error"]:
            continue
        s = out.setdefault(f"{r['kernel']} sm_{r['arch']}", {"compiled": 0, "max_registers": 0, "max_spill_bytes": 0})
        s["compiled"] += 1
        s["max_registers"] = max(s["max_registers"], r["registers"])
        s["max_spill_bytes"] = max(s["max_spill_bytes"], r["local_bytes"] + r["stack_bytes"])
    return out
