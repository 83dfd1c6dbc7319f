"""Data-parallel runs: several processes share a recipe's training, on Hugging Face accelerate (DDP).

``torchrun --nproc_per_node N -m edgekd run RECIPE`` (or ``accelerate launch --multi_gpu
--num_processes N -m edgekd run RECIPE``) starts N processes that each run the pipeline. This
module is what they know about each other, :class:`World`, and how a training loop gets its
``Accelerator``. The rules, kept by :mod:`edgekd.pipeline` and :mod:`edgekd.distill.trainer`:

- **Stages.** ``teacher`` and ``distill`` run in every process. Every other stage runs in rank 0
  alone while the others wait for its record; once no data-parallel stage is left, they finish.
  Rank 0 decides which stages are cached or resumed and tells the others.
- **Writes.** Only rank 0 writes: ``run.json``, stage directories, ``stage.json``, checkpoints,
  models, exports, reports. The others read what it wrote, so the run directory must be on a
  filesystem every process sees (one machine, or a mount shared by all nodes).
- **Batches.** ``batch_size`` is the number of examples per optimizer step, however many processes
  and accumulation steps compute it: every process draws the same shuffled batches and takes its
  share of each (:meth:`World.share`); DDP averages the gradients. A run therefore follows the
  single-process run with the same recipe, up to floating-point summation order, except that
  BatchNorm layers normalise over each process's share (torch's SyncBatchNorm needs GPUs).
- **Teacher cache.** Rank 0 builds (or finds, in a shared ``teacher_cache_dir``) the one
  memory-mapped teacher-output cache while the others wait; every process then maps it and reads
  the rows of its share.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import sys
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn, TypeVar

from edgekd.errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from edgekd.config.training import TrainingConfig

T = TypeVar("T")

#: How long a process may wait for the others, e.g. while rank 0 alone runs a long prune stage. A
#: process that fails is not waited for: torchrun (which accelerate launch uses) stops the others.
WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class World:
    """The processes training together: this one's ``rank`` among ``size``, and its torch ``device``.

    Every collective method is a no-op returning the local value when ``size`` is 1, so code
    written for a world runs unchanged in a single process.
    """

    rank: int = 0
    size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """True in rank 0, the process that decides and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.size > 1

    def alone(self) -> World:
        """This process on its own (rank 0's view of a stage it runs for everyone)."""
        return replace(self, rank=0, size=1)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.distributed:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` in every process; the others pass anything (e.g. None).

        ``value`` must be JSON data: it travels as JSON text, so nothing a process receives can run code.
        """
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        payload = json.dumps(value, default=str).encode() if self.is_main else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, src=0)
        received = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            received.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        dist.broadcast(received, src=0)
        return value if self.is_main else json.loads(received.cpu().numpy().tobytes())

    def total(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over the processes, in every process."""
        if not self.distributed:
            return values
        import torch
        import torch.distributed as dist

        summed = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed)
        return summed.tolist()

    def share(self, batch: int, steps: int) -> list[slice]:
        """This process's rows of a batch of ``batch`` examples: one contiguous slice per accumulation step.

        The batch is cut into ``steps × size`` parts whose sizes differ by at most one; at step
        ``s`` process ``r`` takes part ``s × size + r``. Parts may be empty when the batch is
        smaller than that (the last batch of an epoch).
        """
        parts = steps * self.size
        small, extra = divmod(batch, parts)
        bounds = [part * small + min(part, extra) for part in range(parts + 1)]
        mine = (step * self.size + self.rank for step in range(steps))
        return [slice(bounds[part], bounds[part + 1]) for part in mine]


#: A process on its own, on the CPU: every run that no launcher started.
LOCAL = World()


def launched_rank() -> int:
    """The rank a launcher (torchrun, accelerate launch) gave this process; 0 when none did."""
    return int(os.environ.get("RANK", "0"))


def exit_launched(code: int | str | None) -> NoReturn:
    """End a process a launcher started, with ``code`` (a ``SystemExit`` code): leave the process group,
    flush the output and exit without the interpreter's teardown, in which gloo's threads now and then
    abort a process whose work is done ("terminate called without an active exception"), making the
    launcher report the whole run as failed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def launched_size() -> int:
    """How many processes a launcher started (``WORLD_SIZE``); 1 when none did."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def current_world() -> World:
    """This process's world: the launcher's processes when ``WORLD_SIZE`` > 1, else :data:`LOCAL`.

    Under a launcher the first call joins the process group through accelerate (gloo on CPUs,
    NCCL on CUDA GPUs); ``accelerate launch --cpu`` forces the CPU.
    """
    size = launched_size()
    return LOCAL if size == 1 else _join(size)


@functools.cache
def _join(size: int) -> World:
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=WAIT)
    # Leave the process group before the interpreter stops, or its threads abort the process (and the
    # launcher then stops the others): rank 0 may still be working when the other processes finish.
    atexit.register(state.destroy_process_group)
    if state.num_processes != size:
        raise ConfigError(f"launcher: WORLD_SIZE is {size} but accelerate joined {state.num_processes} process(es) "
                          f"({state.distributed_type}); expected CPUs (gloo) or CUDA GPUs (NCCL)")
    return World(rank=state.process_index, size=state.num_processes, device=str(state.device))


def check_training(config: TrainingConfig, where: str, world: World) -> None:
    """Reject training options ``world`` cannot run (``where`` names the config, e.g. ``stages[1]``)."""
    if config.mixed_precision == "fp16" and not world.device.startswith("cuda"):
        raise ConfigError(f"{where}.mixed_precision: 'fp16' needs CUDA GPUs and this run trains on the CPU; "
                          "expected 'bf16' or 'no'")
    needed = config.gradient_accumulation_steps * world.size
    if config.batch_size < needed:
        raise ConfigError(f"{where}.batch_size: {config.batch_size} examples cannot be shared by {world.size} "
                          f"processes × {config.gradient_accumulation_steps} accumulation steps; "
                          f"expected at least {needed}")


def accelerator(world: World, mixed_precision: str) -> Accelerator:
    """An ``Accelerator`` for one training loop of this process, with the stage's ``mixed_precision``.

    accelerate fixes the precision once per process while edgekd's stages each choose theirs, so
    its shared state is reset first, keeping the process group (as transformers' Trainer does
    between runs). The recipe decides: ``accelerate launch``/``accelerate config`` settings for
    precision, gradient accumulation and torch.compile are overridden.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, GradientAccumulationPlugin

    AcceleratorState._reset_state()  # noqa: SLF001 - the one way to change precision within a process
    engine = Accelerator(mixed_precision=mixed_precision, cpu=world.device == "cpu", dynamo_backend="no",
                         gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1))
    if engine.distributed_type not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        raise ConfigError(f"accelerate is configured for {engine.distributed_type.value}; edgekd trains with plain "
                          "data parallelism: choose multi-CPU or multi-GPU in `accelerate config`")
    return engine
