"""Finding the built-in YAML catalogs: ``pipelines/``, ``devices/`` and ``exporters/``.

In a checkout they sit at the top of the repository, beside ``edgekd/``; in an installed wheel
they ship as the data-only packages ``edgekd._catalog.<kind>``. A name can also be a path to a
YAML file of the user's own.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Literal

from edgekd.config.paths import user_text
from edgekd.errors import ConfigError


class UnknownEntryError(ConfigError):
    """A built-in name that is not in the catalog; callers prefix it with where the name was written."""


Kind = Literal["pipelines", "devices", "exporters"]


def catalog_dir(kind: Kind) -> Path:
    """The directory holding the built-in YAML files of ``kind``."""
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir() and (checkout.parent / "pyproject.toml").is_file():
        return checkout
    installed = Path(str(resources.files("edgekd") / "_catalog" / kind))
    if installed.is_dir():
        return installed
    raise ConfigError(f"built-in catalog '{kind}' not found (looked in {checkout} and {installed})")


def names(kind: Kind) -> list[str]:
    """Names of the built-in entries of ``kind``, sorted."""
    return sorted(p.stem for p in catalog_dir(kind).glob("*.yaml"))


def find(kind: Kind, name_or_path: str | Path) -> Path:
    """Resolve a built-in name (``host-cpu``) or a path to a YAML file.

    A path has ``~`` and ``$VAR``/``${VAR}`` expanded (:func:`edgekd.config.paths.user_path`), unless it names an
    existing file as written: a path this function returned before (callers look a name up again), whose ``$``
    are the file's own.
    """
    text = str(name_or_path)
    if not _is_file(Path(text)):
        text = user_text(text, f"{kind[:-1]} '{shown_name(text)}'")
    candidate = Path(text)
    if text.endswith((".yaml", ".yml")) or _is_file(candidate) or "/" in text:
        if not _is_file(candidate):
            found = "a directory, expected a YAML file" if _is_dir(candidate) else "file not found"
            raise UnknownEntryError(f"{shown_name(str(candidate))}: {found}")
        return candidate
    path = catalog_dir(kind) / f"{text}.yaml"
    if _is_file(path):
        return path
    known = names(kind)
    close = difflib.get_close_matches(text, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UnknownEntryError(f"unknown {kind[:-1]} '{shown_name(text)}'{hint}; built-in: {', '.join(known)}")


def shown_name(text: str, most: int = 160) -> str:
    """``text`` as a message shows a name: on one line (newlines escaped), at most ``most`` characters."""
    flat = text.replace("\n", "\\n")
    return flat if len(flat) <= most else flat[:most - 1] + "…"


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for a name the filesystem cannot look up (too long: ENAMETOOLONG)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False for a name the filesystem cannot look up."""
    try:
        return path.is_dir()
    except OSError:
        return False

