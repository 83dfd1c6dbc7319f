"""``edgekd demo``: the built-in demo recipe, run and printed as ``edgekd run`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.common import FreshOpt, JsonOpt, QuietOpt, ThreadsOpt, handle_errors
from edgekd.cli.run import run_and_print

#: The demo's run directory unless ``--out`` names another.
DEMO_OUT = Path("runs/demo")
DemoOutOpt = Annotated[Path | None, typer.Option("--out", "-o", help=f"Run directory (default {DEMO_OUT}).")]


@handle_errors
def demo(out_dir: DemoOutOpt = None, threads: ThreadsOpt = None, fresh: FreshOpt = False, quiet: QuietOpt = False,
         as_json: JsonOpt = False) -> None:
    """Run the built-in demo: digits CNN teacher → small student, exported and profiled on host-cpu.

    Example: edgekd demo --out runs/demo
    """
    run_and_print("demo-digits", out_dir=out_dir or DEMO_OUT, threads=threads, fresh=fresh, quiet=quiet,
                  as_json=as_json)
