"""Dataset layouts: which videos a folder holds, who is in them, and their per-frame AU labels.

Four layouts are read (docs/preprocessing.md and spec/data.md describe them): ``generic`` (the tool's own
``manifest.csv`` + ``labels/<video stem>.csv``), ``disfa`` (left/right camera videos, one intensity file per AU
and subject), ``bp4d`` (frame-image folders, one occurrence CSV per sequence) and ``affwild2`` (one ``AU1,AU2,...``
text file per video). ``detect_layout`` tells them apart, ``list_dataset`` lists the videos (and those skipped,
with the reason), and ``read_labels`` turns one video's label file(s) into a ``LabelTable``: labels binarised
(1 present, 0 absent, -1 unknown) and keyed by frame, with every oddity found in the file written down in
``issues``. Matching labels to decoded frames happens later, by key, never by position in the file, so that a
missing or extra row can never shift the labels of the frames after it.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aubench_cli.errors import AubenchError, UsageError, suggest

LAYOUTS = ("generic", "disfa", "bp4d", "affwild2")
VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv", ".wmv", ".mpg", ".mpeg", ".m4v", ".webm", ".flv"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")

_AU_RE = re.compile(r"^\s*(?:AU)?\s*0*(\d+)\s*$", re.IGNORECASE)
_AFFWILD2_HEADER = "AU1,AU2,AU4"  # every Aff-Wild2 AU file starts its header this way


class LabelError(AubenchError):
    """A video's labels cannot be used (missing or unreadable file); the video is skipped, the run goes on."""


@dataclass
class VideoSource:
    """One video (a file, or a folder of frame images) with where its labels are."""

    id: str  # unique in the dataset, safe as a file name
    path: Path
    subject: str
    label_path: Path  # a file, or for DISFA the subject's label folder
    split: str | None = None  # from the manifest, when it gives one


@dataclass
class DatasetListing:
    """What a dataset folder holds: its layout, the videos to process, and what was skipped and why."""

    layout: str
    root: Path
    videos: list[VideoSource]
    skipped: list[dict] = field(default_factory=list)  # {"video": ..., "reason": ...}


@dataclass
class LabelTable:
    """One video's labels: ``values[i]`` belongs to the frame whose key is ``frames[i]``.

    ``key`` says what ``frames`` holds: ``"index"`` (0-based position of the frame in the video) or ``"number"``
    (the frame number in the image's file name, BP4D). ``values`` are int8: 1 present, 0 absent, -1 unknown.
    """

    au_names: list[str]
    frames: np.ndarray  # (M,) int64, sorted, unique
    values: np.ndarray  # (M, K) int8
    key: str = "index"
    intensity: bool = False  # the file held intensities, binarised at the threshold
    issues: list[str] = field(default_factory=list)

    def reorder(self, au_names: list[str]) -> LabelTable:
        """The same labels in the dataset's AU order; an AU this file lacks is unknown (-1) on every frame."""
        out = np.full((len(self.frames), len(au_names)), -1, dtype=np.int8)
        for j, name in enumerate(au_names):
            if name in self.au_names:
                out[:, j] = self.values[:, self.au_names.index(name)]
        issues = list(self.issues)
        missing = [a for a in au_names if a not in self.au_names]
        if missing and len(self.frames):
            issues.append(f"no column for {', '.join(missing)}: unknown on every frame")
        return LabelTable(list(au_names), self.frames, out, self.key, self.intensity, issues)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows for frame keys: (values (len(keys), K) int8, found mask)."""
        keys = np.asarray(keys, dtype=np.int64)
        pos = np.searchsorted(self.frames, keys)
        pos = np.clip(pos, 0, max(len(self.frames) - 1, 0))
        found = (len(self.frames) > 0) & (self.frames[pos] == keys) if len(self.frames) else np.zeros(len(keys), bool)
        values = np.full((len(keys), len(self.au_names)), -1, dtype=np.int8)
        if len(self.frames):
            values[found] = self.values[pos[found]]
        return values, found


# -- small helpers ----------------------------------------------------------------------------------------------


def au_name(text: str) -> str | None:
    """``"AU1"``, ``"au01"``, ``"1"`` -> ``"AU01"``; None when the text names no AU."""
    m = _AU_RE.match(str(text))
    return f"AU{int(m.group(1)):02d}" if m else None


def au_sort_key(name: str) -> int:
    return int(name[2:]) if name[2:].isdigit() else 1_000


def safe_id(text: str) -> str:
    """A video id usable as a file name: path separators become ``__``, other odd characters ``_``."""
    text = text.replace("\\", "/").strip("/").replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "video"


def hidden(path: Path) -> bool:
    """Dot-names are temp or system files (an interrupted writer's ``.tmp-*``), never data."""
    return path.name.startswith(".")


def is_frame_folder(path: Path) -> bool:
    return path.is_dir() and not hidden(path) and any(
        p.suffix.lower() in IMAGE_EXTENSIONS and not hidden(p) for p in path.iterdir()
    )


def frame_number(path: Path) -> int | None:
    """The frame number in an image's file name (the last run of digits: ``F001_0123.jpg`` -> 123)."""
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


def _parse_number(text: str) -> float:
    text = text.strip()
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def binarise(values: np.ndarray, threshold: float, intensity: bool, unknown: Iterable[float] = ()) -> np.ndarray:
    """Float labels -> int8 1/0/-1. Intensities count as present at ``>= threshold``; binary labels are 1 or 0.
    NaN (empty cell), negative values and the layout's ``unknown`` codes are -1."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, -1, dtype=np.int8)
    known = np.isfinite(values) & (values >= 0)
    for code in unknown:
        known &= values != code
    if intensity:
        out[known] = (values[known] >= threshold).astype(np.int8)
    else:
        out[known & (values == 1)] = 1
        out[known & (values == 0)] = 0
    return out


def _table(
    frames: list[int], rows: list[list[float]], au_names: list[str], threshold: float, intensity: bool,
    key: str, unknown: Iterable[float], issues: list[str], base: int = 0,
) -> LabelTable:
    """Build a LabelTable from parsed rows: drop bad and duplicate frame keys (reporting them), binarise."""
    frames_arr = np.asarray(frames, dtype=np.float64) - base
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(au_names))
    bad = ~np.isfinite(frames_arr) | (frames_arr < 0) | (frames_arr != np.round(frames_arr))
    if bad.any():
        issues.append(f"{int(bad.sum())} rows with an invalid frame number dropped")
    frames_arr, values = frames_arr[~bad].astype(np.int64), values[~bad]
    order = np.argsort(frames_arr, kind="stable")
    frames_arr, values = frames_arr[order], values[order]
    keep = np.ones(len(frames_arr), bool)
    keep[1:] = frames_arr[1:] != frames_arr[:-1]
    if not keep.all():
        dups = np.unique(frames_arr[~keep])
        issues.append(f"{int((~keep).sum())} duplicate rows for frames {_ranges(dups + base)}: first row kept")
    frames_arr, values = frames_arr[keep], values[keep]
    if not intensity:
        allowed = ~np.isfinite(values) | np.isin(values, [0, 1, -1, *unknown])
        if not allowed.all():
            odd = np.unique(values[~allowed])
            issues.append(f"{int((~allowed).sum())} values not 0/1 ({_short(odd)}): read as unknown")
    binary = binarise(values, threshold, intensity, unknown)
    return LabelTable(au_names, frames_arr, binary, key, intensity, issues)


def _short(values: np.ndarray, n: int = 5) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:n])
    return shown + (", ..." if len(values) > n else "")


def _ranges(frames: np.ndarray, n: int = 4) -> str:
    """``[3,4,5,9]`` -> ``"3-5, 9"`` (the first few runs), for mismatch reports."""
    frames = np.asarray(frames, dtype=np.int64)
    if len(frames) == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts = np.r_[frames[0], frames[breaks + 1]]
    ends = np.r_[frames[breaks], frames[-1]]
    parts = [f"{s}" if s == e else f"{s}-{e}" for s, e in zip(starts[:n], ends[:n])]
    return ", ".join(parts) + (f", ... ({len(starts)} runs)" if len(starts) > n else "")


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise LabelError(f"label file {path} not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"label file {path} cannot be read: {exc}") from None


# -- the four layouts: readers ---------------------------------------------------------------------------------


def read_generic_labels(path: Path, threshold: float, intensity: bool | None = None) -> LabelTable:
    """``labels/<stem>.csv``: a ``frame`` column (0-based) and one column per AU; 1/0, empty or -1 unknown.
    Intensities are binarised at ``threshold``; ``intensity=None`` decides from the file (any value above 1)."""
    rows = _read_rows(path)
    if not rows:
        raise LabelError(f"label file {path} is empty")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "frame" not in lower:
        raise LabelError(f"label file {path} has no 'frame' column (header: {', '.join(header)})")
    frame_col = lower.index("frame")
    au_cols = [(i, au_name(h)) for i, h in enumerate(header) if i != frame_col and au_name(h) and h.upper().startswith("AU")]
    issues = []
    ignored = [h for i, h in enumerate(header) if i != frame_col and i not in dict(au_cols)]
    if ignored:
        issues.append(f"columns ignored (not AUs): {', '.join(ignored)}")
    if not au_cols:
        raise LabelError(f"label file {path} has no AU columns (expected names like AU01)")
    frames, values = [], []
    for row in rows[1:]:
        row = row + [""] * (len(header) - len(row))
        frames.append(_parse_number(row[frame_col]))
        values.append([_parse_number(row[i]) for i, _ in au_cols])
    arr = np.asarray(values, dtype=np.float64).reshape(len(values), len(au_cols))
    if intensity is None:
        intensity = bool(np.nanmax(arr, initial=0) > 1)
    return _table(frames, values, [n for _, n in au_cols], threshold, intensity, "index", (), issues)


def read_disfa_labels(folder: Path, threshold: float) -> LabelTable:
    """``ActionUnit_Labels/SN001/SN001_au<N>.txt``: ``frame,intensity`` lines, frames 1-based, intensity 0-5.
    A frame missing from one AU's file is unknown for that AU only."""
    if not folder.is_dir():
        raise LabelError(f"label folder {folder} not found")
    files = {}
    for p in sorted(folder.iterdir()):
        m = re.search(r"_au(\d+)$", p.stem, re.IGNORECASE)
        if m and p.is_file():
            files[f"AU{int(m.group(1)):02d}"] = p
    if not files:
        raise LabelError(f"label folder {folder} holds no <subject>_au<N>.txt files")
    au_names = sorted(files, key=au_sort_key)
    per_au: dict[str, dict[int, float]] = {}
    issues: list[str] = []
    for name in au_names:
        entries: dict[int, float] = {}
        bad = 0
        for row in _read_rows(files[name]):
            if len(row) < 2:
                bad += 1
                continue
            frame, value = _parse_number(row[0]), _parse_number(row[1])
            if not math.isfinite(frame) or frame < 1 or frame != int(frame):
                bad += 1
                continue
            if int(frame) in entries:
                issues.append(f"{files[name].name}: duplicate row for frame {int(frame)}, first kept")
                continue
            entries[int(frame)] = value
        if bad:
            issues.append(f"{files[name].name}: {bad} unreadable lines skipped")
        per_au[name] = entries
    all_frames = sorted(set().union(*[set(e) for e in per_au.values()]))
    for name in au_names:
        missing = len(all_frames) - len(per_au[name])
        if missing:
            issues.append(f"{files[name].name}: no line for {missing} frames other AU files have: unknown there")
    values = [[per_au[name].get(f, math.nan) for name in au_names] for f in all_frames]
    # DISFA files number frames from 1; the key is the 0-based frame index in the video
    return _table(all_frames, values, au_names, threshold, True, "index", (), issues, base=1)


def read_bp4d_labels(path: Path, threshold: float) -> LabelTable:
    """``AUCoding/AU_OCC/F001_T1.csv``: header (frame column, then AU numbers), one row per frame, 1/0, 9 unknown.
    Keyed by frame number, matched to the number in each image's file name."""
    rows = _read_rows(path)
    if not rows:
        raise LabelError(f"label file {path} is empty")
    header = [h.strip() for h in rows[0]]
    au_cols = [(i, au_name(h)) for i, h in enumerate(header) if i > 0 and au_name(h)]
    if not au_cols:
        raise LabelError(f"label file {path} has no AU columns in its header (expected AU numbers: 1,2,4,...)")
    frames, values = [], []
    for row in rows[1:]:
        row = row + [""] * (len(header) - len(row))
        frames.append(_parse_number(row[0]))
        values.append([_parse_number(row[i]) for i, _ in au_cols])
    return _table(frames, values, [n for _, n in au_cols], threshold, False, "number", (9,), [])


def read_affwild2_labels(path: Path, threshold: float) -> LabelTable:
    """Aff-Wild2 / ABAW: header ``AU1,AU2,...``, then row i holds frame i (0-based), 1/0, -1 invalid."""
    rows = _read_rows(path)
    if not rows:
        raise LabelError(f"label file {path} is empty")
    names = [au_name(h) for h in rows[0]]
    if not all(names):
        raise LabelError(f"label file {path} has a header that is not all AUs: {','.join(rows[0])}")
    issues = []
    values = []
    short = 0
    for row in rows[1:]:
        if len(row) != len(names):
            short += 1
        row = row + [""] * (len(names) - len(row))
        values.append([_parse_number(c) for c in row[: len(names)]])
    if short:
        issues.append(f"{short} rows whose cell count differs from the header's: missing cells read as unknown")
    return _table(list(range(len(values))), values, names, threshold, False, "index", (), issues)


def read_labels(layout: str, video: VideoSource, threshold: float) -> LabelTable:
    """One video's labels, in its layout. Raises ``LabelError`` when they cannot be used."""
    reader: Any = {
        "generic": read_generic_labels,
        "disfa": read_disfa_labels,
        "bp4d": read_bp4d_labels,
        "affwild2": read_affwild2_labels,
    }[layout]
    return reader(video.label_path, threshold)


# -- the four layouts: listing ---------------------------------------------------------------------------------


def _in_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _is_affwild2_label(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.readline().replace(" ", "").upper().startswith(_AFFWILD2_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def detect_layout(root: Path) -> str:
    """Which of the four layouts ``root`` is in. Raises UsageError for a missing, empty or unknown folder."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"input {root} does not exist", "give the dataset folder")
    if not root.is_dir():
        raise UsageError(f"input {root} is not a folder", "give the dataset folder (e.g. one made by 'aubench synth')")
    if not any(root.iterdir()):
        raise UsageError(f"input folder {root} is empty", "point at a dataset folder (or make one with 'aubench synth')")
    if (root / "manifest.csv").is_file():
        return "generic"
    if (root / "ActionUnit_Labels").is_dir():
        return "disfa"
    if (root / "AUCoding" / "AU_OCC").is_dir() or (root / "AU_OCC").is_dir():
        return "bp4d"
    for p in root.rglob("*.txt"):
        if not _in_hidden(p, root) and _is_affwild2_label(p):
            return "affwild2"
    raise UsageError(
        f"input folder {root} is in no layout aubench reads",
        "expected manifest.csv (generic), ActionUnit_Labels/ (DISFA), AUCoding/AU_OCC/ (BP4D) or AU1,AU2,... "
        ".txt label files (Aff-Wild2); see docs/preprocessing.md",
    )


def _check_layout(root: Path, layout: str) -> None:
    needs = {
        "generic": (root / "manifest.csv").is_file(),
        "disfa": (root / "ActionUnit_Labels").is_dir(),
        "bp4d": (root / "AUCoding" / "AU_OCC").is_dir() or (root / "AU_OCC").is_dir(),
        "affwild2": True,
    }
    what = {
        "generic": "manifest.csv",
        "disfa": "ActionUnit_Labels/",
        "bp4d": "AUCoding/AU_OCC/",
        "affwild2": "",
    }
    if not needs[layout]:
        raise UsageError(
            f"input folder {root} is not in the {layout} layout (no {what[layout]})",
            "use --format auto to detect the layout, or see docs/preprocessing.md",
        )


def list_dataset(root: Path, layout: str = "auto") -> DatasetListing:
    """List a dataset folder's videos in ``layout`` (``auto``: detect it)."""
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise UsageError(f"unknown format {layout!r}", suggest(layout, ("auto", *LAYOUTS)))
    else:
        detect_layout(root)  # for its missing / empty folder errors
        _check_layout(root, layout)
    lister = {"generic": _list_generic, "disfa": _list_disfa, "bp4d": _list_bp4d, "affwild2": _list_affwild2}
    listing = lister[layout](root)
    seen: dict[str, VideoSource] = {}
    for v in listing.videos:
        if v.id in seen:
            raise UsageError(f"two videos map to the same id {v.id!r}: {seen[v.id].path} and {v.path}", "rename one")
        seen[v.id] = v
    if not listing.videos:
        reasons = "; ".join(f"{s['video']}: {s['reason']}" for s in listing.skipped[:3])
        raise UsageError(
            f"no usable video in {root} ({layout} layout)" + (f": {reasons}" if reasons else ""),
            "check the folder against docs/preprocessing.md",
        )
    listing.videos.sort(key=lambda v: v.id)
    return listing


def _list_generic(root: Path) -> DatasetListing:
    manifest = root / "manifest.csv"
    rows = _read_rows_usage(manifest)
    if not rows:
        raise UsageError(f"{manifest} is empty", "it needs a header 'video,subject[,split]' and one row per video")
    header = [h.strip().lower() for h in rows[0]]
    for col in ("video", "subject"):
        if col not in header:
            raise UsageError(
                f"{manifest} has no {col!r} column (header: {', '.join(header)})", "columns: video,subject[,split]"
            )
    iv, isub = header.index("video"), header.index("subject")
    isplit = header.index("split") if "split" in header else None
    videos, skipped = [], []
    stems: dict[str, str] = {}
    for n, row in enumerate(rows[1:], start=2):
        row = [c.strip() for c in row] + [""] * (len(header) - len(row))
        rel, subject = row[iv], row[isub]
        split = (row[isplit].lower() or None) if isplit is not None else None
        if not rel or not subject:
            raise UsageError(f"{manifest} line {n}: empty video or subject", "every row needs both")
        if split is not None and split not in SPLITS:
            raise UsageError(f"{manifest} line {n}: split {row[isplit]!r} is not one of train/val/test", suggest(split, SPLITS))
        path = root / rel
        stem = Path(rel).stem if path.suffix.lower() in VIDEO_EXTENSIONS else Path(rel).name
        if stem in stems:
            raise UsageError(
                f"{manifest}: videos {stems[stem]} and {rel} share the name {stem!r}, so labels/{stem}.csv is ambiguous",
                "rename one of them",
            )
        stems[stem] = rel
        vid = safe_id(str(Path(rel).with_suffix("")) if path.suffix.lower() in VIDEO_EXTENSIONS else rel)
        label = root / "labels" / f"{stem}.csv"
        if not path.exists():
            skipped.append({"video": vid, "reason": f"video {rel} not found"})
        elif not label.is_file():
            skipped.append({"video": vid, "reason": f"no label file labels/{stem}.csv"})
        else:
            videos.append(VideoSource(vid, path, subject, label, split))
    given = [v.split is not None for v in videos]
    if any(given) and not all(given):
        missing = [v.id for v in videos if v.split is None][:3]
        raise UsageError(f"{manifest} gives a split for some videos but not for {', '.join(missing)}", "give all or none")
    return DatasetListing("generic", root, videos, skipped)


def _read_rows_usage(path: Path) -> list[list[str]]:
    try:
        return _read_rows(path)
    except LabelError as exc:
        raise UsageError(exc.message, "check the file") from None


def _list_disfa(root: Path) -> DatasetListing:
    labels_root = root / "ActionUnit_Labels"
    videos, skipped = [], []
    found_subjects = set()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().startswith("videos")):
        for path in sorted(folder.iterdir()):
            if hidden(path):
                continue
            m = re.search(r"(left|right)?video(SN\d+)", path.name, re.IGNORECASE)
            if not m or not (path.suffix.lower() in VIDEO_EXTENSIONS or is_frame_folder(path)):
                continue
            subject = m.group(2).upper()
            side = (m.group(1) or ("left" if "left" in folder.name.lower() else "right")).lower()
            vid = f"{subject}_{side}"
            label = labels_root / subject
            if label.is_dir():
                found_subjects.add(subject)
                videos.append(VideoSource(vid, path, subject, label))
            else:
                skipped.append({"video": vid, "reason": f"no label folder ActionUnit_Labels/{subject}"})
    for folder in sorted(p for p in labels_root.iterdir() if p.is_dir()):
        if folder.name.upper() not in found_subjects:
            skipped.append({"video": folder.name, "reason": "labels without a video"})
    return DatasetListing("disfa", root, videos, skipped)


def _list_bp4d(root: Path) -> DatasetListing:
    occ = root / "AUCoding" / "AU_OCC"
    if not occ.is_dir():
        occ = root / "AU_OCC"
    faces = root / "2DFaces"
    if not faces.is_dir():
        faces = root
    videos, skipped, used = [], [], set()
    for subject_dir in sorted(p for p in faces.iterdir() if p.is_dir() and re.match(r"^[FM]\d+", p.name)):
        for task_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir() and not hidden(p)):
            vid = safe_id(f"{subject_dir.name}_{task_dir.name}")
            label = occ / f"{subject_dir.name}_{task_dir.name}.csv"
            if not is_frame_folder(task_dir):
                skipped.append({"video": vid, "reason": f"{task_dir} holds no frame images"})
            elif not label.is_file():
                skipped.append({"video": vid, "reason": f"no label file {label.name}"})
            else:
                used.add(label.name)
                videos.append(VideoSource(vid, task_dir, subject_dir.name, label))
    for label in sorted(occ.glob("*.csv")):
        if label.name not in used:
            skipped.append({"video": label.stem, "reason": "labels without a frame folder"})
    return DatasetListing("bp4d", root, videos, skipped)


def _list_affwild2(root: Path) -> DatasetListing:
    labels = {}
    for p in sorted(root.rglob("*.txt")):
        if not _in_hidden(p, root) and _is_affwild2_label(p):
            labels.setdefault(p.stem, p)
    media: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if _in_hidden(p, root):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            media.setdefault(p.stem, p)
        elif p.is_dir() and p.name not in media and is_frame_folder(p):
            media.setdefault(p.name, p)
    videos, skipped, used = [], [], set()
    for stem, label in labels.items():
        # two-person videos have labels video10_left.txt / video10_right.txt for one video10.mp4
        base = re.sub(r"_(left|right)$", "", stem)
        path = media.get(stem) or media.get(base)
        if path is None:
            skipped.append({"video": stem, "reason": "labels without a video"})
            continue
        used.add(path)
        videos.append(VideoSource(safe_id(stem), path, stem, label))
    for stem, path in media.items():
        if path not in used and path.suffix.lower() in VIDEO_EXTENSIONS:
            skipped.append({"video": stem, "reason": "no label file (expected a .txt with the same name)"})
    return DatasetListing("affwild2", root, videos, skipped)


def read_all_labels(layout: str, videos: list[VideoSource], threshold: float
                    ) -> tuple[dict[str, LabelTable], list[dict]]:
    """Every video's labels: (tables by video id, skipped videos with the reason).

    Generic label files may hold binary labels or intensities, and a value of 1 means "present" in the first but
    "below threshold" in the second, so the reading must be the same for the whole dataset: when any file holds
    a value above 1, every file is read as intensities (a file whose own values never exceed 1 says so in its
    issues)."""
    tables: dict[str, LabelTable] = {}
    skipped: list[dict] = []
    for v in videos:
        try:
            tables[v.id] = read_labels(layout, v, threshold)
        except LabelError as exc:
            skipped.append({"video": v.id, "reason": exc.message})
    if layout == "generic" and any(t.intensity for t in tables.values()):
        by_id = {v.id: v for v in videos}
        for vid, table in tables.items():
            if not table.intensity:
                again = read_generic_labels(by_id[vid].label_path, threshold, intensity=True)
                again.issues.append(
                    f"values 0/1 only, read as intensities (present at >= {threshold:g}) like the rest of the dataset"
                )
                tables[vid] = again
    return tables, skipped


def dataset_au_names(tables: Iterable[LabelTable]) -> list[str]:
    """The dataset's AUs: every AU that some file labels (known on at least one frame), in AU-number order."""
    names: set[str] = set()
    for t in tables:
        known = (t.values >= 0).any(axis=0) if len(t.frames) else np.zeros(len(t.au_names), bool)
        names.update(n for n, k in zip(t.au_names, known) if k)
    return sorted(names, key=au_sort_key)
