"""The latency table of a budget search: every candidate's device latency, size and memory, cached.

Each missing candidate is built with random weights (:mod:`edgekd.search.build`), exported, and
timed with the profiler's interleaved sessions (:func:`edgekd.profile.bench.benchmark`, a fresh
worker process per session) under the device profile, so a device with a ``reference`` gets
host times × its speed ratio, marked as estimates. MACs come from the ONNX graph; parameters are the built
model's, counted as the report counts a trained student's (so one structure has one figure).

The table is cached in ``<cache>/latency-tables/`` (see :mod:`edgekd.cache`) under a key of
everything a latency depends on: the architecture family (arch, input signature, classes), the
device profile's content except its budget (threads, input shapes, ISA, reference), this CPU,
the edgekd, onnxruntime and torch versions, the export target, the INT8 settings and the timing
settings. A table measured on another CPU or under another profile is therefore never reused;
budgets can change freely. Entries accumulate: a later grid on the same key times only
candidates the file lacks. Writes are atomic and merge with what another process wrote meanwhile.

Each entry records how many CPUs other processes kept busy while it was timed
(:mod:`edgekd.profile.load`). Entries an earlier edgekd process timed on a loaded machine are timed
again when a search finds the machine quiet (a loaded machine keeps them, with a warning); within one
process the table stays as it was timed, so a command's checks and its search agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from edgekd.atomic import write_json
from edgekd.cache import cache_root
from edgekd.config.device import DeviceProfile
from edgekd.errors import EdgekdError
from edgekd.export.config import load_export_target
from edgekd.profile.bench import benchmark
from edgekd.profile.cpu import detect_cpu
from edgekd.profile.load import is_loaded, watch_other_load
from edgekd.profile.macs import count_macs
from edgekd.search.build import Family, export_for_latency
from edgekd.search.config import SearchStage
from edgekd.search.record import Entry, TableStats
from edgekd.search.space import Candidate
from edgekd.threads import allowed_cpus, busy_cpus
from edgekd.version import __version__

log = logging.getLogger(__name__)

TABLE_DIR = "latency-tables"
#: The entries' layout: 2 since a classifier entry's ``params`` are the model's, no longer the graph's initializer
#: elements (a table cached with those is not read, lest its figures disagree with the report's).
FORMAT = 2
#: How an entry's ``measured_at`` is written (local time with its UTC offset).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


@dataclass(frozen=True)
class LatencyTable:
    """The entries of one search's grid, by candidate key, and how they were obtained."""

    entries: dict[str, Entry]
    stats: TableStats

    def __getitem__(self, candidate: Candidate) -> Entry:
        return self.entries[candidate.key]


def table_key(family: Family, device: DeviceProfile, stage: SearchStage) -> dict[str, Any]:
    """Everything a candidate's latency depends on (see the module docstring)."""
    return {
        "format": FORMAT,
        "family": family.to_json(),
        "device": device.model_dump(mode="json", exclude={"budget", "description", "precision"}),
        "cpu": detect_cpu().to_json(),
        "versions": {"edgekd": __version__, "onnxruntime": version("onnxruntime"), "torch": version("torch")},
        "export_target": load_export_target(stage.target).model_dump(mode="json"),
        "int8": stage.quantize.model_dump(mode="json", include={"modes", "per_channel", "symmetric_activations",
                                                                "symmetric_weights"}),
        "timing": stage.table.model_dump(mode="json"),
    }


def table_path(key: dict[str, Any]) -> Path:
    """The cache file of the table with ``key``: ``<device>-<arch>-<digest>.json``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    device = re.sub(r"[^A-Za-z0-9_.-]+", "-", key["device"]["name"])
    return cache_root() / TABLE_DIR / f"{device}-{key['family']['arch']}-{digest}.json"


def latency_table(grid: list[Candidate], family: Family, device: DeviceProfile, stage: SearchStage, *,
                  fresh: bool = False) -> LatencyTable:
    """The table of ``grid``: cached entries, the missing ones measured now (and cached); ``fresh``: all measured
    now (the cached ones replaced)."""
    return cached_table(grid, table_key(family, device, stage), device,
                        lambda missing: _measure(missing, family, device, stage), fresh=fresh)


def cached_table(grid: list[Candidate], key: dict[str, Any], device: DeviceProfile,
                 measure: Callable[[list[Candidate]], dict[str, Entry]], *, fresh: bool = False) -> LatencyTable:
    """The table of ``grid`` cached under ``key``: cached entries, the missing ones ``measure`` d now (and cached);
    ``fresh`` measures every candidate again (``edgekd compress --fresh``: say, a table timed while the machine
    was busy) and replaces their cached entries."""
    path = table_path(key)
    entries = _read(path, key)
    stale = set() if fresh else _timed_under_load(grid, entries)
    missing = [c for c in grid if fresh or c.key not in entries or c.key in stale]
    started = time.perf_counter()
    if missing:
        log.info("latency table: timing %d of %d candidates on %s (%d cached in %s)", len(missing), len(grid),
                 device.name, len(grid) - len(missing), path)
        with watch_other_load() as load:
            measured = measure(missing)
        if is_loaded(load.cores):
            log.warning("latency table: other processes kept %.2g CPUs busy while it was timed, so its figures may "
                        "be slow; a later search on a quiet machine times these candidates again", load.cores)
        entries = _write(path, key, {name: entry.model_copy(update={"other_load": load.cores})
                                     for name, entry in measured.items()})
    stats = TableStats(path=str(path), entries=len(grid), profiled=len(missing), reused=len(grid) - len(missing),
                       seconds=round(time.perf_counter() - started, 3) if missing else 0.0)
    return LatencyTable(entries={c.key: entries[c.key] for c in grid}, stats=stats)


def _timed_under_load(grid: list[Candidate], entries: dict[str, Entry]) -> set[str]:
    """The keys of ``grid``'s cached entries an earlier process timed on a loaded machine, to time again if the
    machine is quiet now."""
    loaded = {c.key for c in grid if c.key in entries and is_loaded(entries[c.key].other_load)
              and _before_this_process(entries[c.key].measured_at)}
    if not loaded:
        return set()
    worst = max(float(entries[name].other_load or 0.0) for name in loaded)
    now = busy_cpus(allowed_cpus())
    if is_loaded(now):
        log.warning("latency table: %d cached candidate(s) were timed while other processes kept up to %.2g CPUs "
                    "busy, and %.2g are busy now: kept as they are (edgekd compress --fresh times them again)",
                    len(loaded), worst, now)
        return set()
    log.info("latency table: %d cached candidate(s) were timed while other processes kept up to %.2g CPUs busy; "
             "timing them again on the quieter machine", len(loaded), worst)
    return loaded


def _before_this_process(measured_at: str) -> bool:
    """True when an entry's ``measured_at`` is earlier than this process's start (an unreadable one counts)."""
    import psutil

    try:
        when = datetime.strptime(measured_at, TIME_FORMAT).timestamp()
    except ValueError:
        return True
    return when < psutil.Process().create_time() - 1  # measured_at has whole seconds


def _measure(missing: list[Candidate], family: Family, device: DeviceProfile, stage: SearchStage) -> dict[str, Entry]:
    """Build, export and time ``missing`` (interleaved, so a slow spell of the machine falls on all alike)."""
    target = load_export_target(stage.target)
    by_structure: dict[str, list[Candidate]] = {}
    for candidate in missing:
        by_structure.setdefault(candidate.structure.key, []).append(candidate)
    with tempfile.TemporaryDirectory(prefix="edgekd-latency-table-") as tmp:
        files: dict[str, Path] = {}
        counts: dict[str, tuple[int, int]] = {}  # MACs of the FP32 graph, the model's parameters
        for index, group in enumerate(by_structure.values(), start=1):
            structure = group[0].structure
            log.info("latency table: exporting %d/%d: %s", index, len(by_structure), structure.label)
            exported = export_for_latency(structure, [c.precision for c in group], family, device, target,
                                          stage.quantize, Path(tmp))
            counts[structure.key] = (count_macs(exported.files["fp32"], device.inputs).macs, exported.params)
            files.update({c.key: exported.files[c.precision] for c in group})
        timed = stage.table
        results = benchmark([files[c.key] for c in missing], device, warmup=timed.warmup, runs=timed.runs,
                            rounds=timed.rounds)
    now = time.strftime(TIME_FORMAT)
    return {c.key: Entry(key=c.key, label=c.label, precision=c.precision, p50_ms=r.p50_ms, p90_ms=r.p90_ms,
                         size_mb=r.size_mb, peak_memory_mb=r.peak_memory_mb, host_p90_ms=r.host_p90_ms,
                         estimate=r.estimate, macs=counts[c.structure.key][0], params=counts[c.structure.key][1],
                         measured_at=now)
            for c, r in zip(missing, results, strict=True)}


def _read(path: Path, key: dict[str, Any]) -> dict[str, Entry]:
    """The entries cached at ``path`` under exactly ``key`` (none when absent, unreadable or another key's)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") != key:
            return {}
        return {name: Entry(**entry) for name, entry in record["entries"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write(path: Path, key: dict[str, Any], measured: dict[str, Entry]) -> dict[str, Entry]:
    """Add ``measured`` to the table at ``path`` (re-read first: another search may have added entries).

    Returns every entry; an unwritable cache only means measuring again next time.
    """
    entries = {**_read(path, key), **measured}
    try:
        write_json(path, {"key": key, "entries": {name: entry.to_json() for name, entry in entries.items()}})
    except (OSError, EdgekdError) as exc:
        log.warning("latency table not cached (%s); the next search times these candidates again", exc)
    return entries
