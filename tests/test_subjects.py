"""The subject loader: canonical RAS+ loading and validation that reports every problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mr2ct.core.config import PhantomConfig
from mr2ct.core.subjects import (
    SubjectError,
    TrueTransform,
    load_subjects,
    read_landmarks,
    write_landmarks,
)
from mr2ct.phantom import generate_dataset, generate_subject

CONFIG = PhantomConfig(subjects=3, seed=11)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(CONFIG, tmp_path_factory.mktemp("phantom"), progress=False)


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    """A private copy of the dataset that a test may break."""
    return Path(shutil.copytree(dataset, tmp_path / "root"))


def problems_of(root: Path) -> list[str]:
    with pytest.raises(SubjectError) as caught:
        load_subjects(root)
    assert str(caught.value).count("\n  - ") == len(caught.value.problems)
    return caught.value.problems


def test_loads_every_subject_in_canonical_orientation_equal_to_the_generated_one(dataset):
    subjects = load_subjects(dataset)
    assert [s.name for s in subjects] == ["sub-000", "sub-001", "sub-002"]
    assert sorted(s.split for s in subjects) == ["test", "train", "val"]
    generated = generate_subject(CONFIG, 1)
    loaded = subjects[1]
    assert nib.aff2axcodes(loaded.mr.affine) == ("R", "A", "S")
    assert nib.aff2axcodes(loaded.mr_image.affine) == ("L", "I", "P")  # the header on disk stays available
    for name in ("mr", "ct", "ct_seg", "ct_subreg", "mr_seg", "mr_subreg", "oracle_ct"):
        assert np.array_equal(getattr(loaded, name).array, getattr(generated, name).array), name
        assert np.allclose(getattr(loaded, name).affine, getattr(generated, name).affine), name
    for landmarks, expected in ((loaded.mr_landmarks, generated.mr_landmarks),
                                (loaded.ct_landmarks, generated.ct_landmarks)):
        assert sorted(landmarks) == sorted(expected)
        for v in expected:
            for kind in ("body", "spinous"):
                assert np.allclose(landmarks[v][kind], expected[v][kind], atol=1e-9)
    assert np.allclose(loaded.true_transform.global_matrix, generated.true_transform.global_matrix)
    assert loaded.contrast == "t1w" and loaded.region == "lumbar" and loaded.preset == "t1w"


def test_split_filter(dataset):
    test_only = load_subjects(dataset, splits=["test"])
    assert len(test_only) == 1 and test_only[0].split == "test"
    with pytest.raises(ValueError, match="unknown split"):
        load_subjects(dataset, splits=["training"])


def test_real_data_without_ground_truth_files_loads(copy):
    folder = copy / "sub-000"
    for name in ("mr_seg.nii.gz", "mr_subreg.nii.gz", "oracle_ct.nii.gz", "true_transform.json", "ct_landmarks.json"):
        (folder / name).unlink()
    subject = load_subjects(copy)[0]
    assert subject.mr_seg is None and subject.oracle_ct is None and subject.true_transform is None
    assert subject.ct_landmarks is None and len(subject.mr_landmarks) == 5


def test_missing_file(copy):
    (copy / "sub-001" / "ct_seg.nii.gz").unlink()
    assert problems_of(copy) == ["subject sub-001: ct_seg.nii.gz: missing"]


def _rewrite(path: Path, array: np.ndarray) -> None:
    image = nib.load(path)
    nib.save(nib.Nifti1Image(array, image.affine), path)


def test_nan_volume(copy):
    path = copy / "sub-000" / "mr.nii.gz"
    array = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
    array[3, 4, 5] = np.nan
    array[0, 0, 0] = np.inf
    _rewrite(path, array)
    assert problems_of(copy) == ["subject sub-000: mr.nii.gz: 2 NaN/Inf voxels"]


def test_empty_labels(copy):
    path = copy / "sub-002" / "ct_seg.nii.gz"
    _rewrite(path, np.zeros(nib.load(path).shape, np.uint8))
    problems = problems_of(copy)
    assert "subject sub-002: ct_seg.nii.gz: segmentation is empty (no label > 0)" in problems
    assert any("sub-002: mr_landmarks.json: vertebra id(s) [20, 21, 22, 23, 24] missing in ct_seg" in p for p in problems)


def test_non_3d_and_unreadable_images(copy):
    path = copy / "sub-000" / "ct.nii.gz"
    _rewrite(path, np.zeros((4, 4, 4, 2), np.int16))
    (copy / "sub-001" / "mr.nii.gz").write_bytes(b"not a nifti at all")
    problems = problems_of(copy)
    assert problems[0].startswith("subject sub-000: ct.nii.gz: expected a 3D image")
    assert len([p for p in problems if "sub-000" in p]) == 1  # no follow-up errors from the unreadable CT
    assert any(p.startswith("subject sub-001: mr.nii.gz: unreadable image") for p in problems)


def _edit_landmarks(path: Path, edit) -> None:
    payload = json.loads(path.read_text())
    edit(payload["vertebrae"])
    path.write_text(json.dumps(payload))


def test_fewer_than_three_landmark_pairs(copy):
    def keep_two(vertebrae):
        for key in list(vertebrae)[1:]:
            del vertebrae[key]
    _edit_landmarks(copy / "sub-000" / "mr_landmarks.json", keep_two)
    problems = problems_of(copy)
    assert problems == ["subject sub-000: mr_landmarks.json: only 2 landmark pair(s) shared with the CT labels; "
                        "registration needs at least 3"]


def test_landmark_ids_missing_in_the_other_modality(copy):
    _edit_landmarks(copy / "sub-001" / "mr_landmarks.json",
                    lambda vertebrae: vertebrae.update({"19": {"body": [0.0, 0.0, 90.0]}}))
    problems = problems_of(copy)
    assert problems == ["subject sub-001: mr_landmarks.json: vertebra id(s) [19] missing in ct_seg.nii.gz",
                        "subject sub-001: mr_landmarks.json: vertebra id(s) [19] missing in ct_landmarks.json"]


def test_several_bad_subjects_are_reported_together(copy):
    (copy / "sub-000" / "mr_landmarks.json").unlink()
    (copy / "sub-002" / "ct_subreg.nii.gz").unlink()
    lines = (copy / "manifest.csv").read_text().splitlines()
    lines = [",".join(["sub-001", "training", "t3w", *line.split(",")[3:]]) if line.startswith("sub-001,") else line
             for line in lines]
    (copy / "manifest.csv").write_text("\n".join(lines) + "\n")
    problems = problems_of(copy)
    assert "subject sub-000: mr_landmarks.json: missing" in problems
    assert "subject sub-002: ct_subreg.nii.gz: missing" in problems
    assert any(p.startswith("subject sub-001: manifest.csv: unknown split 'training'") for p in problems)
    assert any(p.startswith("subject sub-001: manifest.csv: unknown contrast 't3w'") for p in problems)


def test_missing_manifest_and_subject_folder(copy):
    shutil.rmtree(copy / "sub-001")
    assert problems_of(copy) == [f"subject sub-001: {copy / 'sub-001'}: subject folder missing"]
    (copy / "manifest.csv").unlink()
    assert problems_of(copy) == ["manifest.csv: missing"]


def test_landmarks_json_round_trip_in_both_coordinate_systems(tmp_path):
    landmarks = {20: {"body": np.array([1.5, -2.0, 30.0]), "spinous": np.array([0.5, -50.0, 25.0])},
                 21: {"body": np.array([1.0, 0.0, 0.0])}}
    for system in ("RAS", "LPS"):
        path = write_landmarks(landmarks, tmp_path / f"{system}.json", coordinate_system=system)
        payload = json.loads(path.read_text())
        assert payload["coordinate_system"] == system and payload["units"] == "mm"
        stored = payload["vertebrae"]["20"]["body"]
        assert stored == ([1.5, -2.0, 30.0] if system == "RAS" else [-1.5, 2.0, 30.0])
        back = read_landmarks(path)
        assert set(back) == {20, 21} and set(back[21]) == {"body"}
        assert np.allclose(back[20]["spinous"], landmarks[20]["spinous"])
    (tmp_path / "bad.json").write_text(json.dumps({"coordinate_system": "XYZ", "vertebrae": {}}))
    with pytest.raises(ValueError, match="coordinate_system"):
        read_landmarks(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps({"coordinate_system": "RAS", "vertebrae": {"20": {"body": [1, 2]}}}))
    with pytest.raises(ValueError, match="3 finite numbers"):
        read_landmarks(tmp_path / "bad.json")


def test_true_transform_json_round_trip_and_apply():
    angle = np.deg2rad(30.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    global_matrix = np.eye(4)
    global_matrix[:3, :3], global_matrix[:3, 3] = rotation, [1.0, 2.0, 3.0]
    shifted = global_matrix.copy()
    shifted[:3, 3] += [0.0, 0.0, 1.0]
    truth = TrueTransform.from_json(json.loads(json.dumps(TrueTransform(global_matrix, {20: shifted}).to_json())))
    point = np.array([2.0, 0.0, 0.0])
    expected = [2 * np.cos(angle) + 1.0, 2 * np.sin(angle) + 2.0, 3.0]
    assert np.allclose(truth.apply(point), expected)
    assert np.allclose(truth.apply(point, vertebra_id=20), np.add(expected, [0, 0, 1]))
    with pytest.raises(KeyError, match="vertebra 21"):
        truth.apply(point, vertebra_id=21)
