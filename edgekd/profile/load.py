"""How much CPU other processes took while edgekd timed models: timings taken beside other work run slow.

These machines are shared. A latency measured while another job kept a core busy can be several times
the quiet figure (a latency-table entry of 6.55 ms under load was 1.32 ms idle), and a table caches its
figures for every later search. :func:`watch_other_load` measures, over the ``with`` body, the CPU time
the CPUs this process may run on spent busy (hypervisor steal included) less this process's own and that
of the child processes it waited for (the profiler's workers), as an average number of busy CPUs.
:func:`is_loaded` says when that is enough to distrust a timing: a quarter of this process's CPUs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: The share of this process's CPUs that other work may keep busy before a timing is distrusted.
LOADED_SHARE = 0.25


@dataclass
class LoadWatch:
    """What :func:`watch_other_load` saw; ``cores`` is set when its ``with`` body ends."""

    cores: float | None = None
    """The average number of CPUs other processes kept busy (None while watching)."""


@contextmanager
def watch_other_load() -> Iterator[LoadWatch]:
    """Measure how many CPUs other processes kept busy, on average, while the ``with`` body ran."""
    import psutil

    from edgekd.threads import allowed_cpus

    cpus = allowed_cpus()
    watch = LoadWatch()
    started, busy, own = time.monotonic(), _busy_seconds(psutil.cpu_times(percpu=True), cpus), _own_cpu()
    yield watch
    wall = time.monotonic() - started
    others = _busy_seconds(psutil.cpu_times(percpu=True), cpus) - busy - (_own_cpu() - own)
    watch.cores = round(max(0.0, others / wall), 2) if wall > 0 else 0.0


def is_loaded(cores: float | None) -> bool:
    """True when ``cores`` busy CPUs of other work (from :func:`watch_other_load`) make a timing suspect."""
    from edgekd.threads import allowed_cpus

    return cores is not None and cores >= LOADED_SHARE * len(allowed_cpus())


def _busy_seconds(per_cpu: list[Any], cpus: set[int]) -> float:
    """CPU seconds the logical CPUs ``cpus`` spent neither idle nor waiting for I/O (Linux counts a guest's time
    in ``user`` and ``nice`` as well, so it is left out once)."""
    skipped = ("idle", "iowait", "guest", "guest_nice")
    return sum(value for cpu, times in enumerate(per_cpu) if cpu in cpus
               for field, value in times._asdict().items() if field not in skipped)


def _own_cpu() -> float:
    """CPU seconds of this process and of the children it waited for."""
    own = os.times()
    return own.user + own.system + own.children_user + own.children_system
