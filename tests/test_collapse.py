"""Nothing lost when a run goes bad: the best epoch's weights are kept beside the last
checkpoint (loadable, named in the results, scored by ``tritonep evaluate``,
resumable), and a collapse is said once, in the results, the progress line and one
warning."""
import json

import pytest
import torch

from tritonep import cli, presets, train
from tritonep.checkpoint import CheckpointError
from tritonep.collapse import CollapseWarning, Watch


def rec(epoch, acc, loss, res=1e-6):
    return {"epoch": epoch, "test_acc": acc, "train_loss": loss, "residual_max": res}


def test_watch_finds_the_first_collapse_only():
    w = Watch()
    assert w.epoch(rec(1, 80.0, 0.5)) is None
    assert w.epoch(rec(2, 90.0, 0.3)) is None
    assert w.epoch(rec(3, 85.0, 0.35)) is None  # a dip is no collapse
    hit = w.epoch(rec(4, 12.5, 2.3, 3e-3))
    assert hit["epoch"] == 4 and hit["best_epoch"] == 2 and hit["best_test_acc"] == 90.0
    assert hit["min_train_loss"] == 0.3 and hit["residual_max"] == 3e-3
    assert w.epoch(rec(5, 10.0, 2.4)) is None and w.collapse == hit  # said once
    # the loss alone: doubled and up by more than 0.1
    assert Watch([rec(1, 90.0, 0.09), rec(2, 89.0, 0.13)]).collapse is None
    assert Watch([rec(1, 90.0, 0.09), rec(2, 85.0, 0.52)]).collapse["epoch"] == 2
    assert Watch([rec(1, 90.0, 0.09), rec(2, 85.0, float("nan"))]).collapse["epoch"] == 2


def small_cfg(**kw):
    cfg = presets.get("mnist-2hl")
    cfg.update({**dict(hidden=[32], T=6, K=3, epochs=4, limit_train=600, limit_test=300, lr=3e-3, batch_size=100,
                       backend="torch", device="cpu"), **kw})
    return cfg


def sabotage(at):
    """An ``on_epoch`` hook that wrecks the weights at the first optimizer step after
    epoch ``at`` (so epoch ``at``'s weights, saved after the hook, are intact)."""
    def hook(record, net, opt):
        if record["epoch"] == at:
            def wreck(optimizer, args, kwargs):
                handle.remove()
                with torch.no_grad():
                    for p in net.parameters():
                        p.copy_(torch.randn_like(p) * 3)

            handle = opt.register_step_post_hook(wreck)
    return hook


def test_a_collapsed_run_says_so_and_keeps_its_best_weights(mnist, tmp_path, capsys):
    out = tmp_path / "run.json"
    with pytest.warns(CollapseWarning, match=r"collapsed in epoch 3 .*best weights \(epoch 2\) are kept in .*best\.ckpt"):
        res = train.run(small_cfg(), out=out, dataset=mnist, progress=True, on_epoch=sabotage(2))
    saved = json.loads(out.read_text())
    acc = [e["test_acc"] for e in saved["epochs"]]
    assert saved["collapse"]["epoch"] == 3 and saved["collapse"]["best_epoch"] == 2
    assert acc[2] < max(acc[:2]) - 10
    assert "COLLAPSED" in capsys.readouterr().err
    best = tmp_path / "run.best.ckpt"
    assert saved["best_checkpoint"] == str(best) and saved["best_epoch"] == max(range(4), key=acc.__getitem__) + 1
    scored = train.evaluate_checkpoint(best, dataset=mnist)
    assert scored["epoch"] == saved["best_epoch"] and scored["test_acc"] == saved["best_test_acc"]
    assert scored["test_size"] == 300
    assert res["best_test_acc"] == saved["best_test_acc"]


def test_best_checkpoint_resumes_and_the_cli_scores_it(mnist, data_dir, tmp_path, capsys):
    out = tmp_path / "run.json"
    cfg = small_cfg(epochs=3)
    with pytest.warns(CollapseWarning):
        train.run(cfg, out=out, dataset=mnist, progress=False, on_epoch=sabotage(1))
    best = tmp_path / "run.best.ckpt"
    saved = json.loads(out.read_text())
    assert saved["best_epoch"] == 1
    # a resumed run continues from the best epoch, and keeps its best file while it is better
    again = train.run({**cfg, "epochs": 2}, out=tmp_path / "again.json", resume=best, dataset=mnist, progress=False)
    assert [e["epoch"] for e in again["epochs"]] == [1, 2]
    assert cli.main(["evaluate", str(best), "--data-dir", str(data_dir), "--no-download"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["epoch"] == 1 and line["test_acc"] == saved["epochs"][0]["test_acc"]
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    assert cli.main(["evaluate", str(bad), "--data-dir", str(data_dir), "--no-download"]) == 2
    assert "bad.ckpt" in capsys.readouterr().err
    with pytest.raises(CheckpointError):
        train.evaluate_checkpoint(bad, dataset=mnist)


def test_resuming_never_replaces_the_best_with_a_worse_epoch(mnist, tmp_path):
    out, ck = tmp_path / "run.json", tmp_path / "run.ckpt"
    cfg = small_cfg(epochs=3)
    with pytest.warns(CollapseWarning):
        train.run(cfg, out=out, dataset=mnist, progress=False, on_epoch=sabotage(2))
    first = json.loads(out.read_text())
    best_bytes = (tmp_path / "run.best.ckpt").read_bytes()
    # epoch 4 continues from the wrecked weights: worse than the best, which must not move
    res = train.run({**cfg, "epochs": 4}, out=out, checkpoint=ck, resume=ck, dataset=mnist, progress=False)
    assert res["epochs"][3]["test_acc"] < first["best_test_acc"]
    assert res["best_epoch"] == first["best_epoch"] and res["collapse"]["epoch"] == 3
    assert (tmp_path / "run.best.ckpt").read_bytes() == best_bytes


def test_the_guard_skips_exactly_the_batches_that_did_not_settle(mnist):
    """guard_residual: a batch whose free phase's residual is not under it gets no update
    (weights untouched when no batch settles); under a loose bound the run is the run
    without a guard, bit for bit."""
    base = small_cfg(epochs=1, limit_train=300)
    plain = train.run(base, dataset=mnist, progress=False)
    loose = train.run({**base, "guard_residual": 1.0}, dataset=mnist, progress=False)
    assert loose["epochs"][0]["guarded"] == 0 and "guarded" not in plain["epochs"][0]
    for p, q in zip(plain["net"].parameters(), loose["net"].parameters()):
        assert torch.equal(p, q)
    # two layers, strong feedback, T=2: every batch far from settled, so nothing is learned
    unsettled = {**base, "hidden": [32, 32], "feedback": 0.5, "T": 2}
    with pytest.warns(train.RelaxationWarning):
        strict = train.run({**unsettled, "guard_residual": 1e-3}, dataset=mnist, progress=False)
    assert strict["epochs"][0]["guarded"] == 3  # 300 images, batches of 100
    assert strict["epochs"][0]["residual_median"] > 1e-3
    from tritonep.build import build_net
    torch.manual_seed(base["seed"])
    untouched = build_net(train.validate(dict(unsettled)))
    for p, q in zip(untouched.parameters(), strict["net"].parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="guard_residual"):
        train.validate({**base, "guard_residual": -1})
