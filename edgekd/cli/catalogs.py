"""``edgekd devices`` (list, show, calibrate) and ``edgekd pipelines list``: the built-in catalogs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from edgekd import catalog
from edgekd.cli.common import JsonOpt, Typer, add_columns, api, handle_errors
from edgekd.config.device import load_device
from edgekd.console import out, print_json, shown

devices_app = Typer(help="List and show device profiles.\n\nExample: edgekd devices show host-cpu",
                    no_args_is_help=True)
pipelines_app = Typer(help="List the built-in recipes and the data they need.\n\nExample: edgekd pipelines list",
                      no_args_is_help=True)


@devices_app.command("list")
@handle_errors
def devices_list(as_json: JsonOpt = False) -> None:
    """List the built-in device profiles.

    Example: edgekd devices list
    """
    devices = [load_device(name) for name in catalog.names("devices")]
    if as_json:
        print_json([{"source": str(catalog.find("devices", d.name)), **d.model_dump(mode="json")} for d in devices])
        return
    table = Table(title="device profiles (the names --device takes)", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True, min_width=max(len(d.name) for d in devices))
    add_columns(table, ("threads", "p90 ms", "size MB", "memory MB", "latency"), left=("latency",), no_wrap=True)
    for device in devices:
        b = device.budget
        table.add_row(shown(device.name), str(device.threads), f"{b.p90_ms:g}", f"{b.size_mb:g}",
                      f"{b.peak_memory_mb:g}", "estimated" if device.is_estimate else "measured")
    out.print(table)
    for device in devices:  # below the table, so that long descriptions never squeeze the names
        out.print(f"[bold]{shown(device.name)}[/]: {shown(device.description)}")


@devices_app.command("show")
@handle_errors
def devices_show(name: Annotated[str, typer.Argument(help="Device profile name or YAML path.")]) -> None:
    """Show one device profile as JSON, with the file it was read from.

    Example: edgekd devices show raspberry-pi-4
    """
    device = load_device(name)
    out.print_json(json.dumps({"source": str(catalog.find("devices", name)), **device.model_dump(mode="json")}))


@devices_app.command("calibrate")
@handle_errors
def devices_calibrate(
    names: Annotated[list[str] | None, typer.Argument(
        help="Device profiles with a reference figure (default: every built-in one).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Measure again instead of reading the cache.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure the host→device speed ratio of estimated devices: the reference model timed here in rounds.

    A measurement whose rounds vary by more than 15% is retried, and is not cached if it stays unstable.

    Example: edgekd devices calibrate android-midrange-cpu --fresh
    """
    calibrated = api().calibrate(names or None, fresh=fresh)
    if as_json:
        print_json([c.to_json() for c in calibrated])
        return
    table = Table(title="host→device speed ratios (device ms ÷ host ms of the reference model)", box=box.SIMPLE_HEAD)
    table.add_column("device", no_wrap=True)
    add_columns(table, ("reference", "published ms", "host ms", "ratio", "rounds", "spread", "status"),
                left=("reference", "status"))
    for c in calibrated:
        speed = c.speed
        status = "cached" if speed.cached else "measured now" if speed.stable else "[red]unstable: not cached[/]"
        table.add_row(shown(c.device), speed.reference_model, f"{speed.device_ms:g}", f"{speed.host_ms:.4g}",
                      f"{speed.ratio:.3g} ± {speed.uncertainty:.2g}", str(len(speed.host_rounds_ms)),
                      f"{speed.spread:.0%}", status)
    out.print(table)


@pipelines_app.command("list")
@handle_errors
def pipelines_list(as_json: JsonOpt = False) -> None:
    """List the built-in recipes: their stages, the data each needs, whether it is here and where to get it.

    Example: edgekd pipelines list
    """
    recipes = api().pipelines()
    if as_json:
        print_json([r.to_json() for r in recipes])
        return
    table = Table(title="built-in recipes (the names run, validate and compress take)", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True, min_width=max(len(r.name) for r in recipes))
    table.add_column("data")
    table.add_column("here?", no_wrap=True)
    for r in recipes:
        table.add_row(shown(r.name), shown(r.data.summary), "[green]yes[/]" if r.data.ready else "[red]missing[/]")
    out.print(table)
    needs: dict[tuple[str, str], list[str]] = {}  # (missing paths, where to get them) → recipes
    for r in recipes:
        if not r.data.ready:
            missing = ", ".join(shown(str(path)) for _, path in sorted(r.data.missing.items()))
            needs.setdefault((missing, shown(r.data.where)), []).append(shown(r.name))
    for (missing, where), names in needs.items():
        out.print(f"[bold]{', '.join(names)}[/] need{'s' if len(names) == 1 else ''} {missing}. {where}")
