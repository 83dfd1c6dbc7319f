"""Write a mobile bundle: a directory an app developer drops into a project, and the same as a ``.zip``.

The directory is built beside its target and renamed into place (readers see the old bundle or
the complete new one). The zip is reproducible: entries sorted by path, every timestamp the ZIP
epoch (1980-01-01), permissions 0644, DEFLATE level 9, all under one top-level folder; the same
files always give the same bytes.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.atomic import atomic_dir, write_with
from edgekd.export.manifest import MANIFEST, file_entries

README = "README.md"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def write_bundle(
    bundle_dir: Path,
    zip_path: Path,
    sources: dict[str, Path],
    manifest: dict[str, Any],
    readme: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Write ``sources`` (bundle path → file), ``README.md`` and ``manifest.json``, then the zip.

    ``readme`` renders the README from the manifest. The manifest gets ``files``: the sha256 and
    size of every file but itself. Returns the complete manifest.
    """
    with atomic_dir(bundle_dir) as tmp:
        tmp.chmod(0o755)  # a temporary directory is private; the bundle is not
        for name, source in sorted(sources.items()):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tmp / name)
        (tmp / README).write_text(readme(manifest), encoding="utf-8")
        manifest = {**manifest, "files": file_entries(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_zip(bundle_dir, zip_path, folder=manifest["name"])
    return manifest


def write_zip(source_dir: Path, zip_path: Path, *, folder: str) -> Path:
    """Atomically zip every file below ``source_dir`` as ``folder/<relative path>``, reproducibly."""
    files = sorted((p for p in source_dir.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(source_dir).as_posix())

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as archive:
            for path in files:
                info = zipfile.ZipInfo(f"{folder}/{path.relative_to(source_dir).as_posix()}", date_time=ZIP_EPOCH)
                info.create_system = 3  # unix, whatever this machine is, so the attributes below mean the same
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes(), compresslevel=9)

    return write_with(zip_path, write)
