"""How many threads training uses: the recipe's ``threads``, or the physical cores this process is given.

torch's default intra-op thread count is every core of the machine, whatever the process's affinity mask
allows and whatever else runs there. Its OpenMP threads meet at a barrier after every operation, so one
thread that has to share its core with another process stalls all of them: on a 2-core machine where other
work kept about one core busy, the demo took 129 s with 2 threads and 23 s with 1. ``threads: auto``
therefore means the physical cores of the affinity mask that other processes leave free when the run
starts (measured over a fraction of a second), at least one. :func:`training_threads` sets torch's
threads for the length of a run and restores them after.

Timing never overlaps training: the pipeline runs its stages one after the other, and each measurement
runs in a fresh worker process (:mod:`edgekd.profile.runner`) while this process waits for it, its torch
threads idle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

_TOPOLOGY = Path("/sys/devices/system/cpu")
LOAD_SAMPLE_S = 0.3
"""How long ``auto`` watches the CPUs before deciding how many of them are free."""


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on (its affinity mask; every CPU where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def physical_cores(cpus: set[int]) -> int:
    """How many physical cores the logical CPUs ``cpus`` belong to (SMT siblings count once).

    Read from Linux's CPU topology; elsewhere, this machine's physical-to-logical ratio applied to ``cpus``.
    """
    cores = set()
    for cpu in cpus:
        topology = _TOPOLOGY / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return _scaled(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def _scaled(cpus: set[int]) -> int:
    import psutil

    logical = psutil.cpu_count(logical=True) or len(cpus)
    physical = psutil.cpu_count(logical=False) or logical
    return max(1, len(cpus) * physical // logical)


def busy_cpus(cpus: set[int], seconds: float = LOAD_SAMPLE_S) -> float:
    """How many of the logical CPUs ``cpus`` other processes keep busy, averaged over ``seconds``.

    Measured while this process sleeps, so its own use does not count.
    """
    import psutil

    percent = psutil.cpu_percent(interval=seconds, percpu=True)
    return sum(percent[cpu] for cpu in cpus if cpu < len(percent)) / 100.0


def resolve_training_threads(setting: int | Literal["auto"], processes: int = 1) -> int:
    """The torch thread count for ``setting`` in one of ``processes`` processes training on this machine.

    ``auto`` follows ``OMP_NUM_THREADS`` when it is set (torchrun sets it to 1 for several processes per
    machine; test suites set it to keep runs bit-identical). Otherwise, in a single process: the physical
    cores of the affinity mask, scaled by the share of its CPUs that other processes leave idle (rounded, at
    least 1); in a data-parallel run: the physical cores shared equally between the processes (they start
    together, so none can see the others' load yet).
    A number is capped at the logical CPUs of the mask (more threads than CPUs only take turns).
    """
    cpus = allowed_cpus()
    if setting == "auto" and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        setting = int(os.environ["OMP_NUM_THREADS"]) or 1  # the launcher's or the user's explicit choice
    if setting != "auto":
        return max(1, min(int(setting), len(cpus)))
    cores = physical_cores(cpus)
    if processes > 1:
        return max(1, cores // processes)
    free = max(0.0, 1.0 - busy_cpus(cpus) / len(cpus))
    return max(1, min(cores, round(cores * free)))


@contextmanager
def training_threads(setting: int | Literal["auto"]) -> Iterator[int]:
    """Set torch's intra-op threads (and, while still possible, its inter-op threads) for a run; yield the count.

    The processes a launcher started on this machine (``LOCAL_WORLD_SIZE``) share its cores.
    """
    import torch

    threads = resolve_training_threads(setting, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # allowed only before the first inter-op parallel work of the process
        log.debug("torch inter-op threads already fixed at %d", torch.get_num_interop_threads())
    log.info("training with %d torch thread(s) (threads: %s)", threads, setting)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
