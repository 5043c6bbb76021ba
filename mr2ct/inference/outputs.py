"""Outputs on the MR's own header: the one way a synthetic CT, its uncertainty or its labels leave mr2ct.

Evaluation and ``mr2ct.translate`` both write through :func:`write_on_mr_header`, so a file a run writes and
a file a cohort user gets are made by the same code and overlay the input MRI in any viewer. Model-space
images become HU here and nowhere else on the way out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from mr2ct.core.io import Volume, resample_array, save_like, save_nifti
from mr2ct.core.values import HU_SCALE, model_to_ct

Content = Literal["ct", "std", "labels"]
"""A model-space synthetic CT, a model-space standard deviation over samples, or vertebra/subregion ids."""


def mr_grid(mr_image: nib.Nifti1Image) -> Volume:
    """The MR image's grid in RAS+ voxel order (as :func:`canonical_volume` gives it), without reading voxels."""
    orientation = nib.orientations.io_orientation(mr_image.affine)
    affine = mr_image.affine @ nib.orientations.inv_ornt_aff(orientation, mr_image.shape[:3])
    shape = tuple(int(mr_image.shape[axis]) for axis in np.argsort(orientation[:, 0]))
    return Volume(np.zeros(shape, dtype=np.float32), affine)


def onto_mr_grid(volume: Volume, grid: Volume, labels: bool) -> Volume:
    """``volume`` (any grid in the MR's physical space) resampled onto ``grid``: linear, nearest for labels."""
    return resample_array(volume, grid.affine, grid.shape, order=0 if labels else 1)


def encoded(array: np.ndarray, content: Content) -> tuple[np.ndarray, type]:
    """The values and dtype written for ``content``: HU (float32) for images, int16 ids for labels."""
    if content == "ct":
        return model_to_ct(array).astype(np.float32), np.float32
    if content == "std":
        return (array * HU_SCALE).astype(np.float32), np.float32
    if content == "labels":
        return array.astype(np.int16), np.int16
    raise ValueError(f"content must be 'ct', 'std' or 'labels', got {content!r}")


def write_on_mr_header(volume: Volume, mr_image: nib.Nifti1Image, path: str | Path, content: Content) -> Path:
    """Write ``volume`` (any grid) on ``mr_image``'s grid and header, encoded for ``content``."""
    native = onto_mr_grid(volume, mr_grid(mr_image), labels=content == "labels")
    values, dtype = encoded(native.array, content)
    return save_like(values, mr_image, path, dtype=dtype)


def write_on_grid(volume: Volume, grid: Volume, path: str | Path, content: Content) -> Path:
    """Write ``volume`` resampled onto another grid of the same space (e.g. 1 mm isotropic), encoded for ``content``."""
    values, dtype = encoded(onto_mr_grid(volume, grid, labels=content == "labels").array, content)
    return save_nifti(Volume(values, grid.affine), path, dtype=dtype)
