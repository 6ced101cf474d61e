"""What a training run watches for: a collapse, said once when it happens.

A deep EP net can train well for tens of epochs and then, within an epoch or two,
lose what it learned (``mnist-20hl-res`` seed 0: 95.87 % at epoch 37, 12.45 % at
epoch 42). ``Watch`` looks at each epoch's record and reports the first epoch that
fell far from the run's best, with the numbers that preceded it (the free phase's
residual, its growth), so the user knows where the good weights are (the trainer
keeps the best epoch's checkpoint).
"""
from __future__ import annotations

from typing import Optional

# an epoch has collapsed when its test accuracy is this many points under the run's best so
# far, or its training loss both doubled and rose by this much over the lowest so far
ACCURACY_DROP = 10.0
LOSS_RISE = 0.1


class CollapseWarning(UserWarning):
    """A training run lost what it had learned (see ``tritonep.collapse``)."""


class Watch:
    """The run's history as far as a collapse is concerned; ``epoch(rec)`` returns the
    collapse record of the first epoch that collapsed (else None)."""

    def __init__(self, history: Optional[list] = None):
        self.best_acc, self.best_epoch, self.min_loss = None, None, None
        self.collapse: Optional[dict] = None
        for rec in history or []:
            self.epoch(rec)

    def epoch(self, rec: dict) -> Optional[dict]:
        acc, loss = rec["test_acc"], rec["train_loss"]
        hit = None
        if self.collapse is None and self.best_acc is not None and (
                acc < self.best_acc - ACCURACY_DROP
                or (loss > 2 * self.min_loss and loss > self.min_loss + LOSS_RISE) or loss != loss):
            hit = self.collapse = {"epoch": rec["epoch"], "test_acc": acc, "train_loss": loss,
                                   "best_test_acc": self.best_acc, "best_epoch": self.best_epoch,
                                   "min_train_loss": self.min_loss, "residual_max": rec.get("residual_max")}
        if self.best_acc is None or acc > self.best_acc:
            self.best_acc, self.best_epoch = acc, rec["epoch"]
        if loss == loss and (self.min_loss is None or loss < self.min_loss):
            self.min_loss = loss
        return hit


def message(c: dict, history: list, best_checkpoint: Optional[str], cfg: dict) -> str:
    """The warning of a collapse: what fell, from where, what preceded it, where the best weights are."""
    res = [(e["epoch"], e.get("residual_max")) for e in history[-5:] if e.get("residual_max") is not None]
    trend = ", ".join(f"{r:.1e} (epoch {e})" for e, r in res)
    run = f"{cfg.get('preset') or 'run'}, seed {cfg['seed']}"
    where = (f"the best weights (epoch {c['best_epoch']}) are kept in {best_checkpoint}: `tritonep evaluate "
             f"{best_checkpoint}` scores them, `--resume {best_checkpoint}` continues from them"
             if best_checkpoint else "pass --out (or a checkpoint path) to keep the best epoch's weights")
    return (f"training collapsed in epoch {c['epoch']} ({run}): test accuracy {c['test_acc']:.2f} % after a best of "
            f"{c['best_test_acc']:.2f} % (epoch {c['best_epoch']}), training loss {c['train_loss']:.4g} after a "
            f"lowest of {c['min_train_loss']:.4g}" + (f"; largest free-phase residual per epoch: {trend}" if trend else "")
            + f". {where}. `--guard-residual` (config guard_residual) skips the update of any batch whose free "
              "phase has not settled")
