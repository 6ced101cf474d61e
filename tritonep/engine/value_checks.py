"""Value checks of a step's inputs (finite inputs, labels in range) that never make
the host wait for a GPU.

On the host a check reads the values and raises at once. On a CUDA device reading a
value back waits for the device to drain, once per step, which costs a measurable
share of a step that takes a few hundred microseconds. There each failed check is
ORed into a flag computed on the device; the flag is copied to pinned host memory
behind the step, and a later call raises once the copy has landed (a CUDA event
says so without waiting).
``DeferredChecks.flush`` waits and raises at once (``net.check_pending()``; the
trainer calls it each epoch).
"""
from __future__ import annotations

from collections import deque
from typing import Optional

import torch
from torch import Tensor

NONFINITE_INPUT, BAD_LABELS, NONFINITE_TARGET = 1, 2, 4
MESSAGES = {NONFINITE_INPUT: "input contains NaN or infinite values",
            BAD_LABELS: "labels out of range (class indices must lie in [0, C - 1])",
            NONFINITE_TARGET: "targets contain NaN or infinite values"}
RING = 64  # pending checks in flight; the oldest is waited for past this


def deferred(t: Tensor) -> bool:
    """Whether ``t``'s value checks are deferred: reading it would make the host wait
    for a CUDA device (tests stand in for CUDA by replacing this)."""
    return t.is_cuda


def flag(bad: Tensor, code: int) -> Tensor:
    """``bad`` (a 0-dim bool tensor) as an int32 flag: ``code`` where it holds, else 0."""
    return bad.to(torch.int32) * code


class DeferredChecks:
    """One net's deferred checks: a ring of pinned host slots and the checks in
    flight. A call first runs ``raise_ready()`` (raise for an earlier call whose flag
    has landed), then ``add(flag)`` per deferred check."""

    def __init__(self):
        self.host: Optional[Tensor] = None  # (RING,) int32, pinned on CUDA
        self.host_np = None  # a numpy view of ``host``: reading it is no tensor read
        self.pending: deque = deque()  # (slot, check number, event or None)
        self.count = 0

    def add(self, flag: Tensor) -> None:
        """Queue one check's device flag (0-dim int32: a code of ``MESSAGES``, or 0)."""
        if self.host is None:
            self.host = torch.zeros(RING, dtype=torch.int32, pin_memory=flag.is_cuda)
            self.host_np = self.host.numpy()
        if len(self.pending) >= RING:
            self.flush(wait_for=1)
        self.count += 1
        slot = self.count % RING
        self.host[slot].copy_(flag, non_blocking=True)
        event = None
        if flag.is_cuda:
            event = torch.cuda.Event()
            event.record()
        self.pending.append((slot, self.count, event))

    def raise_ready(self) -> None:
        """Raise for the oldest failed check whose flag has reached the host; never waits."""
        while self.pending and (self.pending[0][2] is None or self.pending[0][2].query()):
            self._check(*self.pending.popleft()[:2])

    def flush(self, wait_for: Optional[int] = None) -> None:
        """Wait for the pending flags (the oldest ``wait_for`` of them, default all) and
        raise for the first failed check."""
        n = len(self.pending) if wait_for is None else min(wait_for, len(self.pending))
        for _ in range(n):
            slot, call, event = self.pending.popleft()
            if event is not None:
                event.synchronize()
            self._check(slot, call)

    def _check(self, slot: int, number: int) -> None:
        code = int(self.host_np[slot])
        if code:
            self.pending.clear()
            what = "; ".join(m for c, m in MESSAGES.items() if code & c)
            raise ValueError(f"an earlier call to this net was given bad values: {what} (found on the GPU by value "
                             f"check {number} of {self.count}, reported now so that no step waits for the device). "
                             "That call's results and the .grad it wrote are not meaningful; check the data")
