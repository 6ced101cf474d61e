"""One whole ``ep_step`` captured as a CUDA graph and replayed, for any engine.

T + K steps are many small launches; at the batch sizes EP trains with their
launch cost exceeds their work, so the step is captured once per batch size and
options and replayed as one graph.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor


class Captured:
    """One captured step: its static inputs and the outputs its replay rewrites."""

    def __init__(self, graph, inputs: tuple, outputs: tuple):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


class GraphCache:
    """The captured steps of one net, keyed by the caller (batch size, options, the
    parameters' addresses). ``off`` is set once a capture failed: graphs are an
    optimisation, so the net then runs without them."""

    def __init__(self, limit: int = 8):
        self.limit, self.graphs, self.off = limit, {}, False

    def __len__(self) -> int:
        return len(self.graphs)

    def run(self, key, inputs: tuple[Tensor, ...], body: Callable, grads: Tensor) -> Optional[tuple]:
        """Replay the graph of ``body(*inputs)`` for ``key`` (capturing it on first use)
        with the current values of ``inputs``. ``grads``: the flat buffer that holds
        every ``.grad`` the body accumulates into (bound beforehand): the warm-up runs
        before capture write into it, so it is restored. Returns body's outputs
        (tensors cloned) or None, with a warning, if capture fails."""
        cap = self.graphs.get(key)
        if cap is None:
            if len(self.graphs) >= self.limit:
                self.graphs.clear()
            try:
                cap = self.graphs[key] = self._capture(inputs, body, grads)
            except Exception as e:
                warnings.warn(f"tritonep: CUDA graph capture failed ({type(e).__name__}: {e}); running the Triton "
                              "kernels without graphs", RuntimeWarning, stacklevel=4)
                self.off = True
                return None
        for static, v in zip(cap.inputs, inputs):
            static.copy_(v)
        cap.graph.replay()
        return tuple(o.clone() if isinstance(o, Tensor) else o for o in cap.outputs)

    @staticmethod
    def _capture(inputs, body, grads: Tensor) -> Captured:
        static = tuple(v.clone() for v in inputs)
        saved = grads.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # compiles the kernels and warms cuBLAS/cuDNN outside the capture
            for _ in range(2):
                body(*static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = body(*static)
        grads.copy_(saved)
        return Captured(graph, static, tuple(outputs))
