"""Face finding and alignment: BlazeFace finds a face, FaceMesh places its landmarks, one warp makes the crop.

The paper aligns faces with 4 landmarks (outer eye corners, nose tip, chin), levels the eyes, converts to
grayscale and scales to 96x96. ``FaceAligner`` does that for a stream of frames (one video): BlazeFace (mediapipe
``face_detection``) looks at the whole frame only when there is no face to follow; otherwise a region of interest
(ROI) is cut around the previous frame's landmarks, turned upright, and FaceMesh (mediapipe ``face_mesh`` in
tracking mode) runs on that small image, which costs the same whatever the frame size. ``alignment_transform``
maps the 4 landmarks onto fixed positions of the 96x96 crop (``TEMPLATE``, drawn in docs/preprocessing.md) with a
rotation taken from the eye corners alone, so eyes are always level; ``warp_crop`` then does one
``cv2.warpAffine`` from the original frame to the crop. Everything here works on one frame at a time and keeps
only the previous frame's landmarks as state; processes each make their own ``FaceAligner``.

Tracking follows the previous frame, which goes wrong when the face jumps (shot cuts, low frame rates, sampled
frames): every followed frame's landmarks are therefore checked against the face (``TRACK_LIMITS``,
``crop_agreement``), and a frame that fails is aligned afresh by FaceMesh in still-image mode and counted
(``FaceAligner.track_corrections``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 96

# The version of the code that turns a frame into a crop (detection, tracking, landmarks, template, warp). Any
# change that alters crops bumps it: the cache records it (settings.crop_pipeline) and ``aubench predict`` refuses
# a run trained on crops of another version, which would be fed crops unlike its training ones. A cache header
# without the key was made by version 1. 1: one bilinear warp from the frame. 2: filtered downscaling before the
# warp, nearest face after a lost track, implausible alignments dropped. 3: followed landmarks checked against the
# face every frame (motion limits, crop agreement), a failed check re-aligned by the still-image FaceMesh.
CROP_PIPELINE_VERSION = 3

# FaceMesh indices of the paper's 4 landmarks, in the order the cache stores them: the outer eye corner on the
# image's left (the subject's right eye), the one on the image's right, the nose tip and the chin. Checked on
# skimage's astronaut photo (docs/preprocessing.md): 33 and 263 sit on the outer canthi, 1 on the tip of the nose
# (4 is a few pixels up the bridge), 152 on the bottom of the chin.
LANDMARK_IDS = (33, 263, 1, 152)
LANDMARK_NAMES = ("eye_outer_left", "eye_outer_right", "nose_tip", "chin")

# Where the 4 landmarks land in the 96x96 crop (x, y in pixels, pixel centres at integers). The unit is the
# eyes-to-chin height, mapped to 50 px: eyes on row 34 and chin on row 84 leave 11 px below the chin and 34 px
# above the eyes, which holds the brows (about 0.2 units above the eyes, row ~24) and the lower forehead. The eye
# corners are 0.85 units apart and the nose tip 0.39 units below the eyes: the proportions of a frontal face,
# measured on the astronaut photo.
TEMPLATE = np.array([[26.25, 34.0], [68.75, 34.0], [47.5, 53.5], [47.5, 84.0]], dtype=np.float64)

# Extra mesh points (forehead top, both cheeks) that with LANDMARK_IDS outline the face: enough to place the next
# frame's ROI without converting all 468 landmarks from protobuf, which costs more than the warp.
_OUTLINE_IDS = (10, 234, 454)
_ROI_SIZE = 256  # FaceMesh's own crop of a face that fills half of this is close to its 192 px input
_ROI_MARGIN = 2.0  # ROI side / face extent: room for the face to move between frames
# A re-detection that lands farther than this many eyes-to-chin heights from where the followed face was last seen
# counts as an identity switch (another person, or the same one after a long loss: either way worth a look).
IDENTITY_JUMP = 1.0
# Plausible faces: the chin at least this many eye distances below the eye line (a frontal face: about 1.2), and
# the face's own axes (forehead to chin, cheek to cheek) within this many degrees of the eye line's.
MIN_CHIN_DROP = 0.5
MAX_AXIS_DEGREES = 35.0
# On a frame where BlazeFace found the face, its own keypoints must agree with FaceMesh's: its nose and mouth at
# least this many eyes-to-chin heights below FaceMesh's eye line (upright faces: about 0.35 and 0.6; a face
# upside-down, which both models misread as an upright one over the wrong features: 0.1 or less).
MIN_NOSE_DROP = 0.2
MAX_DETECTOR_DEGREES = 45.0  # BlazeFace's eye keypoints are coarser than FaceMesh's corners
# ... and BlazeFace must not find the face clearly better (by this score) in the upright ROI turned upside down.
UPSIDE_DOWN_MARGIN = 0.1
MIN_MOUTH_DROP = 0.35


@dataclass(frozen=True)
class MotionLimits:
    """How far a face's 4 landmarks may move from one estimate to the next: the shift of their centroid (in units of
    their size, the RMS distance from the centroid), the change of that size (ratio) and of the eye line (degrees)."""

    shift: float
    scale: float
    degrees: float


# Checking followed landmarks against the face. FaceMesh in tracking mode places its own region from the previous
# frame's landmarks, so after a jump (a shot cut, a low frame rate, sampled frames) it looks at part of the face, or
# beside it, and still answers: landmarks from the wrong place, with the wrong size. Two checks that cost almost
# nothing on continuous footage tell such an answer: the landmarks moved beyond ``TRACK_LIMITS`` since the last
# frame (30 fps talking heads move a few percent of the face per frame), or the crop they give looks unlike the
# last frame's (``crop_agreement`` below ``MIN_CROP_AGREEMENT``: the landmarks stayed but the face left them).
# Either way the still-image FaceMesh, which finds the face in the ROI image itself, aligns the frame instead.
TRACK_LIMITS = MotionLimits(shift=0.12, scale=0.06, degrees=5.0)
# Measured on synthetic faces: crops 1/30 s apart agree at 0.94 and above; crops of one face under jumping poses,
# lights and AUs at 0.91 and above; a crop 13 degrees off the face's eye line at 0.79, one of background near 0.
MIN_CROP_AGREEMENT = 0.85
_AGREEMENT_SIZE = 24  # crops are compared at this size: the face's layout, not its noise and fine detail


def crop_signature(crop: np.ndarray) -> np.ndarray:
    """A crop reduced to what ``crop_agreement`` compares: its 24x24 area average, zero mean, unit length."""
    small = cv2.resize(crop, (_AGREEMENT_SIZE, _AGREEMENT_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    mean, std = cv2.meanStdDev(small)
    norm = float(std[0, 0]) * _AGREEMENT_SIZE  # the length of the centred vector: std x sqrt(24 x 24)
    return ((small - float(mean[0, 0])) / max(norm, 1e-6)).ravel()


def crop_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """How alike two crops are: the correlation of their 24x24 reductions (1: the same picture up to brightness
    and contrast; a face against a crop of background or of half a face: far lower)."""
    return float(crop_signature(a) @ crop_signature(b))


def _centre_and_size(points: list[float]) -> tuple[float, float, float]:
    """Centroid and RMS distance from it of 4 landmarks given flat (x0, y0, ..., x3, y3): plain floats, as this runs
    on every followed frame and numpy's per-call overhead on 8 numbers is larger than the arithmetic."""
    xs, ys = points[0::2], points[1::2]
    cx, cy = sum(xs) / 4, sum(ys) / 4
    return cx, cy, math.sqrt(sum((x - cx) ** 2 + (y - cy) ** 2 for x, y in zip(xs, ys)) / 4)


def landmarks_moved(before: np.ndarray, after: np.ndarray, limits: MotionLimits) -> bool:
    """Did 4 landmarks move beyond ``limits`` from ``before`` to ``after``: their centroid shifted by more than
    ``limits.shift`` times their size (RMS distance from the centroid), that size changed by more than
    ``limits.scale``, or the eye line turned by more than ``limits.degrees``?"""
    a = np.asarray(before, dtype=np.float64).ravel().tolist()
    b = np.asarray(after, dtype=np.float64).ravel().tolist()
    ax, ay, size_a = _centre_and_size(a)
    bx, by, size_b = _centre_and_size(b)
    if size_a < 1e-6 or size_b < 1e-6:
        return True
    if math.hypot(bx - ax, by - ay) > limits.shift * size_a:
        return True
    if abs(math.log(size_b / size_a)) > math.log1p(limits.scale):
        return True
    ex, ey, fx, fy = a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]
    return math.degrees(abs(math.atan2(ex * fy - ey * fx, ex * fx + ey * fy))) > limits.degrees


@dataclass
class FaceResult:
    """One aligned face: the crop, its 4 landmarks (frame pixels), the frame-to-crop transform, how it was found."""

    crop: np.ndarray  # (96, 96) uint8 grayscale
    landmarks: np.ndarray  # (4, 2) float32, frame pixel coordinates, order of LANDMARK_NAMES
    transform: np.ndarray  # (2, 3) float32, frame pixel -> crop pixel
    detected: bool  # True: BlazeFace looked at the whole frame; False: followed from the previous frame
    # BlazeFace's score for this face, from the frame where it was detected (carried while it is followed: the
    # mediapipe Python API does not expose FaceMesh's own presence score, which was above min_confidence)
    confidence: float = 1.0


def alignment_transform(landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The 2x3 similarity mapping frame pixels to crop pixels: eyes level, scale and shift fitted to ``TEMPLATE``.

    The rotation comes from the outer eye corners only (so they end on one row whatever the nose and chin do);
    scale and translation are the least-squares fit of all 4 landmarks to the template under that rotation.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(4, 2)
    template = TEMPLATE * (size / CROP_SIZE)
    dx, dy = pts[1] - pts[0]
    angle = math.atan2(dy, dx)
    cos, sin = math.cos(-angle), math.sin(-angle)
    rot = np.array([[cos, -sin], [sin, cos]])
    src = pts - pts.mean(axis=0)
    dst = template - template.mean(axis=0)
    rotated = src @ rot.T
    denom = float((src**2).sum())
    scale = float((rotated * dst).sum()) / denom if denom > 1e-9 else 1.0
    if scale <= 0:  # landmarks in an impossible order (chin above the eyes): fall back to eye distance alone
        scale = (template[1, 0] - template[0, 0]) / max(math.hypot(dx, dy), 1e-6)
    linear = scale * rot
    shift = template.mean(axis=0) - linear @ pts.mean(axis=0)
    return np.hstack([linear, shift[:, None]]).astype(np.float32)


def apply_transform(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a 2x3 affine transform."""
    t = np.asarray(transform, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ t[:, :2].T + t[:, 2]


def transform_scale(transform: np.ndarray) -> float:
    """Crop pixels per frame pixel of a 2x3 similarity (below 1: the face is larger in the frame than in the crop)."""
    t = np.asarray(transform, dtype=np.float64)
    return math.sqrt(abs(float(t[0, 0] * t[1, 1] - t[0, 1] * t[1, 0])))


def antialias_sigma(scale: float) -> float:
    """The Gaussian blur (frame pixels) that band-limits a frame before shrinking it by ``scale`` (crop pixels per
    frame pixel): ``(1 / scale - 1) / 2``, the rule scikit-image's ``rescale(anti_aliasing=True)`` uses; 0 when the
    crop is not smaller than the face in the frame."""
    return max(0.0, (1.0 / max(scale, 1e-6) - 1.0) / 2.0)


def warp_crop(frame: np.ndarray, transform: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The grayscale crop of a BGR (or gray) frame under ``transform`` (frame pixels -> crop pixels).

    Downscaling is filtered: only the region the crop sees is cut out and turned to gray (BGR weights), blurred
    with ``antialias_sigma`` of the crop's scale, and then warped bilinearly. A bilinear warp alone, from a face
    several times larger than its crop, samples a few frame pixels per crop pixel and aliases (stripes, hair and
    noise fold into false patterns). When the face is 4 or more times larger than the crop, the region is first
    halved with ``cv2.pyrDown`` (itself a Gaussian filter) as often as that holds, so the blur stays cheap."""
    t = np.asarray(transform, dtype=np.float64)
    scale = transform_scale(t)
    levels = 0
    while scale * 2 ** (levels + 2) <= 1.0:
        levels += 1
    sigma = antialias_sigma(scale * 2**levels)
    inverse = cv2.invertAffineTransform(t)
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], np.float64)
    seen = apply_transform(inverse, corners)
    reach = int(math.ceil(2 * sigma))  # the kernel's half-width: +-2 sigma holds 95 % of it, and costs half of +-3
    margin = (reach + 2) * 2**levels + (4 * 2**levels if levels else 0)
    h, w = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(seen.min(axis=0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(seen.max(axis=0)).astype(int) + margin + 1, (w, h))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop sees nothing of the frame: edges replicated, as cv2 would
        x0, y0, x1, y1 = 0, 0, w, h
    region = frame[y0:y1, x0:x1]
    if region.ndim == 3:
        region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    t = t.copy()
    t[:, 2] += t[:, :2] @ np.array([x0, y0], np.float64)  # region pixels -> crop pixels
    for _ in range(levels):
        region = cv2.pyrDown(region, borderType=cv2.BORDER_REPLICATE)  # region pixel q <- 2q before
        t[:, :2] *= 2.0
    if sigma > 0.05:
        region = cv2.GaussianBlur(region, (2 * reach + 1, 2 * reach + 1), sigma, borderType=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(region, t, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def implausible_alignment(landmarks: np.ndarray, outline: np.ndarray | None = None,
                          detection: np.ndarray | None = None) -> str | None:
    """Why 4 landmarks (eye corners image-left and -right, nose tip, chin; frame pixels) cannot be an upright-able
    face, or None when they can: the chin and nose must lie below the eye line (else the crop would be upside
    down); the face's own axes (``outline``: the 4 landmarks then forehead top, left and right cheek) must agree
    with the eye line's direction; and where the face was just detected, BlazeFace's keypoints (``detection``:
    the subject's right eye, left eye, nose tip, mouth) must agree with FaceMesh's eye line: same direction within
    ``MAX_DETECTOR_DEGREES``, nose and mouth below it. An upside-down face is read by both models as an upright face
    over the wrong features (eyes where the mouth is), a consistent mesh that only that last check catches."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(4, 2)
    eye_vec = pts[1] - pts[0]
    d = float(np.hypot(*eye_vec))
    if d < 1e-6:
        return "the two eye corners fall on one point"
    ex = eye_vec / d
    down = np.array([-ex[1], ex[0]])  # the eye line turned by +90 degrees: "down" in a face upright in the crop
    mid = (pts[0] + pts[1]) / 2
    if float((pts[3] - mid) @ down) < MIN_CHIN_DROP * d or float((pts[2] - mid) @ down) <= 0:
        return "chin or nose above the eye line (an upside-down or mirrored face)"
    if outline is not None and len(outline) >= 7:
        out = np.asarray(outline, dtype=np.float64)
        for a, b, axis, what in ((4, 3, down, "forehead-to-chin"), (5, 6, ex, "cheek-to-cheek")):
            v = out[b] - out[a]
            n = float(np.hypot(*v))
            if n < 1e-6:
                return f"the {what} line has no length"
            angle = math.degrees(math.acos(float(np.clip(v @ axis / n, -1, 1))))
            if angle > MAX_AXIS_DEGREES:
                return f"the {what} line is {angle:.0f} degrees off the eye line's direction"
    if detection is not None:
        keys = np.asarray(detection, dtype=np.float64).reshape(4, 2)
        height = float((pts[3] - mid) @ down)
        v = keys[1] - keys[0]
        n = float(np.hypot(*v))
        angle = math.degrees(math.acos(float(np.clip(v @ ex / n, -1, 1)))) if n > 1e-6 else 180.0
        if angle > MAX_DETECTOR_DEGREES:
            return f"the detector's eye line is {angle:.0f} degrees off the landmarks' eye line"
        for key, least, what in ((keys[2], MIN_NOSE_DROP, "nose"), (keys[3], MIN_MOUTH_DROP, "mouth")):
            if float((key - mid) @ down) < least * height:
                return f"the detector's {what} is not below the landmarks' eye line (an upside-down face?)"
    return None


def _roi_transform(center: np.ndarray, angle: float, side: float) -> np.ndarray:
    """Frame -> ROI transform: a square of ``side`` frame pixels centred on ``center``, turned by ``-angle``."""
    scale = _ROI_SIZE / max(side, 1.0)
    cos, sin = math.cos(-angle) * scale, math.sin(-angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]])
    shift = np.array([_ROI_SIZE / 2, _ROI_SIZE / 2]) - linear @ center
    return np.hstack([linear, shift[:, None]])


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence C++ logging (mediapipe prints a dozen harmless absl warnings each time a graph starts, some of
    them later, from its own threads) by pointing file descriptor 2 at /dev/null for the duration; Python
    exceptions are unaffected. ``AUBENCH_DEBUG=1`` keeps the messages."""
    if os.environ.get("AUBENCH_DEBUG", "") not in ("", "0"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _invert(transform: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(transform, dtype=np.float64))


class FaceAligner:
    """Finds, follows and aligns one face through the frames of one video (call ``reset`` between videos).

    mediapipe graphs are built on first use so that a process that never sees a frame pays nothing; each worker
    process owns its aligner (mediapipe objects cannot be shared across processes).
    """

    def __init__(self, size: int = CROP_SIZE, min_confidence: float = 0.5):
        self.size = size
        self.min_confidence = min_confidence
        self._mesh = None
        self._still = None  # the still-image FaceMesh (_still_mesh), made on first need
        self._detectors: dict[int, object] = {}
        self._track: tuple[np.ndarray, float, float] | None = None  # ROI centre, angle, side for the next frame
        self._fresh = True  # a graph was (re)started: its first frame prints warnings worth hiding
        self._score = 1.0  # BlazeFace's score of the detection that started the followed face
        self.detections = 0  # full-frame BlazeFace runs, for profiling
        self._last: tuple[np.ndarray, float] | None = None  # centre and eyes-to-chin height of the last face
        self.identity_switches = 0  # re-detections far from the last face, this video
        self.implausible = 0  # faces found but not plausible (upside-down, axes off), not returned, this video
        self.rejected = False  # the last process() found a face and rejected it as implausible
        self.track_corrections = 0  # followed frames whose landmarks failed the check: aligned afresh, this video
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # the last face's landmarks, crop signature
        self._stale = False  # the tracking FaceMesh's region disagreed with the face (see _follow)
        self._keypoints: np.ndarray | None = None  # BlazeFace's eyes, nose, mouth of the last detection
        # Which face to take when a frame holds several: None, the most confident; "left" / "right", the one
        # nearest that side of the image (Aff-Wild2 labels the two people of a video as video_left / _right).
        self.side: str | None = None

    # -- mediapipe objects -------------------------------------------------------------------------------------
    def _face_mesh(self):
        if self._mesh is None:
            from aubench_cli.data.mp_import import mediapipe as mp

            # Tracking mode: the graph reuses the last landmarks inside our ROI and only re-detects when it loses
            # them, which is what makes following cheaper than detecting.
            self._fresh = True
            with quiet_native_stderr():
                self._mesh = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=False,
                    max_num_faces=1,
                    refine_landmarks=False,
                    min_detection_confidence=self.min_confidence,
                    min_tracking_confidence=self.min_confidence,
                )
        return self._mesh

    def _still_mesh(self):
        """FaceMesh in still-image mode: its own face detection on every call, no memory of earlier frames. It
        re-aligns a followed face whose landmarks moved too far (cheaper than restarting the tracking graph)."""
        if self._still is None:
            from aubench_cli.data.mp_import import mediapipe as mp

            with quiet_native_stderr():
                self._still = mp.solutions.face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                    min_detection_confidence=self.min_confidence)
        return self._still

    def _detector(self, model: int):
        if model not in self._detectors:
            from aubench_cli.data.mp_import import mediapipe as mp

            self._fresh = True
            with quiet_native_stderr():
                self._detectors[model] = mp.solutions.face_detection.FaceDetection(
                    model_selection=model, min_detection_confidence=self.min_confidence
                )
        return self._detectors[model]

    def reset(self, side: str | None = None) -> None:
        """Forget the followed face (a new video starts); ``side`` picks the face to follow (see ``side``)."""
        self._track = None
        self._last = None
        self.identity_switches = 0
        self.implausible = 0
        self.rejected = False
        self.track_corrections = 0
        self._previous = None
        self._stale = False
        self.side = side
        if self._mesh is not None:
            # the graph keeps the last video's face otherwise (13 ms to restart; once per video)
            with quiet_native_stderr():
                self._mesh.reset()
            self._fresh = True

    def close(self) -> None:
        for graph in [self._mesh, self._still, *self._detectors.values()]:
            if graph is not None:
                graph.close()
        self._mesh = None
        self._still = None
        self._detectors = {}

    # -- the per-frame path ------------------------------------------------------------------------------------
    def _detect(self, frame: np.ndarray) -> tuple[np.ndarray, float, float] | None:
        """BlazeFace on the whole frame: the short-range model first (faces filling the frame, the usual AU
        video), then the full-range one (small faces in a wide shot). Returns an ROI (centre, angle, side)."""
        self.detections += 1
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        h, w = rgb.shape[:2]
        for model in (0, 1):
            detector = self._detector(model)
            result = detector.process(rgb)
            if not result.detections:
                continue
            if self._last is not None and len(result.detections) > 1:
                # the face was lost mid-video: take the one nearest where it was last seen, not the most confident
                last = self._last[0]

                def distance(d) -> float:
                    box = d.location_data.relative_bounding_box
                    return float(np.hypot((box.xmin + box.width / 2) * w - last[0], (box.ymin + box.height / 2) * h - last[1]))

                best = min(result.detections, key=distance)
            elif self.side is None or len(result.detections) == 1:
                best = max(result.detections, key=lambda d: d.score[0])
            else:
                def centre_x(d) -> float:
                    box = d.location_data.relative_bounding_box
                    return box.xmin + box.width / 2

                pick = min if self.side == "left" else max
                best = pick(result.detections, key=centre_x)
            self._score = float(best.score[0])
            box = best.location_data.relative_bounding_box
            keys = best.location_data.relative_keypoints
            right_eye = np.array([keys[0].x * w, keys[0].y * h])
            left_eye = np.array([keys[1].x * w, keys[1].y * h])
            # keypoint 0 is the subject's right eye, on the image's left
            dx, dy = left_eye - right_eye
            angle = math.atan2(dy, dx)
            center = np.array([(box.xmin + box.width / 2) * w, (box.ymin + box.height / 2) * h])
            self._keypoints = np.array([[keys[i].x * w, keys[i].y * h] for i in range(4)])
            # BlazeFace's box spans brows to mouth; the whole face is about 1.3 times that
            side = 1.3 * _ROI_MARGIN * max(box.width * w, box.height * h)
            return center, angle, side
        return None

    def _landmarks_in_roi(self, frame: np.ndarray, roi: tuple[np.ndarray, float, float]):
        """FaceMesh on the upright ROI; returns (4 landmarks, outline points) in frame pixels, or None."""
        return self._mesh_on(*self._roi_patch(frame, roi))

    @staticmethod
    def _roi_patch(frame: np.ndarray, roi: tuple[np.ndarray, float, float]) -> tuple[np.ndarray, np.ndarray]:
        """The upright ROI cut out of the frame (RGB, _ROI_SIZE square) and the frame -> patch transform."""
        to_roi = _roi_transform(*roi)
        patch = cv2.warpAffine(frame, to_roi, (_ROI_SIZE, _ROI_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB) if patch.ndim == 3 else cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB)
        return patch, to_roi

    def _mesh_on(self, patch: np.ndarray, to_roi: np.ndarray, fresh: bool = False):
        """FaceMesh on a patch cut by ``_roi_patch``; (4 landmarks, outline points) in frame pixels, or None.
        ``fresh``: the still-image FaceMesh, which finds the face in the patch itself, whatever came before."""
        if fresh:  # rare on continuous footage; the graph prints its start-up warnings on its first frames
            with quiet_native_stderr():
                result = self._still_mesh().process(patch)
        else:
            result = self._face_mesh().process(patch)
        if not result.multi_face_landmarks:
            return None
        marks = result.multi_face_landmarks[0].landmark
        ids = LANDMARK_IDS + _OUTLINE_IDS
        pts = np.array([(marks[i].x * _ROI_SIZE, marks[i].y * _ROI_SIZE) for i in ids])
        pts = apply_transform(_invert(to_roi), pts)
        return pts[: len(LANDMARK_IDS)], pts

    def _upside_down(self, frame: np.ndarray, landmarks: np.ndarray, outline: np.ndarray) -> bool:
        """On a new detection: is the face the landmarks call upright really upside down? BlazeFace looks at the
        upright ROI and at the same ROI turned by 180 degrees; a clearly better score for the turned one means
        both models read an upside-down face as an upright one over the wrong features. Two small detector runs
        per detection, none per followed frame."""
        center, angle, side = self._next_roi(landmarks, outline)
        patch = cv2.warpAffine(frame, _roi_transform(center, angle, side), (_ROI_SIZE, _ROI_SIZE),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        patch = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB) if patch.ndim == 3 else cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB)
        detector = self._detector(0)

        def score(image: np.ndarray) -> float:
            result = detector.process(np.ascontiguousarray(image))
            return max((d.score[0] for d in result.detections), default=0.0) if result.detections else 0.0

        return score(patch[::-1, ::-1]) > score(patch) + UPSIDE_DOWN_MARGIN

    @staticmethod
    def _next_roi(landmarks: np.ndarray, outline: np.ndarray) -> tuple[np.ndarray, float, float]:
        dx, dy = landmarks[1] - landmarks[0]
        angle = math.atan2(dy, dx)
        cos, sin = math.cos(-angle), math.sin(-angle)
        upright = outline @ np.array([[cos, -sin], [sin, cos]]).T
        lo, hi = upright.min(axis=0), upright.max(axis=0)
        mid_upright = (lo + hi) / 2
        center = mid_upright @ np.array([[cos, sin], [-sin, cos]]).T  # back to frame coordinates
        return center, angle, _ROI_MARGIN * float(max(hi - lo))

    def process(self, frame: np.ndarray) -> FaceResult | None:
        """Align the face in one frame (BGR or grayscale uint8); None when no face is found."""
        if self._fresh:
            with quiet_native_stderr():
                result = self._process(frame)
            self._fresh = False
            return result
        return self._process(frame)

    def _follow(self, frame: np.ndarray):
        """The followed face in this frame, its landmarks checked against the face: (landmarks, outline, transform,
        crop), or None when FaceMesh lost it, or when the check failed and a fresh look at the ROI finds no face.

        The check (see TRACK_LIMITS) costs almost nothing on continuous footage; when it fails, the still-image
        FaceMesh looks at the same ROI image afresh (counted in ``track_corrections``), and the tracking one, whose
        region is now wrong, is not trusted again until its own answer passes the check (``_stale``)."""
        patch, to_roi = self._roi_patch(frame, self._track)
        found = self._mesh_on(patch, to_roi)
        if found is None:
            self._stale = False  # it lost the face: it detects afresh in the next ROI by itself
            return None
        transform = alignment_transform(found[0], self.size)
        crop = warp_crop(frame, transform, self.size)
        if self._previous is not None and not landmarks_moved(self._previous[0], found[0], TRACK_LIMITS) and (
                float(self._previous[1] @ crop_signature(crop)) >= MIN_CROP_AGREEMENT):
            self._stale = False
            return (*found, transform, crop)
        self.track_corrections += 1
        self._stale = True
        found = self._mesh_on(patch, to_roi, fresh=True)
        if found is None:
            return None
        transform = alignment_transform(found[0], self.size)
        return (*found, transform, warp_crop(frame, transform, self.size))

    def _process(self, frame: np.ndarray) -> FaceResult | None:
        found = None
        detected = False
        if self._track is not None:
            found = self._follow(frame)
        if found is None:
            roi = self._detect(frame)
            if roi is not None:
                # no FaceMesh reset here: it has just lost the face itself, so it re-detects inside the new ROI;
                # unless its region is only wrong (the check failed): then the still-image FaceMesh looks
                found = self._mesh_on(*self._roi_patch(frame, roi), fresh=self._stale)
                detected = True
        self.rejected = False
        if found is None:
            self._track = None
            self._previous = None
            return None
        landmarks, outline = found[:2]
        if implausible_alignment(landmarks, outline, self._keypoints if detected else None) is not None or (
                detected and self._upside_down(frame, landmarks, outline)):
            self.implausible += 1
            self.rejected = True
            self._track = None  # look again from scratch on the next frame, with a FaceMesh that forgot this face
            self._previous = None
            self._stale = False
            with quiet_native_stderr():
                self._face_mesh().reset()
            return None
        centre = landmarks.mean(axis=0)
        height = float(np.hypot(*(landmarks[3] - (landmarks[0] + landmarks[1]) / 2)))
        if detected and self._last is not None:
            if float(np.hypot(*(centre - self._last[0]))) > IDENTITY_JUMP * max(self._last[1], 1.0):
                self.identity_switches += 1
        self._last = (centre, height)
        self._track = self._next_roi(landmarks, outline)
        if len(found) == 4:
            transform, crop = found[2:]
        else:
            transform = alignment_transform(landmarks, self.size)
            crop = warp_crop(frame, transform, self.size)
        self._previous = (landmarks, crop_signature(crop))
        return FaceResult(crop, landmarks.astype(np.float32), transform, detected, self._score)

    def __enter__(self) -> FaceAligner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
