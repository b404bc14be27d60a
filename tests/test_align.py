"""Alignment: the astronaut photo rotated, scaled and shifted gives the same crop, eyes level, landmarks on the
template; the transform maths on its own; a frame without a face gives nothing; following is cheaper than
detecting and says so."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from aubench_cli.data.align import (
    LANDMARK_IDS,
    CROP_SIZE,
    TEMPLATE,
    FaceAligner,
    alignment_transform,
    apply_transform,
    warp_crop,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def aligner():
    with FaceAligner() as a:
        yield a


def transformed(photo: np.ndarray, angle: float, scale: float = 1.0, size=(640, 480), shift=(0, 0)) -> np.ndarray:
    """The photo turned by ``angle`` degrees and scaled about the face, placed on a canvas of ``size``."""
    face = (224.0, 130.0)
    m = cv2.getRotationMatrix2D(face, angle, scale)
    m[:, 2] += np.array([size[0] / 2 - face[0] + shift[0], size[1] / 2 - face[1] + shift[1]])
    return cv2.warpAffine(photo, m, size, borderMode=cv2.BORDER_REPLICATE)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_transform_recovers_a_known_similarity():
    # landmarks = template pushed through a known similarity; aligning must map them back onto the template
    angle, scale, shift = np.deg2rad(25.0), 3.2, np.array([310.0, 190.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    frame_pts = (TEMPLATE - 48) @ (scale * rot).T + shift
    t = alignment_transform(frame_pts)
    np.testing.assert_allclose(apply_transform(t, frame_pts), TEMPLATE, atol=1e-3)


def test_eyes_level_even_when_nose_and_chin_disagree():
    pts = TEMPLATE.copy() * 2 + 100
    pts[2, 0] += 15  # nose and chin pushed sideways (a turned head)
    pts[3, 0] += 25
    crop_pts = apply_transform(alignment_transform(pts), pts)
    assert abs(crop_pts[0, 1] - crop_pts[1, 1]) < 1e-4


def test_warp_gives_grayscale_uint8_crop(photo):
    t = alignment_transform(np.array([[194.6, 100.9], [256.7, 104.1], [224.1, 131.2], [221.3, 175.5]]))
    crop = warp_crop(photo, t)
    assert crop.shape == (CROP_SIZE, CROP_SIZE) and crop.dtype == np.uint8


def test_landmark_indices_on_the_photo(aligner, photo):
    aligner.reset()
    face = aligner.process(photo)
    assert face is not None and face.detected
    eye_l, eye_r, nose, chin = face.landmarks
    # the photo's outer eye corners, nose tip and chin, measured by hand to within a few pixels
    np.testing.assert_allclose(eye_l, [195, 101], atol=6)
    np.testing.assert_allclose(eye_r, [257, 104], atol=6)
    np.testing.assert_allclose(nose, [224, 131], atol=6)
    np.testing.assert_allclose(chin, [221, 175], atol=6)


@pytest.mark.parametrize(
    "angle,scale,shift", [(20, 1.0, (0, 0)), (-20, 1.0, (0, 0)), (10, 0.6, (120, -60)), (-15, 1.4, (-50, 30))]
)
def test_rotated_and_scaled_faces_give_the_same_crop(aligner, photo, angle, scale, shift):
    aligner.reset()
    upright = aligner.process(transformed(photo, 0))
    aligner.reset()
    turned = aligner.process(transformed(photo, angle, scale, shift=shift))
    assert upright is not None and turned is not None
    pts = apply_transform(turned.transform, turned.landmarks)
    assert abs(pts[0, 1] - pts[1, 1]) < 0.5  # eyes level in the crop
    np.testing.assert_allclose(pts, TEMPLATE, atol=2.5)  # every landmark where the template puts it
    np.testing.assert_allclose(pts, apply_transform(upright.transform, upright.landmarks), atol=1.5)
    assert corr(upright.crop, turned.crop) > 0.95


def test_following_then_losing_the_face(aligner, photo):
    aligner.reset()
    frames = [transformed(photo, a) for a in (0, 3, 6)]
    results = [aligner.process(f) for f in frames]
    assert [r.detected for r in results] == [True, False, False]
    assert aligner.process(np.full((480, 640, 3), 128, np.uint8)) is None
    again = aligner.process(frames[0])
    assert again is not None and again.detected  # lost, so found again by detection


def test_grayscale_frames_work(aligner, photo):
    aligner.reset()
    gray = cv2.cvtColor(transformed(photo, 5), cv2.COLOR_BGR2GRAY)
    face = aligner.process(gray)
    assert face is not None and face.crop.shape == (96, 96)


def test_side_picks_the_left_or_right_face(photo):
    # two people in one frame (Aff-Wild2's video_left / video_right): the smaller face on the right
    left = transformed(photo, 0, 1.0, size=(480, 480))
    right = transformed(photo, 10, 0.8, size=(480, 480))
    frame = np.hstack([left, right])
    with FaceAligner() as aligner:
        found = {}
        for side in ("left", "right"):
            aligner.reset(side=side)
            face = aligner.process(frame)
            assert face is not None
            found[side] = face.landmarks[:, 0].mean()
    assert found["left"] < 480 < found["right"]


# -- filtered downscaling, colour order -------------------------------------------------------------------------


def unfiltered_crop(frame: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The old pipeline: one bilinear warp straight from the frame, gray after."""
    crop = cv2.warpAffine(frame, t, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)


def big_face(photo: np.ndarray, k: int, angle: float = 12.0, noise: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """The photo enlarged k times with sensor-like noise (fine detail a crop must not alias), and the transform of
    its face turned by ``angle`` degrees to the 96x96 crop."""
    big = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    big = np.clip(big + np.random.default_rng(0).normal(0, noise, big.shape), 0, 255).astype(np.uint8)
    lm = np.array([[194.6, 100.9], [256.7, 104.1], [224.1, 131.2], [221.3, 175.5]]) * k
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = (lm - lm.mean(axis=0)) @ rot.T + lm.mean(axis=0)
    return big, alignment_transform(lm).astype(np.float64)


@pytest.mark.parametrize("k", [3, 6])
def test_large_face_crop_is_filtered_then_warped(photo, k):
    from aubench_cli.data.align import antialias_sigma, transform_scale

    frame, t = big_face(photo, k)
    assert transform_scale(t) < 0.25  # the face is 4+ times larger in the frame than in the crop
    # the reference: the whole frame low-passed for the crop's scale, then one bilinear warp
    sigma = antialias_sigma(transform_scale(t))
    reference = unfiltered_crop(cv2.GaussianBlur(frame, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE), t)
    crop = warp_crop(frame, t)
    assert np.abs(crop.astype(float) - reference).mean() <= 1.0
    # and the test can tell: the unfiltered warp is several grey levels off
    assert np.abs(unfiltered_crop(frame, t).astype(float) - reference).mean() > 2.5


def test_crop_gray_uses_bgr_weights(photo):
    # frames are BGR (OpenCV's order): pure blue is dark (0.114), pure red brighter (0.299); an RGB reading swaps them
    for k in (1, 5):  # unfiltered and filtered paths
        _, t = big_face(photo, k)
        for bgr, grey in (((255, 0, 0), 29), ((0, 0, 255), 76), ((0, 255, 0), 150)):
            frame = np.zeros((512 * k, 512 * k, 3), np.uint8)
            frame[:] = bgr
            crop = warp_crop(frame, t)
            assert np.abs(crop.astype(int) - grey).max() <= 1, (k, bgr, crop.mean())


# -- plausibility, identity ----------------------------------------------------------------------------------------


def test_implausible_landmarks_are_named():
    from aubench_cli.data.align import implausible_alignment

    upright = TEMPLATE * 3 + 100
    outline = np.vstack([upright, [[213, 120], [150, 250], [276, 250]]])  # forehead top, cheeks
    assert implausible_alignment(upright, outline) is None
    flipped = upright.copy()
    flipped[2:, 1] = 2 * upright[0, 1] - upright[2:, 1]  # nose and chin mirrored above the eye line
    assert "above the eye line" in implausible_alignment(flipped)
    tilted = outline.copy()
    tilted[4] = [520, 150]  # forehead top far to the side: the face axis is 50 degrees off the eyes' normal
    assert "forehead-to-chin" in implausible_alignment(upright, tilted)
    # BlazeFace's keypoints (right eye, left eye, nose, mouth): agreeing, then with the mouth on the eye line
    keys = np.array([upright[0] + 8, upright[1] - 8, upright[2], upright[2] + [0, 40]])
    assert implausible_alignment(upright, outline, keys) is None
    keys[3] = upright[:2].mean(axis=0)
    assert "mouth" in implausible_alignment(upright, outline, keys)


@pytest.mark.parametrize("angle,scale", [(180, 1.0), (-120, 0.6)])
def test_upside_down_face_is_counted_not_returned(aligner, photo, angle, scale):
    # both models read these as upright faces over the wrong features (FaceMesh's eyes on the mouth); the first is
    # caught by BlazeFace's keypoints disagreeing with the mesh, the second only by the turned-ROI detector check
    aligner.reset()
    assert aligner.process(transformed(photo, angle, scale)) is None
    assert aligner.rejected and aligner.implausible == 1
    assert aligner.process(transformed(photo, 0)) is not None and not aligner.rejected
    aligner.reset()
    assert aligner.implausible == 0  # per video


def test_after_a_lost_track_the_nearest_face_is_taken(photo):
    # two people; the one on the right scores higher with BlazeFace, the one followed is on the left
    left = transformed(photo, 0, 1.0, size=(480, 480))
    right = transformed(photo, 10, 0.8, size=(480, 480))
    blank = np.full((480, 480, 3), 128, np.uint8)
    both, only_left, nobody = np.hstack([left, right]), np.hstack([left, blank]), np.hstack([blank, blank])
    with FaceAligner() as aligner:
        aligner.reset()
        faces = [aligner.process(f) for f in (only_left, nobody, both)]
        assert faces[1] is None and faces[2] is not None and faces[2].detected
        assert faces[2].landmarks[:, 0].mean() < 480  # still the left person
        assert aligner.identity_switches == 0
        # the followed person leaves and the other one is found: one identity switch
        aligner.reset()
        faces = [aligner.process(f) for f in (only_left, nobody, np.hstack([blank, right]))]
        assert faces[2] is not None and faces[2].landmarks[:, 0].mean() > 480
        assert aligner.identity_switches == 1


# -- jumpy footage: followed landmarks checked against the face -----------------------------------------------------

JUMPY_AUS = ["AU01", "AU02", "AU12"]  # inner and outer brow raise (a few pixels each), lip corners


def eye_geometry(landmarks: np.ndarray) -> tuple[float, float]:
    """Eye distance (px) and eye line angle (degrees) of 4 landmarks."""
    d = np.asarray(landmarks, np.float64)[1] - np.asarray(landmarks, np.float64)[0]
    return float(np.hypot(*d)), float(np.degrees(np.arctan2(d[1], d[0])))


def synthetic_video(subject: int, n: int, motion: str, seed: int = 0):
    """Frames of one synthetic subject whose head moves as ``motion`` says, each AU of JUMPY_AUS present in about
    half the frames at a weak intensity (1.5-2.2 of 5: a brow raise of 2-3 px at this size), the lighting changing
    as smoothly as the head moves or jumping with it; returns (frames, 4 true landmarks per frame, binary labels)."""
    from aubench_cli.data.synth import FaceRenderer, Lighting, lighting_track, pose_track, subject_identity

    rng = np.random.default_rng([seed, subject])
    renderer = FaceRenderer(JUMPY_AUS, (640, 480), subject_identity(seed, subject))
    poses = pose_track(rng, n, 30.0, motion)
    labels = (rng.random((n, len(JUMPY_AUS))) < 0.5).astype(np.int8)
    intensity = (labels * rng.uniform(1.5, 2.2, labels.shape)).astype(np.float32)
    lights = lighting_track(rng, n, 30.0) if motion == "smooth" else [
        Lighting(float(g), float(s)) for g, s in zip(rng.uniform(0.8, 1.15, n), rng.uniform(-0.2, 0.2, n))]
    frames, truth = [], []
    for t in range(n):
        frames.append(renderer.render(intensity[t], poses[t], lights[t]))
        truth.append(renderer.landmarks(poses[t])[list(LANDMARK_IDS)])
    return frames, np.array(truth), labels


@pytest.fixture(scope="module")
def jumpy_faces():
    """4 subjects x 60 frames whose pose jumps every frame, aligned: per subject (faces, truth, labels, corrections)."""
    out = []
    with FaceAligner() as aligner:
        for subject in range(4):
            frames, truth, labels = synthetic_video(subject, 60, "jumpy")
            aligner.reset()
            faces = [aligner.process(f) for f in frames]
            out.append((faces, truth, labels, aligner.track_corrections))
    return out


def assert_crops_match_the_truth(faces, truth, px: float = 4.0, degrees: float = 3.0) -> None:
    """Every face's eye distance within ``px`` of the truth and its eye line within ``degrees``. The distance is
    compared after the subject's own constant ratio: FaceMesh reads the eye corners of an identity-warped face a
    few percent wider or narrower than the photo's corners carried by the warp, in every frame alike."""
    found = [(t, eye_geometry(f.landmarks), eye_geometry(true)) for t, (f, true) in enumerate(zip(faces, truth))
             if f is not None]
    ratio = float(np.median([d / true_d for _, (d, _), (true_d, _) in found]))
    assert 0.93 < ratio < 1.07
    for t, (d, a), (true_d, true_a) in found:
        assert abs(d - ratio * true_d) <= px and abs(a - true_a) <= degrees, (t, d, ratio * true_d, a, true_a)


@pytest.mark.slow
def test_jumpy_video_every_crop_matches_the_face(jumpy_faces):
    # each frame a new pose (angle +-20 degrees, scale 0.85-1.15, shifts +-8 % / 6 %): the tracking FaceMesh alone
    # answered from the previous frame's place for most of them (eye distance off by up to 80 px)
    for faces, truth, _, corrections in jumpy_faces:
        assert sum(f is not None for f in faces) >= 57  # a face in (nearly) every frame: few dropped
        assert_crops_match_the_truth(faces, truth)
        assert corrections > 0


@pytest.mark.slow
def test_a_subtle_effect_is_learned_from_jumpy_crops(jumpy_faces):
    # a linear classifier on the crops, trained on 3 subjects and tested on the 4th (each in turn); with crops from
    # the wrong place (the tracking FaceMesh alone) it was at chance: balanced accuracy 0.55
    def features(faces):
        x = np.array([cv2.resize(f.crop, (48, 48), interpolation=cv2.INTER_AREA).ravel() for f in faces], np.float64)
        x = (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, keepdims=True) + 1e-6)
        return x - x.mean(axis=0)  # the subject's own mean face off: what is left is what changes

    data = []
    for faces, _, labels, _ in jumpy_faces:
        kept = [i for i, f in enumerate(faces) if f is not None]
        data.append((features([faces[i] for i in kept]), labels[kept]))
    scores = []
    for held in range(len(data)):
        x = np.concatenate([d[0] for i, d in enumerate(data) if i != held])
        y = np.concatenate([d[1] for i, d in enumerate(data) if i != held]) * 2.0 - 1.0
        gram = x @ x.T
        weights = x.T @ np.linalg.solve(gram + 0.1 * np.trace(gram) / len(gram) * np.eye(len(gram)), y)  # ridge
        predicted = data[held][0] @ weights > 0
        truth = data[held][1] == 1
        scores.append([0.5 * ((predicted[:, k] & truth[:, k]).sum() / truth[:, k].sum()
                              + (~predicted[:, k] & ~truth[:, k]).sum() / (~truth[:, k]).sum())
                       for k in range(len(JUMPY_AUS))])
    per_au = np.mean(scores, axis=0)
    assert per_au.mean() >= 0.85 and per_au.min() >= 0.75, dict(zip(JUMPY_AUS, per_au.round(3)))


def test_continuous_footage_is_followed_without_corrections(aligner):
    # a smooth head motion at 30 fps never trips the check once the tracking FaceMesh follows: the crops are its
    # own, as before. Only the first frame after a detection may be corrected (FaceMesh's region there still has
    # the framing of the detector's box, not of the landmarks).
    frames, truth, _ = synthetic_video(0, 40, "smooth", seed=1)
    aligner.reset()
    faces, corrected = [], []
    for frame in frames:
        before = aligner.track_corrections
        faces.append(aligner.process(frame))
        corrected.append(aligner.track_corrections > before)
    assert all(f is not None for f in faces) and [f.detected for f in faces].count(True) == 1
    assert_crops_match_the_truth(faces, truth)
    assert not any(corrected[2:])


def test_landmarks_that_stay_while_the_face_leaves_are_realigned(aligner, photo, monkeypatch):
    # the tracking FaceMesh answers with the last frame's landmarks although the face moved away (stuck): the
    # landmarks did not move, so only the crop, now of the background, tells
    first, second = transformed(photo, 0, 0.6, shift=(-160, 0)), transformed(photo, 8, 0.6, shift=(160, 20))
    aligner.reset()
    reference = aligner.process(second)
    aligner.reset()
    real = aligner._mesh_on
    answers = []

    def stuck(patch, to_roi, fresh=False):
        found = real(patch, to_roi, fresh=fresh)
        if not fresh and answers:
            return answers[0]
        answers.append(found)
        return found

    monkeypatch.setattr(aligner, "_mesh_on", stuck)
    assert aligner.process(first) is not None
    face = aligner.process(second)
    assert face is not None and aligner.track_corrections == 1
    np.testing.assert_allclose(face.landmarks, reference.landmarks, atol=3)
