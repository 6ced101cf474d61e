"""``EPSequential`` and ``from_sequential``: an EP net built like an ``nn.Sequential``
(dense or conv), from EP's own layers or from the torch modules of a stack users
already have (``nn.Linear``, ``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.Flatten``, activation
modules), weights and biases copied.

What a torch stack becomes, and why: an EP net's feedforward pass
(``tritonep.feedforward``) is ``s_l = rho(W_l s_{l-1} + b_l)`` for every state layer
(a conv layer sends on its max-pooled map) and a linear readout; a stack converts
only when it computes exactly that, with one ``rho`` for the whole net.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from torch import nn

from .conv import ConvEPNet
from .layers import Conv, Dense, as_conv_entry, conv2d_refusal, maxpool_refusal
from .net import EPNet

SUPPORTED_ACTIVATIONS = "nn.Tanh() (EP's 'tanh') or nn.Hardtanh(0, 1) (EP's 'hard_sigmoid')"
TAKES = ("nn.Linear, nn.Conv2d, nn.MaxPool2d(k), nn.Flatten(), nn.Identity, nn.Tanh, nn.Hardtanh(0, 1), nested "
         "nn.Sequential, and tritonep.Dense / tritonep.Conv")
# unbounded activations: the EP engines relax bounded firing rates only
UNBOUNDED = ("ReLU", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Softplus",
             "Hardswish", "LogSigmoid", "Softshrink", "Hardshrink", "Tanhshrink", "Threshold")
SOFTMAXES = ("Softmax", "LogSoftmax", "Softmin", "Softmax2d", "AdaptiveLogSoftmaxWithLoss")


@dataclass
class _Layer:
    """A weight layer of the stack as it is walked: where it is, and what follows it."""
    pos: str
    module: Union[nn.Module, int]
    kind: str                    # "dense", "conv" or "classes" (an int: the number of classes)
    act: Optional[tuple] = None  # (pos, module, EP activation name) of the activation after it
    pooled: bool = False


def _refuse(pos: str, module, why: str, error=ValueError):
    return error(f"module {pos} ({module!r}): {why}")


def _items(layers: tuple) -> list[tuple[str, object]]:
    """(position, module) of every entry, nested ``nn.Sequential``s flattened: positions
    are 0-based, ``"2.1"`` inside a nested one; a lone ``nn.Sequential`` is the stack."""
    if len(layers) == 1 and isinstance(layers[0], nn.Sequential):
        layers = tuple(layers[0])
    out = []
    for i, m in enumerate(layers):
        if isinstance(m, nn.Sequential):
            out += [(f"{i}.{pos}", sub) for pos, sub in _items((m,))]
        else:
            out.append((str(i), m))
    return out


def ep_activation(module: nn.Module) -> Optional[str]:
    """The EP activation an activation module equals (``nn.Tanh`` -> ``"tanh"``,
    ``nn.Hardtanh(0, 1)`` -> ``"hard_sigmoid"``), None for a module that is no
    activation; a ValueError (no position) for an activation EP has no equal of."""
    name = type(module).__name__
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.Hardtanh):  # nn.ReLU6 too: Hardtanh(0, 6)
        if (module.min_val, module.max_val) == (0.0, 1.0):
            return "hard_sigmoid"
        raise ValueError(f"nn.Hardtanh(min_val, max_val) is EP's hard_sigmoid (clamp(x, 0, 1)) only for (0, 1), got "
                         f"({module.min_val}, {module.max_val}); supported: {SUPPORTED_ACTIVATIONS}")
    if isinstance(module, nn.Sigmoid):
        # sigmoid(x) = pep_sigmoid(x / 4 + 1/2) only after rescaling the weights, which changes the EP dynamics
        raise ValueError("nn.Sigmoid is 1 / (1 + exp(-x)); EP's sigmoid 'pep_sigmoid' is 1 / (1 + exp(-4 (x - 0.5))), "
                         f"another function, so the EP net would not compute this module; use {SUPPORTED_ACTIVATIONS}, "
                         "or drop the activation modules and pass activation='pep_sigmoid'")
    if isinstance(module, nn.Hardsigmoid):
        raise ValueError("torch's nn.Hardsigmoid is relu6(x + 3) / 6 = clamp(x / 6 + 1/2, 0, 1), not EP's hard_sigmoid "
                         "clamp(x, 0, 1): for EP's, write nn.Hardtanh(0, 1)")
    if name in UNBOUNDED:
        raise ValueError(f"{name} is unbounded: EP's relaxation runs on bounded firing rates (the feedback loop of "
                         f"an unbounded rate can diverge, and the engines implement bounded ones only); supported: "
                         f"{SUPPORTED_ACTIVATIONS}")
    if name in SOFTMAXES:
        raise ValueError(f"EP's readout is linear (it gives logits) and its softmax is in the loss (cross-entropy); "
                         f"{name} has no place in the stack: remove it")
    if name == "Softsign":  # bounded, but no EP activation equals it
        raise ValueError(f"{name} is not one of EP's activations; supported: {SUPPORTED_ACTIVATIONS}")
    return None


def _kind(pos: str, m) -> str:
    """What the entry is in the stack ("dense", "conv", "classes", "pool", "flatten",
    "act", "skip"), or the error refusing it, naming it, its position and why."""
    if isinstance(m, bool) or not isinstance(m, (int, nn.Module)):
        raise _refuse(pos, m, f"not a layer; an EP stack takes {TAKES} (and ints: widths, or a conv net's classes)",
                      TypeError)
    if isinstance(m, int):
        return "classes"
    if any(nn.parameter.is_lazy(p) for p in m.parameters(recurse=False)):
        raise _refuse(pos, m, "a lazy module not yet initialised: run the module on one input first so its "
                              "weights exist")
    if isinstance(m, (Dense, nn.Linear)):
        return "dense"
    if isinstance(m, Conv):
        return "conv"
    if isinstance(m, nn.Conv2d):
        why = conv2d_refusal(m)
        if why is not None:
            raise _refuse(pos, m, why)
        return "conv"
    if isinstance(m, nn.MaxPool2d):
        why = maxpool_refusal(m)
        if why is not None:
            raise _refuse(pos, m, why)
        return "pool"
    if isinstance(m, nn.Flatten):
        if (m.start_dim, m.end_dim) != (1, -1):
            raise _refuse(pos, m, "EP flattens a sample whole (nn.Flatten() with start_dim=1, end_dim=-1)")
        return "flatten"
    if isinstance(m, nn.Identity):
        return "skip"
    try:
        if ep_activation(m) is not None:
            return "act"
    except ValueError as e:
        raise _refuse(pos, m, str(e)) from None
    name = type(m).__name__
    if "Dropout" in name:
        raise _refuse(pos, m, "EP nets have no dropout; remove it")
    if "Norm" in name:
        raise _refuse(pos, m, f"EP nets have no normalisation layers ({name}): the relaxation's fixed point would "
                              "move with the batch; remove it (a conv net can normalise its input: input_norm=)")
    if "Pool" in name:
        raise _refuse(pos, m, f"EP's conv layers send on max-pooled maps only (nn.MaxPool2d(k), stride k); {name} "
                              "is other pooling")
    raise _refuse(pos, m, f"not a layer EP nets have; an EP stack takes {TAKES}", TypeError)


def _walk(items: list, conv: bool) -> tuple[list, list[_Layer]]:
    """The EP entries of the stack and its weight layers, each with what follows it;
    refuses an order EP's feedforward pass does not have."""
    entries: list = []
    layers: list[_Layer] = []
    flat: Optional[str] = None  # position of a conv stack's nn.Flatten
    for pos, m in items:
        kind = _kind(pos, m)
        cur = layers[-1] if layers else None
        if kind == "skip":
            continue
        if kind == "act":
            if cur is None:
                raise _refuse(pos, m, "an activation before the first layer acts on the input; an EP net feeds its "
                                      "input in as it is")
            if cur.act is not None:
                raise _refuse(pos, m, f"a second activation after module {cur.pos}; an EP layer applies one")
            cur.act = (pos, m, ep_activation(m))
        elif kind == "pool":
            if cur is None or cur.kind != "conv" or flat is not None:
                raise _refuse(pos, m, "a max-pooling pools the map of the conv layer before it (and before nn.Flatten)")
            if cur.pooled or (isinstance(cur.module, Conv) and cur.module.pool != 1):
                raise _refuse(pos, m, f"a second pooling after module {cur.pos}; an EP conv layer pools once")
            cur.pooled = True
            entries.append(m)  # ConvEPNet makes it the pooling of the conv before it
        elif kind == "flatten":
            # dense: a no-op (EPNet flattens its input itself, and (B, n) stays (B, n))
            if conv and (cur is None or cur.kind != "conv" or flat is not None):
                raise _refuse(pos, m, "in a conv stack nn.Flatten goes once, between the last conv layer (with its "
                                      "activation and pooling) and the dense readout")
            flat = flat or pos
        else:
            if conv and kind == "conv" and cur is not None and cur.kind != "conv":
                raise _refuse(pos, m, "a conv layer after a dense one: a ConvEPNet has conv state layers, then one "
                                      "dense readout")
            if conv and kind == "conv" and flat is not None:
                raise _refuse(pos, m, f"a conv layer after nn.Flatten (module {flat})")
            if conv and kind != "conv" and (cur is None or cur.kind != "conv"):
                where = "before the first conv layer" if cur is None else f"after the dense readout (module {cur.pos})"
                raise _refuse(pos, m, f"a dense layer {where}: a ConvEPNet has conv state layers, then ONE dense "
                                      "readout (no hidden dense layers)")
            layers.append(_Layer(pos, m, kind))
            if conv:
                entries.append(as_conv_entry(m))
            elif isinstance(m, nn.Linear):
                entries.append(Dense.from_linear(m))
            else:
                entries.append(m)  # a Dense (kept, as before), or an int (EPNet refuses the mix)
    return entries, layers


def convert(*layers, **options) -> tuple[bool, list, dict]:
    """(conv, entries, options): a stack as ``EPSequential`` takes it -> whether it is a
    conv stack, the entries ``EPNet`` / ``ConvEPNet`` take (``nn.Linear`` and
    ``nn.Conv2d`` copied into ``Dense`` / ``Conv``, an ``nn.MaxPool2d`` as the pooling of
    the conv before it) and the options, ``activation`` set from the activation modules.
    Raises one ValueError (TypeError for a module of no kind EP has) naming the module,
    its position and why."""
    items = _items(layers)
    if all(isinstance(m, int) and not isinstance(m, bool) for _, m in items):
        return False, [m for _, m in items], options  # widths: EPNet checks them
    conv = any(isinstance(m, nn.Conv2d) for _, m in items)
    entries, weights = _walk(items, conv)
    acts = [w.act for w in weights if w.act is not None]
    output = options.get("output", "softmax")
    if acts:
        names = {}
        for pos, m, name in acts:
            names.setdefault(name, (pos, m))
        if len(names) > 1:
            raise ValueError("the stack mixes activations, but an EP net has one: " + ", ".join(
                f"module {pos} ({m!r}) is {name!r}" for name, (pos, m) in names.items()))
        name, (pos, m) = next(iter(names.items()))
        if options.get("activation", name) != name:
            raise ValueError(f"activation={options['activation']!r} but module {pos} ({m!r}) of the stack is {name!r}; "
                             "give one or make them agree")
        module = "nn.Tanh()" if name == "tanh" else "nn.Hardtanh(0, 1)"
        last = weights[-1]  # there is one: an activation follows a layer
        if output != "neuron" and last.act is not None:
            raise _refuse(last.act[0], last.act[1], f"an activation after the last layer (module {last.pos}): EP's "
                                                    "readout is linear (logits; the softmax is in its loss); remove "
                                                    "it, or build the net with output='neuron' (P-EP output neurons, "
                                                    "rho(W s + b), MSE cost)")
        if output == "neuron" and last.act is None:
            raise _refuse(last.pos, last.module, f"output='neuron' makes the last layer rho(W s + b): add {module} "
                                                 "after it")
        for w in weights[:-1]:
            if w.act is None:
                raise _refuse(w.pos, w.module, f"no activation after it, but every EP state layer applies one: add "
                                               f"{module} after it (as after module {pos})")
        options = dict(options, activation=name)
    elif "activation" not in options and not any(isinstance(m, (Dense, Conv)) for _, m in items) \
            and any(isinstance(m, (nn.Linear, nn.Conv2d)) for _, m in items):
        # a torch stack says nothing of its activation: the net's default would be a silent guess
        raise ValueError("the stack has no activation module and no activation= was given, so the EP net's "
                         f"activation would be a silent guess: add {SUPPORTED_ACTIVATIONS} after each hidden layer, or "
                         "pass activation= ('tanh', 'hard_sigmoid' or 'pep_sigmoid') for the EP net to apply it")
    if conv and "input_shape" not in options:
        raise TypeError("a conv stack builds a ConvEPNet, which needs input_shape=(C, H, W) of one input")
    return conv, entries, options


class EPSequential(EPNet):
    """``EPNet`` built like an ``nn.Sequential``: the layers in order, connection
    options as keywords.

    >>> net = EPSequential(Dense(784, 512), Dense(512, 512), Dense(512, 10), feedback=0.01, nudge=0.1)

    Takes EP's own layers (``tritonep.Dense``; the activation is then the net's
    ``activation=``, default ``"tanh"``) or the torch modules of an existing stack,
    one by one or as one ``nn.Sequential`` (nested ones flattened); every keyword of
    ``EPNet`` applies. A stack with conv layers (``tritonep.Conv`` or ``nn.Conv2d``)
    builds a ``tritonep.ConvEPNet`` instead (give ``input_shape=(C, H, W)``):

    >>> net = EPSequential(Conv(1, 32, 5, pool=2), Conv(32, 64, 5, pool=2), 10, input_shape=(1, 28, 28))
    >>> net = EPSequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 5))   # tanh, weights copied
    >>> net = EPSequential(nn.Conv2d(1, 4, 3), nn.Hardtanh(0, 1), nn.MaxPool2d(2), nn.Flatten(),
    ...                    nn.Linear(100, 10), input_shape=(1, 12, 12))     # a ConvEPNet, hard_sigmoid

    A torch stack converts when the EP net's feedforward pass (``tritonep.feedforward``)
    computes what it computes; one ValueError names the module, its 0-based position
    (``"2.1"`` in a nested ``nn.Sequential``) and why, when it does not:

    - ``nn.Linear`` and ``nn.Conv2d`` (square kernel, stride 1, no dilation or groups,
      the same zero padding on every side; ``"same"`` for odd kernels) are copied:
      changing the module afterwards leaves the net alone, and back.
    - Activations: ``nn.Tanh`` -> ``"tanh"``, ``nn.Hardtanh(0, 1)`` -> ``"hard_sigmoid"``
      (not ``nn.Hardsigmoid``, which is clamp(x / 6 + 1/2, 0, 1)); one after every
      layer but the last, one kind for the whole net, agreeing with ``activation=`` if
      given. ``nn.Sigmoid`` is refused: EP's ``"pep_sigmoid"`` is sigmoid(4x - 2), not
      sigmoid(x). Unbounded ones (ReLU, GELU, ...) are refused: EP relaxes bounded rates.
    - The last layer is the linear readout: an activation or softmax after it is
      refused (the softmax is in EP's loss), except that ``output="neuron"`` (P-EP)
      needs the activation there, as its output neurons are rho(W s + b).
    - A torch stack with no activation module needs ``activation=`` (the EP net then
      applies it where the module applies none); a stack with ``tritonep`` layers keeps
      the net's default, as before.
    - Conv stacks: each ``nn.Conv2d`` may be followed by its activation and one
      ``nn.MaxPool2d(k)`` (stride k, floor mode) in either order (rho is
      non-decreasing, so pool(rho(z)) = rho(pool(z))); ``nn.Flatten()`` is optional
      before the one dense readout (no hidden dense layers after the convs).
    - Refused: dropout, normalisation layers, other pooling, and modules of no kind
      EP has (TypeError). ``nn.Identity`` is skipped; a dense stack's ``nn.Flatten()``
      is a no-op (EPNet flattens its input).

    Options that add links or scale them (``residual``, ``agt``, ``alpha``) make a
    net whose feedforward pass is no longer the module's.
    """

    def __new__(cls, *layers, **options):
        # no layers: copy / unpickle make the object first, then set its state
        if layers and any(isinstance(m, nn.Conv2d) for _, m in _items(layers)):
            _, entries, options = convert(*layers, **options)
            return ConvEPNet(entries, **options)
        return super().__new__(cls)

    def __init__(self, *layers, **options):
        _, entries, options = convert(*layers, **options)
        super().__init__(entries, **options)


def from_sequential(module: Union[nn.Sequential, list, tuple], **options) -> Union[EPNet, ConvEPNet]:
    """The EP net of an ``nn.Sequential`` (or a list of modules): an ``EPSequential``
    (dense) or a ``ConvEPNet`` (conv stack; give ``input_shape=(C, H, W)``), its
    weights and biases copied; ``options`` are the net's keywords (``feedback=``,
    ``T=``, ...). What converts and what is refused: ``EPSequential``.

    >>> mlp = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 5))
    >>> net = tritonep.from_sequential(mlp, feedback=0.1, T=20)
    >>> torch.allclose(tritonep.feedforward(net, x), mlp(x))   # x: (B, 20)
    True
    """
    if isinstance(module, nn.Sequential):
        return EPSequential(module, **options)
    if isinstance(module, (list, tuple)):
        return EPSequential(*module, **options)
    raise TypeError(f"from_sequential takes an nn.Sequential (or a list of modules), got {type(module).__name__}; "
                    "write the module's layers as an nn.Sequential")
