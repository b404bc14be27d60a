"""The Action Units: how each one deforms the face (displacements of its landmarks with Gaussian falloff) and shades
it (wrinkles, folds, shadows), and how often it occurs by default."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from aubench_cli.data.synth.face import (
    ALA_L,
    ALA_R,
    BROW_INNER_L,
    BROW_INNER_R,
    BROW_MID_L,
    BROW_MID_R,
    BROW_OUTER_L,
    BROW_OUTER_R,
    CHEEK_L,
    CHEEK_LOW_L,
    CHEEK_LOW_R,
    CHEEK_R,
    CHIN,
    CORNER_L,
    CORNER_R,
    LID_LOWER_L,
    LID_LOWER_R,
    LID_UPPER_L,
    LID_UPPER_R,
    LOWER_LIP_CENTRE,
    LOWER_LIP_INNER,
    LOWER_LIP_INNER_CENTRE,
    LOWER_LIP_OUTER,
    UPPER_LIP_CENTRE,
    UPPER_LIP_INNER,
    UPPER_LIP_INNER_CENTRE,
    UPPER_LIP_OUTER,
    _polygon,
)

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
