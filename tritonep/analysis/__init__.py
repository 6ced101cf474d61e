"""Analysis of FRE-RNN dynamics and learning: stability, convergence, gradient
alignment, and update norms over training (issue 5).

What it measures on any ``EPNet``:

* ``spectral_radius``: largest |eigenvalue| of the scaled state-to-state matrix
  (forward blocks times alpha, feedback blocks times beta_l).
* ``lyapunov``: the finite-time maximal Lyapunov exponent (FTMLE) along the free
  trajectory, by Benettin's method, and the asymptotic exponent.
* ``convergence_time``: steps until the free phase has settled.
* ``gradient_alignment``: EP's update against BP and BPTT, per trained matrix.
* ``train_update_norms``: per-layer update norms over training epochs.
* sweeps over the feedback coefficient and an alpha x beta grid, and plots; the
  ``tritonep analyze`` command line is ``tritonep.cli.analyze``.

Modules: ``netcopy`` (a net's options, copies with other options), ``dynamics``,
``alignment``, ``sweeps``, ``norms``, ``plots`` (matplotlib, optional), ``curves``
(learning curves of runs, the paper against ours of a reproduction) and
``strict_json`` (report values); every public name is re-exported here.

Conventions. For one sample, the state vector z stacks the state layers
``[s_1, ..., s_n]`` as a column of length N = n_1 + ... + n_n (``state_offsets``
says where each layer sits). The dynamics add ``scale * s_src @ M`` (row vectors,
M of shape (n_src, n_dst)) to layer dst, which is ``scale * M^T s_src`` in column
form, so block (dst, src) of the coupling matrix is ``scale * M^T``.
Exponents are natural logs per step (nats/step); times are in steps; state
changes are Euclidean norms in the units of the rates.

Dynamics and updates are computed in float64 by default, on detached copies: the
net, its weights and its ``.grad`` are never changed (``train_update_norms`` is
the exception: it trains the net it is given). Report-level functions return
plain dicts and lists that ``json.dumps`` writes as strict JSON: a non-finite
number appears as the string ``"inf"``, ``"-inf"`` or ``"nan"``, and a run that
never converged as ``None``.
"""
from .alignment import (BASELINES, alignment_sweep, compare_gradients, cosine, ep_update, expected_scales,
                        gradient_alignment, hidden_weights, layer_label, mean_cosine, norm_ratio)
from .curves import plot_reproduction, plot_runs, read_run, run_labels
from .dynamics import (DEFAULT_TOL, PATIENCE, convergence_time, coupling_matrix, default_horizon, dynamics_report,
                       first_settled, lyapunov, spectral_radius, state_changes, state_offsets, step_jacobian)
from .netcopy import describe, net_options, with_options
from .norms import residual_update_norms, train_update_norms
from .plots import plot_alignment, plot_alpha_beta, plot_dynamics, plot_feedback_sweep, plot_update_norms, save_figure
from .sweeps import ALPHA_VALUES, BETA_VALUES, FEEDBACK_VALUES, point_report, sweep_alpha_beta, sweep_feedback

__all__ = [
    "FEEDBACK_VALUES", "ALPHA_VALUES", "BETA_VALUES", "BASELINES", "PATIENCE", "DEFAULT_TOL",
    "net_options", "describe", "with_options",
    "state_offsets", "coupling_matrix", "spectral_radius", "state_changes", "first_settled", "default_horizon",
    "convergence_time", "step_jacobian", "lyapunov", "dynamics_report",
    "cosine", "norm_ratio", "layer_label", "hidden_weights", "expected_scales", "compare_gradients", "ep_update",
    "gradient_alignment", "mean_cosine", "alignment_sweep",
    "point_report", "sweep_feedback", "sweep_alpha_beta",
    "train_update_norms", "residual_update_norms",
    "read_run", "run_labels", "plot_runs", "plot_reproduction",
    "save_figure", "plot_dynamics", "plot_alignment", "plot_feedback_sweep", "plot_alpha_beta", "plot_update_norms",
]
