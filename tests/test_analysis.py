"""tritonep.analysis against cases with known answers: closed-form spectra, a
Lyapunov exponent fixed by an orthogonal Jacobian, hand-counted convergence,
FRE -> BP alignment (paper Appendix C), gradient vanishing with and without
residual links, plots and the CLI."""
import json
import math

import numpy as np
import pytest
import torch

from tritonep import EPNet, bp_gradients
from tritonep import analysis as A
from tritonep.cli.analyze import main

pytestmark = pytest.mark.usefixtures("one_thread")


def set_(param, value):
    with torch.no_grad():
        param.copy_(value)


def orthogonal(n, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


# ----------------------------------------------------------------------------- spectral radius
def test_spectral_radius_closed_form_two_layers():
    """C = [[0, beta W^T], [alpha W, 0]]: C^2 = alpha beta diag(W^T W, W W^T), so
    the eigenvalues are +-sqrt(alpha beta) * singular values of W."""
    alpha, beta = 0.8, 0.2
    net = EPNet([3, 4, 4, 2], feedback=beta, alpha=alpha).double()
    sv = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    set_(net.layers[1].weight, orthogonal(4, 1) @ torch.diag(sv) @ orthogonal(4, 2).t())
    assert A.spectral_radius(net) == pytest.approx(math.sqrt(alpha * beta) * 3.0, rel=1e-10)
    # changing only the input weights changes nothing: the input is not a state
    set_(net.layers[0].weight, 5 * torch.ones_like(net.layers[0].weight))
    assert A.spectral_radius(net) == pytest.approx(1.2, rel=1e-10)


@pytest.mark.parametrize("weights", ["symmetric", "random"])
def test_coupling_matrix_matches_a_hand_built_one(weights):
    """Three state layers, a residual link 1<->3, per-layer feedback: every block
    placed by hand from the named matrices (column convention: block [dst, src])."""
    a, b1, b2 = 1.5, 0.3, 0.7
    net = EPNet([5, 4, 3, 2, 2], feedback=[b1, b2], alpha=a, residual=[(1, 3)], feedback_weights=weights).double()
    W1, W2, S = (net.layers[1].weight.detach().numpy(), net.layers[2].weight.detach().numpy(),
                 net.skips["1_3"].weight.detach().numpy())
    if weights == "symmetric":
        B21, B32, B31 = W1.T, W2.T, S.T
    else:
        B21, B32, B31 = (getattr(net.fixed, k).numpy() for k in ("B2_1", "B3_2", "B3_1"))
    C = np.zeros((9, 9))
    h1, h2, h3 = slice(0, 4), slice(4, 7), slice(7, 9)
    C[h2, h1], C[h3, h2], C[h3, h1] = a * W1, a * W2, a * S
    C[h1, h2], C[h2, h3], C[h1, h3] = b1 * B21, b2 * B32, b1 * B31
    np.testing.assert_allclose(A.coupling_matrix(net).numpy(), C, rtol=0, atol=1e-15)
    assert A.spectral_radius(net) == pytest.approx(np.abs(np.linalg.eigvals(C)).max(), rel=1e-10)


def test_step_jacobian_is_the_coupling_matrix_times_the_slope():
    net = EPNet([6, 5, 4, 3, 2], feedback=0.4, alpha=0.9).double()
    C = A.coupling_matrix(net)
    # tanh'(0) = 1: at zero state with zero input the step's Jacobian is C itself
    torch.testing.assert_close(A.step_jacobian(net, torch.zeros(6, dtype=torch.float64)), C, rtol=0, atol=1e-15)
    x = torch.rand(1, 6, dtype=torch.float64)
    z = torch.cat([s[0] for s in net.relax(x, T=3)[1:]]).clone()
    z_next = torch.cat([s[0] for s in net.relax(x, T=4)[1:]])
    torch.testing.assert_close(A.step_jacobian(net, x, z), (1 - z_next ** 2)[:, None] * C, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- Lyapunov exponents
def test_ftmle_is_exact_for_an_orthogonal_jacobian():
    """With W = c Q (Q orthogonal) and alpha = beta = a, C = a c [[0, Q^T], [Q, 0]] is
    a c times an orthogonal matrix: every tangent grows by exactly a c per step."""
    a, c = 0.5, 1.2
    net = EPNet([3, 4, 4, 2], feedback=a, alpha=a).double()
    set_(net.layers[1].weight, c * orthogonal(4, 3))
    L = A.lyapunov(net, torch.zeros(2, 3, dtype=torch.float64), T=5, horizon=20)  # zero input: z stays 0
    assert L["ftmle"] == pytest.approx(math.log(a * c), abs=1e-12)
    assert L["asymptotic"] == pytest.approx(math.log(a * c), abs=1e-12)
    assert L["log_growth"].shape == (20, 2)


@pytest.mark.parametrize("seed", [0, 1])
def test_asymptotic_exponent_is_the_log_spectral_radius_at_a_fixed_point(seed):
    torch.manual_seed(seed)
    net = EPNet([6, 5, 5, 5, 2], feedback=0.5).double()
    L = A.lyapunov(net, torch.zeros(3, 6, dtype=torch.float64), T=10, horizon=200)
    assert L["asymptotic"] == pytest.approx(math.log(A.spectral_radius(net)), abs=2e-3)


def test_lyapunov_of_a_sample_does_not_depend_on_the_rest_of_the_batch():
    net = EPNet([6, 5, 4, 2], feedback=0.7, alpha=1.5).double()
    x = torch.rand(3, 6, dtype=torch.float64)
    a = A.lyapunov(net, x[[0, 1]], T=5, horizon=30, seed=4)
    b = A.lyapunov(net, x[[0, 2]], T=5, horizon=30, seed=4)
    assert a["ftmle_per_sample"][0].item() == b["ftmle_per_sample"][0].item()
    assert a["ftmle_per_sample"][1].item() != b["ftmle_per_sample"][1].item()


def test_a_saturated_net_reports_minus_infinity_honestly():
    """hard_sigmoid driven far above 1: slope 0, the tangent dies after one step."""
    net = EPNet([2, 3, 3, 2], feedback=0.5, activation="hard_sigmoid").double()
    set_(net.layers[0].weight, torch.ones(3, 2))
    set_(net.layers[1].weight, torch.ones(3, 3))
    r = A.dynamics_report(net, 10 * torch.ones(2, 2, dtype=torch.float64), T=4, horizon=8)
    assert r["ftmle"] == "-inf" and r["asymptotic_exponent"] == "-inf"
    json.dumps(r, allow_nan=False)  # strict JSON


def test_bad_arguments_raise_clear_errors():
    net = EPNet([3, 4, 4, 2])
    x = torch.rand(2, 3)
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        A.state_changes(net, x, 0)
    with pytest.raises(ValueError, match="T must be a positive int"):
        A.lyapunov(net, x, T=-1)
    with pytest.raises(ValueError, match="horizon"):
        A.lyapunov(net, x, T=10, horizon=5)
    with pytest.raises(ValueError, match="tol must be a positive"):
        A.first_settled([0.1], tol=0)
    with pytest.raises(ValueError, match="unknown EPNet option"):
        A.with_options(net, feedbak=0.1)
    with pytest.raises(ValueError, match="baselines"):
        A.gradient_alignment(net, x, torch.tensor([0, 1]), baselines=["fa"])
    with pytest.raises(TypeError, match="EPNet"):
        A.spectral_radius(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- convergence time
def test_first_settled_counts_by_hand():
    tol = 1e-3
    assert A.first_settled([1, 0.5, 1e-5, 1e-5, 0.1, 1e-5, 1e-5, 1e-5], tol) == 6
    assert A.first_settled([1e-5] * 3, tol) == 1
    assert A.first_settled([1, 1e-5, 1e-5], tol) is None  # the run does not fit in the horizon
    assert A.first_settled([1, 1e-5, float("nan"), 1e-5, 1e-5], tol) is None
    assert A.first_settled([1, 1e-5, 1e-5, 1], tol, patience=2) == 2


def test_convergence_time_of_a_contraction_matches_a_manual_count():
    torch.manual_seed(0)
    net = EPNet([8, 6, 5, 3], feedback=0.3).double()
    x = torch.rand(4, 8, dtype=torch.float64)
    tol, H = 1e-6, 80
    # independent path: the net's own in-place relaxation, T steps at a time
    states = [torch.zeros(4, 11, dtype=torch.float64)] + [
        torch.cat([s.clone() for s in net.relax(x, T=t)[1:]], 1) for t in range(1, H + 1)]
    changes = [(states[t] - states[t - 1]).norm(dim=1).max().item() for t in range(1, H + 1)]
    expect = next(t for t in range(1, H - 1) if max(changes[t - 1:t + 2]) < tol)
    assert 3 < expect < H - 10  # the case is not trivial
    assert A.convergence_time(net, x, tol=tol, horizon=H) == expect
    np.testing.assert_allclose(A.state_changes(net, x, H), changes, rtol=1e-9, atol=1e-15)


def test_an_oscillating_net_never_converges():
    """Two units in a loop with gains -3 (forward) and +3 (fixed feedback): the
    loop gain is -9, the state cycles with period 4 and never settles."""
    net = EPNet([1, 1, 1, 2], feedback=1.0, feedback_weights="random").double()
    set_(net.layers[0].weight, torch.ones(1, 1))
    set_(net.layers[1].weight, -3 * torch.ones(1, 1))
    set_(net.fixed.B2_1, 3 * torch.ones(1, 1))
    x = torch.full((1, 1), 0.5, dtype=torch.float64)
    assert A.convergence_time(net, x, tol=1e-3, horizon=200) is None
    assert min(A.state_changes(net, x, 200)[-20:]) > 1.0  # still moving a lot at the end
    assert A.dynamics_report(net, x, T=10, horizon=60)["convergence_time"] is None


# ----------------------------------------------------------------------------- alignment
def test_cosine_and_norm_ratio_identities():
    a = torch.randn(5, 4, dtype=torch.float64)
    b = torch.randn(5, 4, dtype=torch.float64)
    assert A.cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    assert A.norm_ratio(a, a) == pytest.approx(1.0, abs=1e-12)
    c0 = A.cosine(a, b)
    assert abs(c0) < 0.99
    assert A.cosine(3.0 * a, b) == pytest.approx(c0, abs=1e-12)
    assert A.norm_ratio(3.0 * a, b) == pytest.approx(3.0 * A.norm_ratio(a, b), rel=1e-12)
    assert A.cosine(-2.0 * a, a) == pytest.approx(-1.0, abs=1e-12)
    assert A.norm_ratio(-2.0 * a, a) == pytest.approx(2.0, rel=1e-12)
    assert math.isnan(A.cosine(torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match="shapes"):
        A.cosine(a, b.t())
    rows = A.compare_gradients({"w": 2 * a}, {"w": a}, {"w": 4.0})
    assert rows["w"]["cosine"] == pytest.approx(1.0) and rows["w"]["norm_ratio_normalized"] == pytest.approx(0.5)


def small_problem():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 12, generator=g, dtype=torch.float64), torch.randint(0, 4, (16,), generator=g)


def test_ep_aligns_with_bp_and_bptt_for_weak_feedback_and_nudge():
    x, y = small_problem()
    net = EPNet([12, 10, 8, 4], feedback=1e-3, nudge=1e-3, T=80, K=80).double()
    al = A.gradient_alignment(net, x, y)
    assert al["hidden"] == ["layers.0.weight", "layers.1.weight"]
    for b in ("bp", "bptt"):
        for name, row in al[b].items():
            assert row["cosine"] > 0.99, (b, name)
            # raw ratio ~ beta_f * beta_1^hops; the normalised one ~ 1 (Appendix C)
            assert row["norm_ratio_normalized"] == pytest.approx(1.0, rel=0.02), (b, name)
    assert al["bp"]["layers.0.weight"]["expected_scale"] == pytest.approx(1e-6)
    assert al["bp"]["layers.1.weight"]["norm_ratio"] == pytest.approx(1e-3, rel=0.02)
    assert all(p.grad is None for p in net.parameters())  # computed on a copy

    # a deliberately wrong comparison: BP for other labels points elsewhere
    wrong = A.compare_gradients(A.ep_update(net, x, y), bp_gradients(net, x, (y + 1) % 4))
    assert all(wrong[n]["cosine"] < 0.5 for n in al["hidden"])


def test_strong_feedback_degrades_alignment_and_the_sweep_reuses_the_weights():
    x, y = small_problem()
    net = EPNet([12, 10, 8, 4], feedback=1e-3, nudge=1e-3, T=60, K=60).double()
    pts = A.alignment_sweep(net, x, y, feedback=[1e-3, 1.0], baselines=["bp"])
    assert [p["feedback"] for p in pts] == [1e-3, 1.0]
    assert pts[0]["mean_cosine_bp"] > 0.99 > pts[1]["mean_cosine_bp"]
    direct = A.gradient_alignment(net, x, y, baselines=["bp"])
    assert pts[0]["alignment"]["bp"] == direct["bp"]


def test_with_options_keeps_the_weights_and_changes_the_options():
    net = EPNet([6, 5, 5, 5, 5, 2], feedback=0.1, residual=3)
    other = A.with_options(net, feedback=0.5, nudge=0.2, residual=None)
    assert other.nudge == 0.2 and other.config["feedback"] == 0.5 and len(other.skips) == 0
    for name, p in other.named_parameters():
        assert torch.equal(p, net.get_parameter(name)), name
    assert other.layers[0].weight is not net.layers[0].weight  # a copy, not shared
    rnd = A.with_options(net, feedback_weights="random", seed=1)
    assert torch.equal(rnd.skips["1_4"].weight, net.skips["1_4"].weight)
    assert torch.equal(A.with_options(net, feedback_weights="random", seed=1).fixed.B2_1, rnd.fixed.B2_1)


# ----------------------------------------------------------------------------- update norms over training
def test_residual_links_restore_the_update_of_the_first_layer():
    """Weak feedback (0.1) over 5 hidden layers: the first layer's update shrinks by
    ~0.1 per hop; a residual link 1<->4 shortens the path and restores it."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 12, generator=g), torch.randint(0, 4, (64,), generator=g)
    net = EPNet([12, 8, 8, 8, 8, 8, 4], feedback=0.1, nudge=0.1, T=20, K=10)
    rec = A.residual_update_norms(net, x, y, every=3, epochs=1, batch_size=32, lr=1e-3)
    with_res, without = rec["with residual links (every 3)"], rec["without residual links"]
    assert without["epochs"] == [1] and len(without["norms"]) == 6 and len(with_res["norms"]) == 7
    assert with_res["labels"][-1] == "h1->h4 (skip)" and without["labels"][0] == "x->h1"
    first = without["norms"][0][0]
    assert first < 1e-2 * without["norms"][4][0]  # vanishing: x->h1 far below h4->h5 (measured ~3e-4)
    assert with_res["norms"][0][0] > 10 * first  # restored by the residual link (measured ~50x)
    json.dumps(rec, allow_nan=False)


# ----------------------------------------------------------------------------- sweeps, plots, CLI
@pytest.fixture(scope="module")
def tiny_sweeps():
    torch.manual_seed(0)
    net = EPNet([10, 6, 6, 6, 3], feedback=0.1, T=10, K=5)
    x, y = torch.rand(8, 10), torch.randint(0, 3, (8,))
    fb = A.sweep_feedback(net, x, y, values=[0.01, 4.0], horizon=40)
    ab = A.sweep_alpha_beta(net, x, y, alphas=[0.5, 2.0], betas=[0.1, 2.0], horizon=40, baselines=["bp"])
    return net, x, y, fb, ab


def test_sweeps_are_json_and_track_the_spectral_radius(tiny_sweeps):
    net, _, _, fb, ab = tiny_sweeps
    json.dumps(fb, allow_nan=False), json.dumps(ab, allow_nan=False)
    assert len(fb["points"]) == 4 and {p["feedback_weights"] for p in fb["points"]} == {"symmetric", "random"}
    sym = [p for p in fb["points"] if p["feedback_weights"] == "symmetric"]
    assert sym[0]["spectral_radius"] < sym[1]["spectral_radius"]
    grid = {(p["alpha"], p["beta"]): p for p in ab["points"]}
    # layered net, uniform alpha and beta: diagonal scaling turns C into sqrt(alpha beta) C(1, 1)
    base = grid[(0.5, 0.1)]["spectral_radius"] / math.sqrt(0.5 * 0.1)
    for (a, b), p in grid.items():
        assert p["spectral_radius"] == pytest.approx(math.sqrt(a * b) * base, rel=1e-9)
    assert grid[(0.5, 0.1)]["mean_cosine_bp"] > grid[(2.0, 2.0)]["mean_cosine_bp"]


def test_plots_write_png_and_svg(tmp_path, tiny_sweeps):
    pytest.importorskip("matplotlib")
    net, x, y, fb, ab = tiny_sweeps
    rec = {"a": {"names": ["layers.0.weight", "layers.1.weight"], "labels": ["x->h1", "h1->y"], "epochs": [1, 2],
                 "norms": [[1e-4, 2e-4], [0.1, 0.05]]},
           "b": {"names": ["layers.0.weight"], "labels": ["x->h1"], "epochs": [1, 2], "norms": [[1e-3, 0.0]]}}
    made = [
        A.plot_dynamics(A.dynamics_report(net, x, horizon=30), tmp_path / "dyn"),
        A.plot_alignment(A.gradient_alignment(net, x, y), tmp_path / "al.png"),
        A.plot_alignment(A.alignment_sweep(net, x, y, nudge=[0.01, 0.1], baselines=["bp"]), tmp_path / "alsweep"),
        A.plot_feedback_sweep(fb, tmp_path / "fb"),
        A.plot_alpha_beta(ab, tmp_path / "ab"),
        A.plot_update_norms(rec, tmp_path / "norms"),
    ]
    for png, svg in made:
        assert png.endswith(".png") and svg.endswith(".svg")
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        text = open(svg).read()
        assert "<svg" in text and len(text) > 5000


def test_cli_dynamics_writes_valid_json(tmp_path, capsys):
    rc = main(["dynamics", "mnist-5hl", "--hidden", "8,8,8", "--batch", "4", "--T", "6", "--horizon", "20",
               "--feedback", "0.2", "--residual", "none", "--out", str(tmp_path)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    data = json.loads((tmp_path / "dynamics.json").read_text())
    assert printed["json"] == str(tmp_path / "dynamics.json") and printed["plots"] == []
    assert data["net"]["sizes"] == [784, 8, 8, 8, 10] and data["net"]["feedback"] == 0.2
    r = data["result"]
    assert r["T"] == 6 and r["horizon"] == 20 and len(r["state_change"]) == 20
    assert r["spectral_radius"] > 0 and isinstance(r["ftmle"], float)


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["dynamics", "mnist-2hll", "--out", str(tmp_path)]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["dynamics", "--hidden", "4", "--horizon", "0", "--out", str(tmp_path)]) == 2
    assert "horizon must be a positive int" in capsys.readouterr().err


def test_cli_norms_on_real_mnist(tmp_path, data_dir):
    rc = main(["norms", "mnist-5hl", "--hidden", "8,8,8,8", "--T", "8", "--K", "4", "--epochs", "1",
               "--limit-train", "100", "--batch-size", "50", "--data-dir", str(data_dir), "--out", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "norms.json").read_text())
    assert set(data["result"]) == {"with residual links (every 3)", "without residual links"}
    assert "mnist" in data["inputs"]


def test_cli_batch_is_a_stratified_subset(tmp_path, mnist):
    """--batch N draws the seeded class-stratified subset --limit-test draws: on a test
    set stored by class (as the CIFAR-10 copy is) the first N would all be one class."""
    from conftest import write_npz
    from tritonep import data as data_mod

    order = torch.argsort(mnist.y_test, stable=True)
    by_class = data_mod.Dataset("mnist", mnist.x_train[:10], mnist.y_train[:10], mnist.x_test[order],
                                mnist.y_test[order], "sorted by class")
    d = write_npz(by_class, tmp_path / "data")
    assert main(["alignment", "mnist-2hl", "--hidden", "8", "--T", "4", "--K", "2", "--batch", "50",
                 "--data-dir", str(d), "--out", str(tmp_path)]) == 0
    inputs = json.loads((tmp_path / "alignment.json").read_text())["inputs"]
    counts = torch.bincount(by_class.y_test[data_mod.stratified_subset(by_class.y_test, 50, 0, "test")],
                            minlength=10).tolist()
    assert f"per class {counts}" in inputs and min(counts) >= 4, inputs
