"""``EPSequential``: an EP net built like an ``nn.Sequential`` (dense or conv)."""
from __future__ import annotations

from torch import nn

from .conv import ConvEPNet
from .net import EPNet


class EPSequential(EPNet):
    """``EPNet`` built like an ``nn.Sequential``: the layers in order, connection
    options as keywords.

    >>> net = EPSequential(Dense(784, 512), Dense(512, 512), Dense(512, 10), feedback=0.01, nudge=0.1)

    Takes ``tritonep.Dense`` or ``nn.Linear`` layers (an ``nn.Linear``'s weights are
    kept); every keyword of ``EPNet`` applies. A stack with conv layers
    (``tritonep.Conv`` or ``nn.Conv2d``) builds a ``tritonep.ConvEPNet`` instead
    (give ``input_shape=(C, H, W)``):

    >>> net = EPSequential(Conv(1, 32, 5, pool=2), Conv(32, 64, 5, pool=2), 10, input_shape=(1, 28, 28))
    """

    def __new__(cls, *layers, **options):
        if any(isinstance(layer, nn.Conv2d) for layer in layers):
            return ConvEPNet(list(layers), **options)
        return super().__new__(cls)

    def __init__(self, *layers: nn.Module, **options):
        super().__init__(list(layers), **options)
