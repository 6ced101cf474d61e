"""Triton kernels of tritonep, installed as ``tritonep.kernels``.

- ``relax``: one synchronous step of every state layer in one launch (all
  incoming links, bias, nudge and activation fused), and the softmax readout.
- ``update``: every trained link's contrastive update (and bias) in one launch,
  written into ``.grad``.
- ``conv``: the fused epilogue of a conv state layer (bias, feedback, unpooled
  nudge, activation, max-pooling with indices) in one pass.
- ``launch``: how each is launched: its tiles, autotuning on CUDA (over spaces
  the compile check shows spill-free) and a recorder of every specialization
  launched.
- ``aot``: ahead-of-time compilation of recorded launches for sm_90 / sm_80
  without a GPU (registers, spills, shared memory, dot lowering); see
  ``tritonep.compile_check``.
- ``common``: what they share: activation and nudge codes, the layout of every
  int32 table (one constant per column, plain ints for the Python table builder)
  and the ``@triton.jit`` helpers (rho, weight loads, dots, table-row readers).

``tritonep.reference`` is the specification they match; the Triton engines in
``tritonep.engine`` build their tables (with ``common``'s layout constants) and
launch them. Set ``TRITON_INTERPRET=1`` before importing them to run on CPU in
Triton's interpreter (slow; for tests).
"""
