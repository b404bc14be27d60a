"""The four label layouts, read from small hand-written files: binarisation, unknowns, frame keys, mismatches
reported (never shifted), layout detection and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aubench_cli.errors import UsageError
from aubench_cli.data.labels import (
    LabelError,
    LabelTable,
    au_name,
    binarise,
    dataset_au_names,
    detect_layout,
    list_dataset,
    read_affwild2_labels,
    read_bp4d_labels,
    read_disfa_labels,
    read_generic_labels,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_au_names_normalise():
    assert [au_name(x) for x in ("AU1", "au01", "1", " AU12 ", "frame", "x")] == ["AU01", "AU01", "AU01", "AU12", None, None]


def test_binarise_intensity_and_binary():
    v = np.array([0, 1, 2, 3, 5, -1, np.nan, 9, 7, -2])
    # 9, 7 and -2 are outside 0-5: unknown, never "present"
    assert binarise(v, 2, intensity=True).tolist() == [0, 0, 1, 1, 1, -1, -1, -1, -1, -1]
    assert binarise(v, 3, intensity=True).tolist() == [0, 0, 0, 1, 1, -1, -1, -1, -1, -1]
    assert binarise(v, 2, intensity=False, unknown=(9,)).tolist() == [0, 1, -1, -1, -1, -1, -1, -1, -1, -1]


def test_generic_binary_with_unknowns(tmp_path):
    p = write(tmp_path / "v.csv", "frame,AU01,AU12,notes\n0,1,0,a\n1,,1,b\n2,-1,0,c\n3,0,1,d\n")
    t = read_generic_labels(p, threshold=2)
    assert t.au_names == ["AU01", "AU12"] and not t.intensity and t.key == "index"
    assert t.frames.tolist() == [0, 1, 2, 3]
    assert t.values.tolist() == [[1, 0], [-1, 1], [-1, 0], [0, 1]]
    assert any("notes" in i for i in t.issues)


def test_generic_intensities_binarised_at_threshold(tmp_path):
    p = write(tmp_path / "v.csv", "frame,AU4\n0,0\n1,1\n2,2\n3,5\n4,\n")
    t = read_generic_labels(p, threshold=2)
    assert t.intensity and t.au_names == ["AU04"]
    assert t.values[:, 0].tolist() == [0, 0, 1, 1, -1]
    assert read_generic_labels(p, threshold=3).values[:, 0].tolist() == [0, 0, 0, 1, -1]


def test_generic_duplicates_and_gaps_reported_not_shifted(tmp_path):
    p = write(tmp_path / "v.csv", "frame,AU01\n0,1\n2,0\n2,1\n5,1\nx,1\n")
    t = read_generic_labels(p, threshold=2)
    assert t.frames.tolist() == [0, 2, 5]
    assert t.values[:, 0].tolist() == [1, 0, 1]  # the first row for frame 2 is kept
    assert any("duplicate" in i for i in t.issues) and any("invalid frame" in i for i in t.issues)
    values, found = t.lookup(np.array([0, 1, 2, 3, 5, 9]))
    assert found.tolist() == [True, False, True, False, True, False]
    assert values[:, 0].tolist() == [1, -1, 0, -1, 1, -1]


def test_generic_without_frame_column_is_a_label_error(tmp_path):
    with pytest.raises(LabelError, match="frame"):
        read_generic_labels(write(tmp_path / "v.csv", "AU01\n1\n"), 2)
    with pytest.raises(LabelError, match="not found"):
        read_generic_labels(tmp_path / "missing.csv", 2)


def test_disfa_intensities_one_based_and_missing_lines(tmp_path):
    folder = tmp_path / "SN001"
    write(folder / "SN001_au1.txt", "1,0\n2,2\n3,1\n4,5\n")
    write(folder / "SN001_au12.txt", "1,3\n2,3\n4,0\n")  # frame 3 missing in this AU's file only
    t = read_disfa_labels(folder, threshold=2)
    assert t.au_names == ["AU01", "AU12"] and t.intensity
    assert t.frames.tolist() == [0, 1, 2, 3]  # 1-based in the files, 0-based frame indices here
    assert t.values.tolist() == [[0, 1], [1, 1], [0, -1], [1, 0]]
    # the file that lacks the line is named, with the frame as the files number it, and the file that has it
    assert any(i.startswith("SN001_au12.txt: no line for frames 3 (1-based") and "SN001_au1.txt has (line 3" in i
               for i in t.issues), t.issues
    assert read_disfa_labels(folder, threshold=3).values[:, 0].tolist() == [0, 0, 0, 1]


def test_bp4d_nine_is_unknown_and_keys_are_frame_numbers(tmp_path):
    p = write(tmp_path / "F001_T1.csv", "0,1,2,4,12\n5,1,0,9,1\n6,0,9,1,0\n8,1,1,0,3\n")
    t = read_bp4d_labels(p, threshold=2)
    assert t.au_names == ["AU01", "AU02", "AU04", "AU12"] and t.key == "number"
    assert t.frames.tolist() == [5, 6, 8]
    assert t.values.tolist() == [[1, 0, -1, 1], [0, -1, 1, 0], [1, 1, 0, -1]]
    assert t.stray_count == 1 and t.strays[0]["line"] == 4 and t.strays[0]["column"] == "12"  # the 3
    assert t.strays[0]["value"] == "3" and any("outside the binary scale" in i for i in t.issues)


def test_affwild2_rows_are_frames_and_minus_one_unknown(tmp_path):
    p = write(tmp_path / "video1.txt", "AU1,AU2,AU4\n1,0,-1\n0,0,1\n-1,-1,-1\n1,1\n")
    t = read_affwild2_labels(p, threshold=2)
    assert t.au_names == ["AU01", "AU02", "AU04"]
    assert t.frames.tolist() == [0, 1, 2, 3]
    assert t.values.tolist() == [[1, 0, -1], [0, 0, 1], [-1, -1, -1], [1, 1, -1]]
    assert any("cell count" in i for i in t.issues)


def test_reorder_fills_missing_aus_with_unknown():
    t = LabelTable(["AU02"], np.array([0, 1]), np.array([[1], [0]], np.int8))
    r = t.reorder(["AU01", "AU02"])
    assert r.values.tolist() == [[-1, 1], [-1, 0]]
    assert any("AU01" in i for i in r.issues)


def test_dataset_aus_drop_never_known():
    a = LabelTable(["AU01", "AU03"], np.array([0]), np.array([[1, -1]], np.int8))
    b = LabelTable(["AU12", "AU03"], np.array([0]), np.array([[0, -1]], np.int8))
    assert dataset_au_names([a, b]) == ["AU01", "AU12"]


# -- layouts ----------------------------------------------------------------------------------------------------


def make_generic(root: Path, with_split: bool = False) -> Path:
    (root / "videos").mkdir(parents=True)
    rows = ["video,subject" + (",split" if with_split else "")]
    for i, (subject, split) in enumerate([("s1", "train"), ("s2", "test"), ("s3", "val")]):
        (root / "videos" / f"v{i}.avi").write_bytes(b"")
        rows.append(f"videos/v{i}.avi,{subject}" + (f",{split}" if with_split else ""))
        if i < 2:
            write(root / "labels" / f"v{i}.csv", "frame,AU01\n0,1\n")
    write(root / "manifest.csv", "\n".join(rows) + "\n")
    return root


def test_detect_each_layout(tmp_path):
    make_generic(tmp_path / "g")
    write(tmp_path / "d" / "ActionUnit_Labels" / "SN001" / "SN001_au1.txt", "1,0\n")
    write(tmp_path / "b" / "AUCoding" / "AU_OCC" / "F001_T1.csv", "0,1\n1,0\n")
    write(tmp_path / "a" / "annotations" / "x.txt", "AU1,AU2,AU4,AU6\n1,0,0,0\n")
    assert [detect_layout(tmp_path / x) for x in "gdba"] == ["generic", "disfa", "bp4d", "affwild2"]


def test_empty_missing_and_unknown_folders_are_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "odd" / "readme.txt", "hello\n")
    with pytest.raises(UsageError, match="empty"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(UsageError, match="does not exist"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(UsageError, match="no layout"):
        detect_layout(tmp_path / "odd")
    with pytest.raises(UsageError, match="not in the disfa layout"):
        list_dataset(make_generic(tmp_path / "g"), "disfa")
    with pytest.raises(UsageError, match="did you mean"):
        list_dataset(tmp_path / "g", "genric")


def test_generic_listing_skips_video_without_labels(tmp_path):
    listing = list_dataset(make_generic(tmp_path / "g"))
    assert [v.id for v in listing.videos] == ["videos__v0", "videos__v1"]
    assert [v.subject for v in listing.videos] == ["s1", "s2"]
    assert listing.skipped == [{"video": "videos__v2", "reason": "no label file labels/v2.csv"}]


def test_generic_manifest_split_must_be_all_or_none(tmp_path):
    root = make_generic(tmp_path / "g", with_split=True)
    assert [v.split for v in list_dataset(root).videos] == ["train", "test"]
    text = (root / "manifest.csv").read_text().replace(",train\n", ",\n")
    (root / "manifest.csv").write_text(text)
    with pytest.raises(UsageError, match="some videos but not"):
        list_dataset(root)


def test_disfa_bp4d_affwild2_listings(tmp_path):
    d = tmp_path / "d"
    (d / "Videos_LeftCamera").mkdir(parents=True)
    (d / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi").write_bytes(b"x")
    (d / "Videos_LeftCamera" / "LeftVideoSN002_comp.avi").write_bytes(b"x")
    write(d / "ActionUnit_Labels" / "SN001" / "SN001_au1.txt", "1,0\n")
    listing = list_dataset(d)
    assert [(v.id, v.subject) for v in listing.videos] == [("SN001_left", "SN001")]
    assert listing.skipped[0]["video"] == "SN002_left" and "no label folder" in listing.skipped[0]["reason"]

    b = tmp_path / "b"
    write(b / "2DFaces" / "F001" / "T1" / "0001.jpg", "")
    write(b / "2DFaces" / "M002" / "T2" / "0001.jpg", "")
    write(b / "AUCoding" / "AU_OCC" / "F001_T1.csv", "0,1\n1,0\n")
    listing = list_dataset(b)
    assert [(v.id, v.subject) for v in listing.videos] == [("F001_T1", "F001")]
    assert listing.skipped[0]["video"] == "M002_T2"

    a = tmp_path / "a"
    write(a / "videos" / "vid7.mp4", "x")
    write(a / "videos" / "vid8.mp4", "x")
    write(a / "annotations" / "vid7_left.txt", "AU1,AU2,AU4\n1,0,0\n")
    write(a / "annotations" / "vid7_right.txt", "AU1,AU2,AU4\n0,0,0\n")
    listing = list_dataset(a)
    assert [(v.id, v.path.name) for v in listing.videos] == [("vid7_left", "vid7.mp4"), ("vid7_right", "vid7.mp4")]
    assert listing.skipped[0]["video"] == "vid8" and "no label file" in listing.skipped[0]["reason"]


def test_generic_dataset_reads_all_files_the_same_way(tmp_path):
    from aubench_cli.data.labels import read_all_labels

    root = make_generic(tmp_path / "g")
    write(root / "labels" / "v0.csv", "frame,AU01\n0,1\n1,0\n")  # only 0/1: alone it would be binary
    write(root / "labels" / "v1.csv", "frame,AU01\n0,3\n1,1\n")  # intensities
    listing = list_dataset(root)
    tables, skipped = read_all_labels("generic", listing.videos, threshold=2)
    assert skipped == []
    assert tables["videos__v0"].values[:, 0].tolist() == [0, 0]  # 1 is below the threshold of 2
    assert tables["videos__v1"].values[:, 0].tolist() == [1, 0]
    write(root / "labels" / "v1.csv", "frame,AU01\n0,1\n1,-1\n")  # now the whole dataset is binary
    tables, _ = read_all_labels("generic", listing.videos, threshold=2)
    assert tables["videos__v0"].values[:, 0].tolist() == [1, 0] and tables["videos__v1"].values[:, 0].tolist() == [1, -1]


# -- the label scale and values outside it -----------------------------------------------------------------------


def binary_dataset(root: Path, n_videos: int = 3, n_frames: int = 40) -> tuple[Path, dict]:
    """A generic dataset of binary labels (a deterministic 1/0 pattern); returns the root and the expected rows."""
    (root / "videos").mkdir(parents=True)
    manifest, expected = ["video,subject"], {}
    for v in range(n_videos):
        (root / "videos" / f"v{v}.avi").write_bytes(b"")
        rows = [[(f + v) % 2, (f // 3 + v) % 2] for f in range(n_frames)]
        write(root / "labels" / f"v{v}.csv", "frame,AU01,AU12\n" + "".join(f"{f},{a},{b}\n" for f, (a, b) in enumerate(rows)))
        manifest.append(f"videos/v{v}.avi,s{v}")
        expected[f"videos__v{v}"] = np.array(rows)
    write(root / "manifest.csv", "\n".join(manifest) + "\n")
    return root, expected


def set_cell(path: Path, line: int, column: int, text: str) -> None:
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = text
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("stray", ["9", "3", "x", "0.5"])
def test_one_stray_value_is_unknown_and_reported_never_rescaling_the_rest(tmp_path, stray):
    from aubench_cli.data.labels import read_dataset_labels

    root, expected = binary_dataset(tmp_path / "g")
    set_cell(root / "labels" / "v1.csv", 6, 2, stray)  # line 6 = frame 4, column AU12
    result = read_dataset_labels("generic", list_dataset(root).videos, threshold=2, root=root)
    assert result.scale["scale"] == "binary" and result.scale["decided_by"] == "data"
    want = {k: v.copy() for k, v in expected.items()}
    want["videos__v1"][4, 1] = -1
    for vid, rows in want.items():
        np.testing.assert_array_equal(result.tables[vid].values, rows)  # every other 1 stays a 1
    assert result.outside_scale == {"count": 1, "first": [
        {"file": "labels/v1.csv", "line": 6, "column": "AU12", "value": stray}]}
    assert any("labels/v1.csv" not in i and "v1.csv line 6 column AU12" in i for i in result.tables["videos__v1"].issues)
    assert result.problems == 1


def test_intensity_scale_needs_evidence_and_is_stated(tmp_path):
    from aubench_cli.data.labels import read_dataset_labels

    root, expected = binary_dataset(tmp_path / "g", n_frames=40)
    videos = list_dataset(root).videos
    # 4 cells of 240 (1.7 %) hold 2-5: intensities; 1 and 0 are then below the threshold
    for line, value in ((2, "3"), (10, "4"), (20, "2"), (30, "5")):
        set_cell(root / "labels" / "v0.csv", line, 1, value)
    result = read_dataset_labels("generic", videos, threshold=2)
    assert result.scale["scale"] == "intensity" and result.scale["threshold"] == 2.0
    assert "4 of 240 known cells" in result.scale["evidence"]
    assert result.tables["videos__v2"].values.max() == 0 and result.outside_scale["count"] == 0
    # --label-scale binary overrides the evidence: the four cells are then outside the scale
    forced = read_dataset_labels("generic", videos, threshold=2, scale="binary")
    assert forced.scale == {"scale": "binary", "decided_by": "option", "evidence": "set with --label-scale binary"}
    assert forced.outside_scale["count"] == 4
    np.testing.assert_array_equal(forced.tables["videos__v2"].values, expected["videos__v2"])
    with pytest.raises(UsageError, match="label-scale"):
        read_dataset_labels("generic", videos, threshold=2, scale="binry")


def test_a_value_above_five_in_intensities_is_unknown_and_reported(tmp_path):
    from aubench_cli.data.labels import read_dataset_labels

    write(tmp_path / "d" / "ActionUnit_Labels" / "SN001" / "SN001_au1.txt", "1,0\n2,7\n3,3\n4,x\n")
    (tmp_path / "d" / "Videos_LeftCamera").mkdir(parents=True)
    (tmp_path / "d" / "Videos_LeftCamera" / "LeftVideoSN001_comp.avi").write_bytes(b"x")
    result = read_dataset_labels("disfa", list_dataset(tmp_path / "d").videos, threshold=2, root=tmp_path / "d")
    assert result.scale["scale"] == "intensity" and result.scale["decided_by"] == "layout"
    assert result.tables["SN001_left"].values[:, 0].tolist() == [0, -1, 1, -1]
    assert [(s["file"], s["line"], s["value"]) for s in result.outside_scale["first"]] == [
        ("ActionUnit_Labels/SN001/SN001_au1.txt", 2, "7"), ("ActionUnit_Labels/SN001/SN001_au1.txt", 4, "x")]


def test_affwild2_empty_row_is_that_frames_unknown_labels(tmp_path):
    # row 2 is empty (line 4): frames 3 and 4 keep their own labels; the trailing blank line is no frame
    p = write(tmp_path / "vid.txt", "AU1,AU2\n1,0\n0,1\n\n1,1\n,,\n0,0\n\n")
    t = read_affwild2_labels(p, threshold=2)
    assert t.frames.tolist() == [0, 1, 2, 3, 4, 5]
    assert t.values.tolist() == [[1, 0], [0, 1], [-1, -1], [1, 1], [-1, -1], [0, 0]]
    assert any("2 empty rows (rows 2, 4" in i for i in t.issues), t.issues


def test_an_au_named_twice_is_reported(tmp_path):
    from aubench_cli.data.labels import read_dataset_labels

    root, _ = binary_dataset(tmp_path / "g", n_videos=1, n_frames=4)
    write(root / "labels" / "v0.csv", "frame,AU01,AU12,AU1\n0,1,0,1\n1,0,1,1\n2,1,1,1\n3,0,0,0\n")
    result = read_dataset_labels("generic", list_dataset(root).videos, threshold=2, root=root)
    assert result.duplicate_columns == [{"file": "labels/v0.csv", "au": "AU01", "columns": ["AU01", "AU1"],
                                         "used": "AU01", "disagreeing_rows": 1}]
    t = result.tables["videos__v0"]
    assert t.au_names == ["AU01", "AU12"] and t.values[:, 0].tolist() == [1, 0, 1, 0]
    assert any("both name AU01" in i for i in t.issues) and result.problems == 1
