"""The dataset: settings (``SynthConfig``), which videos each subject gets, and ``synthesize``, which renders and
writes them in one layout."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aubench_cli.errors import UsageError, suggest
from aubench_cli.data.synth.episodes import PRESENT_AT, Labels, _ensure_each_au_present, generate_labels
from aubench_cli.data.synth.face import astronaut_landmarks
from aubench_cli.data.synth.layouts import LAYOUTS, Layout, VideoItem, _au_number, _csv_text, _ImageSequenceSink, _label_files, _VideoSink, _write_text
from aubench_cli.data.synth.render import (_NOISE_PAD, MOTIONS, FaceRenderer, Identity, Lighting, Pose, _noise_bank,
                                          lighting_track, make_background, pose_track)

Progress = Callable[[int, int], None]

# ---------------------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SynthConfig:
    """Settings of one synthetic dataset (the defaults give a small demo set: 12 videos, about 32 MB)."""

    subjects: int = 6
    # None: the layout's own default (2 for generic and BP4D tasks, 1 for DISFA and Aff-Wild2).
    videos_per_subject: int | None = None
    frames: int = 120
    width: int = 640
    height: int = 480
    fps: float = 30.0
    layout: str = "generic"
    seed: int = 0
    # Per-AU base rates (fraction of frames present) overriding AU_SPECS; keys are AU names.
    rates: dict[str, float] = field(default_factory=dict)
    # Share of labels that are unknown (-1), in stretches (not written in the DISFA layout, whose format has none).
    unknown_share: float = 0.01
    # How the head moves between frames: "smooth" (continuous) or "jumpy" (a new pose every frame; render.MOTIONS).
    motion: str = "smooth"

    def validate(self) -> Layout:
        """Check every setting; return the layout. Raises UsageError naming the bad value and what is allowed."""
        if self.layout not in LAYOUTS:
            raise UsageError(f"unknown layout {self.layout!r}", suggest(self.layout, LAYOUTS))
        layout = LAYOUTS[self.layout]
        if not 1 <= self.subjects <= 999:
            raise UsageError(f"--subjects must be between 1 and 999, got {self.subjects}")
        videos = self.videos_per_subject
        if videos is not None and videos < 1:
            raise UsageError(f"--videos-per-subject must be at least 1, got {videos}")
        if videos is not None and layout.max_videos is not None and videos > layout.max_videos:
            raise UsageError(f"the {layout.name} layout holds at most {layout.max_videos} video(s) per subject, "
                             f"got --videos-per-subject {videos}",
                             "use the generic layout for more videos per subject")
        if not 1 <= self.frames <= 100_000:
            raise UsageError(f"--frames must be between 1 and 100000, got {self.frames}")
        if not (96 <= self.width <= 4096 and 96 <= self.height <= 4096):
            raise UsageError(f"--size must be between 96x96 and 4096x4096, got {self.width}x{self.height}",
                             "a face needs room: try 640x480 or 320x240")
        if not 1 <= self.fps <= 240:
            raise UsageError(f"--fps must be between 1 and 240, got {self.fps}")
        if self.seed < 0:
            raise UsageError(f"--seed must be 0 or more, got {self.seed}", "e.g. --seed 0")
        for name, rate in self.rates.items():
            if name not in layout.aus:
                raise UsageError(f"rate given for {name!r}, which the {layout.name} layout does not hold",
                                 suggest(name, layout.aus))
            if not 0 <= rate <= 0.9:
                raise UsageError(f"rate of {name} must be between 0 and 0.9, got {rate}")
        if self.motion not in MOTIONS:
            raise UsageError(f"--motion must be {' or '.join(MOTIONS)}, got {self.motion!r}")
        if not 0 <= self.unknown_share <= 0.5:
            raise UsageError(f"unknown_share must be between 0 and 0.5, got {self.unknown_share}")
        return layout

    @property
    def videos(self) -> int:
        return self.videos_per_subject or LAYOUTS[self.layout].default_videos


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480); UsageError on anything else."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--size must look like WIDTHxHEIGHT, got {text!r}", "for example 640x480")
    return int(parts[0]), int(parts[1])


def _subject_name(layout: str, index: int) -> str:
    if layout == "disfa":
        return f"SN{index + 1:03d}"
    if layout == "bp4d":
        # BP4D names subjects by sex and number; alternate so that both kinds appear.
        return f"{'FM'[index % 2]}{index // 2 + 1:03d}"
    if layout == "affwild2":
        return f"video{index + 1:03d}"
    return f"s{index + 1:02d}"


def _plan(config: SynthConfig, layout: Layout) -> list[list[VideoItem]]:
    plan = []
    for s in range(config.subjects):
        subject = _subject_name(layout.name, s)
        items = []
        for v in range(config.videos):
            if layout.name == "generic":
                name = f"{subject}_v{v + 1}"
                items.append(VideoItem(subject, name, f"videos/{name}.avi", [f"labels/{name}.csv"]))
            elif layout.name == "disfa":
                items.append(VideoItem(subject, subject, f"Videos_LeftCamera/LeftVideo{subject}_comp.avi",
                                       [f"ActionUnit_Labels/{subject}/{subject}_au{_au_number(a)}.txt"
                                        for a in layout.aus]))
            elif layout.name == "bp4d":
                task = f"T{v + 1}"
                items.append(VideoItem(subject, f"{subject}_{task}", f"2DFaces/{subject}/{task}",
                                       [f"AUCoding/AU_OCC/{subject}_{task}.csv"]))
            else:
                name = f"{subject}_{v + 1}"
                items.append(VideoItem(subject, name, f"videos/{name}.avi", [f"annotations/{name}.txt"]))
        plan.append(items)
    return plan


def _rng(seed: int, *path: int) -> np.random.Generator:
    """An independent generator for one part of the dataset, so that e.g. video 3 does not change when
    --frames changes the number of draws for video 2."""
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


# Stream ids under the seed: what each generator is for.
_IDENTITY, _LABELS, _CONDITIONS, _GUARANTEE = 0, 1, 2, 3


def subject_identity(seed: int, subject: int) -> Identity:
    """The identity of subject number ``subject`` (0-based) under ``seed``."""
    return Identity.random(_rng(seed, _IDENTITY, subject))


def subject_labels(config: SynthConfig, subject: int) -> list[Labels]:
    """Labels of every video of one subject (no rendering), as ``synthesize`` writes them."""
    layout = config.validate()
    labels = [generate_labels(config.frames, layout.aus, _rng(config.seed, _LABELS, subject, v), fps=config.fps,
                              rates=config.rates, unknown_share=config.unknown_share)
              for v in range(config.videos)]
    _ensure_each_au_present(labels, _rng(config.seed, _GUARANTEE, subject), config.fps)
    return labels


@dataclass
class VideoConditions:
    """What one video's frames see besides the AUs: per-frame pose, lighting and sensor noise, and the background.
    ``render_video`` draws it; a test can draw it again to render any frame with other intensities."""

    poses: list[Pose]
    lights: list[Lighting]
    background: np.ndarray
    noise_bank: tuple[np.ndarray, np.ndarray]
    offsets: np.ndarray  # (F, 2) noise window offsets
    which: np.ndarray  # (F,) noise frame per frame

    def noise(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.background.shape[:2]
        oy, ox = self.offsets[t]
        positive, negative = self.noise_bank
        return positive[self.which[t], oy : oy + h, ox : ox + w], negative[self.which[t], oy : oy + h, ox : ox + w]


def video_conditions(config: SynthConfig, subject: int, video: int, n: int) -> VideoConditions:
    """The pose, lighting, noise and background of one video of ``n`` frames (seeded by subject and video)."""
    size = (config.width, config.height)
    rng = _rng(config.seed, _CONDITIONS, subject, video)
    poses = pose_track(rng, n, config.fps, config.motion)
    lights = lighting_track(rng, n, config.fps)
    bank = _noise_bank(rng, size)
    offsets = rng.integers(0, _NOISE_PAD, size=(n, 2))
    which = rng.integers(0, len(bank[0]), size=n)
    background = make_background(subject_identity(config.seed, subject), size)
    return VideoConditions(poses, lights, background, bank, offsets, which)


def render_video(config: SynthConfig, subject: int, video: int, labels: Labels,
                 renderer: FaceRenderer | None = None) -> Iterable[np.ndarray]:
    """Yield the frames of one video (BGR uint8): frame t shows the AU intensities of label row t."""
    size = (config.width, config.height)
    renderer = renderer or FaceRenderer(labels.aus, size, subject_identity(config.seed, subject))
    n = labels.intensity.shape[0]
    cond = video_conditions(config, subject, video, n)
    for t in range(n):
        yield renderer.render(labels.intensity[t], cond.poses[t], cond.lights[t], cond.background, cond.noise(t))


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse a path that is a file, or a non-empty folder without ``overwrite`` (before anything is drawn)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder", "give a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} is not empty", "give a new or empty folder, or pass --overwrite to write into it")


def synthesize(out: str | os.PathLike, config: SynthConfig, progress: Progress | None = None,
               overwrite: bool = False) -> dict[str, Any]:
    """Render and write a labelled synthetic dataset under ``out`` in ``config.layout``; return a summary.

    Every file is written atomically; the manifest (generic) and ``synth.json`` come last, so an interrupted run
    never leaves a dataset that lists a video it does not hold. ``progress(done_frames, total_frames)`` is called
    after every frame.
    """
    layout = config.validate()
    root = Path(out)
    check_output(root, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    astronaut_landmarks()  # fail early, before any file is written, if the face cannot be found
    plan = _plan(config, layout)
    total = config.subjects * config.videos * config.frames
    done = 0
    started = time.perf_counter()
    present = np.zeros(len(layout.aus), np.int64)
    known = np.zeros(len(layout.aus), np.int64)
    unknown_labels = 0
    videos_meta = []
    for s, items in enumerate(plan):
        labels_per_video = subject_labels(config, s)
        renderer = FaceRenderer(layout.aus, (config.width, config.height), subject_identity(config.seed, s))
        for v, (item, labels) in enumerate(zip(items, labels_per_video)):
            target = root / item.media
            sink = _ImageSequenceSink(target) if layout.name == "bp4d" else _VideoSink(
                target, config.fps, (config.width, config.height))
            try:
                for frame in render_video(config, s, v, labels, renderer):
                    sink.write(frame)
                    done += 1
                    if progress is not None:
                        progress(done, total)
                sink.close()
            except BaseException:
                sink.abort()
                raise
            for rel, text in _label_files(layout, item, labels).items():
                _write_text(root / rel, text)
            binary = labels.binary
            if layout.name == "disfa":
                binary = (labels.level >= PRESENT_AT).astype(np.int8)  # DISFA files carry no unknowns
            present += (binary == 1).sum(axis=0)
            known += (binary >= 0).sum(axis=0)
            unknown_labels += int((binary == -1).sum())
            videos_meta.append(asdict(item))
    if layout.name == "generic":
        # No split column: the preprocessor splits subject-exclusively by its own seed.
        rows = [["video", "subject"]] + [[m["media"], m["subject"]] for m in videos_meta]
        _write_text(root / "manifest.csv", _csv_text(rows))
    seconds = time.perf_counter() - started
    summary = {
        "out": str(root),
        "layout": layout.name,
        "aus": list(layout.aus),
        "subjects": config.subjects,
        "videos": len(videos_meta),
        "frames": done,
        "size": [config.width, config.height],
        "fps": config.fps,
        "seed": config.seed,
        "positive_rate": {a: round(float(p / max(k, 1)), 4) for a, p, k in zip(layout.aus, present, known)},
        "unknown_labels": unknown_labels,
        "seconds": round(seconds, 2),
        "frames_per_second": round(done / seconds, 1) if seconds > 0 else None,
        "note": "synthetic data: a test fixture and a demo, never a substitute for real data",
    }
    meta = {"config": asdict(config), "summary": summary, "videos": videos_meta}
    _write_text(root / "synth.json", json.dumps(meta, indent=2) + "\n")
    return summary
