"""Distributed: the processes of a torchrun job (who this one is) and the few collective steps training needs.

Under `torchrun --nproc_per_node N train.py ...` each process reads its place from torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), joins a process group (NCCL on CUDA, gloo on CPU) and trains on its
share of every global batch, its gradients averaged with the others' by DistributedDataParallel. Without torchrun
there is one process: every function here is then a plain call or a no-op, and no process group is created.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from torch import nn

T = TypeVar("T")
_device = torch.device("cpu")  # where collective tensors live: the process's GPU under NCCL
stop_requested = False  # set by Ctrl-C / SIGTERM under torchrun; the ranks agree on it at the next step


class PeerFailed(RuntimeError):
    """Rank 0 stopped with an error (which it reports); the other ranks stop with it."""


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether this process is in a process group of several (set up by process_group)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, the log, the vocabulary and the feature cache's metadata."""
    return rank() == 0


@contextlib.contextmanager
def process_group(device_type: str) -> Iterator[None]:
    """Join torchrun's process group for the block (NCCL on CUDA, each process on GPU LOCAL_RANK; gloo on CPU),
    and treat Ctrl-C / SIGTERM as a request that all ranks stop together; without torchrun, nothing happens."""
    global _device
    if not launched() or active():
        yield
        return
    if device_type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)  # torch.device("cuda") is then this process's GPU
        _device = torch.device("cuda", local_rank)
    torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo")
    previous = {number: signal.signal(number, _request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        try:
            torch.distributed.destroy_process_group()
        except RuntimeError:  # a group whose other processes are gone (peer_lost) cannot be taken down cleanly
            pass


# What gloo and NCCL say when the process at the other end of a collective is gone (killed, out of memory, its
# machine lost); torch raises them as RuntimeError, or DistError where it classifies them.
LOST_PEER_WORDS = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Connection refused",
                   "NCCL communicator was aborted")


def peer_lost(error: BaseException) -> bool:
    """Whether error is a collective's failure because another process of the job is gone."""
    if not active() or not isinstance(error, RuntimeError) or isinstance(error, PeerFailed):
        return False
    return isinstance(error, torch.distributed.DistError) or any(word in str(error) for word in LOST_PEER_WORDS)


def _request_stop(number: int, frame: Any) -> None:
    # A rank that raised KeyboardInterrupt on its own would leave the others waiting in a collective forever.
    global stop_requested
    stop_requested = True


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums of values over the ranks (float64, so that counts stay exact)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def agree_on_step(*counts: float) -> list[float]:
    """counts summed over the ranks before a training step; under torchrun, raises KeyboardInterrupt on every rank
    at the same step when Ctrl-C or SIGTERM reached any of them."""
    if not active():
        return list(counts)
    *sums, stops = all_sum([*counts, stop_requested])
    if stops:
        raise KeyboardInterrupt
    return sums


def broadcast_buffers(*modules: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics, which each rank updates from its own share)."""
    if active():
        for module in modules:
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer, src=0)


def all_gather(value: T) -> list[T]:
    """Every rank's value (any picklable object), in rank order."""
    if not active():
        return [value]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def broadcast(value: T) -> T:
    """Rank 0's value (any picklable object) on every rank."""
    if not active():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def from_main(compute: Callable[[], T]) -> T:
    """compute() run on rank 0 only, its result sent to every rank; when it raises, the others raise PeerFailed."""
    if not active():
        return compute()
    if not is_main():
        ok, value = broadcast(None)
        if not ok:
            raise PeerFailed(f"rank 0 stopped: {value}")
        return value
    try:
        value = compute()
    except BaseException as error:
        broadcast((False, f"{type(error).__name__}: {error}"))
        raise
    return broadcast((True, value))[1]


@contextlib.contextmanager
def main_only(context: contextlib.AbstractContextManager) -> Iterator[None]:
    """Enter context on rank 0 only (e.g. the run folder's lock); the other ranks fail if rank 0 could not."""
    with contextlib.ExitStack() as stack:
        def enter() -> None:
            stack.enter_context(context)
        from_main(enter)
        yield


def fork_rng() -> None:
    """Give each rank its own random stream (dropout, crops, self-critical samples), derived from the shared one,
    so that a run resumed from rank 0's saved generator state draws the same numbers again."""
    if active():
        torch.manual_seed(int(torch.randint(2 ** 62, ())) + rank())


class _Parts(nn.Module):
    """The modules a training phase updates, held together so that DDP treats them as one model."""

    def __init__(self, parts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, compute: Callable[..., Any], *args: Any) -> Any:
        return compute(*args)


def replicate(parts: Sequence[nn.Module], find_unused_parameters: bool) -> nn.Module:
    """A DistributedDataParallel over parts whose forward(compute, *args) returns compute(*args): the loss is
    computed inside the forward, as DDP requires, by code that calls the parts' own methods.

    DDP registers only parameters that require gradients, so a frozen backbone costs nothing; parts' parameters
    that a step leaves unused need find_unused_parameters (a graph walk every step)."""
    return nn.parallel.DistributedDataParallel(_Parts(parts), find_unused_parameters=find_unused_parameters)
