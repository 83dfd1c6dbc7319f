"""One-line explanations of a budget search that cannot succeed, with what would be needed.

Before training (:func:`no_fit_message`, or :func:`outgrown_message` when a default space outgrows the
teacher): the fastest candidate's p90 against the budget and what
could close the gap (a shorter input, INT8 where the CPU has int8 dot products, smaller students, the
pruning or factorization the search leaves out),
or, when the limit is below what an empty ONNX graph takes here, that no model can meet it. After
training (:func:`missed_message`): the trained candidates' measured figures against the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgekd.config.device import DeviceProfile
from edgekd.models.specs import DropLayersSpec
from edgekd.profile.cpu import device_isa, host_threads, resolve_threads
from edgekd.profile.floor import FLOOR_MARGIN, SURELY_MET, empty_graph_floor
from edgekd.quantize.isa import INT8_DOT_PRODUCT, isa_label
from edgekd.search.build import Family
from edgekd.search.config import SearchStage

if TYPE_CHECKING:
    from edgekd.search.plan import Row


def no_fit_message(rows: Sequence[Row], device: DeviceProfile, stage: SearchStage, family: Family) -> str:
    """Why no candidate of the latency table fits ``device``'s budget, and what would be needed."""
    budget = device.budget
    where = f"search on '{device.name}'"
    fast = [row for row in rows if "p90_ms" not in row.over]
    if not fast:
        fastest = min(rows, key=lambda row: row.entry.p90_ms)
        limit = budget.p90_ms * (1 - stage.latency_margin)
        margin = f" ({limit:.3g} ms with the {stage.latency_margin:.0%} noise margin)" if stage.latency_margin else ""
        estimate = " (estimated)" if fastest.entry.estimate else ""
        head = (f"{where}: no candidate meets the p90 budget: fastest candidate {fastest.entry.p90_ms:.3g} ms "
                f"p90{estimate} vs budget {budget.p90_ms:g} ms{margin}, {fastest.entry.p90_ms / limit:.1f}× too "
                f"slow ({fastest.candidate.label})")
        floor = _floor_ms(device)
        if floor is not None and budget.p90_ms < FLOOR_MARGIN * floor:
            return (f"{head}; no model can be that fast on this machine: an empty ONNX graph already takes "
                    f"{floor:.3g} ms per run here")
        return f"{head}; try {_or(_latency_hints(device, stage, family) + _smaller_hints(stage, family, fastest))}"
    parts = []
    smallest = min(fast, key=lambda row: row.entry.size_mb)
    if smallest.entry.size_mb > budget.size_mb:
        parts.append(f"smallest file {smallest.entry.size_mb:.3g} MB vs budget {budget.size_mb:g} MB "
                     f"({smallest.candidate.label})")
    lightest = min(fast, key=lambda row: row.entry.peak_memory_mb)
    if lightest.entry.peak_memory_mb > budget.peak_memory_mb:
        parts.append(f"least peak memory {lightest.entry.peak_memory_mb:.3g} MB vs budget "
                     f"{budget.peak_memory_mb:g} MB ({lightest.candidate.label})")
    what = "; ".join(parts) or "none fits the size and peak memory limits at once"
    hints = (["int8 (add it to precision)"] if "int8" not in stage.precision else [])
    hints += ["a smaller vocabulary (tokenizer.vocab_size)"] if family.signature.kind == "text" else []
    hints += _smaller_hints(stage, family, smallest)
    return (f"{where}: {len(fast)} candidate(s) meet the p90 budget but not the rest of it: {what}; "
            f"try {_or(hints)}")


def outgrown_message(rows: Sequence[Row], arch: str, teacher_params: int) -> str:
    """Why a search on its arch's default space has nothing to train: no candidate is smaller than the
    teacher."""
    smallest = min(rows, key=lambda row: row.entry.params)
    return (f"search.space: every candidate of the default '{arch}' space has as many parameters as the teacher or "
            f"more ({teacher_params:,}; the smallest, {smallest.candidate.label}, has {smallest.entry.params:,}), and "
            "a student as large as its teacher is no compression; give search.space sizes below the teacher's")


def missed_message(measured: Sequence[tuple[str, float, float | None]], device: DeviceProfile,
                   unconfirmed: Sequence[tuple[str, float, float]] = ()) -> str:
    """Why none of the trained candidates fits after the real export.

    ``measured``: (label, measured p90 ms, table p90 ms or None) of every trained variant; ``unconfirmed``: (label,
    p90 ms timed side by side, p90 ms re-profiled alone) of those that met the budget at first but not when
    re-profiled to confirm it (a busy machine, most often).
    """
    where, limit = f"search on '{device.name}'", device.budget.p90_ms
    if unconfirmed:
        label, first, again = min(unconfirmed, key=lambda u: u[2])
        return unconfirmed_message(where, len(unconfirmed), label, (first, again), f"{limit:g} ms", "ms p90")
    label, p90, table_p90 = min(measured, key=lambda m: m[1])
    table = f" (the latency table said {table_p90:.3g} ms)" if table_p90 is not None else ""
    return (f"{where}: none of the {len(measured)} trained candidate model(s) meets the budget "
            f"after the real export: fastest {p90:.3g} ms p90 vs budget {limit:g} ms{table} "
            f"({label}); raise latency_margin so the table keeps more room, or relax the budget")


def unconfirmed_message(where: str, count: int, label: str, timings: tuple[float, float], budget: str,
                        unit: str) -> str:
    """Why a search that had ``count`` candidates within budget kept none: each missed it when timed again to
    confirm it (``label``'s ``timings``: side by side, then alone, in ``unit``)."""
    first, again = timings
    return (f"{where}: {count} trained candidate model(s) met the budget when timed side by side but none when timed "
            f"again to confirm it: {label} {first:.3g} {unit}, then {again:.3g} vs budget {budget}; time them again on "
            "a quiet machine (re-run: nothing trains twice) or relax the budget")


def _latency_hints(device: DeviceProfile, stage: SearchStage, family: Family) -> list[str]:
    """What could make the fastest candidate fast enough."""
    hints = []
    if family.signature.kind == "text":
        hints.append(f"a smaller max sequence length (inputs.sequence_length is {device.inputs.sequence_length})")
    isa = device_isa(device)
    if "int8" not in stage.precision:
        hints.append("int8 (add it to precision)")
    elif not any(feature in isa for feature in INT8_DOT_PRODUCT):
        hints.append(f"int8 on a VNNI device (this one: {isa_label(isa)})")
    return hints


def _smaller_hints(stage: SearchStage, family: Family, closest: Row) -> list[str]:
    """What makes the students themselves smaller than ``closest`` (the candidate nearest the budget): smaller
    students in ``space`` (unless it keeps one block of the teacher already), and the compression the search
    does not try yet."""
    hints = [] if _one_teacher_block(closest, family) else ["smaller students in space"]
    if not any(stage.prune):
        hints.append("structured pruning after distillation (prune: [0.5])")
    if all(ratio is None for ratio in stage.factorize):
        hints.append("low-rank factorization (factorize: [0.5])")
    return hints or ["higher prune ratios or lower factorize ratios"]


def _one_teacher_block(row: Row, family: Family) -> bool:
    """True when ``row`` is a ``drop_layers`` student keeping a single block of the teacher: none is smaller."""
    spec = row.candidate.structure.model_spec()
    return isinstance(spec, DropLayersSpec) and family.depth is not None and len(spec.layers_kept(family.depth)) == 1


def _floor_ms(device: DeviceProfile) -> float | None:
    """The fastest an empty ONNX graph runs here with the device's threads, when that can bound the budget.

    None for estimated devices (the floor is a host figure) and for budgets no machine needs it for.
    """
    if device.is_estimate or device.budget.p90_ms >= SURELY_MET["p90_ms"]:
        return None
    return empty_graph_floor(host_threads(resolve_threads(device))).p90_ms


def _or(items: list[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
