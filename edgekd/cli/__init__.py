"""The ``edgekd`` command line (typer + rich). Every command calls the Python API in :mod:`edgekd.api`.

One module per verb group: :mod:`~edgekd.cli.run` (run, validate, report and the run printout),
:mod:`~edgekd.cli.demo`, :mod:`~edgekd.cli.compress`, :mod:`~edgekd.cli.measure` (profile, bench),
:mod:`~edgekd.cli.artifacts` (export, quantize, bundle), :mod:`~edgekd.cli.data_distill` (distill-data) and
:mod:`~edgekd.cli.catalogs` (devices, pipelines); :mod:`~edgekd.cli.common` holds what they share (the error →
exit-code wrapper, the options several take). Adding a command is one function decorated with
``@handle_errors`` in its verb module, registered below in the order ``--help`` lists it.
"""

from __future__ import annotations

import logging
import signal
from typing import Annotated, Any

import typer
import typer.core

from edgekd import __version__
from edgekd.cli import artifacts, compress, data_distill, demo, measure, run
from edgekd.cli.catalogs import devices_app, pipelines_app
from edgekd.cli.common import Typer, state, terminate
from edgekd.console import SafeRichHandler, err, out
from edgekd.distributed import exit_launched, launched_rank, launched_size

app = Typer(
    name="edgekd",
    help="Distill, export and profile models against an edge device's latency budget.\n\n"
    "Example: edgekd demo --out runs/demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(devices_app, name="devices")
app.add_typer(pipelines_app, name="pipelines")
for _command in (run.run, demo.demo, compress.compress, run.validate, measure.profile, run.report, measure.bench,
                 artifacts.export, artifacts.quantize, artifacts.bundle):
    app.command()(_command)
app.command("distill-data")(data_distill.distill_data)


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """No type after a plain flag in --help (typer ≥ 0.2x shows ``<bool>`` after ``--fresh``)."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _show_version(value: bool) -> None:
    if value:
        out.print(f"edgekd {__version__}", soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Print an error's traceback before its one line (the exit code stays).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print edgekd's version and exit.",
                                          callback=_show_version, is_eager=True)] = False,
) -> None:
    state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[SafeRichHandler(console=err, show_path=False, show_time=False)],
    )
    logging.getLogger("edgekd").setLevel(logging.DEBUG if debug else logging.INFO)
    if launched_rank() != 0:  # the other processes of a data-parallel run: rank 0 speaks for the run
        logging.getLogger("edgekd").setLevel(logging.WARNING)


def main() -> None:
    """Console-script entry point: SIGTERM ends a command as Ctrl-C does (a message, finished stages kept).
    A process a launcher started (torchrun, accelerate launch) ends through :func:`exit_launched`."""
    signal.signal(signal.SIGTERM, terminate)
    if launched_size() == 1:
        app()
        return
    try:
        app()
    except SystemExit as exc:
        exit_launched(exc.code)
    exit_launched(0)
