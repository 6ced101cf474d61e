"""Checkpoints load without running code, old ones still resume, and a bad file is one
clear line (exit status 2) that overwrites nothing."""
import random

import numpy as np
import pytest
import torch

from tritonep import checkpoint, cli, presets, train
from tritonep.cli import analyze


def _small(name="mnist-2hl", **kw):
    cfg = presets.get(name)
    cfg["preset"] = name
    cfg.update({**dict(hidden=[16, 16], epochs=2, limit_train=300, limit_test=100, batch_size=50,
                       nudging="random-sign"), **kw})
    return cfg


class Payload:
    """What a crafted checkpoint carries: unpickling it writes a file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def save_like_0_1_0(path, *, net, optimizer, epoch, history, config, world_size=1):
    """A checkpoint as tritonep 0.1.0 wrote it: numpy's RNG state as numpy's own tuple
    (a numpy array inside), which torch's weights-only loader refuses by default."""
    rng = {"torch": torch.get_rng_state(), "cuda": None, "python": random.getstate(), "numpy": np.random.get_state()}
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "rng": rng,
                "history": history, "config": config, "world_size": world_size}, path)


def test_a_checkpoint_holds_only_tensors_and_plain_values(mnist, tmp_path):
    train.run(dict(_small(), epochs=1), dataset=mnist, progress=False, checkpoint=tmp_path / "a.ckpt")
    ck = torch.load(tmp_path / "a.ckpt", weights_only=True)  # torch's own safe loader, no allow-list
    assert set(ck) == set(checkpoint.KEYS) and ck["epoch"] == 1
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "a.ckpt") == []


def test_a_checkpoint_of_0_1_0_still_resumes_to_the_same_weights(mnist, tmp_path):
    cfg = _small()
    whole = train.run(cfg, dataset=mnist, progress=False)
    first = train.run(dict(cfg, epochs=1), dataset=mnist, progress=False, checkpoint=tmp_path / "new.ckpt")
    # the state the new file holds, written the old way (the RNG states are those after epoch 1)
    ck = checkpoint.load(tmp_path / "new.ckpt")
    checkpoint.set_rng_state(ck["rng"])
    opt = torch.optim.Adam(first["net"].parameters())
    opt.load_state_dict(ck["optimizer"])
    save_like_0_1_0(tmp_path / "old.ckpt", net=first["net"], optimizer=opt, epoch=1, history=ck["history"],
                    config=ck["config"])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "old.ckpt")  # numpy's names
    torch.manual_seed(123)  # resuming restores the RNGs from the file, whatever they are now
    np.random.seed(123)
    resumed = train.run(cfg, dataset=mnist, progress=False, resume=tmp_path / "old.ckpt")
    a, b = whole["net"].state_dict(), resumed["net"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["test_acc"] for e in resumed["epochs"]] == [e["test_acc"] for e in whole["epochs"]]


@pytest.fixture
def bad_files(mnist, tmp_path):
    """name -> a file that is not a checkpoint this run can resume from."""
    good = tmp_path / "good.ckpt"
    train.run(dict(_small(), epochs=1), dataset=mnist, progress=False, checkpoint=good)
    other = tmp_path / "other.ckpt"
    train.run(dict(_small("mnist-5hl", hidden=[16] * 5), epochs=1), dataset=mnist, progress=False, checkpoint=other)
    files = {"crafted": tmp_path / "crafted.ckpt", "truncated": tmp_path / "truncated.ckpt",
             "text": tmp_path / "notes.txt", "state_dict": tmp_path / "weights.pt", "other preset": other,
             "missing": tmp_path / "nowhere.ckpt"}
    torch.save({"model": Payload(tmp_path / "ran"), "epoch": 1}, files["crafted"])
    files["truncated"].write_bytes(good.read_bytes()[:2000])
    files["text"].write_text("epoch 3\nloss 0.1\n")
    torch.save(torch.nn.Linear(3, 2).state_dict(), files["state_dict"])
    return files


WHY = {"crafted": "refused, it holds Python objects a checkpoint never contains (builtins.exec)",
       "truncated": "unreadable, corrupt or not a torch checkpoint", "text": "unreadable, corrupt",
       "state_dict": "not a tritonep training checkpoint (no model, optimizer",
       "other preset": "was written by a different run (preset mnist-5hl): hidden [16, 16, 16, 16, 16] there, "
                       "[16, 16] here", "missing": "no such file"}


def test_a_bad_checkpoint_is_one_line_exit_2_and_nothing_is_overwritten(bad_files, data_dir, tmp_path, capsys):
    out, ckpt = tmp_path / "run.json", tmp_path / "run.ckpt"
    out.write_text('{"kept": true}')
    ckpt.write_bytes(b"an earlier checkpoint")
    for name, path in bad_files.items():
        rc = cli.main(["train", "mnist-2hl", "--hidden", "16,16", "--limit-train", "300", "--epochs", "2",
                       "--data-dir", str(data_dir), "--no-download", "--quiet", "--out", str(out),
                       "--resume", str(path)])
        err = capsys.readouterr().err
        assert rc == 2, name
        assert err.count("\n") == 1 and err.startswith(f"tritonep train: error: checkpoint {path}"), err
        assert WHY[name] in err, err
        assert out.read_text() == '{"kept": true}' and ckpt.read_bytes() == b"an earlier checkpoint", name
    assert not (tmp_path / "ran").exists()  # the crafted file's code never ran
    for name in ("crafted", "text"):  # analysing a checkpoint loads it the same way
        assert analyze.main(["dynamics", "--checkpoint", str(bad_files[name]), "--out", str(tmp_path / "an")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and WHY[name] in err
    assert not (tmp_path / "ran").exists()


def test_another_data_set_is_refused_before_any_data_is_read(mnist, tmp_path, capsys):
    ck = tmp_path / "mnist.ckpt"
    train.run(dict(_small("mnist-5hl", hidden=[8] * 5), epochs=1), dataset=mnist, progress=False, checkpoint=ck)
    empty = tmp_path / "empty"  # holds no CIFAR-10: the checkpoint is the first thing checked
    empty.mkdir()
    rc = cli.main(["train", "cifar10-5hl", "--hidden", "8,8,8,8,8", "--data-dir", str(empty), "--no-download",
                   "--quiet", "--resume", str(ck)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"checkpoint {ck} was written by a different run (preset mnist-5hl): dataset 'mnist' there, " \
           f"'cifar10' here" in err


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), 0.1)
    checkpoint.save(path, net=net, optimizer=opt, epoch=1, history=[], config={}, world_size=1)
    before = path.read_bytes()

    def dies(obj, f, *a, **k):
        open(f, "wb").write(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, net=net, optimizer=opt, epoch=2, history=[], config={}, world_size=1)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]
