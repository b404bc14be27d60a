"""The face photo: the astronaut portrait scikit-image ships, its 478 FaceMesh landmarks (found once per process),
the GrabCut mask that cuts the person out of the grey wall, and the FaceMesh indices every deformation is placed by."""

from __future__ import annotations

import functools

import cv2
import numpy as np

from aubench_cli.errors import AubenchError

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
    from aubench_cli.data.mp_import import mediapipe as mp

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
