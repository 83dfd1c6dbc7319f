"""Host→device speed ratios from a published latency of a public reference model.

A device edgekd cannot run on (a phone, a Raspberry Pi) is described by one published figure:
model X runs in D ms on it with T threads. edgekd rebuilds X's architecture here from a
``transformers`` config with random weights (latency does not depend on the weight values),
exports it to ONNX once, times it with min(T, physical cores) threads and takes ratio = D / H.
A model's device latency is then estimated as its host latency × ratio.

H is measured in :data:`ROUNDS` rounds, each a fresh worker session, one after the other: each
round's median is kept, H is their median and the *spread* is (slowest − fastest round) ÷ H. A
host time whose spread exceeds :data:`MAX_SPREAD` (another process took the CPU for part of it) is
measured again, up to :data:`ATTEMPTS` times; if it stays unstable the steadiest attempt is used
for this run but is never cached, so the next run measures again. The ratio's range follows from
the rounds: D ÷ slowest round … D ÷ fastest round, shown as ratio ± half that range.

The ONNX file and the stable host times are cached under ``${EDGEKD_CACHE:-~/.cache/edgekd}/
reference/``; the host time is keyed by CPU brand, reference model, threads and onnxruntime
version. A cached record without rounds (from an older edgekd) or with a large spread is measured
again. The ratio itself is recomputed from the cached host time, so correcting a published
figure in a device profile needs no re-measuring. ``edgekd devices calibrate [--fresh]``
measures (or re-measures) every reference now.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekd.atomic import atomic_path, write_json
from edgekd.cache import cache_root
from edgekd.config.device import InputShape, ReferenceFigure
from edgekd.profile.cpu import detect_cpu, host_threads
from edgekd.profile.references import ReferenceModel, reference_model
from edgekd.profile.timing import time_onnx

log = logging.getLogger(__name__)

HOST_WARMUP = 5
"""Untimed runs at the start of each round."""
HOST_RUNS = 12
"""Timed runs per round."""
ROUNDS = 5
"""Rounds (fresh worker sessions) per host measurement."""
MAX_SPREAD = 0.15
"""Largest (slowest − fastest round median) ÷ median of a host time that is cached."""
ATTEMPTS = 3
"""Host measurements tried before an unstable one is used (uncached)."""




@dataclass(frozen=True)
class HostTime:
    """The reference model's latency here: each round's median (ms), in the order they were measured."""

    rounds_ms: tuple[float, ...]

    @property
    def host_ms(self) -> float:
        """The median of the rounds' medians."""
        return float(statistics.median(self.rounds_ms))

    @property
    def spread(self) -> float:
        """(slowest − fastest round) ÷ :attr:`host_ms`: 0 for a perfectly steady machine."""
        return (max(self.rounds_ms) - min(self.rounds_ms)) / self.host_ms

    @property
    def stable(self) -> bool:
        """Steady enough to be cached (spread at most :data:`MAX_SPREAD`)."""
        return self.spread <= MAX_SPREAD


@dataclass(frozen=True)
class SpeedRatio:
    """``ratio`` = published device latency ÷ latency of the same model measured here, with its range.

    ``ratio_low`` … ``ratio_high`` come from the slowest and fastest measuring rounds; ``stable`` is
    false when the host time varied by more than :data:`MAX_SPREAD` (then it was not cached);
    ``cached`` says whether the host time was read from the cache rather than measured now.
    """

    ratio: float
    host_ms: float
    device_ms: float
    reference_model: str
    source: str
    threads: int
    cpu: dict[str, Any]
    host_rounds_ms: tuple[float, ...] = ()
    spread: float = 0.0
    stable: bool = True
    cached: bool = False

    @property
    def ratio_low(self) -> float:
        """The ratio from the slowest round (the device looks relatively fastest)."""
        return self.device_ms / max(self.host_rounds_ms) if self.host_rounds_ms else self.ratio

    @property
    def ratio_high(self) -> float:
        """The ratio from the fastest round."""
        return self.device_ms / min(self.host_rounds_ms) if self.host_rounds_ms else self.ratio

    @property
    def uncertainty(self) -> float:
        """Half the ratio's range: the ``±`` shown beside it."""
        return (self.ratio_high - self.ratio_low) / 2

    def describe(self) -> str:
        """``"0.40 ± 0.02 (5 rounds, spread 9%)"``, the way reports show it."""
        return (f"{self.ratio:.3g} ± {self.uncertainty:.2g} ({len(self.host_rounds_ms)} rounds here, "
                f"spread {self.spread:.0%}{'' if self.stable else ', unstable: not cached'})")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field, the ratio's range and its description."""
        return {**asdict(self), "host_rounds_ms": list(self.host_rounds_ms), "ratio_low": self.ratio_low,
                "ratio_high": self.ratio_high, "uncertainty": self.uncertainty, "described": self.describe()}


@dataclass(frozen=True)
class CalibratedDevice:
    """One device's host→device speed ratio, as ``edgekd devices calibrate`` measured or read it."""

    device: str
    speed: SpeedRatio

    def to_json(self) -> dict[str, Any]:
        """The device's name beside its :meth:`SpeedRatio.to_json`."""
        return {"device": self.device, **self.speed.to_json()}


def cache_dir() -> Path:
    """Where reference models and measured host times are kept."""
    return cache_root() / "reference"


def speed_ratio(reference: ReferenceFigure, threads: int | None = None, *, fresh: bool = False) -> SpeedRatio:
    """How much slower the reference device is than this host, from a cached or a new host measurement.

    ``threads`` is the number of threads used here; by default the published figure's thread
    count capped at this machine's physical cores. ``fresh`` ignores the cache (and replaces it
    when the new measurement is stable).
    """
    model = reference_model(reference.model)
    threads = threads or host_threads(reference.threads)
    cpu = detect_cpu()
    import onnxruntime

    key = {"cpu": cpu.brand, "reference": model.key, "threads": threads,
           "onnxruntime": onnxruntime.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    record_path = cache_dir() / f"host-ms-{model.key}-{digest}.json"
    host = None if fresh else _cached_host_time(record_path, key)
    cached = host is not None
    if host is None:
        host = measure_host_time(model, threads)
        if host.stable:
            write_json(record_path, {**key, "host_ms": host.host_ms, "rounds_ms": list(host.rounds_ms),
                                     "spread": host.spread, "runs": HOST_RUNS, "warmup": HOST_WARMUP,
                                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        else:
            log.warning("reference model %s: host time varied by %.0f%% between rounds (more than %.0f%%) in %d "
                        "attempts; using it for this run only, not cached (is another process using the CPU?)",
                        model.key, 100 * host.spread, 100 * MAX_SPREAD, ATTEMPTS)
    return SpeedRatio(
        ratio=reference.latency_ms / host.host_ms,
        host_ms=host.host_ms,
        device_ms=reference.latency_ms,
        reference_model=model.key,
        source=reference.source,
        threads=threads,
        cpu=cpu.to_json(),
        host_rounds_ms=host.rounds_ms,
        spread=host.spread,
        stable=host.stable,
        cached=cached,
    )


def measure_host_time(model: ReferenceModel, threads: int) -> HostTime:
    """The reference's latency here in :data:`ROUNDS` rounds; up to :data:`ATTEMPTS` tries for a stable one.

    Returns the first stable measurement, else the one with the smallest spread.
    """

    path = reference_onnx(model)
    attempts: list[HostTime] = []
    for attempt in range(1, ATTEMPTS + 1):
        log.info("measuring reference model %s on this CPU with %d thread(s), %d rounds (attempt %d)",
                 model.key, threads, ROUNDS, attempt)
        shape = InputShape(**model.shape)
        rounds = tuple(time_onnx(path, shape, threads=threads, warmup=HOST_WARMUP, runs=HOST_RUNS).p50_ms
                       for _ in range(ROUNDS))
        attempts.append(HostTime(rounds))
        if attempts[-1].stable:
            break
    return min(attempts, key=lambda host: host.spread)


def reference_onnx(model: ReferenceModel) -> Path:
    """The reference model's ONNX file, built and cached on first use."""
    path = cache_dir() / f"{model.key}.onnx"
    if not path.is_file():
        log.info("building reference model %s (random weights) at %s", model.key, path)
        with atomic_path(path) as tmp:
            model.build(tmp)
    return path




def _cached_host_time(path: Path, key: dict[str, Any]) -> HostTime | None:
    """The cached host time for ``key``, if there is one measured in rounds and stable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if any(record.get(k) != v for k, v in key.items()):
        return None
    rounds = record.get("rounds_ms")
    if not isinstance(rounds, list) or not rounds or not all(isinstance(r, (int, float)) and r > 0 for r in rounds):
        return None  # an older single measurement: measure again, in rounds
    host = HostTime(tuple(float(r) for r in rounds))
    return host if host.stable else None
