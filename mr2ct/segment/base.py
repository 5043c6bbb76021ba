"""The interface every CT segmenter implements, and grid helpers they share.

A segmenter takes a CT in HU on any grid (a synthetic CT on the MR grid, or a real CT) and returns
VerSe vertebra labels (and, if it can, subregion labels) on exactly that grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import nibabel as nib
import numpy as np

from mr2ct.core.io import Volume

RAS_ORNT = nib.orientations.axcodes2ornt(("R", "A", "S"))


@dataclass(frozen=True)
class Segmentation:
    """VerSe vertebra ids (int16) and optional subregion ids (50 body, 41..48 posterior) on the input grid."""

    labels: Volume
    subregions: Volume | None = None

    def __post_init__(self) -> None:
        if self.subregions is not None and (
            self.subregions.shape != self.labels.shape or not np.allclose(self.subregions.affine, self.labels.affine)
        ):
            raise ValueError(f"subregions grid {self.subregions.shape} differs from labels grid {self.labels.shape}")


@runtime_checkable
class Segmenter(Protocol):
    def segment(self, ct_hu: Volume) -> Segmentation:
        """Segment a CT in HU; the result lies on ``ct_hu``'s grid."""
        ...


def to_canonical(volume: Volume) -> tuple[Volume, np.ndarray]:
    """The volume in RAS+ voxel order and the orientation that undoes it (for :func:`from_canonical`)."""
    ornt = nib.io_orientation(volume.affine)
    array = nib.orientations.apply_orientation(volume.array, ornt)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(ornt, volume.shape)
    return Volume(np.ascontiguousarray(array), affine), nib.orientations.ornt_transform(RAS_ORNT, ornt)


def from_canonical(array: np.ndarray, back: np.ndarray, grid: Volume) -> Volume:
    """A RAS+-ordered array put back into ``grid``'s own voxel order (``back`` from :func:`to_canonical`)."""
    return grid.with_array(np.ascontiguousarray(nib.orientations.apply_orientation(array, back)))


def same_grid(a: Volume, b: Volume, atol_mm: float = 1e-3) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=atol_mm)
