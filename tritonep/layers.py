"""The layer types of an EP stack, and how user modules become them: ``Dense``,
``Conv``, conv architecture strings (``parse_arch``), and the conversion of
``nn.Linear`` / ``nn.Conv2d`` / ``nn.MaxPool2d`` entries (their weights kept), with
the reason when a conv or a pooling is one the conv engines cannot run."""
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
        ``nn.Conv2d``'s weights (``padding="same"`` with an odd kernel, or ``"valid"``, too)."""
        why = conv2d_refusal(layer)
        if why is not None:
            raise ValueError(f"ConvEPNet cannot take {layer}: {why}")
        c = cls(layer.in_channels, layer.out_channels, layer.kernel_size[0], padding=conv2d_padding(layer), pool=1,
                bias=layer.bias is not None)
        c.load_state_dict(layer.state_dict())
        return c

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pool={self.pool}"


def _pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_padding(layer: nn.Conv2d) -> int:
    """The zero padding on every side of a square stride-1 ``nn.Conv2d`` that
    ``conv2d_refusal`` accepts (``"valid"``: 0; ``"same"``: (k - 1) / 2)."""
    if layer.padding == "valid":
        return 0
    if layer.padding == "same":
        return (layer.kernel_size[0] - 1) // 2
    return layer.padding[0]


def conv2d_refusal(layer: nn.Conv2d) -> Optional[str]:
    """Why the conv engines cannot run this ``nn.Conv2d`` (None if they can): they
    take square, stride-1, undilated, ungrouped convolutions with the same zero
    padding on every side."""
    k = layer.kernel_size
    if layer.stride != (1, 1):
        return (f"stride {layer.stride}: the conv engines run stride-1 convolutions only "
                "(downsample with an nn.MaxPool2d(k) after the conv instead)")
    if layer.dilation != (1, 1):
        return f"dilation {layer.dilation}: the conv engines have no dilated convolutions"
    if layer.groups != 1:
        return f"groups={layer.groups}: the conv engines have no grouped convolutions"
    if layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r}: the conv engines pad with zeros only"
    if k[0] != k[1]:
        return f"kernel {k}: the conv engines take square kernels only"
    if layer.padding == "same" and k[0] % 2 == 0:
        # torch pads an even kernel's 'same' by one more on the right and bottom
        return f"padding='same' with the even kernel {k}: that pads unevenly; the conv engines pad every side alike"
    if not isinstance(layer.padding, str) and layer.padding[0] != layer.padding[1]:
        return f"padding {layer.padding}: the conv engines pad every side alike"
    return None


def maxpool_refusal(layer: nn.MaxPool2d) -> Optional[str]:
    """Why an EP conv layer cannot pool like this ``nn.MaxPool2d`` (None if it can):
    EP pools square k x k windows with stride k, no padding, floor mode."""
    k, stride = _pair(layer.kernel_size), _pair(layer.stride)
    if k[0] != k[1]:
        return f"kernel {k}: EP's max-pooling takes square windows only"
    if stride != k:
        return f"stride {layer.stride} != kernel {layer.kernel_size}: EP's max-pooling has stride = kernel"
    if _pair(layer.padding) != (0, 0):
        return f"padding {layer.padding}: EP's max-pooling has no padding"
    if _pair(layer.dilation) != (1, 1):
        return f"dilation {layer.dilation}: EP's max-pooling has no dilation"
    if layer.ceil_mode:
        return "ceil_mode=True: EP's max-pooling drops a partial window (floor mode)"
    if layer.return_indices:
        return "return_indices=True: the module returns (values, indices), not a map"
    return None


def as_dense(layer) -> Optional[Dense]:
    """A dense stack entry as a ``Dense`` (an ``nn.Linear`` keeps its weights); None for a width."""
    if isinstance(layer, Dense):
        return layer
    if isinstance(layer, nn.Linear):
        return Dense.from_linear(layer)
    if isinstance(layer, int) and not isinstance(layer, bool):
        return None
    raise TypeError(f"EPNet layers must be ints (widths), tritonep.Dense or nn.Linear, got {type(layer).__name__} "
                    "(a stack with activation modules, nn.Flatten, ...: tritonep.from_sequential or EPSequential)")


def as_conv_entry(layer):
    """A conv stack entry as ``Conv`` / ``Dense`` / ``("pool", k)`` (from an
    ``nn.MaxPool2d``) / the number of classes (int)."""
    if isinstance(layer, (Conv, Dense)):
        return layer
    if isinstance(layer, nn.Conv2d):
        return Conv.from_conv2d(layer)
    if isinstance(layer, nn.MaxPool2d):
        why = maxpool_refusal(layer)
        if why is not None:
            raise ValueError(f"ConvEPNet cannot take {layer}: {why}")
        return ("pool", _pair(layer.kernel_size)[0])
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
