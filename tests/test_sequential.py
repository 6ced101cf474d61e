"""EPSequential / from_sequential on the stacks users already have: nn.Linear, nn.Conv2d,
nn.MaxPool2d, nn.Flatten and activation modules become an EP net whose feedforward
pass is the module's, weights copied; anything EP cannot take is refused by name,
position and reason."""
import copy

import pytest
import torch
from torch import nn

import tritonep
from tritonep import ConvEPNet, Dense, EPNet, EPSequential

ACTS = [(nn.Tanh, "tanh"), (lambda: nn.Hardtanh(0, 1), "hard_sigmoid")]


def mlp(act=nn.Tanh, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 16), act(), nn.Linear(16, 12), act(), nn.Linear(12, 5))


def convnet(act=nn.Tanh, pool_first=False, seed=0):
    """(1, 12, 12) -> conv 3 -> 4x10x10 -> pool 2 -> 4x5x5 -> conv 3 pad 1 -> 6x5x5 -> 5 logits."""
    torch.manual_seed(seed)
    first = [nn.MaxPool2d(2), act()] if pool_first else [act(), nn.MaxPool2d(2)]
    return nn.Sequential(nn.Conv2d(1, 4, 3), *first, nn.Conv2d(4, 6, 3, padding=1), act(), nn.Flatten(),
                         nn.Linear(150, 5))


def assert_same_output(net, module, x):
    with torch.no_grad():
        want = module(x)
    got = tritonep.feedforward(net, x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- conversions that keep the module
def test_the_issue_mlp_converts_with_its_activation():
    torch.manual_seed(0)
    lin1, lin2 = nn.Linear(20, 16), nn.Linear(16, 5)
    net = EPSequential(lin1, nn.Tanh(), lin2)
    assert type(net) is EPSequential and net.activation == "tanh" and net.sizes == [20, 16, 5]
    assert_same_output(net, nn.Sequential(lin1, nn.Tanh(), lin2), torch.rand(7, 20))


@pytest.mark.parametrize("act, name", ACTS)
def test_dense_stack_feedforward_equals_the_module(act, name):
    module = mlp(act)
    net = tritonep.from_sequential(module)
    assert isinstance(net, EPNet) and net.activation == name and net.sizes == [20, 16, 12, 5]
    assert_same_output(net, module, torch.randn(9, 20) * 2)


@pytest.mark.parametrize("pool_first", [False, True])
@pytest.mark.parametrize("act, name", ACTS)
def test_conv_stack_feedforward_equals_the_module(act, name, pool_first):
    module = convnet(act, pool_first)
    net = tritonep.from_sequential(module, input_shape=(1, 12, 12))
    assert isinstance(net, ConvEPNet) and net.activation == name and net.n_conv == 2
    assert [net.pool_size(l) for l in (1, 2)] == [2, 1]
    assert_same_output(net, module, torch.randn(6, 1, 12, 12))


def test_conv_padding_same_and_floor_pooling_and_no_flatten():
    torch.manual_seed(1)
    convs = [nn.Conv2d(2, 3, 5, padding="same"), nn.Hardtanh(0, 1), nn.MaxPool2d(2),
             nn.Conv2d(3, 4, 3, padding="valid"), nn.MaxPool2d(2), nn.Hardtanh(0, 1)]  # 11 -> 5 -> 3 -> 1 (floor)
    head = nn.Linear(4, 3)
    net = EPSequential(*convs, head, input_shape=(2, 11, 11))  # nn.Flatten is optional before the readout
    x = torch.randn(4, 2, 11, 11)
    assert_same_output(net, nn.Sequential(*convs, nn.Flatten(), head), x)


def test_one_sequential_nested_sequentials_and_layers_one_by_one_give_the_same_net():
    module = mlp()
    layers = list(module)
    nested = nn.Sequential(nn.Sequential(layers[0], layers[1]), nn.Sequential(nn.Sequential(*layers[2:4])),
                           nn.Identity(), layers[4])
    nets = [tritonep.from_sequential(module), EPSequential(*layers), EPSequential(module),
            tritonep.from_sequential(nested), tritonep.from_sequential(layers)]
    x = torch.randn(5, 20)
    for net in nets:
        assert type(net) is EPSequential
        assert net.state_dict().keys() == nets[0].state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), nets[0].state_dict().values()))
        torch.testing.assert_close(net(x, T=5), nets[0](x, T=5), rtol=0, atol=0)
    conv = convnet()
    a, b = tritonep.from_sequential(conv, input_shape=(1, 12, 12)), EPSequential(*conv, input_shape=(1, 12, 12))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_weights_and_biases_are_copied_not_shared(kind):
    module = mlp() if kind == "dense" else convnet()
    shape = dict(input_shape=(1, 12, 12)) if kind == "conv" else {}
    net = tritonep.from_sequential(module, **shape)
    x = torch.randn(3, 20) if kind == "dense" else torch.randn(3, 1, 12, 12)
    weighted = [m for m in module if isinstance(m, (nn.Linear, nn.Conv2d))]
    for ours, theirs in zip(net.layers, weighted):
        assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
        assert ours.weight.data_ptr() != theirs.weight.data_ptr()
    before = tritonep.feedforward(net, x).detach()
    with torch.no_grad():
        for m in weighted:
            m.weight.add_(1.0)
            m.bias.add_(1.0)
    torch.testing.assert_close(tritonep.feedforward(net, x).detach(), before, rtol=0, atol=0)
    copy_of_module = [m.weight.clone() for m in weighted]
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.5)
    assert all(torch.equal(m.weight, w) for m, w in zip(weighted, copy_of_module))


def test_options_pass_through_and_activation_keyword_must_agree():
    net = tritonep.from_sequential(mlp(), feedback=0.2, T=7, K=3, nudge=0.05, backend="torch")
    assert (net.T, net.K, net.nudge, net.config["feedback"]) == (7, 3, 0.05, 0.2)
    assert tritonep.from_sequential(mlp(), activation="tanh").activation == "tanh"
    with pytest.raises(ValueError, match=r"activation='hard_sigmoid' but module 1 \(Tanh\(\)\) of the stack is 'tanh'"):
        tritonep.from_sequential(mlp(), activation="hard_sigmoid")
    conv = tritonep.from_sequential(convnet(nn.Tanh), input_shape=(1, 12, 12), T=4)  # ConvEPNet's default: hard_sigmoid
    assert conv.activation == "tanh" and conv.T == 4


def test_a_stack_without_activation_modules_needs_activation_keyword():
    lin = [nn.Linear(20, 16), nn.Linear(16, 5)]
    with pytest.raises(ValueError, match="no activation module and no activation= was given"):
        EPSequential(*lin)
    with pytest.raises(ValueError, match="no activation module and no activation= was given"):
        EPSequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(100, 5), input_shape=(1, 12, 12))
    assert EPSequential(*lin, activation="pep_sigmoid").activation == "pep_sigmoid"
    # EP's own layers keep the net's activation option (default tanh), as before
    assert EPSequential(Dense(6, 5), Dense(5, 3)).activation == "tanh"
    assert EPSequential(nn.Linear(6, 5), Dense(5, 3)).activation == "tanh"


def test_ep_layers_take_activation_modules_too():
    net = EPSequential(Dense(6, 5, bias=True), nn.Hardtanh(0, 1), Dense(5, 3, bias=True))
    assert net.activation == "hard_sigmoid" and type(net) is EPSequential


def test_output_neuron_takes_the_activation_after_the_last_layer():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(20, 16), nn.Hardtanh(0, 1), nn.Linear(16, 5), nn.Hardtanh(0, 1))
    net = tritonep.from_sequential(module, output="neuron")
    assert_same_output(net, module, torch.randn(4, 20))
    with pytest.raises(ValueError, match=r"module 4 \(Linear.*\): output='neuron' makes the last layer rho"):
        tritonep.from_sequential(mlp(), output="neuron")


def test_copies_and_pickles_of_a_converted_net():
    net = tritonep.from_sequential(mlp())
    other = copy.deepcopy(net)
    assert type(other) is EPSequential
    x = torch.randn(3, 20)
    torch.testing.assert_close(other(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_a_converted_net_trains_with_ep_step(kind):
    g = torch.Generator().manual_seed(0)
    n, C = 120, 3
    y = torch.randint(0, C, (n,), generator=g)
    if kind == "dense":
        centers = torch.randn(C, 20, generator=g) * 2
        x = centers[y] + 0.3 * torch.randn(n, 20, generator=g)
        net = tritonep.from_sequential(nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, C)),
                                       backend="torch", T=10, K=6, feedback=0.1)
    else:
        centers = torch.randn(C, 1, 8, 8, generator=g)
        x = centers[y] + 0.3 * torch.randn(n, 1, 8, 8, generator=g)
        net = tritonep.from_sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Hardtanh(0, 1), nn.MaxPool2d(2),
                                                     nn.Flatten(), nn.Linear(36, C)),
                                       input_shape=(1, 8, 8), backend="torch", T=10, K=6, feedback=0.1)
    optimizer = torch.optim.Adam(net.parameters(), 2e-2)
    losses = []
    for _ in range(8):
        for i in range(0, n, 40):
            optimizer.zero_grad()
            loss, _ = net.ep_step(x[i:i + 40], y[i:i + 40])
            optimizer.step()
            losses.append(loss.item())
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])


# ---------------------------------------------------------------------------- refusals: module, position, why
L = nn.Linear


def dense(*middle, last=None):
    return [L(20, 16), *middle, L(16, 5)] + ([last] if last is not None else [])


def conv(*modules):
    return [nn.Conv2d(1, 4, 3), *modules]


REFUSALS = [
    ("dropout", dense(nn.Dropout(0.5), nn.Tanh()), r"module 1 \(Dropout\(p=0.5, inplace=False\)\): EP nets have no "
     r"dropout; remove it"),
    ("batchnorm", dense(nn.BatchNorm1d(16), nn.Tanh()), r"module 1 \(BatchNorm1d\(16.*\)\): EP nets have no "
     "normalisation layers"),
    ("layernorm", dense(nn.Tanh(), nn.LayerNorm(16)), r"module 2 \(LayerNorm.*no normalisation layers"),
    ("relu", dense(nn.ReLU()), r"module 1 \(ReLU\(\)\): ReLU is unbounded: EP's relaxation runs on bounded firing "
     r"rates.*supported: nn.Tanh\(\) \(EP's 'tanh'\) or nn.Hardtanh\(0, 1\)"),
    ("gelu", dense(nn.GELU()), r"module 1 \(GELU.*GELU is unbounded"),
    ("leaky", dense(nn.LeakyReLU()), r"module 1 \(LeakyReLU.*unbounded"),
    ("sigmoid", dense(nn.Sigmoid()), r"module 1 \(Sigmoid\(\)\): nn.Sigmoid is 1 / \(1 \+ exp\(-x\)\); EP's sigmoid "
     r"'pep_sigmoid' is 1 / \(1 \+ exp\(-4 \(x - 0.5\)\)\).*activation='pep_sigmoid'"),
    ("hardsigmoid", dense(nn.Hardsigmoid()), r"module 1 \(Hardsigmoid\(\)\): torch's nn.Hardsigmoid is relu6\(x \+ 3\) "
     r"/ 6.*not EP's hard_sigmoid clamp\(x, 0, 1\): for EP's, write nn.Hardtanh\(0, 1\)"),
    ("hardtanh -1 1", dense(nn.Hardtanh()), r"module 1 \(Hardtanh\(min_val=-1.0, max_val=1.0\)\): nn.Hardtanh"
     r"\(min_val, max_val\) is EP's hard_sigmoid .* only for \(0, 1\)"),
    ("relu6", dense(nn.ReLU6()), r"module 1 \(ReLU6\(\)\): .*only for \(0, 1\), got \(0.0, 6.0\)"),
    ("trailing tanh", dense(nn.Tanh(), last=nn.Tanh()), r"module 3 \(Tanh\(\)\): an activation after the last layer "
     r"\(module 2\): EP's readout is linear"),
    ("trailing softmax", dense(nn.Tanh(), last=nn.Softmax(dim=1)), r"module 3 \(Softmax\(dim=1\)\): EP's readout is "
     r"linear \(it gives logits\) and its softmax is in the loss"),
    ("trailing logsoftmax", dense(nn.Tanh(), last=nn.LogSoftmax(dim=1)), r"module 3 \(LogSoftmax.*softmax is in the loss"),
    ("missing act", [L(20, 16), nn.Tanh(), L(16, 8), L(8, 5)], r"module 2 \(Linear\(in_features=16, out_features=8, "
     r"bias=True\)\): no activation after it, but every EP state layer applies one: add nn.Tanh\(\)"),
    ("double act", dense(nn.Tanh(), nn.Tanh()), r"module 2 \(Tanh\(\)\): a second activation after module 0"),
    ("act first", [nn.Tanh(), *dense(nn.Tanh())], r"module 0 \(Tanh\(\)\): an activation before the first layer"),
    ("mixed", [L(20, 16), nn.Tanh(), L(16, 8), nn.Hardtanh(0, 1), L(8, 5)], r"the stack mixes activations, but an EP "
     r"net has one: module 1 \(Tanh\(\)\) is 'tanh', module 3 \(Hardtanh\(min_val=0, max_val=1\)\) is 'hard_sigmoid'"),
    ("nested position", [nn.Sequential(L(20, 16), nn.Sequential(nn.Tanh(), nn.Dropout(0.1))), L(16, 5)],
     r"module 0.1.1 \(Dropout\(p=0.1, inplace=False\)\): EP nets have no dropout"),
    ("pool in dense", dense(nn.Tanh(), nn.MaxPool2d(2)), r"module 2 \(MaxPool2d.*\): a max-pooling pools the map of "
     "the conv layer before it"),
    ("stride", conv(nn.Tanh()) + [nn.Conv2d(4, 4, 3, stride=2), nn.Tanh(), nn.Flatten(), L(64, 5)],
     r"module 2 \(Conv2d\(4, 4, kernel_size=\(3, 3\), stride=\(2, 2\)\)\): stride \(2, 2\): the conv engines run "
     "stride-1 convolutions only"),
    ("dilation", [nn.Conv2d(1, 4, 3, dilation=2), nn.Tanh(), nn.Flatten(), L(256, 5)], r"module 0 \(Conv2d.*dilation "
     r"\(2, 2\): the conv engines have no dilated convolutions"),
    ("groups", conv(nn.Tanh(), nn.Conv2d(4, 4, 3, groups=2), nn.Tanh(), nn.Flatten(), L(256, 5)), r"module 2 \(Conv2d"
     r".*groups=2: the conv engines have no grouped convolutions"),
    ("padding mode", [nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.Tanh(), nn.Flatten(), L(576, 5)],
     r"module 0 \(Conv2d.*padding_mode='reflect': the conv engines pad with zeros only"),
    ("rect kernel", [nn.Conv2d(1, 4, (3, 1)), nn.Tanh(), nn.Flatten(), L(480, 5)], r"module 0 \(Conv2d.*kernel \(3, 1"
     r"\): the conv engines take square kernels only"),
    ("even same", [nn.Conv2d(1, 4, 2, padding="same"), nn.Tanh(), nn.Flatten(), L(576, 5)], r"module 0 \(Conv2d.*"
     r"padding='same' with the even kernel"),
    ("avgpool", conv(nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), L(100, 5)), r"module 2 \(AvgPool2d\(kernel_size=2, "
     r"stride=2, padding=0\)\): EP's conv layers send on max-pooled maps only"),
    ("adaptive", conv(nn.Tanh(), nn.AdaptiveMaxPool2d(2), nn.Flatten(), L(16, 5)), r"module 2 \(AdaptiveMaxPool2d.*"
     "max-pooled maps only"),
    ("overlapping pool", conv(nn.Tanh(), nn.MaxPool2d(3, 2), nn.Flatten(), L(64, 5)), r"module 2 \(MaxPool2d.*\): "
     r"stride 2 != kernel 3: EP's max-pooling has stride = kernel"),
    ("ceil pool", conv(nn.Tanh(), nn.MaxPool2d(3, ceil_mode=True), nn.Flatten(), L(64, 5)), r"module 2 \(MaxPool2d.*"
     r"ceil_mode=True: EP's max-pooling drops a partial window"),
    ("two pools", conv(nn.Tanh(), nn.MaxPool2d(2), nn.MaxPool2d(2), nn.Flatten(), L(16, 5)), r"module 3 \(MaxPool2d"
     r".*a second pooling after module 0"),
    ("hidden dense", conv(nn.Tanh(), nn.Flatten(), L(400, 10), nn.Tanh(), L(10, 5)), r"module 5 \(Linear\(in_features"
     r"=10, out_features=5, bias=True\)\): a dense layer after the dense readout \(module 3\): a ConvEPNet has conv "
     "state layers, then ONE dense readout"),
    ("dense first", [L(12, 12), nn.Tanh(), *conv(nn.Tanh(), nn.Flatten(), L(400, 5))], r"module 0 \(Linear\(in_features"
     r"=12, out_features=12, bias=True\)\): a dense layer before the first conv layer"),
    ("conv after flatten", conv(nn.Tanh(), nn.Flatten(), nn.Conv2d(4, 4, 1), nn.Tanh(), L(400, 5)), r"module 3 \(Conv2d"
     r".*a conv layer after nn.Flatten \(module 2\)"),
    ("flatten dims", conv(nn.Tanh(), nn.Flatten(2), L(100, 5)), r"module 2 \(Flatten\(start_dim=2, end_dim=-1\)\): EP "
     "flattens a sample whole"),
    ("conv instance norm", conv(nn.InstanceNorm2d(4), nn.Tanh(), nn.Flatten(), L(400, 5)), r"module 1 \(InstanceNorm2d"
     ".*no normalisation layers"),
]


@pytest.mark.parametrize("stack, match", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_each_refusal_names_the_module_its_position_and_why(stack, match):
    options = dict(input_shape=(1, 12, 12)) if any(isinstance(m, nn.Conv2d) for m in nn.Sequential(*stack).modules()) \
        else {}
    with pytest.raises(ValueError, match=match):
        tritonep.from_sequential(nn.Sequential(*stack), **options)
    with pytest.raises(ValueError, match=match):  # the same from EPSequential, layer by layer
        EPSequential(*stack, **options)


def test_unknown_modules_are_a_type_error():
    with pytest.raises(TypeError, match=r"module 2 \(Embedding\(3, 4\)\): not a layer EP nets have; an EP stack takes "
                                        "nn.Linear, nn.Conv2d"):
        tritonep.from_sequential(nn.Sequential(L(20, 16), nn.Tanh(), nn.Embedding(3, 4), L(16, 5)))
    with pytest.raises(TypeError, match=r"module 1 \('tanh'\): not a layer"):
        EPSequential(L(20, 16), "tanh", L(16, 5))
    with pytest.raises(TypeError, match="from_sequential takes an nn.Sequential"):
        tritonep.from_sequential(L(20, 5))
    with pytest.raises(TypeError, match=r"needs input_shape=\(C, H, W\)"):
        tritonep.from_sequential(convnet())
    with pytest.raises(ValueError, match=r"module 0 \(LazyLinear.*lazy module not yet initialised"):
        tritonep.from_sequential(nn.Sequential(nn.LazyLinear(16), nn.Tanh(), L(16, 5)))


def test_hardsigmoid_is_not_hardtanh_0_1():
    """torch's nn.Hardsigmoid is not EP's hard_sigmoid; nn.Hardtanh(0, 1) is, and only it converts."""
    z = torch.linspace(-4, 4, 81)
    torch.testing.assert_close(nn.Hardtanh(0, 1)(z), torch.clamp(z, 0, 1), rtol=0, atol=0)
    assert not torch.allclose(nn.Hardsigmoid()(z), torch.clamp(z, 0, 1))
    assert tritonep.from_sequential(mlp(lambda: nn.Hardtanh(0, 1))).activation == "hard_sigmoid"
    with pytest.raises(ValueError, match=r"write nn.Hardtanh\(0, 1\)"):
        tritonep.from_sequential(mlp(nn.Hardsigmoid))


def test_epnet_with_activation_modules_points_to_from_sequential():
    with pytest.raises(TypeError, match="got Tanh .*tritonep.from_sequential or EPSequential"):
        EPNet([L(20, 16), nn.Tanh(), L(16, 5)])
