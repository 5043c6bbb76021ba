"""User errors end in one line naming the file or key and the problem, exit code 1, no traceback; a malformed
subject root is reported by the subject validator, never by a crash deeper down."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mr2ct.core.config import DataConfig, PhantomConfig
from mr2ct.core.subjects import SubjectError, load_subjects
from mr2ct.data.sources import subject_root


def _resave(path: Path, array: np.ndarray) -> None:
    image = nib.load(path)
    nib.save(nib.Nifti1Image(array, image.affine), path)


def _label_shape_differs(folder: Path) -> None:
    seg = np.asanyarray(nib.load(folder / "ct_seg.nii.gz").dataobj)
    _resave(folder / "ct_subreg.nii.gz", np.zeros(np.array(seg.shape) - 3, dtype=np.int16))


def _truncated(folder: Path) -> None:
    data = (folder / "mr.nii.gz").read_bytes()
    (folder / "mr.nii.gz").write_bytes(data[: len(data) // 3])


def _not_gzip(folder: Path) -> None:
    (folder / "ct.nii.gz").write_bytes(b"not an image at all")


def _nan_voxels(folder: Path) -> None:
    mr = np.asanyarray(nib.load(folder / "mr.nii.gz").dataobj).astype(np.float32)
    mr[0, 0, 0] = np.nan
    _resave(folder / "mr.nii.gz", mr)


def _single_slice(folder: Path) -> None:
    mr = np.asanyarray(nib.load(folder / "mr.nii.gz").dataobj)
    _resave(folder / "mr.nii.gz", mr[:, :, 0])


def _empty_labels(folder: Path) -> None:
    seg = np.asanyarray(nib.load(folder / "ct_seg.nii.gz").dataobj)
    _resave(folder / "ct_seg.nii.gz", np.zeros_like(seg))


def _missing_file(folder: Path) -> None:
    (folder / "mr_landmarks.json").unlink()


def _bad_landmarks(folder: Path) -> None:
    (folder / "mr_landmarks.json").write_text("{ not json")


MALFORMED = {
    "label shape differs from its image": (_label_shape_differs, "ct_subreg.nii.gz: grid"),
    "truncated NIfTI": (_truncated, "mr.nii.gz: unreadable image"),
    "not a gzip file": (_not_gzip, "ct.nii.gz: unreadable image"),
    "NaN voxels": (_nan_voxels, "mr.nii.gz: 1 NaN/Inf voxels"),
    "2D image": (_single_slice, "mr.nii.gz: expected a 3D image"),
    "empty segmentation": (_empty_labels, "ct_seg.nii.gz: segmentation is empty"),
    "missing landmarks": (_missing_file, "mr_landmarks.json: missing"),
    "malformed landmarks": (_bad_landmarks, "mr_landmarks.json: cannot read landmarks JSON"),
}


@pytest.fixture(scope="module")
def phantom_root(cache_dir) -> Path:
    return subject_root(DataConfig(name="p", phantom=PhantomConfig(subjects=4, val_fraction=0.17, test_fraction=0.17)),
                        cache_dir, progress=False)


def malformed_root(phantom_root: Path, tmp_path: Path, case: str) -> tuple[Path, str]:
    root = tmp_path / "subjects"
    shutil.copytree(phantom_root, root, ignore=shutil.ignore_patterns("cache_config.json"))
    folder = sorted(p for p in root.iterdir() if p.is_dir())[0]
    damage, expected = MALFORMED[case]
    damage(folder)
    return root, f"subject {folder.name}: {expected}"


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_subject_validator_reports_each_malformed_root(phantom_root: Path, tmp_path: Path, case: str):
    root, expected = malformed_root(phantom_root, tmp_path, case)
    with pytest.raises(SubjectError) as raised:
        load_subjects(root)
    assert any(problem.startswith(expected) for problem in raised.value.problems), raised.value.problems


def _refusal(command: list[str], cwd: Path, env: dict | None = None) -> str:
    completed = subprocess.run([sys.executable, "-m", *command], cwd=cwd, capture_output=True, text=True,
                               timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    return lines[0]


def test_malformed_subject_root_is_one_line_without_traceback(phantom_root: Path, tmp_path: Path):
    root, expected = malformed_root(phantom_root, tmp_path, "label shape differs from its image")
    line = _refusal(["mr2ct.prepare", "data=nifti", f"data.root={root}", f"paths.cache_dir={tmp_path / 'cache'}",
                     "hydra.run.dir=run"], tmp_path)
    assert expected in line and str(root) in line
    assert not list((tmp_path / "cache").glob("prepared/*"))  # nothing partial left in the cache


def test_bad_checkpoint_and_config_value_are_one_line(tmp_path: Path):
    fake = tmp_path / "fake.ckpt"
    fake.write_bytes(gzip.compress(b"not a checkpoint"))
    assert f"ckpt={tmp_path / 'missing'}: no checkpoint" in _refusal(
        ["mr2ct.evaluate", f"ckpt={tmp_path / 'missing'}", "logger=none", "hydra.run.dir=run"], tmp_path)
    assert "is not an mr2ct run dir" in _refusal(
        ["mr2ct.evaluate", f"ckpt={fake}", "logger=none", "hydra.run.dir=run"], tmp_path)
    assert not (tmp_path / "run").exists()  # a refused run leaves no run dir behind
    assert "subjects" in _refusal(["mr2ct.phantom", "out_dir=p", "subjects=many"], tmp_path)


def test_full_traceback_on_request(tmp_path: Path):
    completed = subprocess.run([sys.executable, "-m", "mr2ct.evaluate", f"ckpt={tmp_path / 'missing'}", "logger=none",
                                "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert completed.returncode == 1 and "Traceback" in completed.stderr and "FileNotFoundError" in completed.stderr
