"""How much slower is the demo when another CPU-bound process runs alongside it?

Runs ``edgekd demo --fresh`` (the full built-in demo: teacher, distillation, export, profile, bundle,
report) in a fresh process, alternately on its own ("idle") and with one competing CPU-bound process
(a Python busy loop) started just before it and stopped just after ("loaded"), switching which goes
first in each repeat so that drift in the machine's background load hits both alike. The slowdown is
the median over repeats of loaded ÷ idle wall time, each pair measured back to back; the ratio of the
medians is recorded too. The target is a slowdown of at most 1.5×.

``--threads`` chooses the training threads of each configuration measured (default ``auto``, edgekd's
default; ``2`` on a 2-core machine is what torch did before it was set). ``OMP_NUM_THREADS`` is removed
from the demo's environment so that ``auto`` decides.

    python benchmarks/demo_under_load.py [--repeats N] [--threads auto 2] [--out FILE.json]

Writes ``benchmarks/results/demo_under_load-<cpu-slug>.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgekd.atomic import write_json
from edgekd.profile.cpu import detect_cpu
from edgekd.threads import allowed_cpus, physical_cores

TARGET = 1.5
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
THREADS_LOG = re.compile(r"training with (\d+) torch thread")


def cpu_slug() -> str:
    """A file-name-safe name for this CPU, e.g. ``amd-epyc``."""
    return re.sub(r"[^a-z0-9]+", "-", detect_cpu().brand.lower()).strip("-") or "unknown-cpu"


def run_demo(threads: str, loaded: bool) -> dict[str, Any]:
    """One fresh demo run (with a busy-loop competitor when ``loaded``): wall time, stages, threads used."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    load_before = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            command = [sys.executable, "-m", "edgekd", "demo", "--out", str(Path(tmp) / "demo"), "--fresh", "--json"]
            command += [] if threads == "auto" else ["--threads", threads]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if done.returncode != 0:
        raise SystemExit(f"edgekd demo failed ({done.returncode}):\n{done.stderr[-2000:]}")
    record = json.loads(done.stdout)
    used = THREADS_LOG.search(done.stderr)
    return {
        "loaded": loaded,
        "wall_seconds": wall,
        "stage_seconds": {s["stage"]: s["wall_seconds"] for s in record["stages"]},
        "torch_threads": int(used.group(1)) if used else None,
        "student_accuracy": record["report"]["student"]["accuracy"],
        "load_average_before": load_before,
    }


def measure(threads: str, repeats: int) -> dict[str, Any]:
    """``repeats`` idle/loaded pairs for one thread setting, alternating which goes first."""
    pairs = []
    for repeat in range(repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)
        runs = {loaded: run_demo(threads, loaded) for loaded in order}
        pairs.append({"idle": runs[False], "loaded": runs[True],
                      "ratio": runs[True]["wall_seconds"] / runs[False]["wall_seconds"]})
        print(f"threads={threads} repeat {repeat + 1}/{repeats}: idle {runs[False]['wall_seconds']:.1f} s, "
              f"loaded {runs[True]['wall_seconds']:.1f} s, ratio {pairs[-1]['ratio']:.2f}", flush=True)
    idle = [p["idle"]["wall_seconds"] for p in pairs]
    loaded = [p["loaded"]["wall_seconds"] for p in pairs]
    slowdown = statistics.median(p["ratio"] for p in pairs)
    return {
        "threads_setting": threads,
        "pairs": pairs,
        "idle_median_seconds": statistics.median(idle),
        "loaded_median_seconds": statistics.median(loaded),
        "slowdown_median_of_ratios": slowdown,
        "slowdown_ratio_of_medians": statistics.median(loaded) / statistics.median(idle),
        "passed": slowdown <= TARGET,
    }


def main() -> int:
    """Run the benchmark, write its JSON and exit 1 when edgekd's default setting misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--repeats", type=int, default=3, help="idle/loaded pairs per thread setting")
    parser.add_argument("--threads", nargs="+", default=["auto"], help="thread settings to measure (auto, 1, 2, ...)")
    args = parser.parse_args()
    cpus = allowed_cpus()
    record = {
        "benchmark": "demo_under_load",
        "target_slowdown": TARGET,
        "competitor": "one Python busy loop (one CPU-bound thread), started before the demo, stopped after it",
        "cpu": detect_cpu().to_json(),
        "affinity_cpus": len(cpus),
        "affinity_physical_cores": physical_cores(cpus),
        "settings": [measure(threads, args.repeats) for threads in args.threads],
    }
    default = next((s for s in record["settings"] if s["threads_setting"] == "auto"), record["settings"][0])
    record["passed"] = default["passed"]
    out = args.out or RESULTS / f"demo_under_load-{cpu_slug()}.json"
    write_json(out, record)
    for s in record["settings"]:
        print(f"threads={s['threads_setting']}: idle {s['idle_median_seconds']:.1f} s, loaded "
              f"{s['loaded_median_seconds']:.1f} s, slowdown {s['slowdown_median_of_ratios']:.2f}× "
              f"(target ≤ {TARGET}×, {'PASS' if s['passed'] else 'FAIL'})")
    print(f"wrote {out}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
