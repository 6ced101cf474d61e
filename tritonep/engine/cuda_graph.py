"""One whole ``ep_step`` captured as a CUDA graph and replayed, for any engine.

T + K steps are many small launches; at the batch sizes EP trains with their
launch cost exceeds their work, so the step is captured once per key (batch size,
options, buffers) and replayed as one graph.

A replay writes the addresses and scalars the capture baked in. Two rules keep it
from writing wrong or freed memory: the caller's key names everything the body
bakes (options, nudge, precision, tiles, parameters' and buffers' addresses), and
``owner`` names the buffers the graph writes: when it changes (a plan rebuilt, a
workspace evicted) every graph is dropped before anything replays (``clear``,
which the buffer caches also call when they evict).
"""
from __future__ import annotations

import traceback
import warnings
from typing import Callable, Hashable, Optional

import torch
from torch import Tensor


class Captured:
    """One captured step: its static inputs and the outputs its replay rewrites."""

    def __init__(self, graph, inputs: tuple, outputs: tuple):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class GraphCache:
    """The captured steps of one net, keyed by the caller. ``off`` is set once a
    capture failed: graphs are an optimisation, so the net then runs without them.
    ``captures`` counts the captures made (for tests and diagnostics)."""

    def __init__(self, limit: int = 8):
        self.limit, self.graphs, self.off = limit, {}, False
        self.owner: Optional[Hashable] = None
        self.captures = 0

    def __len__(self) -> int:
        return len(self.graphs)

    def clear(self) -> None:
        """Drop every graph (their buffers are about to be freed or replaced)."""
        self.graphs.clear()

    def run(self, key, owner: Hashable, inputs: tuple[Tensor, ...], body: Callable, grads: Tensor) -> Optional[tuple]:
        """Replay the graph of ``body(*inputs)`` for ``key`` (capturing it on first use)
        with the current values of ``inputs``; returns body's outputs (tensors cloned),
        or None, with a warning carrying the traceback, if capture failed.

        owner: the identity of the buffers the body writes (a changed one drops every
        graph first). grads: the flat buffer behind every ``.grad`` the body adds
        into (bound beforehand). The warm-up runs before a capture add into it too,
        so it is restored whether the capture succeeds or fails: afterwards ``.grad``
        holds what one eager step leaves (the caller runs that step on failure)."""
        if owner != self.owner:
            self.clear()
            self.owner = owner
        cap = self.graphs.get(key)
        if cap is None:
            if len(self.graphs) >= self.limit:
                self.clear()
            saved = grads.clone()
            try:
                cap = self._capture(inputs, body)
            except Exception as e:
                grads.copy_(saved)
                warnings.warn(f"tritonep: CUDA graph capture failed ({type(e).__name__}: {e}); running the Triton "
                              f"kernels without graphs from now on. Traceback:\n{traceback.format_exc()}",
                              RuntimeWarning, stacklevel=4)
                self.off = True
                return None
            grads.copy_(saved)
            self.graphs[key] = cap
            self.captures += 1
        for static, v in zip(cap.inputs, inputs):
            static.copy_(v)
        cap.graph.replay()
        return tuple(o.clone() if isinstance(o, Tensor) else o for o in cap.outputs)

    @staticmethod
    def _capture(inputs, body) -> Captured:
        static = tuple(v.clone() for v in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # compiles the kernels and warms cuBLAS/cuDNN outside the capture
            for _ in range(2):
                body(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = body(*static)
        return Captured(graph, static, tuple(outputs))
