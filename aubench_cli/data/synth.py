"""The embedded default dataset: labelled synthetic AU videos of a real face photo, written in any supported layout.

There is no public AU dataset that can be fetched here, so ``synthesize`` renders one: the astronaut portrait that
scikit-image ships (a public-domain NASA photo), its landmarks found once with MediaPipe FaceMesh, and Action Units
drawn as local, graded deformations of the face (smooth displacement fields applied with ``cv2.remap``, plus
wrinkle and shadow shading) around the landmarks each AU moves. Every synthetic subject gets its own face shape,
skin and hair tone and background; every frame its own in-plane head pose, lighting and sensor noise. Labels come
from AU episodes (onset, apex, offset) with per-AU base rates from rare to common, AU06 riding on AU12, and a few
unknown stretches. The result is a test fixture and a demo, never a substitute for real data. The pieces are
usable on their own: ``astronaut_landmarks`` (the photo's 478 FaceMesh points), ``generate_labels`` (labels
without rendering), ``FaceRenderer`` / ``render_frame`` (one frame from AU intensities).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from aubench_cli.errors import AubenchError, UsageError, suggest

Progress = Callable[[int, int], None]

# ---------------------------------------------------------------------------------------------------------------
# The photo and its landmarks
# ---------------------------------------------------------------------------------------------------------------

# The head-and-shoulders region of the 512x512 astronaut photo that becomes the synthetic head (x0, y0, size).
PATCH_X0, PATCH_Y0, PATCH_SIZE = 95, 0, 260


@functools.lru_cache(maxsize=1)
def astronaut_photo() -> np.ndarray:
    """The astronaut portrait as a read-only BGR uint8 array (512x512)."""
    import skimage.data

    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    image.setflags(write=False)
    return image


@functools.lru_cache(maxsize=1)
def astronaut_landmarks() -> np.ndarray:
    """The 478 MediaPipe FaceMesh landmarks of the astronaut photo, as (x, y) pixel coordinates (float32, read-only).

    FaceMesh runs once per process. Coordinates are rounded to 1/64 px so that tiny run-to-run differences of the
    detector do not leak into the rendered frames.
    """
    import mediapipe as mp

    from aubench_cli.data.align import quiet_native_stderr

    rgb = cv2.cvtColor(astronaut_photo(), cv2.COLOR_BGR2RGB)
    with quiet_native_stderr(), mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                                refine_landmarks=True) as mesh:
        result = mesh.process(rgb)
    if not result.multi_face_landmarks:
        raise AubenchError(
            "MediaPipe FaceMesh found no face in the astronaut photo, so no synthetic face can be rendered",
            "check that mediapipe==0.10.21 (which bundles its models) is installed intact",
        )
    h, w = rgb.shape[:2]
    points = np.array([[p.x * w, p.y * h] for p in result.multi_face_landmarks[0].landmark], dtype=np.float32)
    points = np.round(points * 64) / 64
    points.setflags(write=False)
    return points


@functools.lru_cache(maxsize=1)
def astronaut_mask() -> np.ndarray:
    """Soft foreground mask (float32 0..1) of the person in the head patch, from GrabCut, feathered and faded out
    at the bottom so that the cut-off shoulders blend into the background."""
    patch = astronaut_photo()[PATCH_Y0 : PATCH_Y0 + PATCH_SIZE, PATCH_X0 : PATCH_X0 + PATCH_SIZE]
    labels = np.zeros(patch.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's GMM init draws from OpenCV's global RNG; fix it so the mask is reproducible
    cv2.grabCut(patch, labels, (35, 2, 200, PATCH_SIZE - 2), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    mask = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    # The face itself must never be cut by a GrabCut mistake.
    oval = _polygon(astronaut_landmarks()[FACE_OVAL] - (PATCH_X0, PATCH_Y0))
    cv2.fillPoly(mask, [oval], 1.0, lineType=cv2.LINE_AA, shift=4)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.2)
    fade = np.clip((PATCH_SIZE - 1 - np.arange(PATCH_SIZE)) / 40.0, 0, 1).astype(np.float32)
    mask *= fade[:, None]
    mask.setflags(write=False)
    return mask


def _polygon(points: np.ndarray) -> np.ndarray:
    """Float points as the fixed-point int32 polygon OpenCV draws with ``shift=4`` (sub-pixel accuracy)."""
    return np.round(np.asarray(points, np.float64) * 16).astype(np.int32).reshape(-1, 1, 2)


# MediaPipe FaceMesh indices. "L" / "R" are image left / right (the subject's right / left).
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
BROW_INNER_L, BROW_INNER_R = [107, 55, 66, 65], [336, 285, 296, 295]
BROW_OUTER_L, BROW_OUTER_R = [70, 46, 63, 53], [300, 276, 293, 283]
BROW_MID_L, BROW_MID_R = [105, 52], [334, 282]
LID_UPPER_L, LID_UPPER_R = [161, 160, 159, 158, 157], [388, 387, 386, 385, 384]
LID_LOWER_L, LID_LOWER_R = [163, 144, 145, 153, 154], [390, 373, 374, 380, 381]
CHEEK_L, CHEEK_R = [117, 118, 50, 101, 123], [346, 347, 280, 330, 352]
# The cheek below the lid: AU06 raises it without lifting the lower lids, which would look like AU07.
CHEEK_LOW_L, CHEEK_LOW_R = [50, 101, 205, 187], [280, 330, 425, 411]
ALA_L, ALA_R = [129, 98, 64, 48], [358, 327, 294, 278]
CORNER_L, CORNER_R = [61, 78], [291, 308]
UPPER_LIP_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_LIP_OUTER = [291, 375, 321, 405, 314, 17, 84, 181, 91, 146, 61]
UPPER_LIP_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_LIP_INNER = [308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78]
UPPER_LIP_CENTRE = [0, 37, 267, 39, 269]
UPPER_LIP_INNER_CENTRE = [13, 82, 312, 81, 311]
LOWER_LIP_CENTRE = [17, 84, 314, 181, 405]
LOWER_LIP_INNER_CENTRE = [14, 87, 317, 178, 402]
CHIN = [152, 175, 199, 200, 18, 148, 176, 377, 400]

# ---------------------------------------------------------------------------------------------------------------
# The Action Units: how each deforms the face, and how often it occurs
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """Landmarks that travel together by (dx, dy) astronaut pixels at intensity 5, with Gaussian falloff sigma.

    ``dx`` is outward (away from the face midline): it is negated for the image-left points so that one Move
    describes a symmetric pair. ``centre`` points (on the midline) move by (0, dy) only.
    """

    left: tuple[int, ...] = ()
    right: tuple[int, ...] = ()
    dx: float = 0.0
    dy: float = 0.0
    sigma: float = 5.0
    centre: tuple[int, ...] = ()


@dataclass(frozen=True)
class AUSpec:
    """One renderable Action Unit: FACS name, its moves, the shading painters it drives, its default base rate
    (fraction of frames with intensity >= 2), and an optional driver AU it co-occurs with."""

    name: str
    title: str
    moves: tuple[Move, ...]
    shades: tuple[tuple[str, float], ...]
    rate: float
    driver: str | None = None
    coupling: float = 0.0


def _m(left=(), right=(), dx=0.0, dy=0.0, sigma=5.0, centre=()) -> Move:
    return Move(tuple(left), tuple(right), dx, dy, sigma, tuple(centre))


# Displacements are in astronaut pixels at intensity 5; there the outer eye corners are 60 px apart and the
# brows-to-chin height is 87 px, about what the preprocessor's 96x96 crop keeps. They are large enough to read at
# 96x96 grayscale (several pixels) yet smaller than the head-pose and identity variation the net must ignore.
AU_SPECS: dict[str, AUSpec] = {
    spec.name: spec
    for spec in [
        AUSpec("AU01", "inner brow raiser", (_m(BROW_INNER_L, BROW_INNER_R, dy=-5.5, sigma=6.0),),
               (("forehead_centre", 0.4),), rate=0.15),
        AUSpec("AU02", "outer brow raiser", (_m(BROW_OUTER_L, BROW_OUTER_R, dy=-5.0, sigma=6.0),),
               (("forehead_sides", 0.3),), rate=0.12, driver="AU01", coupling=0.5),
        AUSpec("AU04", "brow lowerer",
               (_m(BROW_INNER_L, BROW_INNER_R, dx=-3.5, dy=4.0, sigma=6.0),
                _m(BROW_MID_L + BROW_OUTER_L, BROW_MID_R + BROW_OUTER_R, dy=3.0, sigma=6.0)),
               (("glabella", 0.35), ("brow_shadow", 0.15)), rate=0.10),
        AUSpec("AU05", "upper lid raiser", (_m(LID_UPPER_L, LID_UPPER_R, dy=-2.2, sigma=3.0),),
               (("eye_white", -0.15),), rate=0.05),
        AUSpec("AU06", "cheek raiser",
               (_m(CHEEK_LOW_L, CHEEK_LOW_R, dy=-6.0, sigma=6.5),),
               (("crows_feet", 0.6), ("under_eye", 0.4), ("cheek_highlight", -0.15)), rate=0.30,
               driver="AU12", coupling=0.6),
        AUSpec("AU07", "lid tightener",
               (_m(LID_LOWER_L, LID_LOWER_R, dy=-4.0, sigma=3.5), _m(LID_UPPER_L, LID_UPPER_R, dy=2.0, sigma=3.0)),
               (("lower_lid", 0.5),), rate=0.20),
        AUSpec("AU09", "nose wrinkler",
               (_m(ALA_L, ALA_R, dx=0.5, dy=-4.5, sigma=5.0), _m(centre=[6, 197, 195], dy=-2.0, sigma=4.0),
                _m(centre=UPPER_LIP_CENTRE, dy=-2.5, sigma=5.0)),
               (("nose_wrinkles", 0.7), ("nasolabial", 0.35)), rate=0.05),
        AUSpec("AU10", "upper lip raiser",
               (_m(centre=UPPER_LIP_CENTRE + UPPER_LIP_INNER_CENTRE, dy=-3.0, sigma=5.0),
                _m([40, 80], [270, 310], dy=-2.0, sigma=4.0)),
               (("nasolabial", 0.3),), rate=0.15),
        AUSpec("AU12", "lip corner puller", (_m(CORNER_L, CORNER_R, dx=3.5, dy=-5.0, sigma=7.0),
                                              _m([205, 187, 50], [425, 411, 280], dy=-1.2, sigma=6.0)),
               (("nasolabial", 0.3),), rate=0.40),
        AUSpec("AU15", "lip corner depressor", (_m(CORNER_L, CORNER_R, dx=0.5, dy=5.0, sigma=6.0),),
               (("marionette", 0.3),), rate=0.06),
        AUSpec("AU17", "chin raiser",
               (_m(centre=CHIN, dy=-4.0, sigma=8.0), _m(centre=LOWER_LIP_CENTRE + LOWER_LIP_INNER_CENTRE, dy=-2.0,
                                                         sigma=4.0)),
               (("chin_dimple", 0.15), ("mentolabial", 0.3)), rate=0.15),
        AUSpec("AU20", "lip stretcher", (_m(CORNER_L, CORNER_R, dx=4.0, dy=1.0, sigma=6.0),),
               (("lip_corner_fold", 0.25),), rate=0.04),
        AUSpec("AU23", "lip tightener",
               (_m(CORNER_L, CORNER_R, dx=-2.0, sigma=5.0), _m(centre=UPPER_LIP_CENTRE, dy=1.2, sigma=3.0),
                _m(centre=LOWER_LIP_CENTRE, dy=-1.2, sigma=3.0)),
               (("lip_border", 0.3),), rate=0.08),
        AUSpec("AU24", "lip pressor",
               (_m(centre=UPPER_LIP_CENTRE, dy=3.0, sigma=4.0), _m(centre=LOWER_LIP_CENTRE, dy=-3.5, sigma=4.0),
                _m(centre=UPPER_LIP_INNER_CENTRE, dy=2.5, sigma=3.0),
                _m(centre=LOWER_LIP_INNER_CENTRE, dy=-2.5, sigma=3.0)),
               (("lip_line", 0.6), ("lip_border", 0.2)), rate=0.06),
        AUSpec("AU25", "lips part",
               (_m(centre=LOWER_LIP_CENTRE + LOWER_LIP_INNER_CENTRE, dy=3.0, sigma=5.0),
                _m(centre=UPPER_LIP_INNER_CENTRE, dy=-1.0, sigma=3.0)),
               (("mouth_opening", 0.5),), rate=0.35),
        AUSpec("AU26", "jaw drop",
               (_m(centre=CHIN, dy=5.0, sigma=12.0), _m(centre=LOWER_LIP_CENTRE + LOWER_LIP_INNER_CENTRE, dy=3.5,
                                                          sigma=6.0)),
               (("mouth_opening", 0.45),), rate=0.15, driver="AU25", coupling=0.4),
        AUSpec("AU28", "lip suck",
               (_m(centre=UPPER_LIP_CENTRE, dy=3.0, sigma=4.0), _m(centre=LOWER_LIP_CENTRE, dy=-3.5, sigma=4.0),
                _m(CORNER_L, CORNER_R, dx=-1.5, sigma=4.0)),
               (("lips_hidden", -0.3), ("lip_line", 0.4)), rate=0.03),
    ]
}

# The paper's 12 AUs (Table I), the default for the generic layout.
PAPER_AUS = ["AU01", "AU02", "AU04", "AU06", "AU07", "AU09", "AU12", "AU15", "AU17", "AU24", "AU25", "AU28"]

# ---------------------------------------------------------------------------------------------------------------
# Shading painters: wrinkles, folds and shadows, in working-patch pixels. Positive darkens, negative brightens.
# ---------------------------------------------------------------------------------------------------------------


def _curve(a, b, bulge: float, n: int = 12) -> np.ndarray:
    """A quadratic curve from a to b whose middle is pushed sideways by ``bulge`` (same units as a and b)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = b - a
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    c = (a + b) / 2 + bulge * normal
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b


class _Canvas:
    """A float canvas over the working patch on which painters draw anti-aliased strokes and filled regions."""

    def __init__(self, size: int, k: float):
        self.k = k
        self.img = np.zeros((size, size), np.uint8)

    def line(self, points, strength: float = 1.0) -> None:
        # One-pixel strokes softened by the blur in ``result``: a fold, not a drawn marker line.
        value = int(round(255 * strength))
        cv2.polylines(self.img, [_polygon(points)], False, value, 1, cv2.LINE_AA, shift=4)

    def fill(self, points) -> None:
        cv2.fillPoly(self.img, [_polygon(points)], 255, cv2.LINE_AA, shift=4)

    def result(self, blur: float) -> np.ndarray:
        out = self.img.astype(np.float32) / 255.0
        return cv2.GaussianBlur(out, (0, 0), max(0.3, blur * self.k))


def _paint(name: str, lm: np.ndarray, k: float, size: int) -> np.ndarray:
    """One shading map (0..1) named ``name`` for landmarks ``lm`` (working-patch pixels, scale k per astronaut px)."""
    c = _Canvas(size, k)
    p = lambda i: lm[i]  # noqa: E731 - a short alias keeps the geometry below readable
    u = k  # one astronaut pixel in working pixels
    mid_x = (p(168)[0] + p(9)[0]) / 2
    blur = 0.6
    if name == "forehead_centre":
        top = min(p(107)[1], p(336)[1])
        for j in range(3):
            y = top - (5 + 4 * j) * u
            c.line(_curve((mid_x - (11 - j) * u, y + 1.0 * u), (mid_x + (11 - j) * u, y + 1.0 * u), -1.5 * u))
    elif name == "forehead_sides":
        for outer, middle in ((70, 105), (300, 334)):
            for j in range(2):
                lift = (6 + 4 * j) * u
                a, b = p(outer) - (0, lift), p(middle) - (0, lift + 1 * u)
                c.line(_curve(a, b, 1.5 * u * (1 if outer == 300 else -1)))
    elif name == "glabella":
        y0 = (p(55)[1] + p(285)[1]) / 2
        for s in (-1, 1):
            c.line(_curve((mid_x + s * 2.8 * u, y0 - 6 * u), (mid_x + s * 1.8 * u, y0 + 3 * u), s * 0.7 * u), 0.9)
        blur = 0.8
    elif name == "brow_shadow":
        for idx in (LID_UPPER_L, LID_UPPER_R):
            c.fill(np.vstack([lm[idx], lm[idx[::-1]] - (0, 4 * u)]))
        blur = 2.0
    elif name == "eye_white":
        for idx in (LID_UPPER_L, LID_UPPER_R):
            c.fill(np.vstack([lm[idx] + (0, 0.5 * u), lm[idx[::-1]] + (0, 2.5 * u)]))
        blur = 1.0
    elif name == "crows_feet":
        for corner, out in ((33, -1), (263, 1)):
            start = p(corner) + (out * 2.5 * u, 0)
            for ang in (-30, 0, 30):
                r = math.radians(ang)
                end = start + (out * 7 * u * math.cos(r), 7 * u * math.sin(r))
                c.line(_curve(start, end, 0.8 * u))
    elif name == "under_eye":
        for idx in (LID_LOWER_L, LID_LOWER_R):
            c.line(lm[idx] + (0, 3.5 * u))
    elif name == "cheek_highlight":
        for idx in (CHEEK_L, CHEEK_R):
            cx, cy = lm[idx].mean(axis=0)
            cv2.ellipse(c.img, (int(cx), int(cy)), (int(6 * u), int(4 * u)), 0, 0, 360, 255, -1, cv2.LINE_AA)
        blur = 3.0
    elif name == "lower_lid":
        for idx in (LID_LOWER_L, LID_LOWER_R):
            c.line(lm[idx] + (0, 1.8 * u))
    elif name == "nose_wrinkles":
        y0, y1 = p(168)[1], p(6)[1]
        x = (p(168)[0] + p(6)[0]) / 2
        for j, y in enumerate((y0 - 2 * u, (y0 + y1) / 2 + 0.5 * u, y1 + 3 * u)):
            half = (4 + j) * u
            c.line(_curve((x - half, y + 0.8 * u), (x + half, y + 0.8 * u), -1.0 * u), 0.8)
        for s in (-1, 1):  # the diagonal "bunny lines" on the sides of the nose
            c.line(_curve((x + s * 3 * u, y1 + 1 * u), (x + s * 7 * u, y1 + 7 * u), s * 0.8 * u), 0.7)
    elif name == "nasolabial":
        for ala, corner, out in ((129, 61, -1), (358, 291, 1)):
            a = p(ala) + (out * 2 * u, -1 * u)
            b = p(corner) + (out * 3 * u, 1 * u)
            c.line(_curve(a, b, out * 2 * u * (1 if out < 0 else -1)))
        blur = 1.0
    elif name == "marionette":
        for corner, out in ((61, -1), (291, 1)):
            a = p(corner) + (out * 1 * u, 2 * u)
            c.line(_curve(a, a + (out * 2.0 * u, 8 * u), out * 1.0 * u))
        blur = 1.0
    elif name == "chin_dimple":
        cx, cy = (p(200) + p(199)) / 2
        rng = np.random.default_rng(17)  # a fixed skin texture, the same for every subject and run
        tex = rng.random((size, size)).astype(np.float32)
        tex = cv2.GaussianBlur(tex, (0, 0), 0.9 * u)
        tex = (tex - tex.mean()) / (tex.std() + 1e-6)
        cv2.ellipse(c.img, (int(cx), int(cy)), (int(12 * u), int(7 * u)), 0, 0, 360, 255, -1, cv2.LINE_AA)
        region = cv2.GaussianBlur(c.img.astype(np.float32) / 255.0, (0, 0), 2 * u)
        # Zero-mean bumps: the chin gets a dimpled texture, not a darker patch.
        return np.clip(0.6 * tex, -1, 1) * region
    elif name == "mentolabial":
        y = p(17)[1] + 4 * u
        c.line(_curve((p(17)[0] - 8 * u, y), (p(17)[0] + 8 * u, y), -1.5 * u))
        blur = 0.9
    elif name == "lip_corner_fold":
        for corner, out in ((61, -1), (291, 1)):
            a = p(corner) + (out * 3 * u, -3 * u)
            c.line([a, a + (0, 6 * u)])
    elif name == "lip_border":
        c.line(lm[UPPER_LIP_OUTER])
        c.line(lm[LOWER_LIP_OUTER])
    elif name == "lip_line":
        c.line((lm[UPPER_LIP_INNER] + lm[LOWER_LIP_INNER[::-1]]) / 2)
        blur = 0.8
    elif name == "mouth_opening":
        lower = lm[LOWER_LIP_INNER].copy()
        lower[1:-1, 1] += 2.0 * u  # the opening reaches into where the lower lip moves when the lips part
        c.fill(np.vstack([lm[UPPER_LIP_INNER], lower]))
        blur = 1.2
    elif name == "lips_hidden":
        c.fill(np.vstack([lm[UPPER_LIP_OUTER], lm[LOWER_LIP_OUTER]]))
        blur = 1.5
    else:  # pragma: no cover - guarded by the AU table
        raise KeyError(name)
    return c.result(blur)


# ---------------------------------------------------------------------------------------------------------------
# Identity and per-frame conditions
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """One synthetic subject: face shape warp (astronaut px), skin and hair tone, and background."""

    face_width: float = 0.0  # relative widening of the face around its centre
    face_height: float = 0.0  # relative lengthening
    jaw_width: float = 0.0  # relative widening of the lower face only
    eye_spacing: float = 0.0  # px each eye moves outward
    nose_length: float = 0.0  # px the nose tip moves down
    mouth_width: float = 0.0  # px each mouth corner moves outward
    brow_height: float = 0.0  # px the brows move up
    skin_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # BGR
    hair_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    background: tuple[int, int, int] = (150, 150, 150)  # BGR
    background_texture: float = 0.0  # amplitude of the low-frequency texture
    background_stripes: float = 0.0  # amplitude of a diagonal stripe pattern (a wall, curtains)
    background_seed: int = 0

    @classmethod
    def random(cls, rng: np.random.Generator) -> Identity:
        tone = rng.uniform(0.6, 1.15)  # darker to lighter skin
        warmth = rng.uniform(-0.08, 0.08)
        hair = rng.uniform(0.35, 1.3)
        hue = rng.uniform(-0.15, 0.15)
        bg = rng.uniform(40, 220, size=3)
        return cls(
            face_width=float(rng.uniform(-0.08, 0.08)),
            face_height=float(rng.uniform(-0.06, 0.06)),
            jaw_width=float(rng.uniform(-0.08, 0.08)),
            eye_spacing=float(rng.uniform(-2.0, 2.0)),
            nose_length=float(rng.uniform(-2.0, 2.0)),
            mouth_width=float(rng.uniform(-2.0, 2.0)),
            brow_height=float(rng.uniform(-2.0, 2.0)),
            skin_gain=(tone * (1 - warmth), tone, tone * (1 + warmth)),
            hair_gain=(hair * (1 - hue), hair, hair * (1 + hue)),
            gamma=float(rng.uniform(0.85, 1.15)),
            background=(int(bg[0]), int(bg[1]), int(bg[2])),
            background_texture=float(rng.uniform(5, 35)),
            background_stripes=float(rng.choice([0.0, rng.uniform(8, 25)])),
            background_seed=int(rng.integers(2**31)),
        )


@dataclass(frozen=True)
class Pose:
    """In-plane head pose of one frame: rotation (degrees, positive = counter-clockwise on screen), scale relative
    to the video's base head size, and shift of the face centre as a fraction of the frame width / height."""

    angle: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0


@dataclass(frozen=True)
class Lighting:
    """Lighting of one frame: overall gain on the head and a left-right gradient (relative change at the edge)."""

    gain: float = 1.0
    slope: float = 0.0


# Strength of a deformation is (intensity / 5) ** STRENGTH_GAMMA: slightly concave, so that the weakest present
# level (2) shows half the full change rather than 40 %, which keeps it learnable at 96x96.
STRENGTH_GAMMA = 0.8

# How much of the frame height the face (forehead top to chin) fills at pose scale 1.
FACE_HEIGHT_FRACTION = 0.40


def _soft_union(weights: Iterable[np.ndarray]) -> np.ndarray:
    """1 - prod(1 - w): overlapping Gaussians of one Move combine smoothly without exceeding 1."""
    acc = None
    for w in weights:
        acc = 1 - w if acc is None else acc * (1 - w)
    return 1 - acc


class FaceRenderer:
    """Renders frames of one subject at one frame size: AU intensities + pose + lighting -> BGR uint8 frame.

    Everything that does not change per frame is precomputed here: the identity-warped, recoloured head patch at
    a working scale close to the output scale, its mask, and for each AU a displacement field and a shading map
    limited to the face region. A frame then costs one weighted sum of the active AUs' fields, one ``remap`` of
    the face region, one ``warpAffine`` of the head into the frame, and a blend.
    """

    def __init__(self, aus: Sequence[str], size: tuple[int, int] = (640, 480), identity: Identity | None = None):
        unknown = [a for a in aus if a not in AU_SPECS]
        if unknown:
            raise UsageError(f"cannot render {unknown[0]!r}", suggest(unknown[0], AU_SPECS))
        self.aus = list(aus)
        self.width, self.height = size
        self.identity = identity or Identity()
        lm0 = astronaut_landmarks()
        face_height = float(lm0[152, 1] - lm0[10, 1])
        # Output pixels per astronaut pixel at pose scale 1; the working patch uses about that resolution so the
        # final warp neither blurs (upsampling a small patch) nor aliases (shrinking a big one) much.
        self.base_scale = FACE_HEIGHT_FRACTION * min(self.height, self.width * 0.75) / face_height
        self.k = float(np.clip(self.base_scale, 0.5, 3.0))
        self._build()

    # -- precomputation ------------------------------------------------------------------------------------------

    def _build(self) -> None:
        k, ident = self.k, self.identity
        size = int(round(PATCH_SIZE * k))
        self.patch_size = size
        lm0 = ((astronaut_landmarks() - (PATCH_X0, PATCH_Y0)) * k).astype(np.float32)
        source = cv2.resize(
            np.ascontiguousarray(astronaut_photo()[PATCH_Y0 : PATCH_Y0 + PATCH_SIZE, PATCH_X0 : PATCH_X0 + PATCH_SIZE]),
            (size, size), interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)
        mask = cv2.resize(astronaut_mask(), (size, size), interpolation=cv2.INTER_LINEAR)

        # Identity warp: a forward displacement field built from global and local terms.
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        centre = lm0[[33, 263, 152, 10]].mean(axis=0)
        half_w = (lm0[454, 0] - lm0[234, 0]) / 2
        half_h = (lm0[152, 1] - lm0[10, 1]) / 2
        face_window = np.exp(-(((xs - centre[0]) / (1.6 * half_w)) ** 2 + ((ys - centre[1]) / (1.4 * half_h)) ** 2))
        lower = np.clip((ys - lm0[1, 1]) / (lm0[152, 1] - lm0[1, 1]), 0, 1)
        dx = ((ident.face_width + ident.jaw_width * lower) * (xs - centre[0]) * face_window).astype(np.float32)
        dy = (ident.face_height * (ys - centre[1]) * face_window).astype(np.float32)
        local = [
            (BROW_INNER_L + BROW_OUTER_L + BROW_MID_L, -ident.eye_spacing * 0.5, -ident.brow_height, 7.0),
            (BROW_INNER_R + BROW_OUTER_R + BROW_MID_R, ident.eye_spacing * 0.5, -ident.brow_height, 7.0),
            ([33, 133, 159, 145], -ident.eye_spacing, 0.0, 6.0),
            ([263, 362, 386, 374], ident.eye_spacing, 0.0, 6.0),
            ([1, 4, 5], 0.0, ident.nose_length, 6.0),
            ([61], -ident.mouth_width, 0.0, 6.0),
            ([291], ident.mouth_width, 0.0, 6.0),
        ]
        for idx, ddx, ddy, sigma in local:
            w = _soft_union(self._gauss(xs, ys, lm0[i], sigma * k) for i in idx)
            dx += ddx * k * w
            dy += ddy * k * w
        # Backward map for a small forward displacement: sample the source at x - D(x).
        map_x, map_y = xs - dx, ys - dy
        warped = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        self.alpha = cv2.remap(mask, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        lmx, lmy = np.ascontiguousarray(lm0[:, :1]), np.ascontiguousarray(lm0[:, 1:])
        lm = lm0 + np.stack([cv2.remap(dx, lmx, lmy, cv2.INTER_LINEAR).ravel(),
                             cv2.remap(dy, lmx, lmy, cv2.INTER_LINEAR).ravel()], axis=1)
        self.landmarks_patch = lm.astype(np.float32)

        # Skin and hair tone: separate gains inside and outside the (feathered) face oval, then gamma.
        oval = np.zeros((size, size), np.float32)
        cv2.fillPoly(oval, [_polygon(lm[FACE_OVAL])], 1.0, cv2.LINE_AA, shift=4)
        # The neck is skin too: a band from the jaw corners down to the bottom of the patch.
        neck = np.array([lm[172], lm[397], (lm[397][0], size), (lm[172][0], size)])
        cv2.fillPoly(oval, [_polygon(neck)], 1.0, cv2.LINE_AA, shift=4)
        oval = cv2.GaussianBlur(oval, (0, 0), 4 * k)[..., None]
        gain = oval * np.array(ident.skin_gain, np.float32) + (1 - oval) * np.array(ident.hair_gain, np.float32)
        toned = np.clip(warped.astype(np.float32) / 255.0 * gain, 0, 1) ** ident.gamma * 255.0
        self.head = np.round(toned).astype(np.uint8)

        # The face region that AUs may touch: landmark box plus a margin that holds the widest falloff.
        margin = 30 * k
        x0, y0 = np.floor(lm.min(axis=0) - margin).astype(int)
        x1, y1 = np.ceil(lm.max(axis=0) + margin).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        self.roi = (slice(y0, y1), slice(x0, x1))
        rys, rxs = ys[self.roi], xs[self.roi]
        rh, rw = rys.shape
        # A taper to zero at the region's border keeps the warped face region continuous with the rest.
        ty = np.minimum(np.arange(rh), np.arange(rh)[::-1]) / (8 * k)
        tx = np.minimum(np.arange(rw), np.arange(rw)[::-1]) / (8 * k)
        taper = (np.clip(ty, 0, 1)[:, None] * np.clip(tx, 0, 1)[None, :]).astype(np.float32)

        n = len(self.aus)
        self.fields = np.zeros((n, 2, rh, rw), np.float32)
        self.shades = np.zeros((n, rh, rw), np.float32)
        shade_cache: dict[str, np.ndarray] = {}
        for a, name in enumerate(self.aus):
            spec = AU_SPECS[name]
            for move in spec.moves:
                sides = [(move.left, -1.0), (move.right, 1.0), (move.centre, 0.0)]
                for idx, sign in sides:
                    if not idx:
                        continue
                    w = _soft_union(self._gauss(rxs, rys, lm[i], move.sigma * k) for i in idx)
                    self.fields[a, 0] += (move.dx * sign) * k * w
                    self.fields[a, 1] += move.dy * k * w
            self.fields[a] *= taper
            for shade, amount in spec.shades:
                if shade not in shade_cache:
                    shade_cache[shade] = _paint(shade, lm, k, size)[self.roi]
                self.shades[a] += amount * shade_cache[shade]
        # Each AU keeps only the box where it changes anything: a frame then touches a fraction of the region.
        self.au_boxes, self.au_fields, self.au_shades = [], [], []
        for a in range(n):
            touched = (np.abs(self.fields[a]).max(axis=0) > 0.01) | (np.abs(self.shades[a]) > 1e-3)
            rows, cols = np.flatnonzero(touched.any(axis=1)), np.flatnonzero(touched.any(axis=0))
            box = ((slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)) if rows.size
                   else (slice(0, 0), slice(0, 0)))
            self.au_boxes.append(box)
            self.au_fields.append(np.ascontiguousarray(self.fields[a][(slice(None), *box)]))
            self.au_shades.append(np.ascontiguousarray(self.shades[a][box]))
        self.grid_x, self.grid_y = rxs.copy(), rys.copy()
        # Left-right lighting ramp over the head, -1 at the left edge of the face to +1 at the right.
        self.ramp = np.clip((xs - centre[0]) / half_w, -1.5, 1.5).astype(np.float32)
        self.patch_centre = centre.astype(np.float64)

    @staticmethod
    def _gauss(xs: np.ndarray, ys: np.ndarray, point: np.ndarray, sigma: float) -> np.ndarray:
        return np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * sigma * sigma)).astype(np.float32)

    # -- per frame -----------------------------------------------------------------------------------------------

    def affine(self, pose: Pose = Pose()) -> np.ndarray:
        """The 2x3 matrix taking working-patch pixels to frame pixels for ``pose``."""
        s = pose.scale * self.base_scale / self.k
        a = math.radians(pose.angle)
        ca, sa = s * math.cos(a), s * math.sin(a)
        # Rotate and scale about the face centre, then put that centre at its place in the frame.
        target = (self.width * (0.5 + pose.dx), self.height * (0.47 + pose.dy))
        cx, cy = self.patch_centre
        return np.array([[ca, sa, target[0] - ca * cx - sa * cy],
                         [-sa, ca, target[1] + sa * cx - ca * cy]], np.float64)

    def landmarks(self, pose: Pose = Pose()) -> np.ndarray:
        """The subject's neutral 478 landmarks in frame pixels under ``pose`` (useful to check where AUs act)."""
        m = self.affine(pose)
        return (self.landmarks_patch @ m[:, :2].T + m[:, 2]).astype(np.float32)

    def render_head(self, intensities: np.ndarray, lighting: Lighting = Lighting()) -> np.ndarray:
        """The working head patch (BGR uint8) with AU intensities (0..5, one per AU, in ``self.aus`` order) and
        lighting applied."""
        a = (np.clip(np.asarray(intensities, np.float32), 0, 5) / 5.0) ** STRENGTH_GAMMA
        if a.shape != (len(self.aus),):
            raise ValueError(f"expected {len(self.aus)} intensities, got shape {a.shape}")
        active = np.flatnonzero(a > 1e-3)
        lit = lighting.gain != 1.0 or lighting.slope != 0.0
        patch, factor = self.head, None
        if active.size:
            disp = np.zeros((2, *self.grid_x.shape), np.float32)
            factor = np.ones(self.grid_x.shape, np.float32)
            for k in active:
                box = self.au_boxes[k]
                disp[(slice(None), *box)] += a[k] * self.au_fields[k]
                factor[box] -= a[k] * self.au_shades[k]
            patch = self.head.copy()
            patch[self.roi] = cv2.remap(self.head, self.grid_x - disp[0], self.grid_y - disp[1], cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT)
        if not lit and factor is None:
            return patch
        # Multiplying in uint8 with a fixed-point factor (1/128 steps) is several times faster than float maths.
        if lit:
            light = lighting.gain * (1.0 + lighting.slope * self.ramp)
            if factor is not None:
                light[self.roi] *= factor
            target, region = patch, light
        else:
            target, region = patch[self.roi], factor
        scaled = np.clip(region * 128.0, 0, 255).astype(np.uint8)
        out = cv2.multiply(np.ascontiguousarray(target), cv2.merge([scaled, scaled, scaled]), scale=1 / 128)
        if lit:
            return out
        patch[self.roi] = out
        return patch

    def render(self, intensities: np.ndarray, pose: Pose = Pose(), lighting: Lighting = Lighting(),
               background: np.ndarray | None = None, noise: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """One BGR uint8 frame: head with AUs, posed over ``background`` (frame-sized uint8; the subject's flat
        colour if None), plus sensor ``noise`` given as (positive part, negative part) uint8 frames."""
        head = self.render_head(intensities, lighting)
        m = self.affine(pose)
        h, w = self.height, self.width
        # Only the head's bounding box in the frame needs warping and blending.
        corners = np.array([[0, 0], [self.patch_size, 0], [0, self.patch_size], [self.patch_size] * 2], np.float64)
        mapped = corners @ m[:, :2].T + m[:, 2]
        x0, y0 = np.maximum(np.floor(mapped.min(axis=0)).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(mapped.max(axis=0)).astype(int) + 1, (w, h))
        frame = (np.full((h, w, 3), self.identity.background, np.uint8) if background is None
                 else background.copy())
        if x1 > x0 and y1 > y0:
            mb = m.copy()
            mb[:, 2] -= (x0, y0)
            box = (int(x1 - x0), int(y1 - y0))
            fg = cv2.warpAffine(head, mb, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            alpha = cv2.warpAffine(self.alpha, mb, box, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            frame[y0:y1, x0:x1] = cv2.blendLinear(fg, frame[y0:y1, x0:x1], alpha, 1.0 - alpha)
        if noise is not None:
            frame = cv2.subtract(cv2.add(frame, noise[0]), noise[1])
        return frame


def make_background(identity: Identity, size: tuple[int, int]) -> np.ndarray:
    """The subject's background (BGR uint8, frame-sized): a colour, low-frequency blotches and optional stripes."""
    w, h = size
    rng = np.random.default_rng(identity.background_seed)
    coarse = rng.standard_normal((6, 8, 3)).astype(np.float32)
    tex = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * identity.background_texture
    img = np.array(identity.background, np.float32) + tex
    if identity.background_stripes:
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        period = rng.uniform(0.05, 0.15) * w
        stripes = np.sin(2 * np.pi * (xs + 0.5 * ys) / period).astype(np.float32)
        img += identity.background_stripes * stripes[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def render_frame(intensities: Mapping[str, float] | None = None, *, size: tuple[int, int] = (640, 480),
                 identity: Identity | None = None, pose: Pose = Pose(), lighting: Lighting = Lighting(),
                 aus: Sequence[str] = PAPER_AUS) -> np.ndarray:
    """One BGR frame of a subject (neutral identity by default) showing the given AU intensities (name -> 0..5).

    A convenience for tests and notebooks; video generation keeps one ``FaceRenderer`` per video instead.
    """
    intensities = dict(intensities or {})
    unknown = [name for name in intensities if name not in aus]
    if unknown:
        raise UsageError(f"AU {unknown[0]!r} is not among the rendered AUs", suggest(unknown[0], aus))
    renderer = _cached_renderer(tuple(aus), tuple(size), identity or Identity())
    vector = np.array([intensities.get(name, 0.0) for name in aus], np.float32)
    return renderer.render(vector, pose, lighting)


@functools.lru_cache(maxsize=8)
def _cached_renderer(aus: tuple[str, ...], size: tuple[int, int], identity: Identity) -> FaceRenderer:
    return FaceRenderer(aus, size, identity)


# ---------------------------------------------------------------------------------------------------------------
# Labels: AU episodes with onset, apex and offset
# ---------------------------------------------------------------------------------------------------------------

# Intensity at or above which an AU counts as present (the field's convention, and the protocol's default).
PRESENT_AT = 2
# Apex intensity distribution: some episodes stay at a trace (1) and never count as present.
APEX_LEVELS = np.array([1, 2, 3, 4, 5], np.float64)
APEX_PROBS = np.array([0.10, 0.25, 0.25, 0.20, 0.20])


@dataclass(frozen=True)
class Episode:
    start: int
    onset: int
    apex: int
    offset: int
    peak: float

    @property
    def length(self) -> int:
        return self.onset + self.apex + self.offset


def _draw_episode(rng: np.random.Generator, start: int, fps: float) -> Episode:
    # Short episodes (about a second in all): more of them for a given rate means more varied positives.
    ramp_lo = max(2, int(round(0.1 * fps)))
    ramp_hi = max(ramp_lo + 1, int(round(0.3 * fps)))
    apex_mean = max(2.0, 0.4 * fps)
    peak = float(np.clip(rng.choice(APEX_LEVELS, p=APEX_PROBS) + rng.uniform(-0.4, 0.4), 0.6, 5.0))
    return Episode(start, int(rng.integers(ramp_lo, ramp_hi)), int(rng.geometric(1.0 / apex_mean)),
                   int(rng.integers(ramp_lo, ramp_hi)), peak)


def _episode_profile(ep: Episode) -> np.ndarray:
    up = np.arange(1, ep.onset + 1) / (ep.onset + 1)
    down = np.arange(ep.offset, 0, -1) / (ep.offset + 1)
    return ep.peak * np.concatenate([up, np.ones(ep.apex), down])


@functools.lru_cache(maxsize=16)
def _episode_stats(fps: float) -> tuple[float, float]:
    """Mean length and mean number of present frames (intensity rounds to >= PRESENT_AT) of one episode."""
    rng = np.random.default_rng(12345)  # a fixed sample: the statistics must not depend on the run's seed
    lengths, present = [], []
    for _ in range(3000):
        ep = _draw_episode(rng, 0, fps)
        lengths.append(ep.length)
        present.append(int((np.round(_episode_profile(ep)) >= PRESENT_AT).sum()))
    return float(np.mean(lengths)), float(np.mean(present))


def _episodes(n: int, rate: float, rng: np.random.Generator, fps: float) -> list[Episode]:
    """A renewal process of episodes whose long-run fraction of present frames is ``rate``."""
    if rate <= 0 or n <= 0:
        return []
    mean_len, mean_present = _episode_stats(fps)
    mean_gap = max(1.0, mean_present / min(rate, 0.95) - mean_len)
    # Start at a random phase of the cycle so that videos do not all begin in a gap.
    t = -int(rng.integers(0, int(mean_len + mean_gap) + 1))
    out = []
    while True:
        t += int(rng.geometric(1.0 / mean_gap))
        if t >= n:
            return out
        ep = _draw_episode(rng, t, fps)
        if t + ep.length > 0:
            out.append(ep)
        t += ep.length


def _track(n: int, episodes: Iterable[Episode]) -> np.ndarray:
    track = np.zeros(n, np.float32)
    for ep in episodes:
        prof = _episode_profile(ep)
        lo, hi = max(ep.start, 0), min(ep.start + len(prof), n)
        if hi > lo:
            seg = prof[lo - ep.start : hi - ep.start]
            track[lo:hi] = np.maximum(track[lo:hi], seg)
    return track


@dataclass
class Labels:
    """Labels of one video: continuous intensities (frames x AUs, 0..5, what is rendered), integer intensities
    (0..5, what an intensity label file holds), and binary labels (1 / 0, -1 unknown)."""

    aus: list[str]
    intensity: np.ndarray  # float32 (F, K)
    unknown: np.ndarray  # bool (F, K)

    @property
    def level(self) -> np.ndarray:
        return np.round(self.intensity).astype(np.int8)

    @property
    def binary(self) -> np.ndarray:
        out = (self.level >= PRESENT_AT).astype(np.int8)
        out[self.unknown] = -1
        return out


def generate_labels(n_frames: int, aus: Sequence[str], rng: np.random.Generator, *, fps: float = 30.0,
                    rates: Mapping[str, float] | None = None, unknown_share: float = 0.01) -> Labels:
    """Labels of one video of ``n_frames`` frames, without rendering anything.

    Each AU is a renewal process of episodes at its base rate (``AU_SPECS[au].rate`` unless ``rates`` overrides
    it). An AU with a driver (AU06 <- AU12, AU02 <- AU01, AU26 <- AU25) also joins a fraction of the driver's
    episodes, slightly delayed; its independent rate is lowered so that its total rate stays as configured.
    About ``unknown_share`` of the labels are unknown, in stretches of 0.2-1 s placed at random per AU (an
    occluded face or a coder unsure of one AU).
    """
    rates = {name: (rates or {}).get(name, AU_SPECS[name].rate) for name in aus}
    episodes: dict[str, list[Episode]] = {}
    order = sorted(aus, key=lambda name: AU_SPECS[name].driver is not None)  # drivers first
    for name in order:
        spec = AU_SPECS[name]
        rate = rates[name]
        coupled: list[Episode] = []
        if spec.driver in episodes and spec.coupling > 0:
            driver_rate = rates[spec.driver]
            # Joined episodes cover most of the driver's present frames; what is left comes independently.
            joined = min(0.9, spec.coupling * driver_rate * 0.85)
            rate = max((rate - joined) / (1 - joined), rate * 0.15)
            for ep in episodes[spec.driver]:
                if rng.random() < spec.coupling:
                    delay = int(rng.integers(0, ep.onset + 1))
                    peak = float(np.clip(ep.peak + rng.uniform(-1.0, 0.5), 0.6, 5.0))
                    coupled.append(Episode(ep.start + delay, ep.onset, max(1, ep.apex - delay + int(rng.integers(
                        -2, 3))), ep.offset, peak))
        episodes[name] = _episodes(n_frames, rate, rng, fps) + coupled
    intensity = np.stack([_track(n_frames, episodes[name]) for name in aus], axis=1) if aus else np.zeros(
        (n_frames, 0), np.float32)
    unknown = np.zeros_like(intensity, dtype=bool)
    shortest, longest = max(1, int(0.2 * fps)), max(2, int(fps))
    for k in range(len(aus)):
        for _ in range(rng.poisson(unknown_share * n_frames / ((shortest + longest) / 2))):
            length = int(rng.integers(shortest, longest + 1))
            start = int(rng.integers(0, n_frames))
            unknown[start : start + length, k] = True
    return Labels(list(aus), intensity, unknown)


def _ensure_each_au_present(labels: list[Labels], rng: np.random.Generator, fps: float) -> None:
    """Give every AU at least one present episode per subject (in one of its videos).

    At the rare base rates (3-5 %) a short demo dataset would otherwise leave some subjects, and then whole
    subject-exclusive splits, without a single positive of an AU, which balanced batches cannot handle. Over long
    videos this changes nothing: every AU is present anyway.
    """
    for k in range(len(labels[0].aus) if labels else 0):
        if any((lab.binary[:, k] == 1).any() for lab in labels):
            continue
        lab = labels[int(rng.integers(len(labels)))]
        n = lab.intensity.shape[0]
        ep = _draw_episode(rng, 0, fps)
        ep = Episode(int(rng.integers(0, max(1, n - ep.length))), ep.onset, ep.apex, ep.offset,
                     float(rng.uniform(3.0, 5.0)))
        lab.intensity[:, k] = np.maximum(lab.intensity[:, k], _track(n, [ep]))
        lab.unknown[:, k] &= ~(np.round(lab.intensity[:, k]) >= PRESENT_AT)


# ---------------------------------------------------------------------------------------------------------------
# Per-video conditions: pose and lighting trajectories, noise
# ---------------------------------------------------------------------------------------------------------------

MAX_ANGLE = 20.0


def _smooth_signal(rng: np.random.Generator, n: int, fps: float, amplitude: float) -> np.ndarray:
    """A smooth random wobble of roughly +-amplitude: two sinusoids of 0.05-0.4 Hz with random phases."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    for weight in (0.65, 0.35):
        freq = rng.uniform(0.05, 0.4)
        out += weight * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    return amplitude * out


def pose_track(rng: np.random.Generator, n: int, fps: float) -> list[Pose]:
    """Per-frame head poses of one video: rotation within +-20 degrees, scale 0.85-1.15, shifts within +-8 %."""
    angle = np.clip(rng.uniform(-8, 8) + _smooth_signal(rng, n, fps, rng.uniform(3, 14)), -MAX_ANGLE, MAX_ANGLE)
    scale = np.clip(rng.uniform(0.92, 1.08) + _smooth_signal(rng, n, fps, 0.06), 0.85, 1.15)
    dx = np.clip(rng.uniform(-0.04, 0.04) + _smooth_signal(rng, n, fps, 0.04), -0.08, 0.08)
    dy = np.clip(rng.uniform(-0.03, 0.03) + _smooth_signal(rng, n, fps, 0.03), -0.06, 0.06)
    return [Pose(float(a), float(s), float(x), float(y)) for a, s, x, y in zip(angle, scale, dx, dy)]


def lighting_track(rng: np.random.Generator, n: int, fps: float) -> list[Lighting]:
    """Per-frame lighting of one video: gain 0.7-1.25 and a left-right gradient within +-0.3."""
    gain = np.clip(rng.uniform(0.85, 1.1) + _smooth_signal(rng, n, fps, 0.12), 0.7, 1.25)
    slope = np.clip(rng.uniform(-0.2, 0.2) + _smooth_signal(rng, n, fps, 0.1), -0.3, 0.3)
    return [Lighting(float(g), float(s)) for g, s in zip(gain, slope)]


NOISE_SIGMA = 3.0
_NOISE_PAD = 32


def _noise_bank(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Two frames of Gaussian sensor noise, larger than a frame, as (positive part, negative part) uint8 arrays.

    Each frame takes a window at a random offset, which costs nothing, whereas drawing fresh noise per frame
    would cost more than rendering; saturating uint8 add and subtract then apply it cheaply.
    """
    w, h = size
    noise = np.clip(np.round(rng.normal(0, NOISE_SIGMA, (2, h + _NOISE_PAD, w + _NOISE_PAD, 3))), -20, 20)
    return np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8)


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
        for name, rate in self.rates.items():
            if name not in layout.aus:
                raise UsageError(f"rate given for {name!r}, which the {layout.name} layout does not hold",
                                 suggest(name, layout.aus))
            if not 0 <= rate <= 0.9:
                raise UsageError(f"rate of {name} must be between 0 and 0.9, got {rate}")
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


@dataclass
class VideoItem:
    """One video of the dataset: who, where its frames and labels go."""

    subject: str
    name: str
    media: str  # path relative to the dataset root (a video file, or a folder of frames for BP4D)
    labels: list[str]  # label file(s), relative to the root


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


def render_video(config: SynthConfig, subject: int, video: int, labels: Labels,
                 renderer: FaceRenderer | None = None) -> Iterable[np.ndarray]:
    """Yield the frames of one video (BGR uint8) for the given labels' intensities."""
    identity = subject_identity(config.seed, subject)
    size = (config.width, config.height)
    renderer = renderer or FaceRenderer(labels.aus, size, identity)
    rng = _rng(config.seed, _CONDITIONS, subject, video)
    n = labels.intensity.shape[0]
    poses = pose_track(rng, n, config.fps)
    lights = lighting_track(rng, n, config.fps)
    positive, negative = _noise_bank(rng, size)
    offsets = rng.integers(0, _NOISE_PAD, size=(n, 2))
    which = rng.integers(0, len(positive), size=n)
    background = make_background(identity, size)
    h, w = config.height, config.width
    for t in range(n):
        oy, ox = offsets[t]
        noise = (positive[which[t], oy : oy + h, ox : ox + w], negative[which[t], oy : oy + h, ox : ox + w])
        yield renderer.render(labels.intensity[t], poses[t], lights[t], background, noise)


def _check_output(out: Path, overwrite: bool) -> None:
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
    _check_output(root, overwrite)
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
