"""Rendering: one subject's identity, head pose, lighting and the ``FaceRenderer`` that turns AU intensities into a
BGR frame; the per-video pose and lighting trajectories and sensor noise."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from aubench_cli.errors import UsageError, suggest
from aubench_cli.data.synth.aus import AU_SPECS, PAPER_AUS, _paint
from aubench_cli.data.synth.face import (
    BROW_INNER_L,
    BROW_INNER_R,
    BROW_MID_L,
    BROW_MID_R,
    BROW_OUTER_L,
    BROW_OUTER_R,
    FACE_OVAL,
    PATCH_SIZE,
    PATCH_X0,
    PATCH_Y0,
    astronaut_landmarks,
    astronaut_mask,
    astronaut_photo,
    _polygon,
)

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


# How the head moves from frame to frame (``SynthConfig.motion``): "smooth", a continuous wobble (a video at its
# frame rate); "jumpy", a new pose drawn independently for every frame within the same ranges (shot cuts, low frame
# rates, frame-sampled sequences): what tests a face tracker that follows the previous frame.
MOTIONS = ("smooth", "jumpy")


def pose_track(rng: np.random.Generator, n: int, fps: float, motion: str = "smooth") -> list[Pose]:
    """Per-frame head poses of one video: rotation within +-20 degrees, scale 0.85-1.15, shifts within +-8 %
    across and +-6 % down; ``motion="jumpy"`` draws each frame's pose on its own, uniformly in those ranges."""
    if motion not in MOTIONS:
        raise UsageError(f"unknown motion {motion!r}", suggest(motion, MOTIONS))
    if motion == "jumpy":
        values = rng.uniform([-MAX_ANGLE, 0.85, -0.08, -0.06], [MAX_ANGLE, 1.15, 0.08, 0.06], size=(n, 4))
        return [Pose(float(a), float(s), float(x), float(y)) for a, s, x, y in values]
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
