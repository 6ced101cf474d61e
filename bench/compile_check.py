"""The GPU-free compile check as a script: every kernel specialization tritonep
launches, compiled for sm_90 and sm_80 without a GPU, one table row each.

    python bench/compile_check.py                     # the quick grid (what CI checks)
    python bench/compile_check.py --grid full --json bench/results/compile-check-full.json

Prints the table (kernel, arch, registers, spill bytes, shared memory, dot lowering,
PTX size, switches and tiles), a per-kernel summary and what fails the check
(``tritonep.compile_check.problems``); exits 1 if anything does. See
``tritonep.compile_check`` for how the launches are found.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # the launches are recorded under the interpreter (before tritonep imports)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from harness import provenance  # noqa: E402  (bench/ is on sys.path)

from tritonep import compile_check as cc  # noqa: E402
from tritonep.kernels import aot, launch  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", choices=sorted(cc.GRIDS), default="quick")
    p.add_argument("--arch", default="90,80", help="compute capabilities, comma-separated")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", help="write rows, summary and problems here")
    a = p.parse_args(argv)
    why = aot.unavailable()
    if why:
        print(f"compile check skipped: {why}")
        return 0
    t0 = time.perf_counter()
    cases = cc.GRIDS[a.grid]()
    launches = cc.record(cases)
    rows = cc.compile_launches(launches, tuple(int(x) for x in a.arch.split(",")), a.jobs)
    seconds = time.perf_counter() - t0
    bad = cc.problems(rows)
    print(cc.table(rows))
    if not launch.verified_triton() and cc.spilled(rows):
        print(f"\nspills (not faults: the tiles were verified with triton >= "
              f"{'.'.join(map(str, launch.VERIFIED_TRITON))}):\n" + "\n".join(cc.spilled(rows)))
    print(f"\n{len(cases)} driven cases, {len(launches)} launches, {len(rows)} compiles in {seconds:.0f} s")
    for k, v in sorted(cc.summary(rows).items()):
        print(f"  {k:<34} {v['compiled']:>4} compiled, max {v['max_registers']} registers, "
              f"max {v['max_spill_bytes']} B spilled")
    clean = "no compile errors, shared-memory overruns or tf32/bf16 dots off the tensor cores"
    print("\n".join(["", "FAILS:"] + bad) if bad else f"\n{clean}" + (", no spills" if launch.verified_triton() else ""))
    if a.json:
        info = {"grid": a.grid, "archs": a.arch, "cases": [c.label() for c in cases],
                **provenance(torch.device("cpu")), "seconds": round(seconds, 1), "summary": cc.summary(rows),
                "problems": bad, "spilled": cc.spilled(rows), "rows": rows}
        with open(a.json, "w") as f:
            json.dump(info, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
