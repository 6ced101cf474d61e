"""Multi-process data-parallel EP on ``torch.distributed``.

Launch (one process per GPU, or per group of CPU cores)::

    torchrun --nproc_per_node=2 -m tritonep train mnist-2hl --distributed --out runs/2hl.json

Why not ``DistributedDataParallel``: DDP all-reduces gradients from hooks that
autograd fires during ``loss.backward()``. ``EPNet.ep_step`` writes EP's updates
straight into ``.grad`` with no backward pass, so DDP would never see them. Here
every rank runs ``ep_step`` on its shard of the global batch, then
:class:`GradAllReduce` averages the ``.grad`` tensors across ranks (flattened
into a few buckets, one ``all_reduce`` per bucket) before ``optimizer.step()``.
The same path serves BP/FA (``loss.backward()`` then the all-reduce).

Why averaging is exact: ``ep_step``'s updates are batch means (every rule's
coefficient carries 1/B; the readout's cross-entropy gradient too). A global
batch of n samples split into shards of n_r samples gives
``sum_r (n_r / n) * mean_r = mean``, which for equal shards is the plain average
``sum_r mean_r / world``. So ``world`` ranks with per-rank batch B/world train
like one process with batch B, to float rounding. ``--batch-size`` is therefore
always the GLOBAL batch; it must be divisible by the world size. A last partial
batch (N not a multiple of B) is split as evenly as possible and weighted by
shard size, so it is exact too.

What each rank holds: the whole data set (already on its device), the same
model (initialised from the same seed, then broadcast from rank 0 as DDP does),
the same optimizer state (identical reduced grads give identical steps). The
batch order comes from :class:`tritonep.data.Batches` with the run's seed and the
epoch only, never from the world size, so a checkpoint resumes on any number of
ranks. Rank 0 alone writes JSON and checkpoints and shows progress.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from . import data as data_mod

# what torchrun exports to every worker; all must be present
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = "launch with `torchrun --nproc_per_node=N -m tritonep train PRESET --distributed ...`"
T = TypeVar("T")


class DistributedSetupError(ValueError):
    """Bad or missing launch environment, or a batch the world cannot split."""


@dataclass
class Context:
    """This process's place in the group: ``rank`` of ``world_size``, on ``device``.

    Built by :func:`init_from_env`; the collectives below are the few the
    training loop needs, written so a world of one works without a process group.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def all_sum(self, values: Iterable[float]) -> list[float]:
        """Element-wise sum over ranks of a few scalars (float64, so counts stay exact)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_max(self, values: Iterable[float]) -> list[float]:
        """Element-wise maximum over ranks of a list of the same length on every rank."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        if self.world_size > 1 and t.numel():
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (pickled; for small things: RNG states, a checkpoint)."""
        if self.world_size == 1:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others: a data download happens once,
        and a failure on rank 0 is raised on every rank instead of leaving them
        waiting at a barrier."""
        if self.world_size == 1:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as e:  # forwarded below, then re-raised here
                error = e
        failure = self.broadcast_object(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if failure is not None:
            raise RuntimeError(f"rank 0 failed: {failure}")
        return result if self.is_main else fn()

    def shard_range(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part [lo, hi) of n items (sizes differ by at most one)."""
        base, extra = divmod(n, self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)


def env_ranks(environ: Optional[dict] = None) -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables; raises
    :class:`DistributedSetupError` naming what is missing or malformed."""
    env = os.environ if environ is None else environ
    missing = [k for k in ENV_VARS if not env.get(k)]
    if missing:
        raise DistributedSetupError(f"--distributed needs the variables torchrun sets ({', '.join(ENV_VARS)}); "
                                    f"missing: {', '.join(missing)}; {LAUNCH_HINT}")
    try:
        rank, world, local = (int(env[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError:
        raise DistributedSetupError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                                    f"{env['RANK']!r}, {env['WORLD_SIZE']!r}, {env['LOCAL_RANK']!r}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedSetupError(f"inconsistent launch environment: RANK={rank}, WORLD_SIZE={world}, "
                                    f"LOCAL_RANK={local}")
    return rank, world, local


def check_batch(batch_size: int, world_size: int) -> int:
    """The per-rank batch; raises unless ``world_size`` divides the global ``batch_size``."""
    if batch_size % world_size:
        raise DistributedSetupError(
            f"world size {world_size} does not divide the global batch size {batch_size} (--batch-size is the "
            f"global batch, split evenly across ranks); use a multiple of {world_size}, e.g. "
            f"{max(world_size, batch_size // world_size * world_size)}")
    return batch_size // world_size


def init_from_env(device: str = "auto", batch_size: Optional[int] = None,
                  timeout: datetime.timedelta = datetime.timedelta(minutes=30)) -> Context:
    """Join the process group torchrun describes; returns this rank's :class:`Context`.

    device: ``"auto"`` (``cuda:LOCAL_RANK`` where CUDA is available, else cpu),
        ``"cpu"``, ``"cuda"`` (``cuda:LOCAL_RANK``) or an explicit ``"cuda:N"``.
    batch_size: the global batch, checked before any process waits on another.
    Backend: nccl on CUDA, gloo on CPU.
    """
    rank, world, local = env_ranks()
    if batch_size is not None:
        check_batch(batch_size, world)
    if device == "auto":
        dev = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local}")  # one GPU per process, as torchrun numbers them
        elif dev.type == "cuda" and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            raise DistributedSetupError(f"--device {device} would put every process of this node on one GPU; "
                                        f"give --device cuda (or auto): process LOCAL_RANK uses cuda:LOCAL_RANK")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedSetupError(f"device {device!r} asked for but CUDA is not available here")
        if dev.index >= torch.cuda.device_count():
            raise DistributedSetupError(f"rank {rank} wants {dev} but only {torch.cuda.device_count()} GPUs are "
                                        f"visible; start at most that many processes per node")
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
    return Context(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend)


def shutdown(barrier: bool = True) -> None:
    """Leave the process group, after a final barrier (so no rank exits while
    another still writes) unless ``barrier=False`` (on an error path, where the
    others may never arrive)."""
    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, ctx: Context) -> None:
    """Overwrite every parameter and buffer with rank 0's (in place), as DDP does at
    start: ranks then agree even if their initialisation drew different numbers."""
    if ctx.world_size == 1:
        return
    with torch.no_grad():
        for t in module.state_dict().values():  # state_dict tensors share storage with the module
            dist.broadcast(t, src=0)


class GradAllReduce:
    """Average ``.grad`` over ranks, weighted by each rank's share of the batch.

    params: the trained parameters (the optimizer's), identical order on every
        rank. They are grouped into flat buckets of at most ``bucket_mb`` MiB
        (per dtype and device), so a step costs a few large all-reduces instead of
        one per tensor; the flat buffers are allocated once and reused.

    Call after the step has written ``.grad``, with ``weight`` = local batch /
    global batch (1/world for equal shards). Afterwards every rank's ``.grad``
    holds ``sum_r weight_r * grad_r``, the gradient of the whole global batch. A
    parameter without a ``.grad`` (a rank whose shard was empty) counts as zeros.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], ctx: Context, bucket_mb: float = 25.0):
        self.params = [p for p in params if p.requires_grad]
        self.ctx = ctx
        cap = max(1, int(bucket_mb * 2 ** 20))
        self.buckets: list[tuple[list[torch.nn.Parameter], Tensor]] = []
        groups: dict[tuple, list[torch.nn.Parameter]] = {}
        for p in self.params:
            groups.setdefault((p.dtype, p.device), []).append(p)
        for members in groups.values():
            cur: list[torch.nn.Parameter] = []
            size = 0
            for p in members:
                nbytes = p.numel() * p.element_size()
                if cur and size + nbytes > cap:
                    self._add(cur)
                    cur, size = [], 0
                cur.append(p)
                size += nbytes
            if cur:
                self._add(cur)

    def _add(self, members: list[torch.nn.Parameter]) -> None:
        flat = torch.empty(sum(p.numel() for p in members), dtype=members[0].dtype, device=members[0].device)
        self.buckets.append((members, flat))

    @torch.no_grad()
    def __call__(self, weight: float) -> None:
        if self.ctx.world_size == 1:
            if weight != 1.0:
                for p in self.params:
                    if p.grad is not None:
                        p.grad.mul_(weight)
            return
        for members, flat in self.buckets:
            views = list(_views(members, flat))
            for p, v in views:
                if p.grad is None:
                    v.zero_()
                else:
                    v.copy_(p.grad)
            flat.mul_(weight)  # before the sum: a partial last batch weighs by its shard sizes
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for p, v in views:
                if p.grad is None:
                    p.grad = torch.empty_like(p)
                p.grad.copy_(v)


class ShardedBatches:
    """Each rank's slice of the global batch sequence of :class:`tritonep.data.Batches`.

    x: (N, ...) inputs, y: (N,) labels, both on this rank's device (every rank
    holds the whole set). The global order is exactly ``data.Batches(x, y,
    batch_size, seed=seed)``'s, drawn from the seed and epoch alone; each global
    batch of b samples is cut into ``world_size`` contiguous, disjoint parts
    (sizes differ by at most one) and this rank gets part ``rank``.

    ``epoch(e)`` yields ``(x_r, y_r, b)``: this rank's (b_r, ...) inputs, (b_r,)
    labels, and the global batch size b (the weight of this shard is b_r / b).
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, rank: int, world_size: int,
                 shuffle: bool = True, seed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        self.x, self.y, self.rank, self.world_size = x, y, rank, world_size
        index = torch.arange(x.shape[0], device=x.device)
        # Batches over the row numbers: its order, without a second copy of its logic
        self._order = data_mod.Batches(index, index, batch_size, shuffle=shuffle, seed=seed)

    def __len__(self) -> int:
        return len(self._order)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor, int]]:
        for idx, _ in self._order.epoch(epoch):
            part = torch.tensor_split(idx, self.world_size)[self.rank]
            yield self.x.index_select(0, part), self.y.index_select(0, part), int(idx.numel())


def _views(members: list, flat: Tensor) -> Iterator[tuple[torch.nn.Parameter, Tensor]]:
    """Each parameter of a bucket with its slice of the bucket's flat buffer, shaped like it."""
    off = 0
    for p in members:
        yield p, flat[off:off + p.numel()].view_as(p)
        off += p.numel()
