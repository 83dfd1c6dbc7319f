"""``edgekd demo``: the built-in demo recipe, run and printed as ``edgekd run`` does."""

from __future__ import annotations

from pathlib import Path

from edgekd.cli.common import FreshOpt, JsonOpt, OutOpt, QuietOpt, ThreadsOpt, api, handle_errors
from edgekd.cli.run import print_run


@handle_errors
def demo(out_dir: OutOpt = None, threads: ThreadsOpt = None, fresh: FreshOpt = False, quiet: QuietOpt = False,
         as_json: JsonOpt = False) -> None:
    """Run the built-in demo: digits CNN teacher → small student, exported and profiled on host-cpu.

    Example: edgekd demo --out runs/demo
    """
    result = api().run("demo-digits", out=out_dir or Path("runs/demo"), threads=threads, fresh=fresh,
                       show_progress=not (quiet or as_json))
    if result.is_main_process:
        print_run(result, as_json)
