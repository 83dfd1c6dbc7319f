"""Host→device speed ratios measured in rounds with their spread, cached only when stable; unstable timings flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd import api
from edgekd.cli import app
from edgekd.config.device import ReferenceFigure, load_device
from edgekd.profile import references
from edgekd.profile import speed_ratio as sr
from edgekd.profile.stability import MEAN_OVER_MEDIAN, P99_OVER_P50, stability_warning, unstable_reasons
from edgekd.profile.timing import HostTiming
from tests.reliability import TINY_STAGES, assert_user_error, cli, tiny_recipe, write_yaml

FIGURE = ReferenceFigure(model="bert-base-seq128", latency_ms=40.0, threads=4, source="a published table")
STEADY = (10.0, 10.2, 9.9, 10.1, 10.0)
NOISY = (10.0, 30.0, 9.0, 12.0, 25.0)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    return tmp_path / "reference"


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, ...]]:
    """Make ``measure_host_time`` return the given round sequences in order; records each call."""
    script: list[tuple[float, ...]] = []

    def fake(model: references.ReferenceModel, threads: int) -> sr.HostTime:
        return sr.HostTime(script.pop(0))

    monkeypatch.setattr(sr, "measure_host_time", fake)
    return script


@pytest.mark.parametrize("rounds", [STEADY, NOISY, (5.0,), (1.0, 1.0, 1.0), (2.0, 4.0, 3.0, 3.0)])
def test_host_time_spread_and_ratio_range(rounds: tuple[float, ...]) -> None:
    host = sr.HostTime(rounds)
    assert host.host_ms == pytest.approx(float(np.median(rounds)))
    assert host.spread == pytest.approx((max(rounds) - min(rounds)) / np.median(rounds))
    assert host.stable == (host.spread <= sr.MAX_SPREAD)
    ratio = sr.SpeedRatio(ratio=40 / host.host_ms, host_ms=host.host_ms, device_ms=40.0, reference_model="m",
                          source="s", threads=1, cpu={}, host_rounds_ms=rounds, spread=host.spread)
    assert ratio.ratio_low == pytest.approx(40 / max(rounds)) and ratio.ratio_high == pytest.approx(40 / min(rounds))
    assert ratio.ratio_low <= ratio.ratio <= ratio.ratio_high
    assert ratio.uncertainty == pytest.approx((ratio.ratio_high - ratio.ratio_low) / 2)
    assert f"{ratio.ratio:.3g} ± " in ratio.describe() and f"{len(rounds)} rounds" in ratio.describe()


def test_stable_ratio_is_cached_and_fresh_measures_again(cache: Path, scripted: list) -> None:
    scripted += [STEADY, (20.0, 20.1, 19.9, 20.0, 20.2)]
    first = sr.speed_ratio(FIGURE, threads=1)
    again = sr.speed_ratio(FIGURE, threads=1)
    assert (first.cached, again.cached) == (False, True) and again.host_rounds_ms == STEADY
    assert first.ratio == pytest.approx(40 / 10.0) and first.stable
    fresh = sr.speed_ratio(FIGURE, threads=1, fresh=True)
    assert not fresh.cached and fresh.host_ms == 20.0
    assert sr.speed_ratio(FIGURE, threads=1).host_ms == 20.0  # the fresh measurement replaced the cache
    assert scripted == []


def test_unstable_ratio_is_used_once_and_never_cached(cache: Path, scripted: list,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    scripted += [NOISY, NOISY, STEADY]
    first = sr.speed_ratio(FIGURE, threads=1)
    assert not first.stable and not first.cached and "unstable: not cached" in first.describe()
    assert "not cached" in caplog.text
    assert not list(cache.glob("host-ms-*.json"))
    second = sr.speed_ratio(FIGURE, threads=1)  # measured again, not read from a cache
    assert not second.cached and second.host_rounds_ms == NOISY
    third = sr.speed_ratio(FIGURE, threads=1)
    assert third.stable and not third.cached and len(list(cache.glob("host-ms-*.json"))) == 1


@pytest.mark.parametrize("record", [
    {"host_ms": 0.001},  # an older single measurement (the "phone 6× faster" cache of the issue)
    {"host_ms": 10.0, "rounds_ms": list(NOISY)},  # an unstable one
    {"host_ms": 10.0, "rounds_ms": []},
    {"host_ms": 10.0, "rounds_ms": [10.0, -1.0]},
])
def test_old_or_unstable_cache_records_are_measured_again(record: dict, cache: Path, scripted: list) -> None:
    scripted += [STEADY]
    sr.speed_ratio(FIGURE, threads=1)
    path = next(cache.glob("host-ms-*.json"))
    path.write_text(json.dumps({**json.loads(path.read_text()), **record}) if "rounds_ms" in record else
                    json.dumps({k: v for k, v in {**json.loads(path.read_text()), **record}.items()
                                if k != "rounds_ms"}))
    scripted += [(12.0, 12.0, 12.1, 11.9, 12.0)]
    again = sr.speed_ratio(FIGURE, threads=1)
    assert not again.cached and again.host_ms == 12.0 and scripted == []


def _timing(p50: float) -> HostTiming:
    return HostTiming(times_ms=(p50,), input_shapes={}, peak_memory_mb=0.0, size_mb=0.0, threads=1, onnxruntime="")


@pytest.mark.parametrize("attempts, expected_calls, expected", [
    ([STEADY], 5, STEADY),
    ([NOISY, STEADY], 10, STEADY),
    ([NOISY, (10.0, 14.0, 10.0, 10.0, 10.0), NOISY], 15, (10.0, 14.0, 10.0, 10.0, 10.0)),
])
def test_measure_retries_until_stable_else_keeps_the_steadiest(attempts: list, expected_calls: int, expected: tuple,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    p50s = [p for rounds in attempts for p in rounds]
    calls: list[float] = []

    def fake_time_onnx(*args, **kwargs) -> HostTiming:
        calls.append(p50s[len(calls)])
        return _timing(calls[-1])

    monkeypatch.setattr("edgekd.profile.speed_ratio.time_onnx", fake_time_onnx)
    monkeypatch.setattr(sr, "reference_onnx", lambda model: Path("unused.onnx"))
    host = sr.measure_host_time(references.reference_model("bert-base-seq128"), threads=1)
    assert len(calls) == expected_calls and host.rounds_ms == expected


def test_calibrate_command(cache: Path, scripted: list) -> None:
    estimated = [d for d in ("android-midrange-cpu", "raspberry-pi-4") if load_device(d).reference is not None]
    scripted += [STEADY, NOISY]
    outcome = CliRunner().invoke(app, ["devices", "calibrate", *estimated, "--json"])
    assert outcome.exit_code == 0, outcome.output
    records = json.loads(outcome.stdout)
    assert [r["device"] for r in records] == estimated
    assert records[0]["stable"] and not records[1]["stable"]
    assert all(r["ratio_low"] <= r["ratio"] <= r["ratio_high"] for r in records)
    scripted += [NOISY]  # the first is cached now; the second is measured again
    table = CliRunner().invoke(app, ["devices", "calibrate", *estimated], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and scripted == []
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.split()[:1] and
            line.split()[0] in estimated}
    assert rows[estimated[0]].rstrip().endswith("cached") and "± " in rows[estimated[0]]
    assert rows[estimated[1]].rstrip().endswith("unstable: not cached")
    scripted += [STEADY]
    assert [r.speed.cached for r in api.calibrate(fresh=False)] == [True, False] and scripted == []
    assert_user_error(cli("devices", "calibrate", "host-cpu"), "host-cpu", "no reference")


def test_report_shows_the_ratio_with_its_range(tmp_path: Path, cache: Path, scripted: list) -> None:
    scripted += [NOISY, NOISY, NOISY]
    recipe = write_yaml(tmp_path / "recipe.yaml", {**tiny_recipe(stages=(*TINY_STAGES, "report")),
                                                    "device": "android-midrange-cpu"})
    report = api.run(recipe, out=tmp_path / "run").report()
    warning = next(w for w in report["warnings"] if "are estimates" in w)
    ratio = sr.SpeedRatio(ratio=62 / 12.0, host_ms=12.0, device_ms=62.0, reference_model="m", source="s", threads=1,
                          cpu={}, host_rounds_ms=NOISY)
    assert f"{ratio.ratio:.3g} ± {ratio.uncertainty:.2g}" in warning
    assert f"{ratio.ratio_low:.3g}–{ratio.ratio_high:.3g}" in warning and "not cached" in warning
    assert warning in (tmp_path / "run" / "report.md").read_text()


def _samples(seed: int, outliers: int, factor: float) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    times = rng.normal(1.0, 0.03, 500).clip(0.5)
    times[rng.choice(500, outliers, replace=False)] *= factor
    return {"p50_ms": float(np.percentile(times, 50)), "mean_ms": float(times.mean()),
            "p99_ms": float(np.percentile(times, 99))}


@pytest.mark.parametrize("seed", range(5))
def test_unstable_timings_are_flagged_and_steady_ones_are_not(seed: int) -> None:
    assert unstable_reasons(_samples(seed, 0, 1.0)) == []
    assert unstable_reasons(_samples(seed, 3, 2.0)) == []  # a little noise is not instability
    flagged = _samples(seed, 25, 40.0)  # 5% of runs 40× slower: the mean ends up ~3× the median
    reasons = unstable_reasons(flagged)
    assert flagged["mean_ms"] > MEAN_OVER_MEDIAN * flagged["p50_ms"] and any("mean" in r for r in reasons)
    assert flagged["p99_ms"] > P99_OVER_P50 * flagged["p50_ms"] and any("p99" in r for r in reasons)
    assert "Unstable timing of m.onnx" in (stability_warning("m.onnx", flagged) or "")
