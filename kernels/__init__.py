"""Triton kernels of tritonep, installed as ``tritonep.kernels``.

Empty for now: the fused relaxation and contrastive-update kernels come with the
kernels issue; ``tritonep.reference`` is the specification they must match.
"""
