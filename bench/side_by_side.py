"""The paper authors' own EP code and tritonep, side by side, in one process: one
MNIST epoch (120 batches of 500, 784-512-512-10, Adam lr 1e-3) of each.

    python bench/side_by_side.py --authors-dir /tmp/fre-rnn-ep [--threads 2] [--repeat 2]
        [--data-dir ../shared/data] [--max-batches N] [--out bench/results/side-by-side/side-by-side-cpu-DATE.json]

Methods (all on the same batches, ``data.Batches(x, y, 500, seed=0).epoch(e)``):

* ``authors_K5`` / ``authors_K10``: ``FNN_LN`` of ``models_LN.py`` in
  github.com/Zero0Hero/FRE-RNN-EP, configured as their notebook
  ``Layered_BP_EP_com_MNIST_512.ipynb`` configures its MNIST 2-hidden-layer EP row
  (Table 1, "Ours": tanh, softmax readout, EP_It2sta=10 free steps, EP_It2sta2=5
  nudged steps, EP_b_sc=0.01, EP_nudge=0.1, symmetric weights, no biases, their own
  Adam ``update_weights_adam``, lr 1e-3), each batch run as their notebook's loop
  runs it (one_hot, ``forward``, ``cross_entropy_loss``, ``backward``,
  ``update_weights_adam``) under ``torch.no_grad`` (their notebook disables grad
  globally). K=10 sets EP_It2sta2=10. Their code is imported at run time from
  ``--authors-dir`` (an export of their repository, outside ours); nothing of it
  is copied here. Their module imports torchvision for its data loader alone: when
  torchvision is absent a stub module stands in (the data loader is not used).
* ``ours_K5`` / ``ours_K10``: ``EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1,
  T=10, K=5|10, error="frozen", backend="torch")`` with ``torch.optim.Adam(lr=1e-3)``.
* ``ours_alt_T5K3`` / ``ours_alt_T5K5``: the same with ``schedule="alternating"``.
* ``bp``: tritonep's BP epoch on the same net (``baselines.feedforward`` then
  ``net.loss(...).backward()``), as ``bench/epoch.py``.

Timing: rounds of one epoch of every method; round 0 is the warm-up, then
``--repeat`` timed rounds. Within a round the methods take turns batch by batch
(``--interleave batch``, the default: step b of every method, then step b + 1), so
that a changing background load on a shared machine falls on all of them alike
(``--interleave epoch``: a whole epoch of each in turn, as ``bench/epoch.py``). A
method's epoch time is the sum of its 120 step times (wall clock; the process's CPU
time beside it), and the number reported is its best timed epoch (all are
recorded). Epoch e of every method sees the batches of ``Batches.epoch(e)``. After
the last round each net's test accuracy (10k images, batches of 2000 as their
notebook's test loader) is measured, untimed: a sanity check that both codes learn
after 1 + repeat epochs, not the paper's 50-epoch comparison.
"""
import argparse
import datetime
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MIRROR = "/work/.mirror/Zero0Hero+FRE-RNN-EP/repo"
AUTHORS_REPO = "https://github.com/Zero0Hero/FRE-RNN-EP"
NOTEBOOK = "Layered_BP_EP_com_MNIST_512.ipynb"


# ----------------------------------------------------------------------------- the authors' code
def import_authors(authors_dir: Path):
    """``models_LN`` from ``authors_dir``; a stub torchvision when it is not installed
    (their module imports it for ``dataset()`` alone, which this benchmark never calls)."""
    stubbed = False
    try:
        import torchvision  # noqa: F401
    except ImportError:
        def unavailable(*a, **k):
            raise RuntimeError("torchvision is stubbed by bench/side_by_side.py: their dataset() is not used")

        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.datasets = types.ModuleType("torchvision.datasets")
        tv.transforms.Compose = tv.transforms.ToTensor = unavailable
        for name in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"):
            setattr(tv.datasets, name, unavailable)
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms,
                            "torchvision.datasets": tv.datasets})
        stubbed = True
    sys.path.insert(0, str(authors_dir))
    try:
        mod = importlib.import_module("models_LN")
    finally:
        sys.path.remove(str(authors_dir))
    return mod, stubbed


class AuthorsConfig:
    """Their notebook's ``Config`` (cell 1), its overrides (cell 2) and the per-run
    settings its loop sets for ``nL_hidd == 2`` (cell 3), plus what their
    ``dataset(config)`` sets for MNIST (``train_eta_global = 10e-4``, ``n_input``)."""

    def __init__(self, m, K: int):
        self.n_input = 28 * 28
        self.n_hidd = 512
        self.n_out = 10
        self.nL_hidd = 2
        self.sc_forward = 1
        self.sc_bias = 0
        self.sc_back = 1
        self.f, self.fd = m.tanh, m.tanh_d
        self.ff, self.ffd = m.softmax, m.softmax_d
        self.train_eta_global = 10e-4  # their dataset() for "MNIST"
        self.train_batch_size = 500
        self.train_task = "MNIST"
        self.train_tmethod = "EP"
        self.biasLearning = False
        self.EP_symm_W = True
        self.adam = True
        self.EP_b_learn = False
        self.EP_f_sc = 1
        self.EP_b_sc = 0.01  # "0.1 if config.nL_hidd>4 else 0.01"
        self.EP_nudge = 0.1
        self.EP_It2sta = 10  # "10 if config.nL_hidd==2 else 18"
        self.EP_It2sta2 = K  # their notebook: "5 if config.nL_hidd==2 else 10"
        self.device = torch.device("cpu")  # the one change: CPU tensors

    def record(self) -> dict:
        return {k: (v.__name__ if callable(v) else str(v) if isinstance(v, torch.device) else v)
                for k, v in vars(self).items()}


def authors_method(m, K: int, seed: int):
    torch.manual_seed(seed)
    cfg = AuthorsConfig(m, K)
    model = m.FNN_LN(cfg)
    C = cfg.n_out

    def step(images, labels):  # one batch of their notebook's loop, less its bookkeeping
        labels_one_hot = m.one_hot(labels, C, device=cfg.device)
        outputs = model.forward(images)
        m.cross_entropy_loss(outputs, labels_one_hot)
        model.backward(images, labels_one_hot, outputs)
        model.update_weights_adam()

    def predict(images):
        return model.forward(images).argmax(1)

    return {"step": step, "predict": predict, "no_grad": True, "input": "authors", "T": cfg.EP_It2sta, "K": K,
            "config": cfg.record()}


# ----------------------------------------------------------------------------- ours
def ours_method(T: int, K: int, schedule: str, seed: int):
    from tritonep import EPNet

    torch.manual_seed(seed)
    net = EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, T=T, K=K, error="frozen", backend="torch",
                schedule=schedule)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step(xb, yb):
        opt.zero_grad()
        net.ep_step(xb, yb)
        opt.step()

    return {"step": step, "predict": lambda xb: net(xb).argmax(1), "no_grad": False, "input": "ours",
            "T": T, "K": K, "schedule": schedule,
            "config": dict(sizes=[784, 512, 512, 10], feedback=0.01, nudge=0.1, T=T, K=K, error="frozen",
                           backend="torch", schedule=schedule, optimizer="torch.optim.Adam(lr=1e-3)")}


def bp_method(seed: int):
    from tritonep import EPNet
    from tritonep.baselines import feedforward

    torch.manual_seed(seed)
    net = EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, backend="torch")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step(xb, yb):
        opt.zero_grad()
        net.loss(feedforward(net, xb), torch.nn.functional.one_hot(yb, 10).float()).backward()
        opt.step()

    def predict(xb):
        with torch.no_grad():
            return feedforward(net, xb).argmax(1)

    return {"step": step, "predict": predict, "no_grad": False, "input": "ours", "T": None, "K": None,
            "config": dict(sizes=[784, 512, 512, 10], method="bp (baselines.feedforward + net.loss().backward())",
                           optimizer="torch.optim.Adam(lr=1e-3)")}


# ----------------------------------------------------------------------------- parity
@torch.no_grad()
def parity(m, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """Both codes' weight updates for one batch from the SAME weights: our EPNet's
    weights copied into their FNN_LN (their W is our weight transposed), their
    ``forward`` + ``backward`` (``grads``) against our ``ep_step`` (``.grad``).
    Relative difference ||g_ours - g_theirs|| / ||g_theirs|| per weight matrix
    ([W0 784->512, W1 512->512, W_out 512->10]), and each matrix's cosine with BP's
    gradient (``tritonep.bp_gradients``)."""
    from tritonep import EPNet, bp_gradients

    torch.manual_seed(seed)
    base = EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, backend="torch")
    weights = [l.weight.detach().clone() for l in base.layers]
    onehot = m.one_hot(y, 10, device=torch.device("cpu"))

    def cos(a, b):  # per weight matrix (EP's updates are not normalised: layer l is scaled by the gains)
        return [float((u * v).sum() / (u.norm() * v.norm())) for u, v in zip(a, b)]

    theirs = {}
    for K in (5, 10):
        model = m.FNN_LN(AuthorsConfig(m, K))
        for i, W in enumerate(weights):
            model.layers[i][0] = W.t().clone()
        model.update_Wa()
        out = model.forward(x)
        model.backward(x, onehot, out)
        theirs[K] = ([model.grads[i][0].t().clone() for i in range(3)], out)
    bp = bp_gradients(base, x, y)
    bp = [bp[f"layers.{i}.weight"] for i in range(3)]
    rec = {"batch": "the first batch of Batches.epoch(0)",
           "authors_K5_vs_K10_rel_diff": [float((a - b).norm() / b.norm())
                                          for a, b in zip(theirs[5][0], theirs[10][0])],
           "authors_cos_bp": {f"K{K}": cos(theirs[K][0], bp) for K in (5, 10)}}
    for name, T, K, schedule in (("ours_K5", 10, 5, "synchronous"), ("ours_K10", 10, 10, "synchronous"),
                                 ("ours_alt_T5K3", 5, 3, "alternating"), ("ours_alt_T5K5", 5, 5, "alternating")):
        try:
            net = EPNet([784, 512, 512, 10], feedback=0.01, nudge=0.1, T=T, K=K, error="frozen", backend="torch",
                        schedule=schedule)
        except Exception as e:
            rec[name] = f"{type(e).__name__}: {e}"
            continue
        for l, W in zip(net.layers, weights):
            l.weight.copy_(W)
        net.zero_grad()
        _, logits = net.ep_step(x, y)
        ours = [l.weight.grad.clone() for l in net.layers]
        r = {"cos_bp": cos(ours, bp), "free_residual": net.last_residual}
        for KA in (5, 10):
            g, out = theirs[KA]
            r[f"rel_diff_vs_authors_K{KA}"] = [float((a - b).norm() / b.norm()) for a, b in zip(ours, g)]
            r[f"max_abs_diff_probabilities_vs_authors_K{KA}"] = float((torch.softmax(logits, 1) - out).abs().max())
        rec[name] = r
    return rec


# ----------------------------------------------------------------------------- work per batch
def gemm_macs(name: str, B: int = 500, n_in: int = 784, n: int = 512, C: int = 10, T=None, K=None) -> int:
    """Multiply-adds of the matrix products of one training batch (what each code
    launches, counted from its source; elementwise work left out)."""
    upd = n_in * B * n + n * B * n + n * B * C  # x^T e_1, s_1^T e_2, s_2^T (p - y)
    if name.startswith("authors"):
        # input drive twice (forward_EP and backward_EP), T + K products with the whole
        # (2n x 2n) Wa (its two zero diagonal blocks included, the first free step's zero
        # state included), the readout once free + K times in the nudged loop, the nudge
        # (B x C x n) K times
        return 2 * B * n_in * n + (T + K) * B * (2 * n) ** 2 + (1 + K) * B * n * C + K * B * C * n + upd
    if name.startswith("ours"):
        alternating = "alt" in name
        # first free step: products with the zero state skipped (alternating: layer 2
        # reads layer 1's new state, one product); then 2 products (B x n x n) per step
        first = 1 if alternating else 0
        return B * n_in * n + (first + 2 * (T - 1) + 2 * K) * B * n * n + B * n * C + K * B * C * n + upd
    if name == "bp":  # forward (x W0, s1 W1, s2 Wf), backward (3 weight grads, 2 input grads)
        return 2 * (B * n_in * n + B * n * n + B * n * C) + B * n * n + B * n * C
    raise ValueError(name)


# ----------------------------------------------------------------------------- provenance
def git(*args, git_dir=None) -> str:
    cmd = ["git"] + (["--git-dir", str(git_dir)] if git_dir else ["-C", str(ROOT)]) + list(args)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def blob_id(path: Path) -> str:
    """The git blob id of a file (what ``git rev-parse COMMIT:PATH`` prints)."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def authors_provenance(authors_dir: Path, mirror: str) -> dict:
    files = {name: blob_id(authors_dir / name) for name in ("models_LN.py", NOTEBOOK) if (authors_dir / name).exists()}
    rec = {"repository": AUTHORS_REPO, "dir": str(authors_dir), "file_blob_ids": files, "commit": None}
    if mirror and Path(mirror).exists():
        commit = git("rev-parse", "HEAD", git_dir=mirror)
        rec["commit"] = commit
        rec["files_match_commit"] = all(git("rev-parse", f"HEAD:{n}", git_dir=mirror) == b for n, b in files.items())
    return rec


# ----------------------------------------------------------------------------- running
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--authors-dir", default="/tmp/fre-rnn-ep",
                    help="an export of github.com/Zero0Hero/FRE-RNN-EP (holds models_LN.py)")
    ap.add_argument("--authors-mirror", default=DEFAULT_MIRROR,
                    help="their repository's git directory, to record its commit (optional)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--repeat", type=int, default=2, help="timed epochs per method (after one warm-up)")
    ap.add_argument("--max-batches", type=int, default=None, help="only the first N batches of each epoch")
    ap.add_argument("--seed", type=int, default=42, help="weight init seed of every net (their notebook's 42)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    ap.add_argument("--interleave", default="batch", choices=("batch", "epoch"),
                    help="batch: step b of every method, then step b+1 (default: a changing background load "
                         "falls on every method alike); epoch: a whole epoch of each method in turn")
    ap.add_argument("--parity-only", action="store_true",
                    help="only the one-batch update parity check (no timing, no training)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from tritonep import data

    authors_dir = Path(args.authors_dir).resolve()
    m, stubbed = import_authors(authors_dir)
    warnings.filterwarnings("ignore", message="To copy construct from a tensor")  # their backward_EP's torch.tensor(z)

    commit_start = git("rev-parse", "HEAD")  # what the imported tritonep was (others may commit during a run)
    modified_start = git("status", "--porcelain", "--untracked-files=no")
    ds = data.load("mnist", args.data_dir, download=False)
    n_train = None if args.max_batches is None else 500 * args.max_batches
    x_ours, y = data.to_float(ds.x_train[:n_train]), ds.y_train[:n_train]
    xt_ours, yt = data.to_float(ds.x_test), ds.y_test
    # theirs as torchvision's ToTensor gives them (uint8 -> float32 / 255), viewed (-1, 784) by their loop
    x_auth = ds.x_train[:n_train].to(torch.float32).div(255).view(-1, 784)
    xt_auth = ds.x_test.to(torch.float32).div(255).view(-1, 784)
    same_pixels = bool(torch.equal(x_auth, x_ours) and torch.equal(xt_auth, xt_ours))
    ours_batches = data.Batches(x_ours, y, 500, seed=0)
    auth_batches = data.Batches(x_auth, y, 500, seed=0)  # same seed, same order

    xb0, yb0 = next(ours_batches.epoch(0))
    parity_rec = parity(m, xb0, yb0, args.seed)
    print("parity (one batch, same weights): " + json.dumps(parity_rec), flush=True)
    if args.parity_only:
        out = Path(args.out or ROOT / "bench" / "results" / "side-by-side" /
                   f"parity-cpu-{datetime.date.today().isoformat()}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"date": datetime.date.today().isoformat(), "torch": torch.__version__,
                                   "commit": commit_start, "working_tree_modified_files":
                                   len(modified_start.splitlines()) if modified_start else 0,
                                   "authors": authors_provenance(authors_dir, args.authors_mirror),
                                   "command": "python bench/side_by_side.py " + " ".join(sys.argv[1:]),
                                   "parity": parity_rec}, indent=2) + "\n")
        print(f"wrote {out}")
        return

    methods = {
        "authors_K5": lambda: authors_method(m, 5, args.seed),
        "authors_K10": lambda: authors_method(m, 10, args.seed),
        "ours_K5": lambda: ours_method(10, 5, "synchronous", args.seed),
        "ours_K10": lambda: ours_method(10, 10, "synchronous", args.seed),
        "ours_alt_T5K3": lambda: ours_method(5, 3, "alternating", args.seed),
        "ours_alt_T5K5": lambda: ours_method(5, 5, "alternating", args.seed),
        "bp": lambda: bp_method(args.seed),
    }
    if args.methods:
        keep = args.methods.split(",")
        methods = {k: v for k, v in methods.items() if k in keep}
    built, errors = {}, {}
    for name, make in methods.items():
        try:
            built[name] = make()
        except Exception as e:  # e.g. schedule="alternating" not (yet) accepted
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: could not build: {errors[name]}", flush=True)

    def run_step(name, meth, xb, yb, clock):
        """One training step of a method: (wall, CPU) seconds; a failure drops the method."""
        ctx = torch.no_grad() if meth["no_grad"] else torch.enable_grad()
        w, c = time.perf_counter(), time.process_time()
        try:
            with ctx:
                meth["step"](xb, yb)
        except Exception as e:
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: failed: {errors[name]}", flush=True)
            del built[name]
            return
        clock[name][0] += time.perf_counter() - w
        clock[name][1] += time.process_time() - c

    times, cpu_times = {name: [] for name in built}, {name: [] for name in built}
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    for r in range(1 + args.repeat):
        clock = {name: [0.0, 0.0] for name in built}
        if args.interleave == "batch":  # batch b of every method in turn, then batch b + 1
            streams = {name: (auth_batches if m_["input"] == "authors" else ours_batches).epoch(r)
                       for name, m_ in built.items()}
            for _ in range(len(ours_batches)):
                for name in list(built):
                    xb, yb = next(streams[name])
                    run_step(name, built[name], xb, yb, clock)
        else:  # a whole epoch of every method in turn
            for name in list(built):
                for xb, yb in (auth_batches if built[name]["input"] == "authors" else ours_batches).epoch(r):
                    if name not in built:
                        break
                    run_step(name, built[name], xb, yb, clock)
        for name in built:
            times[name].append(clock[name][0])
            cpu_times[name].append(clock[name][1])
            print(f"round {r}{' (warm-up)' if r == 0 else ''} {name}: {clock[name][0]:.2f} s "
                  f"(CPU {clock[name][1]:.2f} s)", flush=True)
    load_after = os.getloadavg()
    wall = time.perf_counter() - t_start

    acc = {}
    with torch.no_grad():
        for name, meth in built.items():
            xt = xt_auth if meth["input"] == "authors" else xt_ours
            correct = sum(int((meth["predict"](xt[i:i + 2000]) == yt[i:i + 2000]).sum())
                          for i in range(0, xt.shape[0], 2000))
            acc[name] = 100.0 * correct / xt.shape[0]

    best = {n: min(times[n][1:]) for n in built if len(times[n]) > 1}
    rows = {}
    for name, meth in built.items():
        if name not in best:
            continue
        row = {"T": meth["T"], "K": meth["K"], "schedule": meth.get("schedule"),
               "epoch_seconds": best[name], "timed_epochs_seconds": times[name][1:],
               "warmup_seconds": times[name][0], "epoch_cpu_seconds": min(cpu_times[name][1:]),
               "timed_epochs_cpu_seconds": cpu_times[name][1:], "warmup_cpu_seconds": cpu_times[name][0],
               "test_acc": acc[name],
               "epochs_trained": len(times[name]), "config": meth["config"],
               "gemm_gmacs_per_batch": gemm_macs(name, T=meth["T"], K=meth["K"]) / 1e9}
        for ref in ("authors_K5", "authors_K10", "bp"):
            if ref in best:
                row[f"ratio_to_{ref}"] = best[name] / best[ref]
        rows[name] = row
    pairs = {"ours_K5 vs authors_K5": ("ours_K5", "authors_K5"),
             "ours_K10 vs authors_K10": ("ours_K10", "authors_K10"),
             "ours_alt_T5K3 vs authors_K5": ("ours_alt_T5K3", "authors_K5"),
             "ours_alt_T5K5 vs authors_K10": ("ours_alt_T5K5", "authors_K10"),
             "ours_alt_T5K3 vs ours_K5": ("ours_alt_T5K3", "ours_K5"),
             "ours_alt_T5K5 vs ours_K10": ("ours_alt_T5K5", "ours_K10")}
    speedups = {k: best[b] / best[a] for k, (a, b) in pairs.items() if a in best and b in best}

    commit_end = git("rev-parse", "HEAD")
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python bench/side_by_side.py " + " ".join(sys.argv[1:]),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_model(),
        "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
        "commit": commit_start,
        "working_tree_modified_files": len(modified_start.splitlines()) if modified_start else 0,
        "commit_at_end": commit_end,
        "authors": {**authors_provenance(authors_dir, args.authors_mirror), "notebook": NOTEBOOK,
                    "torchvision_stubbed": stubbed},
        "data": {"source": ds.source, "batches_per_epoch": len(ours_batches), "batch_size": 500,
                 "identical_pixels_both_codes": same_pixels, "order": "data.Batches(x, y, 500, seed=0).epoch(e)"},
        "timing": {"warmup_rounds": 1, "repeat": args.repeat, "statistic": "min over timed epochs",
                   "interleave": args.interleave, "wall_seconds": wall,
                   "epoch_seconds": "sum of the epoch's step wall times (perf_counter)",
                   "epoch_cpu_seconds": "sum of the epoch's step process CPU times (all threads; includes "
                                        "OpenMP spin-waiting)"},
        "results": rows, "speedups_theirs_over_ours": speedups, "parity": parity_rec, "errors": errors,
    }

    print(f"\n{'method':16s} {'T':>3s} {'K':>3s} {'epoch s':>8s} {'CPU s':>7s} {'/auth K5':>9s} {'/auth K10':>9s} "
          f"{'/BP':>6s} {'GMAC/b':>7s} {'test %':>7s}")
    for name, r in rows.items():
        f = lambda k: f"{r[k]:.2f}" if k in r else "-"
        print(f"{name:16s} {str(r['T'] or '-'):>3s} {str(r['K'] or '-'):>3s} {r['epoch_seconds']:8.2f} "
              f"{r['epoch_cpu_seconds']:7.2f} {f('ratio_to_authors_K5'):>9s} {f('ratio_to_authors_K10'):>9s} "
              f"{f('ratio_to_bp'):>6s} {r['gemm_gmacs_per_batch']:7.2f} {r['test_acc']:7.2f}")
    for k, v in speedups.items():
        print(f"speed-up {k}: {v:.2f}x")
    for k, v in errors.items():
        print(f"ERROR {k}: {v}")

    out = Path(args.out or ROOT / "bench" / "results" / "side-by-side" / f"side-by-side-cpu-{result['date']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
