"""The main job: presets, learning on real MNIST, JSON results, checkpoints."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from tritonep import build, cli, presets, runinfo, train

REPO = Path(__file__).resolve().parents[1]


def test_list_and_unknown_preset(capsys):
    assert cli.main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist-2hl", "mnist-3hl", "mnist-5hl", "mnist-10hl", "mnist-10hl-res", "mnist-20hl-res",
                 "mnist-5hl-asym", "mnist-10hl-asym", "mnist-10hl-agt", "cifar10-10hl-res", "mnist-2hl-bp",
                 "mnist-2hl-pep", "mnist-3hl-pep", "mnist-10hl-asym-fa", "cifar10-5hl-asym-fa"):
        assert f"\n{name} " in "\n" + out, name
    assert cli.main(["train", "mnist-2hll"]) == 2
    assert "unknown preset 'mnist-2hll'; did you mean mnist-2hl" in capsys.readouterr().err


def test_presets_carry_the_paper_settings():
    p = presets.get("mnist-2hl")
    assert (p["hidden"], p["T"], p["K"], p["feedback"], p["nudge"], p["lr"], p["batch_size"], p["epochs"]) == (
        [512, 512], 10, 5, 0.01, 0.1, 1e-3, 500, 50)  # K = 5 as the authors' notebook ran it
    d = presets.get("cifar10-20hl-res")
    assert (d["hidden"], d["T"], d["K"], d["feedback"], d["lr"], d["residual"]) == ([64] * 20, 200, 100, 0.1, 2e-4, 3)
    pep = presets.get("mnist-2hl-pep")
    assert (pep["T"], pep["K"], pep["nudge"], pep["batch_size"], pep["lr"], pep["output"]) == (
        100, 20, 0.5, 20, [0.2, 0.05, 0.005], "neuron")
    for name, cfg in presets.PRESETS.items():  # every preset builds
        net = build.build_net(cfg)
        build.build_optimizer(net, cfg)


def test_bad_cli_input_is_reported(tmp_path, capsys):
    assert cli.main(["train", "mnist-2hl", "--data-dir", str(tmp_path / "none"), "--no-download", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "mnist-2hl", "--T", "0", "--no-download", "--quiet"]) == 2
    assert "T must be a positive int" in capsys.readouterr().err


@pytest.mark.slow
def test_mnist_2hl_learns_real_digits(mnist, tmp_path):
    """The paper's 2HL settings on 10k training images (stratified, seed 0), 2 epochs.
    Measured: 91.3 % test accuracy (full 10k test set); asserted with a margin."""
    cfg = presets.get("mnist-2hl")
    cfg.update(epochs=2, limit_train=10_000)
    out = tmp_path / "run.json"
    res = train.run(cfg, out=out, dataset=mnist, progress=False)
    saved = json.loads(out.read_text())
    assert saved["best_test_acc"] == res["best_test_acc"] >= 88.5
    assert saved["final_test_acc"] == saved["epochs"][-1]["test_acc"]
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    assert set(saved["epochs"][0]) == {"epoch", "train_loss", "train_acc", "test_acc", "seconds", "residual_median",
                                       "residual_max", "settled_fraction"}
    assert saved["epochs"][1]["train_loss"] < saved["epochs"][0]["train_loss"]
    for key in ("T", "K", "batch_size", "lr", "feedback", "nudge", "epochs", "seed"):
        assert saved["config"][key] == cfg[key]
    assert saved["versions"]["torch"] == torch.__version__ and "device" in saved and saved["finished"]
    assert saved["data_source"] == mnist.source and saved["train_size"] == 10_000


@pytest.mark.slow
def test_bp_baseline_on_the_same_architecture(mnist):
    cfg = presets.get("mnist-2hl-bp")
    cfg.update(epochs=2, limit_train=10_000)
    assert train.run(cfg, dataset=mnist, progress=False)["best_test_acc"] >= 89.0


def _small(cfg_name="mnist-2hl", **kw):
    cfg = presets.get(cfg_name)
    cfg.update(hidden=[32, 32], epochs=3, limit_train=600, batch_size=50, **kw)
    return cfg


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(mnist, tmp_path):
    cfg = _small(nudging="random-sign", rule="classic")  # consumes torch's RNG every batch
    whole = train.run(cfg, dataset=mnist, progress=False, checkpoint=tmp_path / "a.ckpt")
    train.run({**cfg, "epochs": 1}, dataset=mnist, progress=False, checkpoint=tmp_path / "b.ckpt")
    resumed = train.run(cfg, dataset=mnist, progress=False, checkpoint=tmp_path / "b.ckpt", resume=tmp_path / "b.ckpt")
    a, b = whole["net"].state_dict(), resumed["net"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["test_acc"] for e in resumed["epochs"]] == [e["test_acc"] for e in whole["epochs"]]
    with pytest.raises(ValueError, match="different run"):
        train.run({**cfg, "hidden": [16, 16]}, dataset=mnist, progress=False, resume=tmp_path / "b.ckpt")


def test_killed_cli_run_resumes_to_the_same_weights(data_dir, tmp_path):
    """A real process killed with SIGKILL after its first checkpoint, then resumed."""
    args = [sys.executable, "-m", "tritonep", "train", "mnist-2hl", "--limit-train", "3000", "--batch-size", "50",
            "--epochs", "3", "--data-dir", str(data_dir), "--no-download", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(args + ["--out", str(tmp_path / "ref.json")], env=env, capture_output=True, timeout=300)
    assert ref.returncode == 0, ref.stderr.decode()
    ckpt = tmp_path / "run.ckpt"
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "run.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = torch.load(ckpt, weights_only=True)["epoch"]  # plain tensors and values: the safe loader reads it
    assert done < 3, "the run finished before it could be killed; make its epochs longer"
    res = subprocess.run(args + ["--out", str(tmp_path / "run.json"), "--resume", str(ckpt)], env=env,
                         capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()
    a = torch.load(tmp_path / "ref.ckpt", weights_only=True)["model"]
    b = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    def history(name):
        return [(e["epoch"], e["train_loss"], e["test_acc"]) for e in json.loads((tmp_path / name).read_text())["epochs"]]

    assert history("run.json") == history("ref.json")  # the resumed JSON holds the epochs run before the kill


@pytest.mark.parametrize("name", ["mnist-10hl-res", "mnist-10hl-agt", "mnist-5hl-asym-fa", "mnist-2hl-pep",
                                  "mnist-3hl-sgd", "cifar10-5hl", "cifar10-10hl-res-bp"])
def test_preset_families_run_end_to_end(name, request, tmp_path):
    cfg = presets.get(name)
    cfg.update(epochs=1, limit_train=200, limit_test=200)
    # MNIST from a data directory (the loader's path); CIFAR-10 where the machine has a copy
    where = (dict(data_dir=request.getfixturevalue("data_dir")) if cfg["dataset"] == "mnist"
             else dict(dataset=request.getfixturevalue("cifar10")))
    res = train.run(cfg, download=False, progress=False, out=tmp_path / "r.json", **where)
    e = json.loads((tmp_path / "r.json").read_text())["epochs"][0]
    assert e["train_loss"] == e["train_loss"] and 0 <= e["test_acc"] <= 100  # finite, in range
    assert res["test_size"] == 200 and res["train_size"] == 200
    # class-stratified subsets, recorded: on CIFAR-10's class-sorted test set too, not 200 airplanes
    test = json.loads((tmp_path / "r.json").read_text())["subsets"]["test"]
    assert test["draw"] == "stratified" and test["seed"] == cfg["seed"] and sum(test["per_class"]) == 200
    full = torch.bincount(request.getfixturevalue("cifar10" if cfg["dataset"] == "cifar10" else "mnist").y_test)
    share = 200 * full.double() / full.sum()  # each class within one image of its share (CIFAR-10: 20 each)
    assert (torch.tensor(test["per_class"]) - share).abs().max() < 1


def _residual_cfg(feedback, **kw):
    cfg = presets.get("mnist-2hl")
    cfg.update({**dict(hidden=[32, 32], epochs=2, limit_train=500, limit_test=200, batch_size=50, feedback=feedback),
                **kw})
    return cfg


def test_each_epoch_records_how_well_the_free_phase_settled(mnist, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = train.run(_residual_cfg(0.01), dataset=mnist, progress=True, out=tmp_path / "ok.json")
    assert not [w for w in seen if issubclass(w.category, train.RelaxationWarning)]
    saved = json.loads((tmp_path / "ok.json").read_text())
    assert saved["residual_threshold"] == train.RESIDUAL_THRESHOLD
    for e in saved["epochs"]:  # FRE's weak feedback: settled to float32 rounding in T=10 steps
        assert 0 < e["residual_median"] <= e["residual_max"] < 1e-5 and e["settled_fraction"] == 1.0
    assert res["net"].last_residual < 1e-5
    err = capsys.readouterr().err
    assert "residual=" in err and "(100% settled)" in err  # the progress bar and the epoch line
    bp = train.run(_residual_cfg(0.01, method="bp", epochs=1), dataset=mnist, progress=False)
    assert bp["epochs"][0]["residual_median"] is None and bp["epochs"][0]["settled_fraction"] is None


def test_a_free_phase_that_never_settles_warns_once(mnist, data_dir, tmp_path, capsys):
    with pytest.warns(train.RelaxationWarning) as seen:
        res = train.run(_residual_cfg(5.0), dataset=mnist, progress=False)
    ours = [w for w in seen if issubclass(w.category, train.RelaxationWarning)]
    assert len(ours) == 1  # two unsettled epochs, one warning
    first = res["epochs"][0]
    assert first["settled_fraction"] == 0.0 and first["residual_median"] > 0.01
    msg = str(ours[0].message)
    assert f"last-step residual {first['residual_median']:.2e}" in msg
    for hint in ("less feedback (now 5.0)", "more free steps (T=10)", "tol"):
        assert hint in msg
    # the CLI: one line on stderr, in the CLI's voice (no Python warning format)
    rc = cli.main(["train", "mnist-2hl", "--hidden", "32,32", "--feedback", "5", "--epochs", "2", "--limit-train",
                   "500", "--limit-test", "200", "--batch-size", "50", "--data-dir", str(data_dir), "--no-download",
                   "--quiet", "--out", str(tmp_path / "fb5.json")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 0
    assert [line for line in err if "warning" in line.lower()] == [
        line for line in err if line.startswith("tritonep train: warning: the free phase has not settled in epoch 1 (mnist-2hl, seed 0)")]
    assert len([line for line in err if "warning" in line.lower()]) == 1 and "RelaxationWarning" not in "".join(err)
    saved = json.loads((tmp_path / "fb5.json").read_text())
    assert all(e["settled_fraction"] == 0.0 for e in saved["epochs"])


def test_results_name_the_commit(mnist, tmp_path):
    res = train.run(_residual_cfg(0.01, epochs=1), dataset=mnist, progress=False, out=tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())["versions"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not run from a git checkout")
    assert saved["commit"] == head.stdout.strip() == res["versions"]["commit"]
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    assert saved["dirty"] == bool(dirty)
    assert runinfo.commit(tmp_path) == {"commit": None, "dirty": None}  # an installed copy: no checkout
