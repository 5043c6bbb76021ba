"""Volumes on disk and in memory: NIfTI (nibabel) and SimpleITK views of the same physical space.

mr2ct keeps every in-memory volume in RAS+ voxel order (nibabel's closest canonical orientation):
axis 0 runs left->right, axis 1 posterior->anterior, axis 2 inferior->superior, so a sagittal slice
is ``array[i]`` with shape (AP, SI). The affine maps voxel indices to RAS millimetres. SimpleITK works in
LPS; the conversions here are the only place that flips signs, so physical points agree everywhere.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import SimpleITK as sitk

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Volume:
    """A 3D array with the affine that maps its voxel indices to RAS millimetres."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same grid holding other voxel values (shape must match)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.array.shape}")
        return Volume(array, self.affine)

    def index_to_ras(self, index: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (..., 3) -> RAS mm (..., 3)."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_index(self, points: np.ndarray) -> np.ndarray:
        """RAS mm (..., 3) -> continuous voxel indices (..., 3)."""
        inverse = np.linalg.inv(self.affine)
        return np.asarray(points, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]


def load_nifti(path: str | Path, canonical: bool = True) -> tuple[Volume, nib.Nifti1Image]:
    """Read a NIfTI as a Volume (RAS+ voxel order when ``canonical``) and return the original image too.

    The original image keeps the header on disk, so outputs can be written back in the input's own
    orientation with :func:`save_like`.
    """
    image = nib.load(str(path))
    if len(image.shape) != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {image.shape}")
    return (canonical_volume(image) if canonical else Volume(np.asanyarray(image.dataobj), image.affine.copy())), image


def canonical_volume(image: nib.Nifti1Image) -> Volume:
    """An image's voxels in RAS+ order (nibabel's closest canonical orientation) with the matching affine."""
    view = nib.as_closest_canonical(image)
    return Volume(np.asanyarray(view.dataobj), view.affine.copy())


def save_nifti(volume: Volume, path: str | Path, dtype: np.dtype | None = None) -> Path:
    """Write a Volume atomically (temp file in the same folder, then rename)."""
    array = volume.array if dtype is None else volume.array.astype(dtype)
    image = nib.Nifti1Image(array, volume.affine)
    image.header.set_qform(volume.affine, code=1)
    image.header.set_sform(volume.affine, code=1)
    return _atomic_nifti_write(image, Path(path))


def save_like(array: np.ndarray, reference: nib.Nifti1Image, path: str | Path, dtype=np.float32) -> Path:
    """Write a RAS+-ordered array on ``reference``'s grid and header (its own axis order), atomically.

    This is how synthetic CTs and labels are made to overlay the input MRI in any viewer.
    """
    reference_axcodes = nib.aff2axcodes(reference.affine)
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(("R", "A", "S")), nib.orientations.axcodes2ornt(reference_axcodes)
    )
    reoriented = nib.orientations.apply_orientation(array, transform)
    if reoriented.shape != tuple(reference.shape[:3]):
        raise ValueError(f"array shape {array.shape} does not fit the reference grid {reference.shape}")
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    image = nib.Nifti1Image(reoriented.astype(dtype), reference.affine, header)
    return _atomic_nifti_write(image, Path(path))


def _atomic_nifti_write(image: nib.Nifti1Image, path: Path) -> Path:
    return atomic_write(path, lambda tmp: nib.save(image, tmp))


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Let ``write`` fill a temp file beside ``path``, then rename it into place: readers never see half a
    file, and a failed write leaves nothing behind. The file gets ordinary (umask) permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def current_umask() -> int:
    """The process umask (read by setting and restoring it), so atomic writes get ordinary permissions."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def to_sitk(volume: Volume) -> sitk.Image:
    """The same voxels and physical space as a SimpleITK image (LPS)."""
    spacing = volume.spacing
    affine_lps = RAS_TO_LPS @ volume.affine
    direction = affine_lps[:3, :3] / spacing
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(d) for d in direction.ravel()))
    image.SetOrigin(tuple(float(o) for o in affine_lps[:3, 3]))
    return image


def from_sitk(image: sitk.Image) -> Volume:
    """A SimpleITK image as a Volume with a RAS affine (voxel order kept as SimpleITK's x, y, z)."""
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * spacing
    affine_lps[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(array, RAS_TO_LPS @ affine_lps)


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    """Flip physical points between RAS and LPS (the map is its own inverse)."""
    return np.asarray(points, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])


lps_to_ras = ras_to_lps


def resample_array(volume: Volume, affine: np.ndarray, shape: tuple[int, ...], order: int = 1) -> Volume:
    """``volume`` sampled at the voxel centres of the grid (``affine``, ``shape``) in the same physical space.

    Linear (order 1) or cubic (3) for intensities, nearest (0) for labels (dtype kept); beyond the source's
    edge the border value is extended, since the grids resampled here cover the same field of view. A volume
    already on the grid comes back unchanged.
    """
    from scipy.ndimage import affine_transform

    if volume.shape == tuple(shape) and np.allclose(volume.affine, affine, atol=1e-6):
        return Volume(volume.array if order == 0 else volume.array.astype(np.float32), np.asarray(affine, dtype=np.float64))
    target_to_source = np.linalg.inv(volume.affine) @ affine
    resampled = affine_transform(
        volume.array.astype(np.float32) if order else volume.array,
        target_to_source[:3, :3],
        offset=target_to_source[:3, 3],
        output_shape=tuple(shape),
        order=order,
        mode="nearest",
    )
    return Volume(resampled, np.asarray(affine, dtype=np.float64))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """A text file written with :func:`atomic_write`."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
