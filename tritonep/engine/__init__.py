"""The engines that run a net's EP step: for each net, a PyTorch reference (the
specification) and a Triton engine beside it, with one interface (see
``interface`` and ARCHITECTURE.md).

- ``dense_reference`` / ``dense_triton``: ``EPNet``;
- ``conv_reference`` / ``conv_triton``: ``ConvEPNet``;
- ``backend``: which engine runs, the first-use fallback, the per-net state;
- ``cuda_graph``: one captured step, replayed; ``grads``: ``.grad`` as views of one buffer.

Engines read a *spec* the net builds for each call, never the module itself.
"""
