"""The report section of a budget search: how the latency table was made and judged, the trained candidates,
the choice and, for a classifier, the Pareto plot.

A classifier's search chooses by a validation metric; a causal LM's (``task: causal_lm``) by validation
loss, with per-token latencies (:mod:`edgekd.search.record`). :func:`lm_trained_rows` is shared with
``edgekd compress``'s terminal table.
"""

from __future__ import annotations

import json
from typing import Any

from edgekd.profile.load import is_loaded
from edgekd.report.document import Block, Figure, Paragraph, Section, Table, fmt, si
from edgekd.search.record import LMSearchRecord, SearchRecord, TableRecord

#: Columns of a causal-LM search's trained-candidates table.
LM_TRAINED_COLUMNS = ("trained candidate", "val loss (nats/token)", "table p90 (ms/token)", "p90 (ms/token)",
                      "tokens/s", "size (MB)", "peak mem (MB)", "verdict")


def search_section(search: SearchRecord | LMSearchRecord | None, pareto_plot: str | None = None) -> Section | None:
    """The run's budget ``search`` (none when the run did not search), with a classifier's Pareto plot file."""
    if search is None:
        return None
    if isinstance(search, LMSearchRecord):
        return _lm_section(search)
    return _classifier_section(search, pareto_plot)


def lm_trained_rows(search: LMSearchRecord) -> tuple[tuple[str, ...], ...]:
    """One row per trained variant's real export (:data:`LM_TRAINED_COLUMNS`), the choice marked."""
    return tuple((m.label + (" ← chosen" if m.onnx == search.chosen.onnx else ""), f"{m.val_loss:.4f}",
                  fmt(m.table_p90_ms, "{:.4f}"), f"{m.p90_ms:.4f}", f"{m.tokens_per_second:.0f}",
                  f"{m.size_mb:.3f}", f"{m.peak_memory_mb:.1f}", m.verdict) for m in search.measured)


def _classifier_section(search: SearchRecord, plot: str | None) -> Section:
    table, budget, margin = search.table, search.budget, search.latency_margin
    blocks: list[Block] = [Paragraph(
        f"Latency table first: {table.entries} candidates ({search.family['arch']} students; space "
        f"{_compact(search.space)}, prune {_compact(search.prune)}, factorize {_compact(search.factorize)},"
        f" precision {_compact(search.precision)}) built with random weights, exported and timed on "
        f"{search.device}: {_origin(table)}. {table.feasible} fit the budget (p90 ≤ "
        f"{budget.p90_ms * (1 - margin):.4g} ms, the budget less a {margin:.0%} noise margin; size ≤ "
        f"{budget.size_mb:g} MB; peak memory ≤ {budget.peak_memory_mb:g} MB); the others were dropped "
        "before any training.")]
    chosen, metric = search.chosen, search.metric
    lower = " (lower is better)" if search.lower_is_better else ""
    blocks.append(Paragraph(
        f"Training second: the {len(search.trained)} largest feasible structures by {search.rank_by} were "
        f"distilled, exported and timed again; chosen by validation {metric}{lower} among those within the whole "
        f"budget: {chosen.label} (validation {fmt(chosen.val_score, '{:.4f}')}, test {fmt(chosen.score, '{:.4f}')}), "
        f"p90 {chosen.confirmed.p90_ms:.4g} ms on re-profile ({chosen.confirmed.verdict}). "
        f"Search wall time {search.wall_seconds:.1f} s."))
    reference = search.reference
    if search.estimate and reference:
        blocks.append(Paragraph(
            f"Latencies are estimates for {search.device}: host times × speed ratio "
            f"{reference.get('described') or format(reference['ratio'], '.3g')}, "
            f"from reference model '{reference['reference_model']}' ({reference['device_ms']:g} ms published, "
            f"{reference['host_ms']:.4g} ms measured here; {reference['source']})."))
    blocks.append(Table(
        ("trained candidate", f"val {metric}", f"test {metric}", "table p90 (ms)", "p90 (ms)", "size (MB)",
         "peak mem (MB)", "verdict"),
        tuple((m.label + (" ← chosen" if m.onnx == chosen.onnx else ""), fmt(m.val_score, "{:.4f}"),
               fmt(m.score, "{:.4f}"), fmt(m.table_p90_ms, "{:.4f}"), f"{m.p90_ms:.4f}",
               f"{m.size_mb:.3f}", f"{m.peak_memory_mb:.1f}", m.verdict) for m in search.measured)))
    if plot:
        blocks.append(Figure(plot, f"Budget search: validation {metric} (what the choice is made on) vs p90 of the "
                                   f"trained candidates' real exports, each with its test {metric} as a hollow "
                                   "marker; the star is the choice; below, the latency table's candidates; the "
                                   "dashed line is the budget."))
    blocks.append(_candidates(table, ""))
    return Section("Budget search", tuple(blocks))


def _lm_section(search: LMSearchRecord) -> Section:
    table, budget, margin = search.table, search.budget, search.latency_margin
    limit, shape, chosen = search.per_token_limit_ms, search.generation, search.chosen
    estimate = " (estimates for the device: host times × its speed ratio)" if search.estimate else ""
    return Section("Budget search", (
        Paragraph(
            f"Latency table first: {table.entries} causal-LM candidates (space {_compact(search.space)}, "
            f"precision {_compact(search.precision)}) built with random weights, exported with their KV cache and "
            f"timed per generated token on {search.device} ({shape.prompt_tokens}-token prompt, "
            f"{shape.new_tokens} new tokens){estimate}: {_origin(table)}. {table.feasible} fit the budget (p90 ≤ "
            f"{limit * (1 - margin):.4g} ms per token, the {limit:g} ms limit less a {margin:.0%} noise margin; "
            f"size ≤ {budget.size_mb:g} MB; peak memory ≤ {budget.peak_memory_mb:g} MB); the others were "
            "dropped before any training."),
        Paragraph(
            f"Training second: the {len(search.trained)} largest feasible structures by {search.rank_by} were "
            f"distilled, exported and timed again per token; chosen by {search.metric.description} among those "
            f"within the whole budget: {chosen.label} (validation loss {chosen.val_loss:.4f} nats/token), "
            f"{chosen.confirmed.p90_ms:.4g} ms per token p90 on re-measurement "
            f"({chosen.confirmed.verdict}). Search wall time {search.wall_seconds:.1f} s."),
        Table(LM_TRAINED_COLUMNS, lm_trained_rows(search)),
        _candidates(table, "/token"),
    ))


def _origin(table: TableRecord) -> str:
    """Where the latency table's entries came from: timed by the search stage or read from its cache file, and when
    they were timed (``edgekd compress`` times the table before the teacher trains; its stage then reads it)."""
    timed = (f"{table.profiled} timed by the search stage ({table.seconds:.1f} s)" if table.profiled
             else "none timed by the search stage")
    moments = sorted({row.measured_at for row in table.candidates})
    when = f", timed {moments[0]}" + (f" to {moments[-1]}" if len(moments) > 1 else "") if moments else ""
    loaded = [row.other_load for row in table.candidates if is_loaded(row.other_load)]
    load = (f"; {len(loaded)} timed while other processes kept up to {max(loaded):.2g} CPUs busy (their figures may "
            "be slow)" if loaded else "")
    return f"{timed}, {table.reused} read from the cache ({table.path}){when}{load}"


def _candidates(table: TableRecord, per: str) -> Table:
    """Every latency-table candidate by p90 (``per``: the latency's unit suffix), with what became of it; parameters
    written in full, as the report's other tables write them (the same count: the model's)."""
    macs = "MACs" + per
    return Table(
        ("latency table candidate", f"p90 (ms{per})", "size (MB)", "peak mem (MB)", macs, "params", "status"),
        tuple((row.label, f"{row.p90_ms:.4f}", f"{row.size_mb:.3f}", f"{row.peak_memory_mb:.1f}", si(row.macs),
               f"{row.params:,}", row.status + (f" ({', '.join(row.over)})" if row.over else ""))
              for row in sorted(table.candidates, key=lambda row: row.p90_ms)))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
