"""tritonep: Equilibrium Propagation for recurrent nets (FRE-RNN), with a
pure-PyTorch reference path and Triton kernels.

    net = tritonep.EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1)
    loss, logits = net.ep_step(x, y)   # fills .grad, like loss.backward()
    optimizer.step()
"""
from .baselines import bp_gradients, bptt_gradients, feedforward
from .conv import ConvEPNet
from .layers import Conv, Dense
from .net import EPNet
from .sequential import EPSequential, from_sequential
from .topology import Link, Topology
from .version import __version__


__all__ = ["EPNet", "EPSequential", "from_sequential", "Dense", "ConvEPNet", "Conv", "Link", "Topology", "bp_gradients",
           "bptt_gradients", "feedforward", "data", "__version__"]


def __getattr__(name):  # tritonep.data on first use, without importing it at start-up
    if name == "data":
        import importlib

        return importlib.import_module(".data", __name__)
    raise AttributeError(f"module 'tritonep' has no attribute {name!r}")
