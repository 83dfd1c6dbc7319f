"""Which data a recipe needs, whether it is here, and where to get it.

A recipe's data is either bundled (scikit-learn's digits), local files or a directory (paths relative to the
recipe), or a hub download. Where to get local data is said by the recipe itself, in a comment paragraph
that starts with ``# Data:`` (every built-in SST-2 recipe has one); ``edgekd pipelines list`` and
``edgekd validate`` quote it instead of a bare "file not found".
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path

from edgekd.config.recipe import Recipe
from edgekd.data.config import CorpusData, HFDiskData, HubData, MemoryData, NpzData, SklearnData, TextFileData
from edgekd.data.image_config import ImageCsvData, ImageFolderData
from edgekd.errors import ConfigError, DataError

_HEADING = re.compile(r"^#\s*[A-Z][\w -]*:")


@dataclass(frozen=True)
class DataNeed:
    """What one recipe reads: ``kind`` (bundled, files, directory, download, memory) and the local paths, by key."""

    recipe: str
    kind: str
    summary: str
    paths: dict[str, Path]
    where: str

    @property
    def missing(self) -> dict[str, Path]:
        """The local paths (by recipe key) that do not exist (a broken or looping link included)."""
        return {key: path for key, path in self.paths.items() if not path.exists()}

    def problems(self) -> dict[str, str]:
        """Why each missing path is missing, by recipe key: not found, a link to nothing, or a link loop."""
        what = "directory" if self.kind == "directory" else "file"
        return {key: _why_missing(path, what) for key, path in self.missing.items()}

    @property
    def ready(self) -> bool:
        """True when every local path exists (downloads are not checked)."""
        return not self.missing

    def to_json(self) -> dict[str, object]:
        """A JSON-ready mapping, with the missing keys."""
        return {"recipe": self.recipe, "kind": self.kind, "summary": self.summary, "ready": self.ready,
                "paths": {k: str(p) for k, p in self.paths.items()}, "missing": sorted(self.missing),
                "where": self.where}


def data_need(recipe: Recipe, source: Path | None = None) -> DataNeed:
    """What ``recipe`` (loaded from the YAML file ``source``, whose ``# Data:`` comment says where to get it) reads."""
    data, where = recipe.data, where_to_get(source) if source is not None else ""
    if isinstance(data, SklearnData):
        return DataNeed(recipe.name, "bundled", f"scikit-learn's bundled '{data.name}' (no download)", {}, "")
    if isinstance(data, TextFileData):
        paths = {"data.train": data.train, "data.test": data.test}
        return DataNeed(recipe.name, "files", f"{data.file_kind} files {data.train.name}, {data.test.name}",
                        paths, where)
    if isinstance(data, NpzData):
        return DataNeed(recipe.name, "files", f"an .npz image set {data.path.name}", {"data.path": data.path}, where)
    if isinstance(data, HFDiskData):
        return DataNeed(recipe.name, "directory", f"a datasets directory {data.path.name}", {"data.path": data.path},
                        where)
    if isinstance(data, CorpusData):
        kind = "directory" if data.path.is_dir() else "files"
        return DataNeed(recipe.name, kind, f"a text corpus {data.path.name}", {"data.path": data.path}, where)
    if isinstance(data, ImageFolderData | ImageCsvData):
        given = {f"data.{key}": getattr(data, key) for key in ("train", "val", "test") if getattr(data, key)}
        what = "image folders" if isinstance(data, ImageFolderData) else "CSV files of image paths"
        return DataNeed(recipe.name, "directory" if isinstance(data, ImageFolderData) else "files",
                        f"{what} {', '.join(path.name for path in given.values())}", given, where)
    if isinstance(data, MemoryData):
        return DataNeed(recipe.name, "memory", f"{data.kind} sets given in Python ({data.digest[:19]}…)", {}, where)
    assert isinstance(data, HubData)
    return DataNeed(recipe.name, "download", f"hub dataset '{data.id}' (downloaded: needs network)", {}, where)


def where_to_get(source: Path) -> str:
    """The recipe file's ``# Data:`` comment paragraph as one line, or "" when it has none."""
    try:
        lines = Path(source).read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    paragraph: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not paragraph:
            if stripped.startswith("#") and stripped.lstrip("# ").startswith("Data:"):
                paragraph.append(stripped.lstrip("# "))
            continue
        if not stripped.startswith("#") or stripped == "#" or _HEADING.match(stripped):
            break
        paragraph.append(stripped.lstrip("# "))
    return " ".join(paragraph)


def check_data_present(need: DataNeed, source: Path) -> None:
    """Raise a one-line :class:`DataError` naming the missing data and where to get it."""
    problems = need.problems()
    if not problems:
        return
    listed = ", ".join(f"{problem} ({key})" for key, problem in problems.items())
    where = need.where or "The recipe does not say where to get it (add a '# Data:' comment to it)."
    elsewhere = " ".join(f"--set {key}=PATH" for key in problems)
    raise DataError(f"{source}: recipe '{need.recipe}' needs data that is not here ({listed}). {where} Data you "
                    f"have elsewhere: {elsewhere}")


def check_run_dir_outside_data(recipe: Recipe, run_dir: Path) -> None:
    """Refuse a run directory at or below one of the recipe's data directories (a ConfigError naming both).

    An image folder's run directory would be read back as a class folder of the data, and a run's files
    would change the data's content digest (so every later run would train again); refused before anything
    is written.
    """
    out = Path(run_dir).resolve()
    for key, path in data_need(recipe).paths.items():
        folder = path.resolve()
        if folder.is_dir() and (out == folder or folder in out.parents):
            raise ConfigError(f"--out {run_dir}: inside the data directory {path} ({key}); the run's files would "
                              "be read as data; choose a run directory outside it")


def _why_missing(path: Path, what: str) -> str:
    """``<what> not found: path``, or ``symbolic link loop: path``.

    Recipe paths arrive resolved, so a chain of links to nothing already names its missing end; only
    a loop keeps the link's own name.
    """
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.11-3.12 raise RuntimeError for a loop, later versions OSError(ELOOP)
            return f"symbolic link loop: {path}"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"symbolic link loop: {path}"
    return f"{what} not found: {path}"
