"""The layer types of an EP stack, and how user modules become them: ``Dense``,
``Conv``, conv architecture strings (``parse_arch``), and the conversion of
``nn.Linear`` / ``nn.Conv2d`` / ``nn.MaxPool2d`` entries (their weights kept)."""
from __future__ import annotations

import re
from typing import Optional

import torch
from torch import Tensor, nn


class Dense(nn.Module):
    """A dense layer of the stack: ``out = in @ weight^T (+ bias)``.

    in_features, out_features: widths of the layer it reads and the layer it feeds.
    weight: (out_features, in_features), Glorot-uniform; bias: (out_features,), zeros.
    In an ``EPNet`` the i-th ``Dense`` feeds state layer i+1 (its bias is that
    layer's bias); with ``output="softmax"`` the last one is the readout.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Dense {name} must be a positive int, got {v!r}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> "Dense":
        """A ``Dense`` holding a copy of an ``nn.Linear``'s weight and bias."""
        d = cls(layer.in_features, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            d.weight.copy_(layer.weight)
            if layer.bias is not None:
                d.bias.copy_(layer.bias)
        return d

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv(nn.Conv2d):
    """A conv state layer: ``s = rho(conv2d(in, weight, padding) + bias + feedback)``,
    sent on through a ``pool x pool`` max-pooling (stride ``pool``; 1 = none).

    weight: (out_channels, in_channels, k, k), bias: (out_channels,), PyTorch's
    default ``nn.Conv2d`` initialisation. Stride 1, no dilation, no groups.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, padding: int = 0, pool: int = 2,
                 bias: bool = True):
        for name, v, lo in (("in_channels", in_channels, 1), ("out_channels", out_channels, 1),
                            ("kernel_size", kernel_size, 1), ("padding", padding, 0), ("pool", pool, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"Conv {name} must be an int >= {lo}, got {v!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.pool = pool

    @classmethod
    def from_conv2d(cls, layer: nn.Conv2d) -> "Conv":
        """A ``Conv`` (no pooling) holding a copy of a square, stride-1, zero-padded
        ``nn.Conv2d``'s weights."""
        ok = (layer.stride == (1, 1) and layer.dilation == (1, 1) and layer.groups == 1
              and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
              and layer.kernel_size[0] == layer.kernel_size[1] and layer.padding[0] == layer.padding[1])
        if not ok:
            raise ValueError(f"ConvEPNet takes square stride-1 convolutions with symmetric zero padding, got {layer}")
        c = cls(layer.in_channels, layer.out_channels, layer.kernel_size[0], padding=layer.padding[0], pool=1,
                bias=layer.bias is not None)
        c.load_state_dict(layer.state_dict())
        return c

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pool={self.pool}"


def as_dense(layer) -> Optional[Dense]:
    """A dense stack entry as a ``Dense`` (an ``nn.Linear`` keeps its weights); None for a width."""
    if isinstance(layer, Dense):
        return layer
    if isinstance(layer, nn.Linear):
        return Dense.from_linear(layer)
    if isinstance(layer, int) and not isinstance(layer, bool):
        return None
    raise TypeError(f"EPNet layers must be ints (widths), tritonep.Dense or nn.Linear, got {type(layer).__name__}")


def as_conv_entry(layer):
    """A conv stack entry as ``Conv`` / ``Dense`` / ``("pool", k)`` (from an
    ``nn.MaxPool2d``) / the number of classes (int)."""
    if isinstance(layer, (Conv, Dense)):
        return layer
    if isinstance(layer, nn.Conv2d):
        return Conv.from_conv2d(layer)
    if isinstance(layer, nn.MaxPool2d):
        k, s = layer.kernel_size, layer.stride
        k = k if isinstance(k, int) else k[0]
        s = s if isinstance(s, int) else s[0]
        if layer.kernel_size not in (k, (k, k)) or s != k or layer.padding not in (0, (0, 0)) or layer.ceil_mode \
                or layer.dilation not in (1, (1, 1)):
            raise ValueError(f"ConvEPNet takes max-pooling with stride = kernel, no padding, floor mode; got {layer}")
        return ("pool", k)
    if isinstance(layer, nn.Linear):
        return Dense.from_linear(layer)
    if isinstance(layer, int) and not isinstance(layer, bool) and layer >= 1:
        return layer
    raise TypeError(f"ConvEPNet layers must be tritonep.conv.Conv / nn.Conv2d, nn.MaxPool2d, and a last "
                    f"Dense / nn.Linear (or the number of classes), got {layer!r}")


def parse_arch(spec: str) -> tuple[list[tuple[int, int, int, int]], Optional[int]]:
    """``"32c5-P2-64c5-P2-FC10"`` -> ([(channels, kernel, padding, pool), ...], classes).

    Tokens, ``-``-separated: ``<C>c<k>`` or ``<C>c<k>p<pad>`` a conv layer, ``P<k>`` a
    max-pooling after the conv before it, ``FC<C>`` the readout (last, optional).
    """
    convs: list[list[int]] = []
    classes = None
    for tok in str(spec).split("-"):
        m = re.fullmatch(r"(\d+)c(\d+)(?:p(\d+))?", tok)
        if m and classes is None:
            convs.append([int(m[1]), int(m[2]), int(m[3] or 0), 1])
            continue
        m = re.fullmatch(r"P(\d+)", tok)
        if m and convs and convs[-1][3] == 1 and classes is None:
            convs[-1][3] = int(m[1])
            continue
        m = re.fullmatch(r"FC(\d+)", tok)
        if m and convs and classes is None:
            classes = int(m[1])
            continue
        raise ValueError(f"bad conv architecture {spec!r} at {tok!r}: expected tokens like 32c5, 64c3p1, P2 "
                         f"(after a conv), FC10 (last), e.g. '32c5-P2-64c5-P2-FC10'")
    if not convs:
        raise ValueError(f"conv architecture {spec!r} has no conv layer")
    return [tuple(c) for c in convs], classes
