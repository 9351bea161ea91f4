"""Training across processes started by `torchrun` (torch.distributed), one node or several.

Two modes, chosen by TrainConfig.parallel_folds:

- data parallel (default): every process trains the same fold on its share of each epoch
  (DistributedSampler), gradients averaged by DistributedDataParallel. `batch_size` is per process;
  the batch of one step is batch_size x world size. Validation and test are sharded too and every
  process gathers all predictions (padding duplicates dropped), so metrics equal a single process's.
- parallel folds: rank r trains folds r, r+N, ... on its own (no gradient traffic); the global rank 0
  merges the fold results into one cv_summary.json.

Only the global rank 0 writes the run folder (in parallel-folds mode each process also writes the
fold<k>/ folders it trains, under its own --out: on several machines give them a shared folder or
collect the folds afterwards). A stop (Ctrl-C, the run folder's STOP file on rank 0, the UI's stop)
reaches every process through the process group; a process that dies makes the others fail with a
sentence within the group timeout (`dist_timeout`), and torchrun itself stops the rest.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

STOP_KEY = "audience/stop"
STOP_FILE = "STOP"  # in the run folder: rank 0 stops the run after the current batch when it appears


class GroupFailure(RuntimeError):
    """Another process of the run failed, or torchrun stopped this one: the run cannot go on."""


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its global and local rank, how many there are, and the mode."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    mode: str = "single"  # single | data | folds

    @property
    def main(self) -> bool:
        """The global rank 0: the one process that writes the run folder."""
        return self.rank == 0

    @property
    def data_parallel(self) -> bool:
        return self.mode == "data"

    @property
    def parallel_folds(self) -> bool:
        return self.mode == "folds"

    def my_folds(self, folds: list[int]) -> list[int]:
        """The folds this process trains: all of them, or every world-th from its rank (parallel folds)."""
        return folds[self.rank::self.world] if self.parallel_folds else folds

    def describe(self, batch_size: int) -> str | None:
        """The log line that says how the work is shared; None for a single process."""
        if self.mode == "data":
            return (f"data parallel over {self.world} processes: batch size {batch_size} per process, "
                    f"{batch_size * self.world} in total per step")
        if self.mode == "folds":
            return f"parallel folds over {self.world} processes: rank r trains folds r, r+{self.world}, ..."
        return None


SINGLE = Ranks()
_current = [SINGLE]


def current() -> Ranks:
    """This process's Ranks (SINGLE outside a distributed run)."""
    return _current[0]


def launched() -> bool:
    """True in a process that torchrun started with more than one process in all."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(config) -> Ranks:
    """Join the process group torchrun describes (SINGLE when not under torchrun with several processes).

    NCCL with CUDA (each process on GPU LOCAL_RANK), gloo on the CPU; `config.dist_timeout` bounds every
    collective, so a process that is gone makes the others fail instead of hanging.
    """
    if not launched():
        return SINGLE
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    cuda = torch.cuda.is_available() and config.device != "cpu"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=config.dist_timeout))
    _current[0] = Ranks(rank, world, local_rank, local_world, "folds" if config.parallel_folds else "data")
    return _current[0]


def finish(ranks: Ranks) -> None:
    _current[0] = SINGLE
    if ranks is not SINGLE and dist.is_initialized():
        dist.destroy_process_group()


_LOST_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "broken pipe")


def lost_contact(error: BaseException, ranks: Ranks) -> GroupFailure | None:
    """The GroupFailure an exception of a distributed run amounts to (a collective that failed because
    another process is gone or too slow); None when it is something else (single process: always)."""
    if ranks.world == 1:
        return None
    if isinstance(error, GroupFailure):
        return error
    text = " ".join(str(error).split())
    if isinstance(error, dist.DistError) or (isinstance(error, RuntimeError)
                                             and any(word in text.lower() for word in _LOST_WORDS)):
        return GroupFailure(f"rank {ranks.rank} lost contact with the other training processes "
                            f"({type(error).__name__}: {text[:160]})")
    return None


_terminated: list[int] = []


def failing() -> None:
    """This process has begun handling its run's failure (marking the run failed, saying how to resume): from now
    on torchrun's SIGTERM, which it sends once another process has failed, must not interrupt that (it left
    status.json at "running" when it arrived mid-way); the process ends on its own right after."""
    if not _terminated:
        _terminated.append(0)


def terminated(signum, frame) -> None:
    """SIGTERM handler for a process under torchrun, which sends it to the others when one fails (once: a
    repeat would interrupt the run's own failure handling)."""
    if _terminated:
        return
    _terminated.append(signum)
    raise GroupFailure(f"torchrun stopped rank {current().rank} (signal {signum}): another process of the run "
                       "failed or the launch was cancelled")


def broadcast(value, ranks: Ranks):
    """Rank 0's `value` on every process (any picklable object)."""
    if ranks.world == 1:
        return value
    box = [value if ranks.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value, ranks: Ranks) -> list:
    """Every process's `value`, in rank order, on every process."""
    if ranks.world == 1:
        return [value]
    values = [None] * ranks.world
    dist.all_gather_object(values, value)
    return values


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def broadcast_module(module: torch.nn.Module, ranks: Ranks) -> None:
    """Copy rank 0's parameters and buffers into every process's `module`."""
    if ranks.world == 1:
        return
    for tensor in module.state_dict().values():
        dist.broadcast(tensor.data, src=0)


def local_first(ranks: Ranks, work: Callable[[], object]):
    """Run `work` on each node's local rank 0 first, then on the others (a shared cache is built once)."""
    if ranks.world > 1 and ranks.local_rank != 0:
        dist.barrier()
    result = work()
    if ranks.world > 1 and ranks.local_rank == 0:
        dist.barrier()
    return result


class StopSignal:
    """A stop that reaches every process: the local Event (Ctrl-C, the UI), the run folder's STOP file
    (read by rank 0) and the process group's store, where any process that stops leaves a mark.

    `__call__` is the trainer's should_stop. Data parallel: every process must stop at the same batch,
    so the flag is agreed by an all-reduce each batch. Parallel folds: the store is polled (no process
    waits for another).
    """

    def __init__(self, event, ranks: Ranks, stop_file=None):
        self.event, self.ranks, self.stop_file = event, ranks, stop_file
        self.store = dist.distributed_c10d._get_default_store() if ranks.world > 1 else None

    def _local(self) -> bool:
        if self.event is not None and self.event.is_set():
            return True
        return bool(self.ranks.main and self.stop_file is not None and self.stop_file.exists())

    def __call__(self) -> bool:
        local = self._local()
        if self.store is None:
            return local
        if local:
            self.store.set(STOP_KEY, "1")
        if self.ranks.data_parallel:
            # NCCL reduces only GPU tensors (its process's GPU, set by start()); gloo CPU ones.
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stopped = bool(flag.item())
        else:
            stopped = local or self.store.check([STOP_KEY])
        if stopped and self.event is not None:
            self.event.set()
        return stopped


class SeededDistributedSampler(DistributedSampler):
    """The SeededSampler's (index, augmentation seed) pairs of one epoch, split between the processes as
    DistributedSampler splits indices (padded to a multiple of the world size, every world-th from the rank)."""

    def __init__(self, n: int, ranks: Ranks):
        super().__init__(range(n), num_replicas=ranks.world, rank=ranks.rank, shuffle=True, drop_last=False)
        self.n, self.seed = n, 0

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(self.n)
        seeds = rng.integers(0, 2**63 - 1, size=self.n)
        pairs = list(zip(order.tolist(), seeds.tolist(), strict=True))
        padding = self.total_size - len(pairs)
        pairs = (pairs + pairs * math.ceil(padding / max(1, len(pairs))))[: self.total_size]
        return iter(pairs[self.rank: self.total_size: self.num_replicas])


def eval_sampler(n: int, ranks: Ranks) -> DistributedSampler:
    """This process's share of an evaluation set, in order (DistributedSampler pads the last share)."""
    return DistributedSampler(range(n), num_replicas=ranks.world, rank=ranks.rank, shuffle=False, drop_last=False)


def gather_predictions(predicted: dict[str, np.ndarray], indices: list[int], n: int, ranks: Ranks) -> dict:
    """Every process's predictions of its share, put back in the set's order; the padding's duplicates
    (DistributedSampler repeats the first rows to even the shares) are dropped."""
    parts = gather((np.asarray(indices, dtype=np.int64), predicted), ranks)
    merged = {}
    for key in predicted:
        first = next(part[key] for _, part in parts)
        values = np.zeros((n, *first.shape[1:]), dtype=first.dtype)
        seen = np.zeros(n, dtype=bool)
        for index, part in parts:
            fresh = ~seen[index]
            values[index[fresh]] = part[key][fresh]
            seen[index[fresh]] = True
        merged[key] = values
    return merged
