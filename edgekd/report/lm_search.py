"""The report section of a causal-LM budget search: per-token latency table, trained candidates, the choice.

A causal-LM search (:mod:`edgekd.search.causal_lm`) records ``task: causal_lm`` and the ``metric`` that chose
(validation loss, nats per token); its latencies are per generated token. :func:`trained_rows` is shared
with ``edgekd compress``'s terminal table.
"""

from __future__ import annotations

import json
from typing import Any

from edgekd.report.document import Block, Paragraph, Section, Table, fmt, si

#: Columns of the trained-candidates table.
TRAINED_COLUMNS = ("trained candidate", "val loss (nats/token)", "table p90 (ms/token)", "p90 (ms/token)",
                   "tokens/s", "size (MB)", "peak mem (MB)", "verdict")


def is_lm_search(search: dict[str, Any]) -> bool:
    """Whether a search stage's record is a causal LM's."""
    return search.get("task") == "causal_lm"


def trained_rows(search: dict[str, Any]) -> tuple[tuple[str, ...], ...]:
    """One row per trained variant's real export (:data:`TRAINED_COLUMNS`), the choice marked."""
    chosen = search["chosen"]["onnx"]
    return tuple((m["label"] + (" ← chosen" if m["onnx"] == chosen else ""), f"{m['val_loss']:.4f}",
                  fmt(m["table_p90_ms"], "{:.4f}"), f"{m['p90_ms']:.4f}", f"{m['tokens_per_second']:.0f}",
                  f"{m['size_mb']:.3f}", f"{m['peak_memory_mb']:.1f}", m["verdict"]) for m in search["measured"])


def lm_search_section(search: dict[str, Any]) -> Section:
    """The budget search of a causal LM (see the module docstring)."""
    table, budget, margin = search["table"], search["budget"], search["latency_margin"]
    limit, shape = search["per_token_limit_ms"], search["generation"]
    reused = (f"{table['profiled']} timed in this run ({table['seconds']:.1f} s)" if table["profiled"]
              else "none timed in this run") + f", {table['reused']} read from the cache ({table['path']})"
    chosen = search["chosen"]
    estimate = " (estimates for the device: host times × its speed ratio)" if search["estimate"] else ""
    blocks: list[Block] = [
        Paragraph(
            f"Latency table first: {table['entries']} causal-LM candidates (space {_compact(search['space'])}, "
            f"precision {_compact(search['precision'])}) built with random weights, exported with their KV cache and "
            f"timed per generated token on {search['device']} ({shape['prompt_tokens']}-token prompt, "
            f"{shape['new_tokens']} new tokens){estimate}: {reused}. {table['feasible']} fit the budget (p90 ≤ "
            f"{limit * (1 - margin):.4g} ms per token, the {limit:g} ms limit less a {margin:.0%} noise margin; "
            f"size ≤ {budget['size_mb']:g} MB; peak memory ≤ {budget['peak_memory_mb']:g} MB); the others were "
            "dropped before any training."),
        Paragraph(
            f"Training second: the {len(search['trained'])} largest feasible structures by {search['rank_by']} were "
            f"distilled, exported and timed again per token; chosen by {search['metric']['description']} among those "
            f"within the whole budget: {chosen['label']} (validation loss {chosen['val_loss']:.4f} nats/token), "
            f"{chosen['confirmed']['p90_ms']:.4g} ms per token p90 on re-measurement "
            f"({chosen['confirmed']['verdict']}). Search wall time {search['wall_seconds']:.1f} s."),
        Table(TRAINED_COLUMNS, trained_rows(search)),
        Table(("latency table candidate", "p90 (ms/token)", "size (MB)", "peak mem (MB)", "MACs/token", "params",
               "status"),
              tuple((row["label"], f"{row['p90_ms']:.4f}", f"{row['size_mb']:.3f}", f"{row['peak_memory_mb']:.1f}",
                     si(row["macs"]), si(row["params"]),
                     row["status"] + (f" ({', '.join(row['over'])})" if row["over"] else ""))
                    for row in sorted(table["candidates"], key=lambda row: row["p90_ms"])))]
    return Section("Budget search", tuple(blocks))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
