"""Data-parallel EP: sharding, grad averaging, and 2 real gloo processes against 1."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tritonep import EPNet, cli, data, distributed, presets, train
from tritonep.baselines import feedforward


@pytest.mark.parametrize("kw", [dict(), dict(rule="classic", nudging="symmetric", bias=True),
                                dict(output="neuron", activation="pep_sigmoid", feedback=1.0, rule="classic"),
                                dict(feedback_weights="random", residual=None, agt=0.5, feedback=0.1)])
def test_shard_means_weighted_by_size_equal_the_global_mean(kw):
    """The premise of grad averaging: ep_step's updates are batch means, so shards
    weighted by their share of the batch (here uneven: 7, 6, 6 of 19) add up to
    the whole batch's update. Also holds for BP's gradient."""
    torch.manual_seed(0)
    net = EPNet([20, 16, 16, 12, 5], nudge=0.2, T=6, K=4, **{"feedback": 0.05, **kw}).double()
    x, y = torch.rand(19, 20, dtype=torch.float64), torch.randint(0, 5, (19,))

    def grads(xb, yb, method):
        net.zero_grad(set_to_none=True)
        if method == "ep":
            net.ep_step(xb, yb)
        else:
            net.loss(feedforward(net, xb), net.check_target(yb, xb.shape[0])).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    for method in ("ep", "bp"):
        whole = grads(x, y, method)
        parts = [(grads(xs, ys, method), xs.shape[0]) for xs, ys in zip(torch.tensor_split(x, 3),
                                                                       torch.tensor_split(y, 3))]
        for name, g in whole.items():
            avg = sum(p[name] * (b / 19) for p, b in parts)
            torch.testing.assert_close(avg, g, rtol=1e-10, atol=1e-13, msg=f"{method} {name}")


@pytest.mark.parametrize("n,batch", [(103, 10), (100, 20), (41, 20)])
def test_shards_split_the_same_global_batches(n, batch):
    """Every world size sees Batches' global order; ranks get disjoint parts that
    together make each global batch; a last batch of 1 leaves rank 1 empty."""
    x, y = torch.arange(n * 2.0).reshape(n, 2), torch.arange(n)
    ref = [yb.tolist() for _, yb in data.Batches(x, y, batch, seed=3).epoch(2)]
    for world in (1, 2, 3):
        shards = [list(distributed.ShardedBatches(x, y, batch, rank=r, world_size=world, seed=3).epoch(2))
                  for r in range(world)]
        assert all(len(s) == len(ref) for s in shards)
        for i, glob in enumerate(ref):
            got = [shards[r][i] for r in range(world)]
            assert [b for _, _, b in got] == [len(glob)] * world
            assert sum((yb.tolist() for _, yb, _ in got), []) == glob  # contiguous parts, in rank order
            assert all(torch.equal(xb[:, 0], 2.0 * yb) for xb, yb, _ in got)  # inputs follow their labels
    with pytest.raises(ValueError, match="outside a world of 2"):
        distributed.ShardedBatches(x, y, batch, rank=2, world_size=2)


def test_shard_range_covers_the_test_set():
    for n, world in ((10, 3), (2, 4), (1000, 2)):
        parts = [distributed.Context(r, world, r, torch.device("cpu"), "gloo").shard_range(n) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


def test_launch_errors_are_clear(monkeypatch, capsys, data_dir):
    for k in distributed.ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    args = ["train", "mnist-2hl", "--limit-train", "100", "--data-dir", str(data_dir), "--no-download", "--quiet"]
    assert cli.main(args + ["--distributed"]) == 2
    err = capsys.readouterr().err
    assert "--distributed needs the variables torchrun sets" in err and "missing: RANK, WORLD_SIZE" in err
    assert "torchrun --nproc_per_node=N -m tritonep train PRESET --distributed" in err

    env = dict(RANK="0", WORLD_SIZE="3", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    # checked before joining the group, so this returns instead of waiting for 2 more processes
    assert cli.main(args + ["--distributed", "--batch-size", "50"]) == 2
    assert "world size 3 does not divide the global batch size 50" in capsys.readouterr().err
    assert cli.main(args) == 2
    assert "WORLD_SIZE=3 processes (torchrun?) without --distributed" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(distributed.DistributedSetupError, match="inconsistent launch environment"):
        distributed.env_ranks()
    assert distributed.check_batch(500, 4) == 125


def _torchrun(tmp_path, data_dir, name, extra):
    """Two gloo worker processes on this machine (--standalone: a free port)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tritonep",
           "train", "mnist-2hl", "--distributed", *COMMON, "--data-dir", str(data_dir), "--no-download", "--quiet",
           "--out", str(tmp_path / f"{name}.json"), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count('"best_test_acc"') == 1  # rank 0 alone reports
    return json.loads((tmp_path / f"{name}.json").read_text()), torch.load(tmp_path / f"{name}.ckpt",
                                                                           weights_only=False)


# 401 images, batch 50: the last global batch holds 1 image, so rank 1's share is
# empty; random-sign nudging draws from torch's RNG every step, which must stay in
# step across ranks and through the checkpoint. float64: the comparison is then
# exact to ~1e-12 (in float32, Adam's division by sqrt(v) magnifies the rounding
# differences of the two summation orders on near-zero gradients to ~1e-4).
COMMON = ["--hidden", "32,32", "--dtype", "float64", "--limit-train", "401", "--limit-test", "301",
          "--batch-size", "50", "--nudging", "random-sign"]


def _cfg(epochs):
    cfg = presets.get("mnist-2hl")
    cfg.update(hidden=[32, 32], dtype="float64", limit_train=401, limit_test=301, batch_size=50, nudging="random-sign",
               epochs=epochs, device="cpu", preset="mnist-2hl")
    return cfg


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-9, msg=k)


@pytest.mark.slow
def test_two_ranks_match_one_and_resume_across_world_sizes(mnist, data_dir, tmp_path):
    one = train.run(_cfg(1), dataset=mnist, progress=False, checkpoint=tmp_path / "one.ckpt")
    whole = train.run(_cfg(2), dataset=mnist, progress=False)

    # 2 ranks, per-rank batch 25 == 1 rank, batch 50
    res2, ck2 = _torchrun(tmp_path, data_dir, "two", ["--epochs", "1"])
    _assert_same_weights(one["net"].state_dict(), ck2["model"])
    assert res2["world_size"] == 2 and res2["distributed"]["per_rank_batch"] == 25 and ck2["world_size"] == 2
    assert res2["test_size"] == 301 and res2["train_size"] == 401
    e1, e2 = one["epochs"][0], res2["epochs"][0]
    assert e2["test_acc"] == e1["test_acc"] and e2["train_acc"] == e1["train_acc"]  # sharded counts, summed
    assert e2["train_loss"] == pytest.approx(e1["train_loss"], rel=1e-10)

    # written on 2 ranks, resumed on 1: the same as never stopping
    resumed = train.run(_cfg(2), dataset=mnist, progress=False, resume=tmp_path / "two.ckpt")
    _assert_same_weights(whole["net"].state_dict(), resumed["net"].state_dict())
    assert [e["test_acc"] for e in resumed["epochs"]] == [e["test_acc"] for e in whole["epochs"]]

    # written on 1 rank, resumed on 2
    res3, ck3 = _torchrun(tmp_path, data_dir, "three", ["--epochs", "2", "--resume", str(tmp_path / "one.ckpt")])
    _assert_same_weights(whole["net"].state_dict(), ck3["model"])
    assert [e["test_acc"] for e in res3["epochs"]] == [e["test_acc"] for e in whole["epochs"]]
    assert ck3["epoch"] == 2 and res3["finished"]


def test_grad_buckets_flatten_and_copy_back(tmp_path):
    """The bucket plumbing on a one-process gloo group (its all_reduce is the
    identity), posing as rank 0 of 2: grads come back scaled by the weight, in
    several buckets, and a missing grad comes back as zeros."""
    import torch.distributed as dist

    net = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.Linear(20, 20), torch.nn.Linear(20, 3))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ctx = distributed.Context(0, 2, 0, torch.device("cpu"), "gloo")
        reduce = distributed.GradAllReduce(net.parameters(), ctx, bucket_mb=500 * 4 / 2 ** 20)  # 500 floats
        sizes = [sum(p.numel() for p in members) for members, _ in reduce.buckets]
        assert sizes == [600, 500, 3] and sum(len(m) for m, _ in reduce.buckets) == 6
        net(torch.rand(5, 30)).square().sum().backward()
        want = {n: 0.25 * p.grad.clone() for n, p in net.named_parameters()}
        net[1].bias.grad = None
        want["1.bias"].zero_()
        reduce(0.25)
        for n, p in net.named_parameters():
            torch.testing.assert_close(p.grad, want[n], rtol=0, atol=0, msg=n)
    finally:
        dist.destroy_process_group()
