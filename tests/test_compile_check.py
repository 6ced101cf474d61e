"""The GPU-free compile check (``tritonep.compile_check``, ``kernels.aot``): every
kernel specialization the library launches compiles for sm_90 and sm_80 with no
spills, within shared memory, and with tf32/bf16 dots on tensor cores; the
recorder sees what the library launches; ``precision="auto"`` follows torch."""
import pytest
import torch

from tritonep import EPNet, compile_check as cc
from tritonep.engine.backend import interpreting
from tritonep.engine.dense_triton import Blocks, default_blocks
from tritonep.kernels import aot, launch, relax, update
from tritonep.options import kernel_precision

WHY = aot.unavailable()
needs_nvidia = pytest.mark.skipif(bool(WHY), reason=f"no GPU compile check here: {WHY}")
# recording drives the kernels in the interpreter (on a GPU machine: python bench/compile_check.py)
records = pytest.mark.skipif(not interpreting(), reason="records launches under TRITON_INTERPRET=1")
DEVICE = "cpu" if interpreting() else "cuda"


@pytest.fixture(scope="module")
def quick():
    """(launches, rows) of the quick grid, compiled for sm_90 and sm_80."""
    launches = cc.record(cc.GRIDS["quick"]())
    return launches, cc.compile_launches(launches, (90, 80))


@records
@needs_nvidia
def test_every_launched_specialization_compiles_well(quick):
    launches, rows = quick
    assert rows and len(rows) == 2 * sum(len(l["configs"]) for l in launches)
    assert cc.problems(rows) == []
    # what the table reports is what a GPU would see
    by = {(r["kernel"], r["arch"], r["consts"].get("PRECISION")): r for r in rows if r["dots"] != "none"}
    assert by[("_relax_step_kernel", 90, "tf32")]["dots"] in ("wgmma", "mma")
    assert by[("_update_kernel", 80, "bf16")]["dots"] == "mma"  # no wgmma before sm_90
    assert by[("_relax_step_kernel", 90, "ieee")]["dots"] == "fma"  # "ieee" stays off the tensor cores
    assert all(r["registers"] <= 255 and r["ptx_bytes"] > 0 for r in rows)


@records
@needs_nvidia
def test_the_check_fails_a_kernel_the_gpu_rejects(quick):
    """A readout with BLOCK_K = 4 runs in the interpreter; a GPU's dots need K >= 8
    (triton >= 3.9; K >= 16 before)."""
    launches, _ = quick
    readout = next(l for l in launches if l["kernel"] == "_readout_kernel")
    bad = dict(readout, configs=[dict(BLOCK_B=32, BLOCK_K=4, num_warps=4)])
    rows = cc.compile_launches([bad], (90,), jobs=1)
    assert "K >=" in rows[0]["error"]
    assert any("does not compile" in p for p in cc.problems(rows))


def test_problems_names_each_fault():
    ok = dict(kernel="_relax_step_kernel", arch=90, consts={"PRECISION": "tf32"}, config={"BLOCK_B": 64},
              error="", registers=200, local_bytes=0, stack_bytes=0, shared=1024, shared_limit=232448,
              dots="wgmma", ptx_bytes=1)
    assert cc.problems([ok], spills=True) == []
    faults = {"spills": dict(stack_bytes=16), "shared memory": dict(shared=300000),
              "not tensor cores": dict(dots="fma"), "does not compile": dict(error="CompilationError: K >= 16")}
    for what, change in faults.items():
        (line,) = cc.problems([{**ok, **change}], spills=True)
        assert what in line and "_relax_step_kernel sm_90 tf32" in line
    # before the triton release the tiles were verified with, spills are listed, not faults
    assert cc.problems([{**ok, "stack_bytes": 16}], spills=False) == []
    assert cc.spilled([{**ok, "stack_bytes": 16}]) == ["_relax_step_kernel sm_90 tf32 [] (BB=64): 16 B spilled"]


@records
def test_recording_sees_cuda_tiles_and_every_candidate():
    """While recording, the engines launch with CUDA's tiles, and each launch lists
    the default configuration first, then the autotuning candidates its switches keep."""
    launches = cc.record([cc.Case("mnist-2hl", "tf32"), cc.Case("mnist-2hl", "ieee")])
    steps = [l for l in launches if l["kernel"] == "_relax_step_kernel"]
    for l in steps:
        prec = l["consts"]["PRECISION"]
        assert l["configs"][0] == relax.cuda_tiles(prec)
        want = [c for c in relax.STEP_SPACE.candidates(l["consts"]) if c != l["configs"][0]]
        assert l["configs"][1:] == want
        assert l["consts"]["BLOCK_N"] == Blocks().relax_n
    assert {l["consts"]["PRECISION"] for l in steps} == {"ieee", "tf32"}
    ups = [l for l in launches if l["kernel"] == "_update_kernel"]
    assert {l["consts"]["ACCUMULATE"] for l in ups} == {False, True}
    assert all(l["configs"][0] == update.cuda_tiles(l["consts"]["PRECISION"]) for l in ups)
    # outside recording, CPU launches keep the interpreter's tiles
    assert default_blocks(torch.device("cpu"), "tf32") == default_blocks(torch.device("cpu"), "ieee")
    assert not launch.as_cuda(torch.device("cpu"))


def test_autotuning_spaces_keep_only_each_precisions_tiles():
    # (before triton 3.9 only 4-warp tiles: triton 3.1 aborts on some 8-warp tensor-core tiles)
    old = not launch.verified_triton()
    for prec, tiles in relax.STEP_TILES.items():
        kept = relax.STEP_SPACE.candidates({"PRECISION": prec})
        assert {(c["BLOCK_B"], c["BLOCK_K"], c["num_warps"]) for c in kept} == {t for t in tiles if t[2] == 4 or not old}
    for prec, tiles in update.UPDATE_TILES.items():
        kept = update.UPDATE_SPACE.candidates({"PRECISION": prec})
        assert {(c["BLOCK_B"], c["num_warps"]) for c in kept} == {t for t in tiles if t[1] == 4 or not old}
    assert update.UPDATE_SPACE.restore == ("G",)  # it may accumulate: timing runs must not add up


def test_precision_auto_follows_torch_matmul_precision():
    net = EPNet([6, 5, 3], backend="triton")
    assert net.precision == "auto"
    before = torch.get_float32_matmul_precision()
    try:
        for torch_p, want in (("highest", "ieee"), ("high", "tf32"), ("medium", "bf16")):
            torch.set_float32_matmul_precision(torch_p)
            assert kernel_precision("auto") == want
            assert net.triton_engine(torch.rand(2, 6, device=DEVICE)).precision == want
        assert kernel_precision("ieee") == "ieee"  # an explicit precision wins
        assert EPNet([6, 5, 3], backend="triton", precision="ieee").triton_engine(
            torch.rand(2, 6, device=DEVICE)).precision == "ieee"
    finally:
        torch.set_float32_matmul_precision(before)
