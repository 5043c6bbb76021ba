"""mr2ct.translate on phantom MRs from one tiny real training run: geometry of the outputs on the input's
header, labels against the ground truth, DICOM series, corrupt files, 1 mm outputs, std maps, determinism."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mr2ct.core.io import Volume, load_nifti, to_sitk
from mr2ct.core.labels import vertebra_mask
from mr2ct.core.values import ct_to_model
from mr2ct.metrics.dice import dice
from mr2ct.segment import Segmentation
from mr2ct.inference.inputs import discover_inputs
from mr2ct.translate import segmentation_layers, translate, write_layers
from tests.conftest import TINY, compose_config, train_tiny

# A stochastic sampler (DDIM, eta=1), so std maps and seeded determinism mean something.
TINY_DDIM = [o for o in TINY if not o.startswith(("model.", "model="))] + [
    "model=ddim_image", "model.net.dim=8", "model.net.dim_mults=[1,2]", "model.net.attention=false"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir) -> Path:
    return train_tiny(tmp_path_factory.mktemp("train") / "run", cache_dir, [*TINY_DDIM, "data.test_sets=[]"])


@pytest.fixture(scope="module")
def subject(tiny_run: Path) -> Path:
    """The folder of one test subject of the run's phantom (mr.nii.gz, mr_seg, mr_subreg, oracle_ct)."""
    prepared = Path(json.loads((tiny_run / "results.json").read_text())["prepared_dataset"])
    manifest = json.loads((prepared / "manifest.json").read_text())
    return Path(manifest["subject_root"]) / manifest["subjects"]["test"][0]


@pytest.fixture(scope="module")
def small_mr(subject: Path, tmp_path_factory) -> Path:
    """Ten mid-sagittal slices of the subject's MR (its on-disk LIP header kept) and the matching mr_seg,
    so each translation in these tests is cheap."""
    folder = tmp_path_factory.mktemp("small")
    for name in ("mr", "mr_seg"):
        nib.save(nib.load(str(subject / f"{name}.nii.gz")).slicer[14:24], str(folder / f"{name}.nii.gz"))
    return folder / "mr.nii.gz"


@pytest.fixture(scope="module")
def translated(tiny_run: Path, small_mr: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The small MR translated once with segment=true and iso=true: (output folder, returned log)."""
    output = tmp_path_factory.mktemp("translated")
    return output, run_translate(tiny_run, small_mr, output, "iso=true")


def run_translate(tiny_run: Path, source: Path, output: Path, *overrides: str) -> dict:
    cfg = compose_config([f"ckpt={tiny_run}", f"input={source}", f"output={output}", "inference.t=2",
                          "progress=false", *overrides], config_name="translate")
    return translate(cfg)


def assert_on_header(path: Path, reference: nib.Nifti1Image) -> np.ndarray:
    """The output's voxels, after checking it has the reference's shape, affine and axis order."""
    image = nib.load(str(path))
    assert image.shape == reference.shape
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-4)
    assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(reference.affine)
    return np.asanyarray(image.dataobj)


class ThresholdSegmenter:
    """Bone = HU above a threshold, all labelled L3, bodies as subregion 50: a transparent stand-in whose
    answer on the oracle CT is known to match the phantom's ground truth closely."""

    def __init__(self, threshold_hu: float = 150.0):
        self.threshold_hu = threshold_hu

    def segment(self, ct_hu: Volume) -> Segmentation:
        bone = ct_hu.array > self.threshold_hu
        return Segmentation(ct_hu.with_array(np.where(bone, 22, 0).astype(np.int16)),
                            ct_hu.with_array(np.where(bone, 50, 0).astype(np.int16)))


# --------------------------------------------------------------------------------------------- one NIfTI
def test_nifti_outputs_lie_on_the_input_header_and_overlap_ground_truth(translated, small_mr, tiny_run):
    output, log = translated
    mr = nib.load(str(small_mr))
    sct = assert_on_header(output / "mr_sct.nii.gz", mr)
    assert sct.dtype == np.float32 and np.isfinite(sct).all() and -1000.5 <= sct.min() < sct.max() <= 1000.5
    labels = assert_on_header(output / "mr_seg.nii.gz", mr)
    subregions = assert_on_header(output / "mr_subreg.nii.gz", mr)
    truth = np.asanyarray(nib.load(str(small_mr.parent / "mr_seg.nii.gz")).dataobj)
    assert dice(labels > 0, truth > 0) > 0
    assert set(np.unique(subregions)) <= {0, 41, 42, 50}
    assert not (output / "mr_sct_std.nii.gz").exists() and not list(output.glob(".tmp-*"))

    written = json.loads((output / "translate_log.json").read_text())
    assert written["summary"] == {"files": 1, "ok": 1, "skipped": 0, "failed": 0} == log["summary"]
    checkpoint = (tiny_run / "checkpoints" / "last.ckpt").resolve()
    assert written["checkpoint"] == str(checkpoint)
    assert written["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert written["settings"]["preprocess"]["spacing_inplane_mm"] == 3.0 and written["settings"]["crop_size"] == 32
    assert written["meta"]["packages"]["torch"] and "commit" in written["meta"]["git"]
    assert sorted(Path(p).name for p in written["files"][0]["outputs"]) == sorted(
        f"mr_{kind}{iso}.nii.gz" for kind in ("sct", "seg", "subreg") for iso in ("", "_iso"))


def test_segmenting_the_oracle_ct_through_the_same_writer_matches_ground_truth(subject, tmp_path):
    """The segment-and-write path on a perfect synthetic CT: labels land on the ground truth's voxels."""
    oracle, _ = load_nifti(subject / "oracle_ct.nii.gz")
    mr, reference = load_nifti(subject / "mr.nii.gz")
    layers = segmentation_layers(ThresholdSegmenter(), oracle.with_array(ct_to_model(oracle.array)), mr)
    write_layers(layers, mr, reference, "oracle", tmp_path, iso=False)
    labels = assert_on_header(tmp_path / "oracle_seg.nii.gz", reference)
    truth = np.asanyarray(nib.load(str(subject / "mr_seg.nii.gz")).dataobj)
    assert dice(labels > 0, truth > 0) > 0.8
    # The same labels written in the wrong voxel order would not overlap: the check can fail.
    assert dice(labels[:, :, ::-1] > 0, truth > 0) < 0.5


# --------------------------------------------------------------------------------------------- folders
def test_folder_with_corrupt_files_translates_the_rest_and_reports_them(tiny_run, small_mr, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    good = small_mr.read_bytes()
    (inputs / "good.nii.gz").write_bytes(good)
    (inputs / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    mr = nib.load(str(small_mr))
    nan = np.asanyarray(mr.dataobj).astype(np.float32)
    nan[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, mr.affine), str(inputs / "nan.nii"))
    nib.save(nib.Nifti1Image(np.zeros(mr.shape, np.float32), mr.affine), str(inputs / "blank.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.float32), mr.affine), str(inputs / "four_d.nii.gz"))
    nib.save(mr.slicer[:1], str(inputs / "one_slice.nii.gz"))
    nib.save(nib.Nifti1Image(np.asanyarray(mr.dataobj), np.diag([0.8, 0.8, 5.0, 1.0])), str(inputs / "axial.nii.gz"))
    output = tmp_path / "out"
    command = [sys.executable, "-m", "mr2ct.translate", f"ckpt={tiny_run}", f"input={inputs}", f"output={output}",
               "inference.t=2", "segment=false", "progress=false"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0, completed.stdout + completed.stderr
    log = json.loads((output / "translate_log.json").read_text())
    status = {record["input"]: record for record in log["files"]}
    assert {name: r["status"] for name, r in status.items()} == {
        "axial": "failed", "blank": "failed", "four_d": "failed", "good": "ok", "nan": "failed", "one_slice": "failed",
        "truncated": "failed"}
    assert "NaN" in status["nan"]["error"] and "blank" in status["blank"]["error"]
    assert "3D" in status["four_d"]["error"] and "truncated" in status["truncated"]["error"]
    assert "an axial acquisition (5.0 mm slices" in status["axial"]["error"]
    assert "a single 2D slice" in status["one_slice"]["error"]
    assert sorted(p.name for p in output.iterdir()) == [
        "good_sct.nii.gz", "good_translate.json", "translate_log.json", "translate_log.jsonl"]
    assert "FAILED  truncated" in completed.stdout and "1 translated, 0 already done, 6 failed" in completed.stdout
    assert_on_header(output / "good_sct.nii.gz", mr)


def test_a_single_unsuitable_input_is_refused_in_one_line_before_anything_is_written(tiny_run, small_mr, tmp_path):
    axial = tmp_path / "axial.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(nib.load(str(small_mr)).dataobj), np.diag([0.8, 0.8, 5.0, 1.0])), str(axial))
    command = [sys.executable, "-m", "mr2ct.translate", f"ckpt={tiny_run}", f"input={axial}",
               f"output={tmp_path / 'out'}", "progress=false"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1 and "Traceback" not in completed.stderr, completed.stderr[-2000:]
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: input={axial}: an axial acquisition"), completed.stderr
    assert not (tmp_path / "out").exists()


def test_bad_ckpt_or_input_fails_before_any_work(tiny_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_translate(tmp_path, tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_translate(tiny_run, tmp_path / "missing.nii.gz", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no NIfTI files"):
        run_translate(tiny_run, tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_discovery_names_niftis_and_series(subject, tmp_path):
    (tmp_path / "a.nii.gz").write_bytes((subject / "mr.nii.gz").read_bytes())
    (tmp_path / "b.nii").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    write_dicom_series(load_nifti(subject / "mr.nii.gz")[0], tmp_path / "patient7")
    assert [(i.name, i.series_id is not None) for i in discover_inputs(tmp_path)] == [
        ("a", False), ("b", False), ("patient7", True)]
    (tmp_path / "a.nii").write_bytes(b"")
    with pytest.raises(ValueError, match="same outputs.*'a'"):
        discover_inputs(tmp_path)


# --------------------------------------------------------------------------------------------- DICOM
def write_dicom_series(mr: Volume, folder: Path) -> sitk.Image:
    """The MR as a DICOM series of axial-order slices (SimpleITK ImageSeriesWriter), geometry kept."""
    image = sitk.Cast(to_sitk(mr.with_array(np.asarray(mr.array, dtype=np.float32).round())), sitk.sitkInt16)
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.77"
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        for tag, value in (("0020|000e", series_uid), ("0020|0013", str(k + 1)), ("0008|0060", "MR"),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k))))),
                           ("0020|0037", "\\".join(map(str, image.GetDirection()[0::3] + image.GetDirection()[1::3])))):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    return image


def test_dicom_series_translates_with_the_series_geometry(tiny_run, small_mr, tmp_path):
    mr, _ = load_nifti(small_mr)
    written = write_dicom_series(mr, tmp_path / "series")
    reread = sitk.ReadImage(sorted(str(p) for p in (tmp_path / "series").glob("*.dcm")))
    np.testing.assert_allclose(reread.GetOrigin(), written.GetOrigin(), atol=1e-3)  # the series is readable as written
    log = run_translate(tiny_run, tmp_path / "series", tmp_path / "out", "segment=false")
    assert log["summary"]["ok"] == 1
    sct = nib.load(str(tmp_path / "out" / "series_sct.nii.gz"))
    np.testing.assert_allclose(sct.affine, mr.affine, atol=1e-3)  # stored in SimpleITK order, which is RAS+ here
    assert sct.shape == mr.shape


# --------------------------------------------------------------------------------------------- options
def test_iso_writes_1mm_outputs_covering_the_input(translated, small_mr):
    output, _ = translated
    mr, _ = load_nifti(small_mr)
    corners = np.array([[i, j, k] for i in (-0.5, mr.shape[0] - 0.5) for j in (-0.5, mr.shape[1] - 0.5)
                        for k in (-0.5, mr.shape[2] - 0.5)])
    mr_ras = corners @ mr.affine[:3, :3].T + mr.affine[:3, 3]
    for name in ("mr_sct_iso", "mr_seg_iso", "mr_subreg_iso"):
        iso = nib.load(str(output / f"{name}.nii.gz"))
        np.testing.assert_allclose(nib.affines.voxel_sizes(iso.affine), 1.0, atol=1e-6)
        low = iso.affine[:3, :3] @ np.full(3, -0.5) + iso.affine[:3, 3]
        high = iso.affine[:3, :3] @ (np.asarray(iso.shape) - 0.5) + iso.affine[:3, 3]
        np.testing.assert_allclose(low, mr_ras.min(0), atol=0.5)  # same field of view to half a millimetre
        np.testing.assert_allclose(high, mr_ras.max(0), atol=0.5)
    native = np.asanyarray(nib.load(str(output / "mr_seg.nii.gz")).dataobj)
    iso_labels = np.asanyarray(nib.load(str(output / "mr_seg_iso.nii.gz")).dataobj)
    assert set(np.unique(iso_labels)) <= set(np.unique(native)) | {0}
    # Same physical content: the iso CT read at the native voxel centres follows the native CT.
    native_image = nib.load(str(output / "mr_sct.nii.gz"))
    iso_image = nib.load(str(output / "mr_sct_iso.nii.gz"))
    centres = np.stack(np.meshgrid(*[np.arange(n) for n in native_image.shape], indexing="ij"), -1).reshape(-1, 3)
    iso_index = nib.affines.apply_affine(np.linalg.inv(iso_image.affine) @ native_image.affine, centres)
    iso_index = np.clip(np.round(iso_index).astype(int), 0, np.asarray(iso_image.shape) - 1)
    iso_values = np.asanyarray(iso_image.dataobj)[tuple(iso_index.T)]
    assert np.corrcoef(iso_values, np.asanyarray(native_image.dataobj).ravel())[0, 1] > 0.9


def test_samples_write_a_std_map_and_a_fixed_seed_repeats_exactly(tiny_run, small_mr, tmp_path):
    for name in ("first", "second"):
        run_translate(tiny_run, small_mr, tmp_path / name, "segment=false", "inference.samples=2")

    def read(name: str, suffix: str) -> np.ndarray:
        return np.asanyarray(nib.load(str(tmp_path / name / f"mr_{suffix}.nii.gz")).dataobj)

    std = read("first", "sct_std")
    assert_on_header(tmp_path / "first" / "mr_sct_std.nii.gz", nib.load(str(small_mr)))
    # Draws differ (DDIM with eta=1 injects noise), yet the seeded run repeats bit for bit.
    assert np.isfinite(std).all() and std.min() >= 0 and std.max() > 0
    for suffix in ("sct", "sct_std"):
        assert np.array_equal(read("first", suffix), read("second", suffix))


@pytest.mark.slow
def test_default_segmenter_on_the_oracle_ct_through_the_same_path_matches_ground_truth(subject, tmp_path):
    """The real default segmenter (phantom_unet, about a minute of training) through segment-and-write."""
    from mr2ct.core.config import SegmenterConfig
    from mr2ct.segment import build_segmenter

    segmenter = build_segmenter(SegmenterConfig(progress=False), tmp_path / "cache")
    oracle, _ = load_nifti(subject / "oracle_ct.nii.gz")
    mr, reference = load_nifti(subject / "mr.nii.gz")
    layers = segmentation_layers(segmenter, oracle.with_array(ct_to_model(oracle.array)), mr)
    write_layers(layers, mr, reference, "oracle", tmp_path, iso=False)
    labels = assert_on_header(tmp_path / "oracle_seg.nii.gz", reference)
    subregions = assert_on_header(tmp_path / "oracle_subreg.nii.gz", reference)
    truth = np.asanyarray(nib.load(str(subject / "mr_seg.nii.gz")).dataobj)
    truth_subregions = np.asanyarray(nib.load(str(subject / "mr_subreg.nii.gz")).dataobj)
    # Scored over the vertebrae, as the suite's Dice is: the phantom labels the sacrum too, the segmenter does not.
    assert dice(vertebra_mask(labels), vertebra_mask(truth)) > 0.85
    assert dice((subregions == 50) & vertebra_mask(labels), (truth_subregions == 50) & vertebra_mask(truth)) > 0.85
