"""Impossible budgets: limits below what an empty ONNX graph already takes on this machine.

No model can be faster, smaller or lighter than a graph holding one ``Identity`` node, so a
device budget is *impossible* when one of its limits is below that graph's figure:

- ``p90_ms`` below the fastest of its timed runs with the device's threads on this machine
  (onnxruntime's own per-call overhead);
- ``peak_memory_mb`` below the peak memory its session adds to a fresh process (the runtime's
  own baseline: arenas, thread pool, the loaded library's pages);
- ``size_mb`` below the size of its file.

Limits are compared with :data:`FLOOR_MARGIN` of those figures, so measurement noise never
rejects a budget a real model could meet. The figures are measured in the profiling worker that
times models and cached per CPU, thread count and onnxruntime version beside the reference-model
timings; limits at or above :data:`SURELY_MET` need no measurement at all. Latencies of a device
with a ``reference`` are host timings scaled by a speed ratio that is measured only when models
are profiled, so only its memory and size limits are checked here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from edgekd.atomic import write_json
from edgekd.config.device import DeviceProfile, InputShape
from edgekd.errors import BudgetError, EdgekdError
from edgekd.profile.cpu import detect_cpu, host_threads, resolve_threads
from edgekd.profile.speed_ratio import cache_dir

#: A limit is impossible when below this share of the empty graph's figure.
FLOOR_MARGIN = 0.9
#: Limits no machine edgekd runs on needs measuring for: any budget at or above them is possible.
SURELY_MET = {"p90_ms": 1.0, "peak_memory_mb": 256.0, "size_mb": 0.01}
WARMUP = 20
RUNS = 200


@dataclass(frozen=True)
class Floor:
    """What an empty ONNX graph takes on this machine with ``threads`` onnxruntime threads."""

    p90_ms: float
    """Its fastest timed run (ms): no p90 latency can be lower."""
    peak_memory_mb: float
    size_mb: float
    threads: int


def check_budget(device: DeviceProfile, source: str, *, latency: bool = True) -> None:
    """Raise :class:`BudgetError` for the first limit of ``device``'s budget no model can meet here.

    ``source`` (the profile's file or name) starts the message, which names the limit, its value,
    the empty graph's figure and the least value that could be met. ``latency=False`` leaves the
    p90 limit to the caller (a budget search explains a p90 no candidate meets itself).
    """
    budget = device.budget.model_dump()
    checked = [name for name in SURELY_MET if name != "p90_ms" or (latency and not device.is_estimate)]
    tight = [name for name in checked if budget[name] < SURELY_MET[name]]
    if not tight:
        return
    floor = empty_graph_floor(host_threads(resolve_threads(device)))
    for name in tight:
        least = FLOOR_MARGIN * getattr(floor, name)
        if budget[name] < least:
            raise BudgetError(f"{source}: budget.{name}: {budget[name]:g} is impossible on this machine: "
                              f"{_what_it_takes(name, floor)}; expected at least {least:.4g}")


def _what_it_takes(name: str, floor: Floor) -> str:
    if name == "p90_ms":
        return (f"an empty ONNX graph already takes {floor.p90_ms:.4g} ms per run with {floor.threads} "
                "onnxruntime thread(s)")
    if name == "peak_memory_mb":
        return f"onnxruntime's session of an empty ONNX graph already adds {floor.peak_memory_mb:.4g} MB"
    return f"the smallest ONNX file (an empty graph) is {floor.size_mb:.4g} MB"


@functools.cache
def empty_graph_floor(threads: int) -> Floor:
    """The empty graph's figures with ``threads`` threads: from the cache, else measured and cached."""
    import onnxruntime

    key = {"cpu": detect_cpu().brand, "threads": threads, "onnxruntime": onnxruntime.__version__,
           "warmup": WARMUP, "runs": RUNS}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    record = cache_dir() / f"empty-graph-{digest}.json"
    try:
        cached = json.loads(record.read_text(encoding="utf-8"))
        if all(cached.get(k) == v for k, v in key.items()):
            return Floor(**{field.name: cached[field.name] for field in fields(Floor)})
    except (OSError, ValueError, KeyError, TypeError):
        pass
    floor = _measure(threads)
    with contextlib.suppress(OSError, EdgekdError):  # an unwritable cache only means measuring again next time
        write_json(record, {**key, **asdict(floor)})
    return floor


def _measure(threads: int) -> Floor:
    from edgekd.profile.timing import time_onnx

    with tempfile.TemporaryDirectory(prefix="edgekd-empty-graph-") as tmp:
        path = Path(tmp) / "empty.onnx"
        _write_empty_graph(path)
        timing = time_onnx(path, InputShape(), threads=threads, warmup=WARMUP, runs=RUNS)
    return Floor(p90_ms=min(timing.times_ms), peak_memory_mb=timing.peak_memory_mb, size_mb=timing.size_mb,
                 threads=threads)


def _write_empty_graph(path: Path) -> None:
    """One ``Identity`` node from a 1-element float input to the output (opset 17)."""
    import onnx
    from onnx import TensorProto, helper

    tensor = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "empty", [tensor[0]], [tensor[1]])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
