"""Inputs that are not a sagittal grey-scale MR volume are refused from their headers with what was found:
axial and coronal acquisitions, single slices, colour images, undecodable compressed DICOM, truncated files;
small real files written here with nibabel and SimpleITK."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mr2ct.inference.acquisition import UnsuitableInput, transfer_syntax
from mr2ct.inference.inputs import discover_inputs, read_input

SHAPE = (12, 40, 36)
RNG = np.random.default_rng(0)


def volume(shape=SHAPE) -> np.ndarray:
    return (RNG.random(shape) * 800 + 100).astype(np.int16)


def affine(spacing, axes=(0, 1, 2)) -> np.ndarray:
    """Voxel axis k stepping ``spacing[k]`` mm along world axis ``axes[k]`` (RAS)."""
    matrix = np.eye(4)
    matrix[:3, :3] = 0
    for k, (axis, step) in enumerate(zip(axes, spacing)):
        matrix[axis, k] = step
    return matrix


def save(array: np.ndarray, matrix: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, matrix), str(path))
    return path


def read_file(path: Path):
    return read_input(discover_inputs(path)[0])


def refusal(path: Path) -> str:
    with pytest.raises(UnsuitableInput) as caught:
        read_file(path)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# ------------------------------------------------------------------------------------------------- NIfTI
def test_sagittal_stacks_and_near_isotropic_volumes_are_accepted(tmp_path):
    sagittal = save(volume(), affine((3.0, 1.0, 1.0)), tmp_path / "sagittal.nii.gz")
    mr, reference = read_file(sagittal)
    assert mr.shape == SHAPE and reference.shape == SHAPE
    # stored in another voxel order (slices along the last axis, as many scanners write them): still sagittal
    read_file(save(volume((40, 36, 12)), affine((1.0, 1.0, 3.0), axes=(1, 2, 0)), tmp_path / "sagittal_last.nii"))
    # a 3D acquisition at 1 mm, stored axially, reslices without loss
    read_file(save(volume((30, 30, 30)), affine((1.0, 1.0, 1.1)), tmp_path / "isotropic.nii.gz"))
    # a mildly oblique sagittal stack (20 degrees about the cranio-caudal axis)
    oblique = affine((3.0, 1.0, 1.0))
    turn = np.radians(20)
    oblique[:3, :3] = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]]) @ oblique[:3, :3]
    read_file(save(volume(), oblique, tmp_path / "oblique.nii.gz"))


def test_axial_and_coronal_acquisitions_are_refused_naming_the_plane_and_slice_thickness(tmp_path):
    axial = refusal(save(volume((40, 36, 12)), affine((0.8, 0.8, 5.0)), tmp_path / "axial.nii.gz"))
    assert axial.startswith("an axial acquisition (5.0 mm slices stacked inferior-superior, in-plane 0.80 x 0.80 mm)")
    assert "sagittal" in axial
    coronal = refusal(save(volume((40, 12, 36)), affine((1.0, 4.0, 1.0)), tmp_path / "coronal.nii.gz"))
    assert coronal.startswith("a coronal acquisition (4.0 mm slices stacked anterior-posterior")


def test_single_slices_and_4d_images_are_refused(tmp_path):
    assert refusal(save(volume((1, 40, 36)), affine((3.0, 1.0, 1.0)), tmp_path / "one.nii.gz")).startswith(
        "a single 2D slice (shape 1x40x36)")
    assert refusal(save(volume((40, 36)), np.eye(4), tmp_path / "plane.nii.gz")).startswith(
        "a single 2D slice (shape 40x36)")
    assert refusal(save(volume((*SHAPE, 2)), affine((3.0, 1.0, 1.0)), tmp_path / "series.nii.gz")).startswith(
        "a 4D image (shape 12x40x36x2)")


def test_colour_nifti_is_refused(tmp_path):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    assert refusal(save(rgb, affine((3.0, 1.0, 1.0)), tmp_path / "rgb.nii.gz")).startswith("a colour image (voxel type R/G/B)")


def test_truncated_files_are_refused_as_truncated(tmp_path):
    for name in ("whole.nii", "whole.nii.gz"):
        data = save(volume(), affine((3.0, 1.0, 1.0)), tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) * 2 // 3])
        assert "truncated" in refusal(cut), name


# ------------------------------------------------------------------------------------------------- DICOM
SAGITTAL_LPS = (0, 0, 1, 1, 0, 0, 0, -1, 0)  # columns: i posterior, j inferior, k (slices) left


def write_series(folder: Path, array_kji: np.ndarray, spacing, direction, compressor: str | None = None) -> Path:
    """``array_kji`` as a DICOM series, one file per slice k, geometry in the standard tags."""
    image = sitk.GetImageFromArray(array_kji.astype(np.uint16))
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    if compressor:
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        for tag, value in (("0020|000e", "1.2.826.0.1.3680043.2.1125.1.78"), ("0020|0013", str(k + 1)),
                           ("0008|0060", "MR"), ("0018|0050", str(spacing[2])),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k))))),
                           ("0020|0037", "\\".join(map(str, direction[0::3] + direction[1::3])))):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(plane)
    return folder


def test_dicom_sagittal_series_uncompressed_and_jpeg2000_read_the_same(tmp_path):
    voxels = volume()
    plain = write_series(tmp_path / "plain", voxels, (1.0, 1.0, 3.0), SAGITTAL_LPS)
    j2k = write_series(tmp_path / "j2k", voxels, (1.0, 1.0, 3.0), SAGITTAL_LPS, compressor="JPEG2000")
    assert transfer_syntax(next(plain.glob("*.dcm"))) == "1.2.840.10008.1.2"
    assert transfer_syntax(next(j2k.glob("*.dcm"))) == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless: handled
    (plain_mr, _), (j2k_mr, _) = read_file(plain), read_file(j2k)
    assert plain_mr.shape == (12, 36, 40)  # RAS+: left-right slices, then anterior-posterior, inferior-superior
    np.testing.assert_array_equal(plain_mr.array, j2k_mr.array)


def test_dicom_axial_series_single_slice_colour_and_undecodable_compression_are_refused(tmp_path):
    axial = write_series(tmp_path / "axial", volume((12, 40, 36)), (0.8, 0.8, 5.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert refusal(axial).startswith("an axial acquisition (5.0 mm slices stacked inferior-superior")
    one = write_series(tmp_path / "one", volume((1, 40, 36)), (1.0, 1.0, 3.0), SAGITTAL_LPS)
    assert refusal(one).startswith("a single 2D slice")

    (tmp_path / "rgb").mkdir()
    grey = sitk.GetImageFromArray(volume((40, 36)).astype(np.uint8))
    sitk.WriteImage(sitk.Compose([grey] * 3), str(tmp_path / "rgb" / "slice.dcm"))
    assert refusal(tmp_path / "rgb").startswith("a colour DICOM (RGB, 3 samples per pixel)")

    # JPIP-referenced pixel data (transfer syntax .4.94: the pixels live on a server) cannot be decoded here
    jpip = write_series(tmp_path / "jpip", volume(), (1.0, 1.0, 3.0), SAGITTAL_LPS, compressor="JPEG2000")
    for path in jpip.glob("*.dcm"):
        path.write_bytes(path.read_bytes().replace(b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.4.94"))
    assert refusal(jpip).startswith("a compressed DICOM (transfer syntax 1.2.840.10008.1.2.4.94) that this build "
                                    "cannot decode")
