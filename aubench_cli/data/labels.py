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
    intensity: bool = False  # read on the intensity scale, binarised at the threshold
    issues: list[str] = field(default_factory=list)
    base: int = 0  # the frame number written in the file is key + base (DISFA numbers from 1)
    source: str = ""  # the label file's name, for reports
    strays: list[dict] = field(default_factory=list)  # the first values outside the scale: file, line, column, value
    stray_count: int = 0  # how many there were in all (each read as unknown)
    positional: bool = False  # row i of the file is frame i (Aff-Wild2): reports speak of rows

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
        return LabelTable(list(au_names), self.frames, out, self.key, self.intensity, issues, self.base, self.source,
                          self.strays, self.stray_count, self.positional)

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


def _cell(text: str) -> tuple[float, bool]:
    """One label cell: (value, holds text). Empty is (NaN, False), unknown; a word, or "nan" / "inf", is
    (NaN, True): a value outside every scale, reported."""
    text = text.strip()
    if text == "":
        return math.nan, False
    try:
        value = float(text)
    except ValueError:
        return math.nan, True
    return (value, False) if math.isfinite(value) else (math.nan, True)


# -- label scales ------------------------------------------------------------------------------------------------

SCALES = ("binary", "intensity")
INTENSITY_MAX = 5.0  # FACS intensities A-E are coded 1-5, 0 absent (DISFA's 0-5)
# A generic dataset is read as intensities only when at least this share of its known cells holds a value above 1
# (one stray cell, or a handful, must not flip a whole dataset; real intensity codings hold several percent).
INTENSITY_EVIDENCE = 0.01
# Codes that mean "unknown" besides an empty cell: -1 everywhere, 9 in BP4D (its own code).
UNKNOWN_CODES = {"generic": (-1.0,), "disfa": (-1.0,), "bp4d": (-1.0, 9.0), "affwild2": (-1.0,)}
LAYOUT_SCALE = {
    "disfa": "the DISFA layout codes intensities 0-5",
    "bp4d": "BP4D occurrence files code 1 / 0 (9 unknown)",
    "affwild2": "Aff-Wild2 files code 1 / 0 (-1 invalid)",
}
MAX_LISTED = 20  # values outside the scale kept with their place, per file; the rest only counted


def outside_scale(values: np.ndarray, intensity: bool, unknown: Iterable[float] = (-1.0,)) -> np.ndarray:
    """Cells whose number is neither an unknown code nor on the scale (0/1, or 0-5 intensities)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    coded = np.isin(values, list(unknown)) if unknown else np.zeros(values.shape, bool)
    ok = (values >= 0) & (values <= INTENSITY_MAX) if intensity else np.isin(values, [0.0, 1.0])
    return finite & ~coded & ~ok


def binarise(values: np.ndarray, threshold: float, intensity: bool, unknown: Iterable[float] = (-1.0,)) -> np.ndarray:
    """Float labels -> int8 1/0/-1. Intensities (0-5) count as present at ``>= threshold``; binary labels are 1 or
    0. NaN (empty cell), the layout's ``unknown`` codes and any value outside the scale are -1 (unknown)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, -1, dtype=np.int8)
    known = np.isfinite(values) & ~outside_scale(values, intensity, unknown)
    if unknown:
        known &= ~np.isin(values, list(unknown))
    if intensity:
        out[known] = (values[known] >= threshold).astype(np.int8)
    else:
        out[known] = values[known].astype(np.int8)
    return out


@dataclass
class RawLabels:
    """One video's label cells as written, before a scale is applied: what the dataset-wide scale decision looks
    at, and what lets a value outside the scale be reported by file, line and column."""

    au_names: list[str]
    frames: np.ndarray  # (M,) int64 frame keys, sorted, unique
    values: np.ndarray  # (M, K) float64; NaN for an empty cell or text
    text: np.ndarray  # (M, K) bool: the cell holds text, not a number
    lines: np.ndarray  # (M, K) int64: line of the cell in its file (1-based)
    files: list[str]  # (K,) the file each column comes from
    columns: list[str]  # (K,) the column's header text
    key: str
    unknown: tuple[float, ...]
    issues: list[str]
    duplicates: list[dict]  # header columns naming an AU another column already names
    base: int = 0  # the number written in the file is key + base (DISFA numbers frames from 1)
    source: str = ""  # the label file (DISFA: the subject's AU files), for reports
    words: dict = field(default_factory=dict)  # (row, column) -> the text of a text cell
    positional: bool = False  # row i is frame i (Aff-Wild2)


def _raw(
    frames: list[float], lines: list[int], cells: list[list[str]], au_names: list[str], files: list[str],
    columns: list[str], key: str, unknown: tuple[float, ...], issues: list[str], duplicates: list[dict],
    base: int = 0, source: str = "", cell_lines: list[list[int]] | None = None,
) -> RawLabels:
    """Parse cells, drop rows with a bad frame number and later duplicates of a frame (both reported, with lines),
    sort by frame key."""
    k = len(au_names)
    frames_arr = np.asarray(frames, dtype=np.float64) - base
    bad = ~np.isfinite(frames_arr) | (frames_arr < 0) | (frames_arr != np.round(frames_arr))
    if bad.any():
        bad_lines = [lines[i] for i in np.flatnonzero(bad)]
        issues.append(f"{int(bad.sum())} rows with an invalid frame number dropped (lines {_ranges(np.asarray(bad_lines))})")
    keep_idx = np.flatnonzero(~bad)
    keys = frames_arr[keep_idx].astype(np.int64)
    order = keep_idx[np.argsort(keys, kind="stable")]
    keys = np.sort(keys, kind="stable")
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    if not first.all():
        dup_lines = np.asarray([lines[i] for i in order[~first]])
        issues.append(
            f"{int((~first).sum())} duplicate rows for frames {_ranges(np.unique(keys[~first]) + base)} "
            f"(lines {_ranges(np.sort(dup_lines))}): the first row of each frame kept"
        )
    order, keys = order[first], keys[first]
    values = np.full((len(order), k), np.nan)
    text = np.zeros((len(order), k), bool)
    line_arr = np.zeros((len(order), k), np.int64)
    words: dict = {}
    for r, i in enumerate(order):
        row = cells[i]
        for c in range(k):
            value, is_text = _cell(row[c])
            values[r, c] = value
            if is_text:
                text[r, c] = True
                words[(r, c)] = row[c].strip()
            line_arr[r, c] = cell_lines[i][c] if cell_lines is not None else lines[i]
    return RawLabels(au_names, keys, values, text, line_arr, files, columns, key, unknown, issues, duplicates,
                     base, source, words)


def apply_scale(raw: RawLabels, scale: str, threshold: float) -> LabelTable:
    """The binarised LabelTable of ``raw`` read on ``scale``; every cell outside it becomes unknown (-1) and is
    listed (file, line, column, value: the first ``MAX_LISTED``) and counted."""
    if scale not in SCALES:
        raise ValueError(f"unknown label scale {scale!r}")
    intensity = scale == "intensity"
    outside = raw.text | outside_scale(raw.values, intensity, raw.unknown)
    values = binarise(raw.values, threshold, intensity, raw.unknown)
    issues = list(raw.issues)
    strays = []
    count = int(outside.sum())
    if count:
        for r, c in np.argwhere(outside)[:MAX_LISTED]:
            shown = raw.words.get((int(r), int(c)), f"{raw.values[r, c]:g}")
            strays.append({"file": raw.files[c], "line": int(raw.lines[r, c]), "column": raw.columns[c],
                           "value": shown})
        odd = sorted({s["value"] for s in strays})
        where = "; ".join(f"{Path(s['file']).name} line {s['line']} column {s['column']}" for s in strays[:3])
        issues.append(
            f"{count} values outside the {scale} scale ({', '.join(odd[:5])}{', ...' if len(odd) > 5 else ''}) "
            f"read as unknown: {where}{', ...' if count > 3 else ''}"
        )
    return LabelTable(raw.au_names, raw.frames, values, raw.key, intensity, issues, raw.base, raw.source,
                      strays, count, raw.positional)


def scale_evidence(layout: str, raws: Iterable[RawLabels], requested: str = "auto") -> dict:
    """The dataset's label scale and why: ``--label-scale`` when given, else the layout's own coding (DISFA
    intensities, BP4D and Aff-Wild2 occurrence), else (generic) the data: intensities when at least
    ``INTENSITY_EVIDENCE`` of the known cells hold a value above 1 and at most 5, binary otherwise."""
    if requested not in ("auto", *SCALES):
        raise UsageError(f"unknown --label-scale {requested!r}", suggest(requested, ("auto", *SCALES)))
    if requested != "auto":
        return {"scale": requested, "decided_by": "option", "evidence": f"set with --label-scale {requested}"}
    if layout in LAYOUT_SCALE:
        return {"scale": "intensity" if layout == "disfa" else "binary", "decided_by": "layout",
                "evidence": LAYOUT_SCALE[layout]}
    known = middle = ones = 0
    for raw in raws:
        v = raw.values
        k = np.isfinite(v) & ~np.isin(v, list(raw.unknown))
        known += int(k.sum())
        middle += int((k & (v > 1) & (v <= INTENSITY_MAX)).sum())
        ones += int((k & np.isin(v, [0.0, 1.0])).sum())
    share = middle / known if known else 0.0
    pct = f"{100 * share:.2g} %"
    if middle and share >= INTENSITY_EVIDENCE:
        return {"scale": "intensity", "decided_by": "data", "known_cells": known, "cells_above_1": middle,
                "evidence": f"{middle} of {known} known cells ({pct}) hold values above 1 and at most 5"}
    if middle:
        evidence = (f"only {middle} of {known} known cells ({pct}) hold values above 1 and at most 5, under the "
                    f"{100 * INTENSITY_EVIDENCE:g} % that intensities need: those cells are outside the scale")
    else:
        evidence = f"{ones} of {known} known cells hold 0 or 1; none holds a value above 1 and at most 5"
    if known - ones - middle:
        evidence += f"; {known - ones - middle} other values are outside both scales"
    return {"scale": "binary", "decided_by": "data", "known_cells": known, "cells_above_1": middle,
            "evidence": evidence}


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


def describe_keys(table: LabelTable, keys: np.ndarray, name_file: bool = True) -> str:
    """Frame keys as the label file writes them, naming the file: ``frames 8-10 of s1.csv``, ``frames 9-11
    (1-based) of SN001_au*.txt``, ``rows 3 (lines 5) of vid.txt``, ``frame numbers 4 of F001_T1.csv``."""
    keys = np.sort(np.asarray(keys, dtype=np.int64))
    of = f" of {table.source}" if table.source and name_file else ""
    if table.key == "number":
        return f"frame numbers {_ranges(keys)}{of}"
    if table.positional:
        return f"rows {_ranges(keys)} (lines {_ranges(keys + 2)}){of}"
    if table.base:
        return f"frames {_ranges(keys + table.base)} ({table.base}-based, as in the files){of}"
    return f"frames {_ranges(keys)}{of}"


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Every row of a CSV file with its line number (1-based), blank rows included."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            return [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise LabelError(f"label file {path} not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabelError(f"label file {path} cannot be read: {exc}") from None


def _blank(row: list[str]) -> bool:
    return not any(cell.strip() for cell in row)


def _read_rows(path: Path) -> list[list[str]]:
    return [row for _, row in _read_lines(path) if not _blank(row)]


def _au_columns(path: Path, header: list[str], candidates: list[int]) -> tuple[list[tuple[int, str]], list[dict], list[int]]:
    """AU columns of a header: (first column of each AU, AUs named twice, later columns naming an AU again)."""
    seen: dict[str, int] = {}
    first, again = [], []
    duplicates: dict[str, dict] = {}
    for i in candidates:
        name = au_name(header[i])
        if name is None:
            continue
        if name in seen:
            again.append(i)
            entry = duplicates.setdefault(name, {"file": str(path), "au": name, "columns": [header[seen[name]]],
                                                 "used": header[seen[name]], "disagreeing_rows": 0})
            entry["columns"].append(header[i])
            entry.setdefault("_cols", [seen[name]]).append(i)
        else:
            seen[name] = i
            first.append((i, name))
    return first, list(duplicates.values()), again


def _check_duplicates(duplicates: list[dict], rows: list[list[str]], issues: list[str]) -> None:
    """Count the rows on which the columns naming one AU disagree, and report each such AU."""
    for entry in duplicates:
        cols = entry.pop("_cols", [])
        differ = 0
        for row in rows:
            vals = {_cell(row[c])[0] if c < len(row) else math.nan for c in cols}
            vals = {v for v in vals if not math.isnan(v)}
            differ += len(vals) > 1
        entry["disagreeing_rows"] = differ
        issues.append(
            f"columns {' and '.join(entry['columns'])} both name {entry['au']}: the first ({entry['used']}) is used, "
            f"the other ignored ({differ} rows where they disagree); keep one column per AU"
        )


# -- the four layouts: readers ---------------------------------------------------------------------------------


def _raw_generic(path: Path) -> RawLabels:
    """``labels/<stem>.csv``: a ``frame`` column (0-based) and one column per AU."""
    numbered = [(n, row) for n, row in _read_lines(path) if not _blank(row)]
    if not numbered:
        raise LabelError(f"label file {path} is empty")
    header = [h.strip() for h in numbered[0][1]]
    lower = [h.lower() for h in header]
    if "frame" not in lower:
        raise LabelError(f"label file {path} has no 'frame' column (header: {', '.join(header)})")
    frame_col = lower.index("frame")
    candidates = [i for i, h in enumerate(header) if i != frame_col and h.upper().startswith("AU")]
    au_cols, duplicates, again = _au_columns(path, header, candidates)
    issues: list[str] = []
    ignored = [h for i, h in enumerate(header) if i != frame_col and i not in dict(au_cols) and i not in again]
    if ignored:
        issues.append(f"columns ignored (not AUs): {', '.join(ignored)}")
    if not au_cols:
        raise LabelError(f"label file {path} has no AU columns (expected names like AU01)")
    rows = [row + [""] * (len(header) - len(row)) for _, row in numbered[1:]]
    _check_duplicates(duplicates, rows, issues)
    return _raw([_parse_number(r[frame_col]) for r in rows], [n for n, _ in numbered[1:]],
                [[r[i] for i, _ in au_cols] for r in rows], [n for _, n in au_cols], [str(path)] * len(au_cols),
                [header[i] for i, _ in au_cols], "index", UNKNOWN_CODES["generic"], issues, duplicates,
                source=path.name)


def _raw_disfa(folder: Path) -> RawLabels:
    """``ActionUnit_Labels/SN001/SN001_au<N>.txt``: ``frame,intensity`` lines, frames 1-based."""
    if not folder.is_dir():
        raise LabelError(f"label folder {folder} not found")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        m = re.search(r"_au(\d+)$", p.stem, re.IGNORECASE)
        if m and p.is_file():
            files[f"AU{int(m.group(1)):02d}"] = p
    if not files:
        raise LabelError(f"label folder {folder} holds no <subject>_au<N>.txt files")
    au_names = sorted(files, key=au_sort_key)
    per_au: dict[str, dict[int, tuple[str, int]]] = {}
    issues: list[str] = []
    for name in au_names:
        entries: dict[int, tuple[str, int]] = {}
        bad, dups = [], []
        for line, row in _read_lines(files[name]):
            if _blank(row):
                continue
            frame = _parse_number(row[0]) if row else math.nan
            if len(row) < 2 or not math.isfinite(frame) or frame < 1 or frame != int(frame):
                bad.append(line)
                continue
            if int(frame) in entries:
                dups.append((line, int(frame)))
                continue
            entries[int(frame)] = (row[1], line)
        if bad:
            issues.append(f"{files[name].name}: {len(bad)} unreadable lines skipped (lines {_ranges(np.asarray(bad))})")
        for line, frame in dups[:3]:
            issues.append(f"{files[name].name} line {line}: a second line for frame {frame} "
                          f"(first on line {entries[frame][1]}): the first kept")
        if len(dups) > 3:
            issues.append(f"{files[name].name}: {len(dups) - 3} more duplicate lines, the first of each frame kept")
        per_au[name] = entries
    all_frames = sorted(set().union(*[set(e) for e in per_au.values()]))
    for name in au_names:
        missing = np.asarray([f for f in all_frames if f not in per_au[name]], dtype=np.int64)
        if len(missing):
            other = next(n for n in au_names if int(missing[0]) in per_au[n])
            issues.append(
                f"{files[name].name}: no line for frames {_ranges(missing)} (1-based, as in the files), which "
                f"{files[other].name} has (line {per_au[other][int(missing[0])][1]} for frame {int(missing[0])}): "
                f"{name} unknown there"
            )
    cells = [[per_au[name].get(f, ("", 0))[0] for name in au_names] for f in all_frames]
    cell_lines = [[per_au[name].get(f, ("", 0))[1] for name in au_names] for f in all_frames]
    return _raw([float(f) for f in all_frames], [0] * len(all_frames), cells, au_names,
                [str(files[n]) for n in au_names], [files[n].name for n in au_names], "index",
                UNKNOWN_CODES["disfa"], issues, [], base=1, source=f"{folder.name}_au*.txt", cell_lines=cell_lines)


def _raw_bp4d(path: Path) -> RawLabels:
    """``AUCoding/AU_OCC/F001_T1.csv``: header (frame column, then AU numbers), one row per frame."""
    numbered = [(n, row) for n, row in _read_lines(path) if not _blank(row)]
    if not numbered:
        raise LabelError(f"label file {path} is empty")
    header = [h.strip() for h in numbered[0][1]]
    au_cols, duplicates, _ = _au_columns(path, header, list(range(1, len(header))))
    if not au_cols:
        raise LabelError(f"label file {path} has no AU columns in its header (expected AU numbers: 1,2,4,...)")
    issues: list[str] = []
    rows = [row + [""] * (len(header) - len(row)) for _, row in numbered[1:]]
    _check_duplicates(duplicates, rows, issues)
    return _raw([_parse_number(r[0]) for r in rows], [n for n, _ in numbered[1:]],
                [[r[i] for i, _ in au_cols] for r in rows], [n for _, n in au_cols], [str(path)] * len(au_cols),
                [header[i] for i, _ in au_cols], "number", UNKNOWN_CODES["bp4d"], issues, duplicates,
                source=path.name)


def _raw_affwild2(path: Path) -> RawLabels:
    """Aff-Wild2 / ABAW: header ``AU1,AU2,...``, then row i holds frame i (0-based). Positional: an empty row is
    its frame's unknown labels (never dropped, which would shift every later frame); blank lines after the last
    row are not frames."""
    numbered = _read_lines(path)
    while numbered and _blank(numbered[0][1]):
        numbered = numbered[1:]
    while numbered and _blank(numbered[-1][1]):
        numbered = numbered[:-1]
    if not numbered:
        raise LabelError(f"label file {path} is empty")
    header = [h.strip() for h in numbered[0][1]]
    if not all(au_name(h) for h in header):
        raise LabelError(f"label file {path} has a header that is not all AUs: {','.join(header)}")
    au_cols, duplicates, _ = _au_columns(path, header, list(range(len(header))))
    issues: list[str] = []
    body = numbered[1:]
    short = sum(len(row) != len(header) and not _blank(row) for _, row in body)
    if short:
        issues.append(f"{short} rows whose cell count differs from the header's: missing cells read as unknown")
    empty = np.asarray([i for i, (_, row) in enumerate(body) if _blank(row)], dtype=np.int64)
    if len(empty):
        issues.append(f"{len(empty)} empty rows (rows {_ranges(empty)}, line = row + 2): those frames' labels unknown")
    rows = [row + [""] * (len(header) - len(row)) for _, row in body]
    _check_duplicates(duplicates, rows, issues)
    raw = _raw([float(i) for i in range(len(rows))], [n for n, _ in body], [[r[i] for i, _ in au_cols] for r in rows],
               [n for _, n in au_cols], [str(path)] * len(au_cols), [header[i] for i, _ in au_cols], "index",
               UNKNOWN_CODES["affwild2"], issues, duplicates, source=path.name)
    raw.positional = True
    return raw


_RAW_READERS: dict[str, Any] = {"generic": _raw_generic, "disfa": _raw_disfa, "bp4d": _raw_bp4d, "affwild2": _raw_affwild2}


def read_raw_labels(layout: str, video: VideoSource) -> RawLabels:
    """One video's label cells, in its layout, before a scale is applied. Raises ``LabelError``."""
    return _RAW_READERS[layout](video.label_path)


def read_generic_labels(path: Path, threshold: float, intensity: bool | None = None, scale: str | None = None) -> LabelTable:
    """``labels/<stem>.csv``: a ``frame`` column (0-based) and one column per AU; 1/0, empty or -1 unknown.
    ``scale`` (or ``intensity``) fixes the scale; by default it is decided from this file alone (as
    ``scale_evidence`` does for a dataset)."""
    raw = _raw_generic(path)
    if scale is None:
        scale = scale_evidence("generic", [raw])["scale"] if intensity is None else SCALES[int(bool(intensity))]
    return apply_scale(raw, scale, threshold)


def read_disfa_labels(folder: Path, threshold: float, scale: str = "intensity") -> LabelTable:
    """``ActionUnit_Labels/SN001/SN001_au<N>.txt``: ``frame,intensity`` lines, frames 1-based, intensity 0-5.
    A frame missing from one AU's file is unknown for that AU only."""
    return apply_scale(_raw_disfa(folder), scale, threshold)


def read_bp4d_labels(path: Path, threshold: float, scale: str = "binary") -> LabelTable:
    """``AUCoding/AU_OCC/F001_T1.csv``: header (frame column, then AU numbers), one row per frame, 1/0, 9 unknown.
    Keyed by frame number, matched to the number in each image's file name."""
    return apply_scale(_raw_bp4d(path), scale, threshold)


def read_affwild2_labels(path: Path, threshold: float, scale: str = "binary") -> LabelTable:
    """Aff-Wild2 / ABAW: header ``AU1,AU2,...``, then row i holds frame i (0-based), 1/0, -1 invalid."""
    return apply_scale(_raw_affwild2(path), scale, threshold)


def read_labels(layout: str, video: VideoSource, threshold: float) -> LabelTable:
    """One video's labels, in its layout and the layout's own scale (generic: decided from the file). Raises
    ``LabelError`` when they cannot be used; ``read_dataset_labels`` decides the scale for a whole dataset."""
    raw = read_raw_labels(layout, video)
    return apply_scale(raw, scale_evidence(layout, [raw])["scale"], threshold)


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


@dataclass
class DatasetLabels:
    """Every video's labels on the dataset's one scale, with what was found in the files."""

    tables: dict[str, LabelTable]  # by video id
    skipped: list[dict]  # videos whose labels cannot be used, with the reason
    scale: dict  # scale_evidence(...), plus the threshold for intensities
    outside_scale: dict  # {"count": N, "first": [{"file", "line", "column", "value"}, ...]}
    duplicate_columns: list[dict]  # {"file", "au", "columns", "used", "disagreeing_rows"}

    @property
    def problems(self) -> int:
        """Cells outside the scale plus AUs named twice: what ``--strict`` refuses."""
        return int(self.outside_scale["count"]) + len(self.duplicate_columns)


def _relative(path: Path, root: Path | None) -> str:
    try:
        return str(Path(path).relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def read_dataset_labels(layout: str, videos: list[VideoSource], threshold: float, scale: str = "auto",
                        root: Path | None = None) -> DatasetLabels:
    """Read every video's label cells, decide the dataset's one scale (``scale_evidence``: a value of 1 means
    "present" on the binary scale but "below threshold" on the intensity one, so every file must be read the same
    way), then binarise each file on it. Files are named relative to ``root`` in the reports."""
    raws: dict[str, RawLabels] = {}
    skipped: list[dict] = []
    for v in videos:
        try:
            raws[v.id] = read_raw_labels(layout, v)
        except LabelError as exc:  # "file": the video as the user knows it (the id is internal)
            skipped.append({"video": v.id, "file": _relative(v.path, root), "reason": exc.message})
    decided = scale_evidence(layout, raws.values(), scale)
    if decided["scale"] == "intensity":
        if not 0 < threshold <= INTENSITY_MAX:
            raise UsageError(f"--threshold must be above 0 and at most {INTENSITY_MAX:g} on the intensity scale, "
                             f"got {threshold:g}", "DISFA's convention is 2")
        decided = {**decided, "threshold": float(threshold)}

    def rel(path: str) -> str:
        if root is None:
            return path
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            return path

    tables: dict[str, LabelTable] = {}
    first: list[dict] = []
    count = 0
    duplicates: list[dict] = []
    for vid, raw in raws.items():
        table = apply_scale(raw, decided["scale"], threshold)
        table.strays = [{**s, "file": rel(s["file"])} for s in table.strays]
        tables[vid] = table
        count += table.stray_count
        first.extend(table.strays[: max(0, MAX_LISTED - len(first))])
        duplicates.extend({**d, "file": rel(d["file"])} for d in raw.duplicates)
    return DatasetLabels(tables, skipped, decided, {"count": count, "first": first}, duplicates)


def read_all_labels(layout: str, videos: list[VideoSource], threshold: float, scale: str = "auto"
                    ) -> tuple[dict[str, LabelTable], list[dict]]:
    """Every video's labels on the dataset's one scale: (tables by video id, skipped videos with the reason).
    ``read_dataset_labels`` also returns the scale's evidence and the values outside it."""
    result = read_dataset_labels(layout, videos, threshold, scale)
    return result.tables, result.skipped


def dataset_au_names(tables: Iterable[LabelTable]) -> list[str]:
    """The dataset's AUs: every AU that some file labels (known on at least one frame), in AU-number order."""
    names: set[str] = set()
    for t in tables:
        known = (t.values >= 0).any(axis=0) if len(t.frames) else np.zeros(len(t.au_names), bool)
        names.update(n for n, k in zip(t.au_names, known) if k)
    return sorted(names, key=au_sort_key)
