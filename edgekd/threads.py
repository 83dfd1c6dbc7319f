"""How many threads training uses: the recipe's ``threads``, or the physical cores this process is given.

torch's default intra-op thread count is every core of the machine, whatever the process's affinity mask
allows and whatever else runs there. Its OpenMP threads meet at a barrier after every operation, so one
thread that has to share its core with another process stalls all of them: on a 2-core machine where other
work kept about one core busy, the demo took 129 s with 2 threads and 23 s with 1. ``threads: auto``
therefore means the physical cores of the affinity mask that other processes leave free when the run
starts (measured over a fraction of a second), at least one. :func:`training_threads` sets torch's
threads for the length of a run and restores them after. A long run outlives the load it started beside
(a test suite that ends, a job that starts): with ``auto`` the pipeline decides again before each stage
once the last decision is :data:`RETUNE_AFTER_S` old (:func:`retune_training_threads`).

Timing never overlaps training: the pipeline runs its stages one after the other, and each measurement
runs in a fresh worker process (:mod:`edgekd.profile.runner`) while this process waits for it, its torch
threads idle.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

_TOPOLOGY = Path("/sys/devices/system/cpu")
LOAD_SAMPLE_S = 0.3
"""How long ``auto`` watches the CPUs before deciding how many of them are free."""
RETUNE_AFTER_S = 60.0
"""How old an ``auto`` decision must be before a stage start decides again (short stages keep theirs)."""


@dataclass
class _AutoDecision:
    """The ``auto`` thread count in force for a run: how many processes share the machine, and when it was set."""

    processes: int
    decided_at: float


_auto_decision: ContextVar[_AutoDecision | None] = ContextVar("edgekd_auto_threads", default=None)


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
    omp = _omp_threads()
    if setting == "auto" and omp is not None:
        setting = omp or 1  # the launcher's or the user's explicit choice
    if setting != "auto":
        return max(1, min(int(setting), len(cpus)))
    cores = physical_cores(cpus)
    if processes > 1:
        return max(1, cores // processes)
    free = max(0.0, 1.0 - busy_cpus(cpus) / len(cpus))
    return max(1, min(cores, round(cores * free)))


def _omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is set to a number."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else None


@contextmanager
def training_threads(setting: int | Literal["auto"]) -> Iterator[int]:
    """Set torch's intra-op threads (and, while still possible, its inter-op threads) for a run; yield the count.

    The processes a launcher started on this machine (``LOCAL_WORLD_SIZE``) share its cores.
    """
    import torch

    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = resolve_training_threads(setting, processes)
    decides_again = setting == "auto" and _omp_threads() is None and processes == 1  # else: no load measured
    token = _auto_decision.set(_AutoDecision(processes, time.monotonic()) if decides_again else None)
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
        _auto_decision.reset(token)
        torch.set_num_threads(before)


def torch_threads() -> int:
    """torch's intra-op thread count now: recorded with every stage, since the order of a parallel sum, and so a
    trained model's last bits, depend on it (the same seed gives bit-identical weights only with the same count)."""
    import torch

    return torch.get_num_threads()


def retune_training_threads() -> None:
    """Decide ``threads: auto`` again for the stage about to run, when the run's decision is
    :data:`RETUNE_AFTER_S` old: the load other processes put on the machine when the run started may have
    gone (a run that began beside a test suite trained on one of two cores for hours) or come.

    Nothing happens outside :func:`training_threads`, or when its setting was a number or ``OMP_NUM_THREADS``,
    or several processes share the machine (their share does not depend on the load).
    """
    decision = _auto_decision.get()
    if decision is None or time.monotonic() - decision.decided_at < RETUNE_AFTER_S:
        return
    import torch

    threads = resolve_training_threads("auto", decision.processes)
    decision.decided_at = time.monotonic()
    if threads != torch.get_num_threads():
        log.info("training with %d torch thread(s) from now on (threads: auto; was %d: the load of other processes "
                 "changed)", threads, torch.get_num_threads())
        torch.set_num_threads(threads)
