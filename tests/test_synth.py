"""Tests of the synthetic dataset: determinism, the files of every layout, label statistics, where each AU acts,
head pose, and the command's handling of bad options. Frames are tiny so that the file runs in well under a
minute on a 2-core CPU."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from aubench_cli.data import synth
from aubench_cli.cli import app
from aubench_cli.errors import UsageError
from aubench_cli.data.synth import (AU_SPECS, LAYOUTS, PAPER_AUS, FaceRenderer, Identity, Pose, SynthConfig,
                               astronaut_landmarks, generate_labels, synthesize)

SMALL = dict(subjects=2, frames=8, width=128, height=96)


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


# -- the photo --------------------------------------------------------------------------------------------------


def test_astronaut_landmarks_are_a_plausible_face():
    lm = astronaut_landmarks()
    assert lm.shape == (478, 2)
    assert astronaut_landmarks() is lm  # computed once per process
    eye_l, eye_r, nose, chin, brow = lm[33], lm[263], lm[1], lm[152], lm[105]
    assert eye_l[0] < nose[0] < eye_r[0]
    assert brow[1] < eye_l[1] < nose[1] < chin[1]
    assert 40 < eye_r[0] - eye_l[0] < 90  # the face is about 90 px wide in the 512 px photo


# -- determinism and files ---------------------------------------------------------------------------------------


def test_same_seed_writes_identical_labels_and_frames_and_other_seeds_differ(tmp_path):
    outs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        synthesize(tmp_path / name, SynthConfig(subjects=1, videos_per_subject=1, frames=10, width=160, height=120,
                                                seed=seed))
        outs.append(tmp_path / name)
    labels = [(o / "labels" / "s01_v1.csv").read_text() for o in outs]
    videos = [np.stack(read_video(o / "videos" / "s01_v1.avi")) for o in outs]
    assert labels[0] == labels[1]
    assert np.array_equal(videos[0], videos[1])
    assert labels[0] != labels[2]
    assert np.abs(videos[0].astype(int) - videos[2].astype(int)).mean() > 5


def test_generic_layout(tmp_path):
    summary = synthesize(tmp_path, SynthConfig(**SMALL, videos_per_subject=2))
    rows = read_csv(tmp_path / "manifest.csv")
    assert rows[0] == ["video", "subject"]  # no split column: the preprocessor splits by its seed
    assert len(rows) == 1 + 4 and {r[1] for r in rows[1:]} == {"s01", "s02"}
    for video, _subject in rows[1:]:
        frames = read_video(tmp_path / video)
        assert len(frames) == 8 and frames[0].shape == (96, 128, 3)
        labels = read_csv(tmp_path / "labels" / f"{Path(video).stem}.csv")
        assert labels[0] == ["frame", *PAPER_AUS]
        assert [int(r[0]) for r in labels[1:]] == list(range(8))
        assert {int(v) for r in labels[1:] for v in r[1:]} <= {-1, 0, 1}
    assert summary["frames"] == 32 and summary["videos"] == 4
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta["config"]["layout"] == "generic" and len(meta["videos"]) == 4
    assert not [p for p in tmp_path.rglob(".tmp-*")]  # atomic writes leave no temporaries


def test_disfa_layout(tmp_path):
    synthesize(tmp_path, SynthConfig(**SMALL, layout="disfa"))
    for subject in ("SN001", "SN002"):
        frames = read_video(tmp_path / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi")
        assert len(frames) == 8 and frames[0].shape == (96, 128, 3)
        files = sorted((tmp_path / "ActionUnit_Labels" / subject).iterdir())
        assert {f.name for f in files} == {f"{subject}_au{n}.txt" for n in (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)}
        for f in files:
            rows = read_csv(f)
            assert [int(r[0]) for r in rows] == list(range(1, 9))  # 1-based frames
            assert all(0 <= int(r[1]) <= 5 for r in rows)


def test_bp4d_layout(tmp_path):
    synthesize(tmp_path, SynthConfig(**SMALL, layout="bp4d", videos_per_subject=2))
    for subject in ("F001", "M001"):
        for task in ("T1", "T2"):
            images = sorted((tmp_path / "2DFaces" / subject / task).glob("*.jpg"))
            assert [p.name for p in images] == [f"{i:04d}.jpg" for i in range(1, 9)]
            assert cv2.imread(str(images[0])).shape == (96, 128, 3)
            rows = read_csv(tmp_path / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv")
            assert rows[0][1:] == [str(int(a[2:])) for a in PAPER_AUS]
            assert [int(r[0]) for r in rows[1:]] == list(range(1, 9))  # the numbers in the image names
            assert {int(v) for r in rows[1:] for v in r[1:]} <= {0, 1, 9}


def test_affwild2_layout(tmp_path):
    synthesize(tmp_path, SynthConfig(**SMALL, layout="affwild2"))
    labels = sorted((tmp_path / "annotations").glob("*.txt"))
    assert len(labels) == 2
    for path in labels:
        rows = read_csv(path)
        assert rows[0] == "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26".split(",")
        assert len(rows) == 1 + 8 and {int(v) for r in rows[1:] for v in r} <= {-1, 0, 1}
        assert len(read_video(tmp_path / "videos" / f"{path.stem}.avi")) == 8


def test_every_layout_is_covered():
    assert set(LAYOUTS) == {"generic", "disfa", "bp4d", "affwild2"}
    assert all(au in AU_SPECS for layout in LAYOUTS.values() for au in layout.aus)


# -- labels ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_labels():
    rng = np.random.default_rng(0)
    aus = list(AU_SPECS)
    parts = [generate_labels(3000, aus, rng, fps=30.0) for _ in range(30)]
    return aus, np.concatenate([p.binary for p in parts])


def test_base_rates_match_the_configuration(long_labels):
    aus, binary = long_labels
    for k, au in enumerate(aus):
        known = binary[:, k] >= 0
        rate = (binary[known, k] == 1).mean()
        target = AU_SPECS[au].rate
        assert abs(rate - target) < max(0.015, 0.25 * target), (au, rate, target)
    rates = [AU_SPECS[a].rate for a in aus]
    assert min(rates) <= 0.03 and max(rates) >= 0.4


def test_au06_co_occurs_with_au12(long_labels):
    aus, binary = long_labels
    au06, au12 = binary[:, aus.index("AU06")], binary[:, aus.index("AU12")]
    both_known = (au06 >= 0) & (au12 >= 0)
    p6, p12 = (au06[both_known] == 1).mean(), (au12[both_known] == 1).mean()
    joint = ((au06 == 1) & (au12 == 1))[both_known].mean()
    assert joint > 1.5 * p6 * p12
    assert (au06[both_known & (au12 == 1)] == 1).mean() > p6 + 0.15


def test_some_labels_are_unknown(long_labels):
    _aus, binary = long_labels
    assert 0.001 < (binary == -1).mean() < 0.05


def test_episodes_last_several_frames(long_labels):
    _aus, binary = long_labels
    present = np.concatenate([[0], (binary[:, 0] == 1).astype(int), [0]])
    edges = np.diff(present)
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert np.median(lengths) >= 5


def test_every_au_appears_for_every_subject_even_in_short_videos():
    config = SynthConfig(subjects=4, frames=30, seed=1)
    for s in range(config.subjects):
        labels = synth.subject_labels(config, s)
        assert all(any((lab.binary[:, k] == 1).any() for lab in labels) for k in range(len(PAPER_AUS)))


# -- rendering ---------------------------------------------------------------------------------------------------

ALL_AUS = list(AU_SPECS)


@pytest.fixture(scope="module")
def renderer():
    return FaceRenderer(ALL_AUS, (320, 240), Identity())


def _difference(renderer, au, intensity=5.0, pose=Pose()):
    neutral = renderer.render(np.zeros(len(ALL_AUS)), pose).astype(np.float32)
    vec = np.zeros(len(ALL_AUS))
    vec[ALL_AUS.index(au)] = intensity
    return np.abs(renderer.render(vec, pose).astype(np.float32) - neutral).sum(axis=2)


def _share_near(diff, points, radius):
    ys, xs = np.mgrid[0 : diff.shape[0], 0 : diff.shape[1]]
    near = np.zeros(diff.shape, bool)
    for x, y in points:
        near |= (xs - x) ** 2 + (ys - y) ** 2 <= radius**2
    return diff[near].sum() / diff.sum()


UPPER = ["AU01", "AU02", "AU04", "AU05", "AU07"]
LOWER = ["AU10", "AU12", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28"]


@pytest.mark.parametrize("au", ALL_AUS)
def test_each_au_changes_its_own_face_region(renderer, au):
    diff = _difference(renderer, au)
    lm = renderer.landmarks()
    assert diff.sum() > 0
    ys = np.arange(diff.shape[0])
    above_nose = diff[ys < lm[1, 1]].sum() / diff.sum()  # above the nose tip
    below_eyes = diff[ys > (lm[145, 1] + lm[374, 1]) / 2].sum() / diff.sum()  # below the lower lids
    if au in UPPER:
        assert above_nose > 0.9, above_nose
    if au in LOWER:
        assert below_eyes > 0.8, below_eyes  # AU12 lifts the cheeks a little too
    unit = float(np.hypot(*(lm[263] - lm[33]))) / 60  # one astronaut pixel in frame pixels
    if au == "AU12":
        # the mouth corners and the folds from the nose wings to them
        assert _share_near(diff, lm[[61, 291, 129, 358]], 14 * unit) > 0.55
    if au in ("AU01", "AU02", "AU04"):
        assert _share_near(diff, lm[[70, 105, 107, 336, 334, 300]], 14 * unit) > 0.6
    if au == "AU06":
        assert _share_near(diff, lm[[33, 263, 117, 346, 50, 280]], 14 * unit) > 0.6
    if au == "AU09":
        assert _share_near(diff, lm[[6, 168, 129, 358, 0, 107, 336]], 14 * unit) > 0.6


def test_inner_and_outer_brow_raisers_act_where_they_should(renderer):
    lm = renderer.landmarks()
    mid_x = lm[168, 0]

    def mean_offset(au):
        diff = _difference(renderer, au)
        xs = np.arange(diff.shape[1])
        return float((diff.sum(axis=0) * np.abs(xs - mid_x)).sum() / diff.sum())

    assert mean_offset("AU01") < mean_offset("AU02")


@pytest.mark.parametrize("au", PAPER_AUS)
def test_deformation_grows_with_intensity(renderer, au):
    energy = [_difference(renderer, au, i).sum() for i in (1, 3, 5)]
    assert energy[0] < energy[1] < energy[2]


def test_head_pose_is_applied(renderer):
    vec = np.zeros(len(ALL_AUS))
    upright = renderer.render(vec, Pose())
    tilted = renderer.render(vec, Pose(angle=15.0))
    assert np.abs(upright.astype(int) - tilted.astype(int)).mean() > 5

    def eye_line_angle(pose):
        eyes = renderer.landmarks(pose)[[33, 263]]
        d = eyes[1] - eyes[0]
        return math.degrees(math.atan2(-d[1], d[0]))

    assert eye_line_angle(Pose(angle=15.0)) - eye_line_angle(Pose()) == pytest.approx(15.0, abs=0.5)
    poses = synth.pose_track(np.random.default_rng(0), 3000, 30.0)
    angles = np.array([p.angle for p in poses])
    assert np.abs(angles).max() <= 20.0 and angles.std() > 2.0


def test_jumpy_motion_draws_a_new_pose_every_frame_within_the_smooth_ranges():
    smooth = synth.pose_track(np.random.default_rng(0), 3000, 30.0)
    jumpy = synth.pose_track(np.random.default_rng(0), 3000, 30.0, "jumpy")
    for poses in (smooth, jumpy):
        values = np.array([[p.angle, p.scale, p.dx, p.dy] for p in poses])
        assert (np.abs(values[:, 0]) <= 20).all() and (np.abs(values[:, 1] - 1) <= 0.15 + 1e-9).all()
        assert (np.abs(values[:, 2]) <= 0.08).all() and (np.abs(values[:, 3]) <= 0.06).all()
    step = lambda poses: np.median(np.abs(np.diff([p.angle for p in poses])))  # noqa: E731
    assert step(smooth) < 0.5 and step(jumpy) > 8  # degrees from one frame to the next
    with pytest.raises(UsageError, match="--motion"):
        synth.SynthConfig(motion="shaky").validate()


def test_subjects_differ_in_identity_and_background():
    a = synth.render_frame({}, size=(160, 120), identity=synth.subject_identity(0, 0))
    b = synth.render_frame({}, size=(160, 120), identity=synth.subject_identity(0, 1))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_render_frame_rejects_an_au_it_does_not_render():
    with pytest.raises(UsageError):
        synth.render_frame({"AU99": 3})


# -- the command -------------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["--size", "10x10"],
        ["--size", "big"],
        ["--subjects", "0"],
        ["--frames", "0"],
        ["--layout", "bp5d"],
        ["--layout", "disfa", "--videos-per-subject", "2"],
        ["--fps", "0"],
        ["--motion", "shaky"],
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args):
    result = runner.invoke(app, ["synth", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["synth", str(tmp_path), "--frames", "2", "--size", "128x96"])
    assert result.exit_code == 2
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_cli_json_summary(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "d"), "--subjects", "1", "--frames", "4", "--size",
                                 "128x96", "--seed", "5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 8 and summary["layout"] == "generic" and summary["seed"] == 5
    assert set(summary["positive_rate"]) == set(PAPER_AUS)


# -- the fixture as the preprocessor sees it: each AU in its own crop region, on exactly its present frames -------

UPPER_CROP = {"AU01", "AU02", "AU04", "AU05", "AU07"}  # act above the nose tip (crop row 53.5)
LOWER_CROP = {"AU10", "AU12", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28"}  # below the eyes (34)


@pytest.fixture(scope="module")
def au_video():
    """One synthetic video with every paper AU frequent, its labels, renderer, conditions and frames."""
    config = SynthConfig(subjects=1, videos_per_subject=1, frames=48, width=320, height=240, seed=3,
                         rates={a: 0.3 for a in PAPER_AUS}, unknown_share=0.0)
    labels = synth.subject_labels(config, 0)[0]
    renderer = FaceRenderer(labels.aus, (config.width, config.height), synth.subject_identity(config.seed, 0))
    frames = list(synth.render_video(config, 0, 0, labels, renderer))
    cond = synth.video_conditions(config, 0, 0, config.frames)
    return config, labels, renderer, cond, frames


def _crop(renderer, pose, frame):
    from aubench_cli.data.align import LANDMARK_IDS, alignment_transform, warp_crop

    t = alignment_transform(renderer.landmarks(pose)[list(LANDMARK_IDS)])  # the face's true landmarks
    return warp_crop(frame, t).astype(np.float32)


def test_each_au_changes_its_own_crop_region_on_exactly_its_present_frames(au_video):
    """Frame t of a rendered video differs from the same frame rendered without AU k only where AU k acts in the
    aligned crop, and by at least as much as AU k at intensity 1.5 (the weakest that rounds to present) exactly on
    the frames whose label says present: a frame rendered with another frame's labels fails it."""
    config, labels, renderer, cond, frames = au_video
    ys = np.arange(96)[:, None]
    for k, au in enumerate(labels.aus):
        present = labels.binary[:, k] == 1
        assert 3 <= present.sum() <= config.frames - 3, au  # both kinds of frames to look at
        for t in range(config.frames):
            pose, light, noise = cond.poses[t], cond.lights[t], cond.noise(t)

            def crop_with(value):
                vec = labels.intensity[t].copy()
                vec[k] = value
                return _crop(renderer, pose, renderer.render(vec, pose, light, cond.background, noise))

            without = crop_with(0.0)
            change = np.abs(_crop(renderer, pose, frames[t]) - without)
            weakest = np.abs(crop_with(1.5) - without).sum()
            assert (change.sum() >= weakest) == present[t], (au, t, labels.intensity[t, k], change.sum(), weakest)
            if present[t]:
                total = change.sum()
                if au in UPPER_CROP:
                    assert change[(ys < 53).repeat(96, 1)].sum() > 0.9 * total, (au, t)
                if au in LOWER_CROP:
                    assert change[(ys > 40).repeat(96, 1)].sum() > 0.8 * total, (au, t)
