"""Preprocessing: exact value maps, grids, one-step resampling, elastic copies, and the cached prepared dataset."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import mr2ct.data.preprocess as preprocess
from mr2ct.core.config import (
    DataConfig,
    PhantomConfig,
    PreprocessConfig,
    RegistrationConfig,
)
from mr2ct.core.io import Volume, load_nifti
from mr2ct.core.subjects import SubjectError
from mr2ct.core.values import ct_to_model, model_to_ct, mr_robust_max, mr_to_model
from mr2ct.data.preprocess import (
    elastic_deform,
    prepare_dataset,
    prepared_grid_2d,
    prepared_grid_3d,
    resample_onto,
)


# ---------------------------------------------------------------------------------------------- value maps
def test_ct_map_is_clipped_hu_over_1000():
    hu = np.array([-3000.0, -1000.0, -500.0, 0.0, 250.0, 1000.0, 2500.0])
    np.testing.assert_array_equal(ct_to_model(hu), [-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0])
    torch.testing.assert_close(ct_to_model(torch.tensor(hu)), torch.tensor([-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0],
                                                                           dtype=torch.float64))
    np.testing.assert_array_equal(model_to_ct(ct_to_model(hu[1:-1])), hu[1:-1])


def test_mr_map_uses_the_robust_max_percentile():
    mr = np.arange(1, 1001, dtype=np.float64)  # numpy's linear percentile: 1 + 0.995 * 999
    robust_max = mr_robust_max(mr, 99.5)
    assert robust_max == pytest.approx(995.005)
    np.testing.assert_allclose(mr_to_model(np.array([0.0, robust_max / 2, robust_max, 1000.0]), robust_max),
                               [-1.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no positive"):
        mr_robust_max(np.zeros((4, 4, 4)), 99.5)


# ---------------------------------------------------------------------------------------------- grids
def oblique_mr(shape=(10, 30, 40), spacing=(3.0, 0.8, 0.7)) -> Volume:
    angle = np.deg2rad(10)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = [-12.0, 40.0, -80.0]
    return Volume(np.zeros(shape, np.float32), affine)


def test_2d_grid_keeps_slices_and_resamples_the_sagittal_plane():
    mr = oblique_mr()
    grid = prepared_grid_2d(mr, 2.0)
    np.testing.assert_allclose(grid.spacing, [3.0, 2.0, 2.0])
    assert grid.shape == (10, 12, 14)  # round(30 * 0.8 / 2), round(40 * 0.7 / 2)
    np.testing.assert_allclose(grid.affine[:3, 0], mr.affine[:3, 0])  # slice axis untouched
    np.testing.assert_allclose(grid.index_to_ras([-0.5] * 3), mr.index_to_ras([-0.5] * 3))  # same corner
    directions = grid.affine[:3, :3] / grid.spacing
    np.testing.assert_allclose(directions, mr.affine[:3, :3] / mr.spacing)  # same axes
    # Voxel centres of slice i lie in MR slice i's plane.
    centres = grid.index_to_ras(np.array([[4, 0, 0], [4, 11, 13]]))
    np.testing.assert_allclose(mr.ras_to_index(centres)[:, 0], [4, 4])


def test_3d_grid_is_isotropic_over_the_field_of_view():
    mr = oblique_mr()
    grid = prepared_grid_3d(mr, 1.0)
    np.testing.assert_allclose(grid.spacing, [1.0, 1.0, 1.0])
    assert grid.shape == (30, 24, 28)
    np.testing.assert_allclose(grid.index_to_ras([-0.5] * 3), mr.index_to_ras([-0.5] * 3))


def test_linear_resampling_reproduces_a_linear_field_exactly():
    mr = oblique_mr()
    weights = np.array([0.3, -0.7, 1.1])
    index = np.stack(np.meshgrid(*[np.arange(n) for n in mr.shape], indexing="ij"), -1)
    field = mr.with_array((mr.index_to_ras(index) @ weights).astype(np.float32))
    grid = prepared_grid_2d(mr, 2.0)
    resampled = resample_onto(field, grid, order=1)
    grid_index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    expected = grid.index_to_ras(grid_index) @ weights
    inside = np.all((mr.ras_to_index(grid.index_to_ras(grid_index)) >= 0)
                    & (mr.ras_to_index(grid.index_to_ras(grid_index)) <= np.array(mr.shape) - 1), axis=-1)
    np.testing.assert_allclose(resampled.array[inside], expected[inside], atol=1e-3)
    np.testing.assert_array_equal(resampled.affine, grid.affine)


def test_resampled_labels_keep_their_ids():
    mr = oblique_mr()
    labels = np.zeros(mr.shape, np.int16)
    labels[2:8, 5:12, 5:20], labels[2:8, 14:25, 22:35] = 20, 21
    resampled = resample_onto(mr.with_array(labels), prepared_grid_3d(mr, 0.9), order=0)
    assert resampled.array.dtype == np.int16
    assert set(np.unique(resampled.array)) == {0, 20, 21}


# ---------------------------------------------------------------------------------------------- elastic
def test_zero_displacement_is_the_identity():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 20, 24)).astype(np.float32)
    labels = rng.integers(0, 4, size=(3, 20, 24)).astype(np.int16)
    out_image, out_labels = elastic_deform([image, labels], [3, 0], sigma=0.0, points=3, axes=(1, 2), rng=rng)
    np.testing.assert_allclose(out_image, image, atol=1e-3)  # SciPy's 'reflect' spline prefilter is ~1e-4 at edges
    np.testing.assert_array_equal(out_labels, labels)


def test_elastic_field_is_joint_in_plane_and_seeded():
    labels = np.zeros((4, 40, 50), np.int16)
    labels[:, 10:30, 15:35] = 20
    labels[:, 18:22, 20:30] = 50
    image = labels.astype(np.float32)
    deform = lambda seed: elastic_deform([image, labels], [0, 0], 4.0, 3, (1, 2), np.random.default_rng(seed))  # noqa: E731
    out_image, out_labels = deform(1)
    np.testing.assert_array_equal(out_image, out_labels)  # one field for all arrays
    assert not np.array_equal(out_labels, labels)
    assert set(np.unique(out_labels)) == {0, 20, 50}
    assert all(np.array_equal(out_labels[0], out_labels[k]) for k in range(4))  # 2D: same field on every slice
    np.testing.assert_array_equal(deform(1)[1], out_labels)
    assert not np.array_equal(deform(2)[1], out_labels)


# ---------------------------------------------------------------------------------------------- prepared dataset
SMALL = {"spacing_inplane_mm": 3.0, "elastic_copies": 2}


def configs(mode: str = "two_point", subjects: int = 4, **preprocess_values):
    """(data, registration, preprocess, dims) of a small 2D preparation."""
    data = OmegaConf.structured(DataConfig(name="phantom_t1w", phantom=PhantomConfig(subjects=subjects)))
    registration = OmegaConf.structured(RegistrationConfig(mode=mode))
    preprocess_cfg = OmegaConf.structured(PreprocessConfig(**{**SMALL, **preprocess_values}))
    return data, registration, preprocess_cfg, 2


def load_all(entry: Path) -> dict[str, dict[str, np.ndarray]]:
    arrays = {}
    for path in sorted(entry.rglob("*.npz")):
        with np.load(path) as stored:
            arrays[str(path.relative_to(entry))] = {key: stored[key] for key in stored.files}
    return arrays


@pytest.fixture(scope="module")
def cache(cache_dir) -> Path:
    """The session cache (conftest): the phantom is generated once for every test module that uses it."""
    return cache_dir


@pytest.fixture(scope="module")
def prepared(cache) -> Path:
    return prepare_dataset(*configs(), cache, progress=False)


@pytest.fixture(scope="module")
def manifest(prepared) -> dict:
    return json.loads((prepared / "manifest.json").read_text())


def test_layout_manifest_and_report(prepared, manifest):
    assert all(manifest["subjects"][split] for split in ("train", "val", "test"))
    assert len(manifest["files"]["train"]) == 3 * len(manifest["subjects"]["train"])  # original + 2 copies
    for split in ("val", "test"):
        assert manifest["files"][split] == [f"{split}/{name}.npz" for name in manifest["subjects"][split]]
    assert manifest["dims"] == 2 and manifest["spacing"] == 3.0 and manifest["registration_mode"] == "two_point"
    with open(prepared / "registration_report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["subject"] for row in rows) == sorted(sum(manifest["subjects"].values(), []))
    assert all(float(row["tre_mm"]) >= 0 for row in rows)
    assert manifest["contrasts"] == ["t1w"]
    with np.load(prepared / manifest["files"]["test"][0]) as test:
        assert test["mr"].dtype == np.float32 and test["reference_ct"].dtype == np.float32
        assert test["reference_seg"].dtype == np.int16 and test["reference_subreg"].dtype == np.uint8
        for key in ("mr", "reference_mr", "reference_ct"):
            assert test[key].min() >= -1 and test[key].max() <= 1, key
        assert Path(str(test["mr_path"])).is_file() and str(test["contrast"]) == "t1w"
        native, _ = load_nifti(str(test["mr_path"]))  # the evaluation grid is the MR's own grid
        for key in ("reference_mr", "reference_ct", "reference_seg", "reference_subreg"):
            assert test[key].shape == native.shape, key
        np.testing.assert_allclose(test["reference_affine"], native.affine)
        assert test["mr"].shape[0] == native.shape[0]  # 2D: slices kept
        assert "target_ct" not in test.files


def test_resampled_labels_keep_ids_and_copies_differ(prepared, manifest):
    from mr2ct.core.subjects import load_subjects

    subjects = {s.name: s for s in load_subjects(manifest["subject_root"])}
    name = manifest["subjects"]["train"][0]
    copies = [np.load(prepared / f"train/{name}__copy{k}.npz") for k in range(3)]
    ct_ids = set(np.unique(subjects[name].ct_seg.array)) - {0}
    original_ids = set(np.unique(copies[0]["seg"])) - {0}
    assert original_ids and original_ids <= ct_ids
    assert set(np.unique(copies[0]["subreg"])) <= set(np.unique(subjects[name].ct_subreg.array))
    for deformed in copies[1:]:
        assert not np.array_equal(deformed["mr"], copies[0]["mr"])
        assert not np.array_equal(deformed["seg"], copies[0]["seg"])
        assert set(np.unique(deformed["seg"])) - {0} <= original_ids
        assert set(np.unique(deformed["subreg"])) <= set(np.unique(copies[0]["subreg"]))
        np.testing.assert_array_equal(deformed["affine"], copies[0]["affine"])


def test_evaluation_data_do_not_depend_on_the_registration_mode(prepared, manifest, cache):
    mtime = (prepared / "manifest.json").stat().st_mtime_ns
    unregistered = prepare_dataset(*configs(mode="none"), cache, progress=False)
    assert unregistered != prepared  # a changed config is a new entry ...
    assert (prepared / "manifest.json").stat().st_mtime_ns == mtime  # ... and the old one is left alone
    for relative in manifest["files"]["val"] + manifest["files"]["test"]:
        with np.load(prepared / relative) as two_point, np.load(unregistered / relative) as none:
            for key in ("mr", "reference_mr", "reference_ct", "reference_seg", "reference_subreg"):
                np.testing.assert_array_equal(two_point[key], none[key])
            if "target_ct" in two_point.files:  # val: the training target follows the mode
                assert not np.array_equal(two_point["target_ct"], none["target_ct"])
    first_train = manifest["files"]["train"][0]
    with np.load(prepared / first_train) as two_point, np.load(unregistered / first_train) as none:
        assert not np.array_equal(two_point["ct"], none["ct"])


def test_unchanged_config_reuses_the_entry(prepared, cache, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("prepare_subject called for a cached config")

    monkeypatch.setattr(preprocess, "prepare_subject", no_work)
    assert prepare_dataset(*configs(), cache, progress=False) == prepared


def test_same_seed_gives_identical_arrays(prepared, cache, tmp_path):
    from mr2ct.data.sources import subject_root

    phantom = subject_root(configs()[0], cache, progress=False)
    shutil.copytree(phantom, tmp_path / phantom.relative_to(cache))  # share the subjects, rebuild the preprocessing
    again = prepare_dataset(*configs(), tmp_path, progress=False)
    assert again.name == prepared.name and again != prepared
    expected, actual = load_all(prepared), load_all(again)
    assert expected.keys() == actual.keys()
    for relative, arrays in expected.items():
        for key, value in arrays.items():
            if key != "mr_path":  # the subjects' copy lives in the other cache
                np.testing.assert_array_equal(actual[relative][key], value, err_msg=f"{relative}:{key}")


def broken_root(cache: Path, tmp_path: Path) -> Path:
    from mr2ct.data.sources import subject_root

    root = tmp_path / "root"
    shutil.copytree(subject_root(configs()[0], cache, progress=False), root)
    return root


def test_broken_subject_gives_its_error_and_no_cache_entry(prepared, manifest, cache, tmp_path):
    root = broken_root(cache, tmp_path)
    victim = manifest["subjects"]["train"][-1]
    (root / victim / "ct_seg.nii.gz").unlink()
    data = OmegaConf.structured(DataConfig(name="nifti", kind="nifti", root=str(root)))
    with pytest.raises(SubjectError, match=f"subject {victim}: ct_seg.nii.gz: missing"):
        prepare_dataset(data, *configs()[1:], tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "prepared").iterdir())


def test_blank_mr_fails_during_preparation_without_a_half_entry(prepared, manifest, cache, tmp_path):
    from mr2ct.core.io import load_nifti, save_nifti

    root = broken_root(cache, tmp_path)
    with open(root / "manifest.csv", newline="") as handle:
        victim = next(csv.DictReader(handle))["subject"]  # the first subject prepared: fail fast
    mr, _ = load_nifti(root / victim / "mr.nii.gz")
    save_nifti(mr.with_array(np.zeros_like(mr.array)), root / victim / "mr.nii.gz")
    data = OmegaConf.structured(DataConfig(name="nifti", kind="nifti", root=str(root)))
    with pytest.raises(ValueError, match=f"subject {victim}: mr.nii.gz: .*no positive"):
        prepare_dataset(data, *configs()[1:], tmp_path / "cache", progress=False)
    assert not any((tmp_path / "cache" / "prepared").iterdir())


def test_missing_nifti_root_is_a_clear_error(tmp_path):
    data = OmegaConf.structured(DataConfig(name="nifti", kind="nifti", root=str(tmp_path / "nowhere")))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_dataset(data, *configs()[1:], tmp_path, progress=False)


def test_prepare_entry_point_reuses_the_cache_and_prints_the_median(prepared, cache, tmp_path):
    import statistics
    import subprocess
    import sys

    overrides = ["data.phantom.subjects=4", "data.phantom.val_fraction=0.17", "data.phantom.test_fraction=0.17",
                 "preprocess.spacing_inplane_mm=3.0", "preprocess.elastic_copies=2",
                 f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run([sys.executable, "-m", "mr2ct.prepare", *overrides], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"prepared dataset: {prepared.resolve()}" in result.stdout
    with open(prepared / "registration_report.csv", newline="") as handle:
        median = statistics.median(float(row["tre_mm"]) for row in csv.DictReader(handle))
    assert f"median tre_mm = {median:.3f}" in result.stdout
