"""A bundle's manifest (``manifest.json``): its format, format version and the sha256 of every
other file. Written last, once every file is in place; checked first when a bundle is opened,
so that a partial bundle (a file missing), a tampered one (a file changed, added or removed)
or one of another format version is refused with one line naming the file."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from retrieval.io import InputError

FORMAT = "retrieval-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_files(folder: Path) -> list[str]:
    """Every file under ``folder`` but the manifest, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST)


def write_manifest(folder: str | os.PathLike) -> dict:
    """Write ``folder/manifest.json`` listing the sha256 of every other file; returns it."""
    folder = Path(folder)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "files": {rel: sha256_file(folder / rel) for rel in bundle_files(folder)}}
    with open(folder / MANIFEST, "w") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return manifest


def read_manifest(folder: Path) -> dict:
    """The parsed manifest of ``folder``, its format and version checked (not yet the files)."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no bundle folder there (build one with dvc repro bundle)")
    path = folder / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: missing: a partial bundle or not a bundle; rebuild it (dvc repro bundle)")
    try:
        manifest = json.loads(path.read_text())
        fmt, version, files = manifest["format"], manifest["format_version"], manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a bundle manifest ({type(err).__name__}: {err})") from None
    if fmt != FORMAT:
        raise InputError(f"{path}: format {fmt!r}, not a {FORMAT}")
    if version != FORMAT_VERSION:
        raise InputError(f"{path}: format version {version}, this code reads version {FORMAT_VERSION}; "
                         "rebuild the bundle with this code (dvc repro bundle)")
    if not isinstance(files, dict) or any(not isinstance(v, str) for v in files.values()):
        raise InputError(f"{path}: its files entry is not a map of names to sha256 digests")
    return manifest


def check_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of ``folder`` once every file it lists is there with its sha256 and no other
    file is; anything else is an :class:`InputError` naming the first file at fault."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for rel, digest in sorted(manifest["files"].items()):
        path = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise InputError(f"{folder / MANIFEST}: names a file outside the bundle: {rel}")
        if not path.is_file():
            raise InputError(f"{path}: listed in the manifest but missing: a partial bundle")
        if sha256_file(path) != digest:
            raise InputError(f"{path}: its sha256 differs from the manifest's: changed after the bundle was written")
    extra = sorted(set(bundle_files(folder)) - set(manifest["files"]))
    if extra:
        raise InputError(f"{folder / extra[0]}: not in the manifest: added after the bundle was written")
    return manifest
