"""Fingerprints of a video's inputs (its video file or frame folder, its label file or folder), so a rerun of
``aubench preprocess`` can tell what changed.

A fingerprint is ``{"stat": ..., "hash": ...}``: ``stat`` digests each file's name, size and modification time
(cheap: one ``stat`` a file) and is the quick check; ``hash`` digests the bytes (blake2b-128, names included for
folders) and confirms a change before anything is redone, since copying a dataset changes every mtime and
leaves every byte. A folder covers the files directly inside it (frame images, DISFA's per-AU label files),
hidden files left out.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return [path]


def stat_key(path: str | Path) -> str:
    """Digest of (name, size, mtime) of the file or of every file in the folder; "" when it does not exist."""
    path = Path(path)
    if not path.exists():
        return ""
    h = hashlib.blake2b(digest_size=16)
    for f in _files(path):
        st = os.stat(f)
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def content_hash(path: str | Path) -> str:
    """Digest of the bytes of the file, or of every file in the folder with its name; "" when it does not exist."""
    path = Path(path)
    if not path.exists():
        return ""
    h = hashlib.blake2b(digest_size=16)
    folder = path.is_dir()
    for f in _files(path):
        if folder:
            h.update(f"{f.name}\0{f.stat().st_size}\n".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(path: str | Path, with_hash: bool = True) -> dict:
    return {"stat": stat_key(path), "hash": content_hash(path) if with_hash else None}


def changed(old: dict | None, path: str | Path) -> tuple[bool, dict]:
    """Has the input at ``path`` changed since ``old`` was taken? Returns (changed, its fingerprint now).

    Same ``stat``: unchanged, without reading the file. Otherwise the content is hashed: same hash, unchanged
    (only the times moved; the new fingerprint is returned so it can be stored)."""
    quick = stat_key(path)
    if old and old.get("stat") == quick:
        return False, dict(old)
    now = {"stat": quick, "hash": content_hash(path)}
    return not (old and old.get("hash") and old["hash"] == now["hash"]), now
