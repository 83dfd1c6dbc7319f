"""The typed shape of ``bench.json``, the machine record of ``edgekd bench``.

:func:`edgekd.report.bench.write_bench_report` validates what :func:`edgekd.profile.bench.bench_models`
measured into a :class:`BenchReport` once; the Markdown and HTML are rendered from it and ``bench.json``
is its :meth:`BenchReport.to_json`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgekd.config.device import DeviceProfile
from edgekd.profile.cpu import CpuInfo
from edgekd.profile.operators import OperatorTime
from edgekd.profile.runner import ProfileResult
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.stage_record import Record


class BenchModel(ProfileResult):
    """One timed model: its :class:`ProfileResult`, graph figures, budget verdict and operator profile."""

    name: str = Field(description="A short name unique among the benchmarked files.")
    macs: int | None = Field(description="MACs per inference (null for an ORT format model).")
    params: int | None
    macs_by_op: dict[str, int]
    budget: BudgetVerdict
    verdict: str = Field(description="The budget verdict, repeated for scripts.")
    p50_vs_first: float | None = Field(description="p50 over the first model's p50.")
    operators: list[OperatorTime]


class BenchSettings(Record):
    """How the models were timed."""

    warmup: int
    runs: int
    rounds: int
    interleaved: bool


class BenchReport(Record):
    """``bench.json``: several models timed side by side on one device profile."""

    edgekd_version: str
    command: Literal["bench"] = Field(
        "bench", description="The command that wrote it: marks its directory as edgekd's, for a later bench there.")
    device: DeviceProfile = Field(description="The device profile the models were timed and judged on.")
    cpu: CpuInfo
    settings: BenchSettings
    models: list[BenchModel]
    warnings: list[str]
    plots: dict[str, str] = {}
    files: list[str] = []

    def to_json(self) -> dict[str, Any]:
        """``bench.json``'s content: exactly the keys the report was built with."""
        return self.model_dump(mode="json", exclude_unset=True)
