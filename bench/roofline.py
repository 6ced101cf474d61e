"""A static roofline of one ``ep_step`` on the Triton path: per kernel, the FLOPs and
the bytes it must move, and the time floor on an H100 and an H200 at published peak
rates, so a first GPU run shows at once how far each kernel is from its floor.

    python bench/roofline.py [--batch 500] [--sizes 784,512,512,10] [--T 10] [--K 10] [--json OUT]

Counts follow the kernels (``tritonep.kernels``), for a chain net with a softmax
readout and the FRE rule:

- ``drive``: layer 1's input drive ``x @ W0^T`` (cuBLAS), once per step call;
- ``relax_step``: one launch per step; T free steps (the first reads no states, so
  only its drive and activation count) and K nudged steps (each recomputes the
  softmax error and projects it back);
- ``readout``: logits and error of the free phase;
- ``update``: every link's ``(A_nudged - A_free)^T C_free`` and the bias sums
  (positive nudging: two distinct frames).

Bytes are the compulsory DRAM traffic: every operand read once and every output
written once per launch (frames, packed weights, the drive); re-reads that L2 serves
are not counted, so the floor is a lower bound. Operands are fp32 (packed weights
bf16 with ``--precision bf16``). The floor is max(FLOPs / peak, bytes / bandwidth)
and leaves out the launch cost (a few microseconds per launch: ``launches``), which
CUDA graphs hide.

Peak rates, dense (no sparsity), SXM parts, from NVIDIA's H100 and H200 datasheets:
FP32 (CUDA cores; what ``"ieee"`` dots run on) 67 TFLOP/s, TF32 tensor cores 494.7,
BF16 tensor cores 989.4; HBM 3.35 TB/s (H100) and 4.8 TB/s (H200).
"""
from __future__ import annotations

import argparse
import json

PEAKS = {  # TFLOP/s by operand precision, TB/s
    "H100 SXM": {"ieee": 67.0, "tf32": 494.7, "bf16": 989.4, "bandwidth": 3.35},
    "H200 SXM": {"ieee": 67.0, "tf32": 494.7, "bf16": 989.4, "bandwidth": 4.8},
}
HEADLINE = dict(sizes=(784, 512, 512, 10), batch=500, T=10, K=10)


def kernels(sizes=HEADLINE["sizes"], batch=HEADLINE["batch"], T=HEADLINE["T"], K=HEADLINE["K"],
            precision="ieee") -> dict:
    """Per kernel of one ``ep_step``: launches, FLOPs and compulsory bytes, summed over
    its launches. ``sizes``: input, hidden..., classes (a chain net, softmax readout)."""
    n_in, hidden, C = sizes[0], list(sizes[1:-1]), sizes[-1]
    B, f32 = batch, 4
    w_bytes = 2 if precision == "bf16" else 4
    N = sum(hidden)  # frame width
    top = hidden[-1]
    # terms of the dynamics: each hidden link forward (W) and back (gamma W^T)
    links = [(hidden[i], hidden[i + 1]) for i in range(len(hidden) - 1)]
    term_macs = 2 * sum(a * b for a, b in links)  # per sample per step
    term_weights = 2 * sum(a * b for a, b in links)  # packed elements (each link twice: W and gamma W^T)
    softmax_macs = 2 * top * C  # logits, then the error back through M_f
    frames = 2 * B * N * f32  # read one frame, write the next
    drive = B * hidden[0] * f32
    out = {}
    out["drive"] = dict(launches=1, flops=2 * B * n_in * hidden[0],
                        bytes=(B * n_in + n_in * hidden[0] + B * hidden[0]) * f32, precision=precision)
    step = dict(flops=2 * B * term_macs + 8 * B * N, bytes=frames + drive + term_weights * w_bytes)
    first = dict(flops=8 * B * N, bytes=B * N * f32 + drive)  # zero states: drive + activation only
    nudged = dict(flops=step["flops"] + 2 * B * softmax_macs + 6 * B * C,
                  bytes=step["bytes"] + (2 * top * C + B * C) * f32)
    out["relax_step"] = dict(launches=T + K, flops=first["flops"] + (T - 1) * step["flops"] + K * nudged["flops"],
                             bytes=first["bytes"] + (T - 1) * step["bytes"] + K * nudged["bytes"],
                             precision=precision)
    out["readout"] = dict(launches=1, flops=2 * B * top * C + 6 * B * C,
                          bytes=(B * top + top * C + 3 * B * C) * f32, precision=precision)
    trained = [(n_in, hidden[0])] + links  # (pre, post) of each trained link
    params = sum(a * b for a, b in trained) + sum(hidden[1:])
    out["update"] = dict(launches=1, flops=sum(2 * B * a * b + B * b for a, b in trained),
                         bytes=(2 * B * N + B * n_in + params) * f32, precision=precision)  # nudged, free
    return out


def floors(table: dict) -> dict:
    """Each kernel's time floor (seconds) per GPU of ``PEAKS``, and the whole step's."""
    res = {}
    for gpu, peak in PEAKS.items():
        per = {}
        for name, k in table.items():
            compute = k["flops"] / (peak[k["precision"]] * 1e12)
            memory = k["bytes"] / (peak["bandwidth"] * 1e12)
            per[name] = dict(floor_s=max(compute, memory), compute_s=compute, memory_s=memory,
                             bound="compute" if compute > memory else "memory")
        per["ep_step"] = dict(floor_s=sum(v["floor_s"] for v in per.values()))
        res[gpu] = per
    return res


def roofline(precisions=("ieee", "tf32"), **shape) -> dict:
    """Counts and floors at ``shape`` (default: the headline net) for each precision."""
    shape = {**HEADLINE, **shape}
    return {"shape": {k: list(v) if isinstance(v, tuple) else v for k, v in shape.items()},
            "peaks": PEAKS, **{p: {"kernels": (t := kernels(precision=p, **shape)), "floors": floors(t)}
                               for p in precisions}}


def table(r: dict, measured: dict | None = None) -> str:
    """The roofline as text, floors per launch (the ``ep_step`` row: the whole step).
    ``measured``: {(precision, kernel): seconds per launch} printed beside them, with
    their ratio to the H100 floor."""
    lines = []
    gpus = list(PEAKS)
    for p in (k for k in r if k not in ("shape", "peaks")):
        lines.append(f"precision {p}, shape {r['shape']}")
        lines.append(f"  {'kernel':<11} {'launches':>8} {'GFLOP':>8} {'MB':>8} "
                     + " ".join(f"{g + ' us/launch':>18}" for g in gpus) + f" {'measured us':>12} {'x H100 floor':>12}")
        for name, k in list(r[p]["kernels"].items()) + [("ep_step", None)]:
            n = k["launches"] if k else 1
            fl = [r[p]["floors"][g][name]["floor_s"] * 1e6 / n for g in gpus]
            m = (measured or {}).get((p, name))
            ms = f"{m * 1e6:>12.1f} {m * 1e6 / fl[0]:>12.1f}" if m else f"{'-':>12} {'-':>12}"
            counts = (f"{k['launches']:>8} {k['flops'] / 1e9:>8.3f} {k['bytes'] / 1e6:>8.2f}" if k
                      else f"{'':>8} {'':>8} {'':>8}")
            lines.append(f"  {name:<11} {counts} " + " ".join(f"{v:>18.2f}" for v in fl) + " " + ms)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, HEADLINE["sizes"])))
    ap.add_argument("--batch", type=int, default=HEADLINE["batch"])
    ap.add_argument("--T", type=int, default=HEADLINE["T"])
    ap.add_argument("--K", type=int, default=HEADLINE["K"])
    ap.add_argument("--precision", default="ieee,tf32", help="comma-separated: ieee, tf32, bf16")
    ap.add_argument("--json", help="write the counts and floors here")
    a = ap.parse_args(argv)
    r = roofline(tuple(a.precision.split(",")), sizes=tuple(int(v) for v in a.sizes.split(",")), batch=a.batch,
                 T=a.T, K=a.K)
    print(table(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
