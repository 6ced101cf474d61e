"""Every trained parameter's ``.grad`` as a view of one flat buffer, so one kernel
launch (or one captured CUDA graph) writes them all in place."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class GradBuffer:
    """One flat buffer holding the ``.grad`` of each of ``params``, in order.

    params: the parameters; ``slices[i]`` = (offset, numel) of the i-th in ``flat``;
    ``views[i]`` has the i-th parameter's shape.
    """

    def __init__(self, params: Sequence[Tensor], device: torch.device):
        self.params = list(params)
        self.slices: list[tuple[int, int]] = []
        off = 0
        for p in self.params:
            self.slices.append((off, p.numel()))
            off += p.numel()
        self.flat = torch.zeros(off, device=device)
        self.views = [self.flat[o:o + n].view_as(p) for p, (o, n) in zip(self.params, self.slices)]

    def bind(self) -> bool:
        """Make every parameter's ``.grad`` its view of the buffer.

        Returns whether writers must accumulate (some ``.grad`` held values, which
        are kept; the others are zeroed) or may overwrite (every ``.grad`` was None).
        Like ``backward()``, later calls write into the same tensors.
        """
        fresh = []
        for p, view in zip(self.params, self.views):
            g = p.grad
            if g is None:
                fresh.append(view)
            elif g.data_ptr() != view.data_ptr() or g.shape != view.shape or g.stride() != view.stride():
                view.copy_(g)
            p.grad = view
        if len(fresh) == len(self.params):
            return False
        for v in fresh:
            v.zero_()
        return True
