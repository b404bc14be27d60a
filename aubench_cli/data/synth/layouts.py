"""Layout writers: the four dataset layouts (their AUs, file names and label formats) and atomic file, video and
image-sequence writers."""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from aubench_cli.errors import AubenchError
from aubench_cli.data.synth.aus import PAPER_AUS
from aubench_cli.data.synth.episodes import Labels

# ---------------------------------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """A dataset layout the tool reads (spec/data.md): its AU list and how many videos a subject may have."""

    name: str
    aus: tuple[str, ...]
    default_videos: int
    max_videos: int | None
    description: str


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in [
        Layout("generic", tuple(PAPER_AUS), 2, None,
               "manifest.csv + videos/*.avi + labels/<video stem>.csv (binary 1/0, -1 unknown)"),
        Layout("disfa", ("AU01", "AU02", "AU04", "AU05", "AU06", "AU09", "AU12", "AU15", "AU17", "AU20", "AU25",
                         "AU26"), 1, 1,
               "Videos_LeftCamera/LeftVideoSN001_comp.avi + ActionUnit_Labels/SN001/SN001_au1.txt (intensity 0-5)"),
        Layout("bp4d", tuple(PAPER_AUS), 2, 8,
               "2DFaces/F001/T1/0001.jpg + AUCoding/AU_OCC/F001_T1.csv (1/0, 9 unknown)"),
        Layout("affwild2", ("AU01", "AU02", "AU04", "AU06", "AU07", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25",
                            "AU26"), 1, None,
               "videos/<name>.avi + annotations/<name>.txt (header AU1,...; 1/0, -1 unknown)"),
    ]
}


def _au_number(name: str) -> int:
    return int(name[2:])


# ---------------------------------------------------------------------------------------------------------------
# Atomic writers
# ---------------------------------------------------------------------------------------------------------------


def _tmp_name(path: Path) -> Path:
    # The temporary keeps the real suffix: OpenCV picks the container from it.
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "w", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


# Motion-JPEG in AVI: every OpenCV build writes and reads it back frame-exactly (no encoder delay, no B-frames),
# and every frame is a keyframe, which keeps seeking cheap for the preprocessor.
FOURCC = "MJPG"


class _VideoSink:
    """Writes frames to an AVI under a temporary name; ``close`` checks the frame count and moves it in place."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _tmp_name(path)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*FOURCC), fps, size)
        if not self.writer.isOpened():
            raise AubenchError(f"OpenCV cannot write {FOURCC} video to {self.tmp}",
                               "check that the folder is writable and OpenCV was built with video I/O")
        self.writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 92)
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)
        self.count += 1

    def close(self) -> None:
        self.writer.release()
        cap = cv2.VideoCapture(str(self.tmp))
        got = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
        cap.release()
        if got != self.count:
            self.tmp.unlink(missing_ok=True)
            raise AubenchError(f"{self.path.name}: wrote {self.count} frames but OpenCV reads back {got}",
                               "this OpenCV build's MJPG support is broken; reinstall opencv-contrib-python")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


class _ImageSequenceSink:
    """Writes frames as JPEGs into a temporary folder that replaces the target folder when complete."""

    def __init__(self, folder: Path, first_number: int = 1):
        self.folder = folder
        self.tmp = _tmp_name(folder)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.number = first_number
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise AubenchError("OpenCV failed to encode a JPEG frame", "reinstall opencv-contrib-python")
        (self.tmp / f"{self.number:04d}.jpg").write_bytes(data.tobytes())
        self.number += 1
        self.count += 1

    def close(self) -> None:
        if self.folder.exists():
            old = _tmp_name(self.folder.with_name(self.folder.name + "-old"))
            os.replace(self.folder, old)
            os.replace(self.tmp, self.folder)
            shutil.rmtree(old)
        else:
            os.replace(self.tmp, self.folder)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


@dataclass
class VideoItem:
    """One video of the dataset: who, where its frames and labels go."""

    subject: str
    name: str
    media: str  # path relative to the dataset root (a video file, or a folder of frames for BP4D)
    labels: list[str]  # label file(s), relative to the root


def _label_files(layout: Layout, item: VideoItem, labels: Labels) -> dict[str, str]:
    """The label file texts of one video, keyed by path relative to the root."""
    n = labels.intensity.shape[0]
    if layout.name == "generic":
        rows = [["frame", *labels.aus]]
        rows += [[f, *row] for f, row in enumerate(labels.binary.tolist())]
        return {item.labels[0]: _csv_text(rows)}
    if layout.name == "disfa":
        # DISFA codes every frame with an intensity; its format has no unknown, so none is written.
        level = labels.level
        return {path: "".join(f"{f + 1},{int(level[f, k])}\n" for f in range(n))
                for k, path in enumerate(item.labels)}
    if layout.name == "bp4d":
        binary = labels.binary.copy()
        binary[binary == -1] = 9
        rows = [["frame", *(_au_number(a) for a in labels.aus)]]
        rows += [[f + 1, *row] for f, row in enumerate(binary.tolist())]
        return {item.labels[0]: _csv_text(rows)}
    rows = [[f"AU{_au_number(a)}" for a in labels.aus]]
    rows += labels.binary.tolist()
    return {item.labels[0]: _csv_text(rows)}
