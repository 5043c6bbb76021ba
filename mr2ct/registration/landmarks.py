"""Landmarks from segmentations: per-vertebra centres of mass of the body and the spinous process.

Following the authors' registration toolbox, a landmark is the centre of mass of the voxels that carry
both the vertebra's id (instance segmentation) and the subregion id of its kind (50 vertebral body,
42 spinous process), taken in continuous voxel index space and mapped through the affine to RAS mm.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from mr2ct.core.io import Volume
from mr2ct.core.labels import LANDMARK_KINDS
from mr2ct.core.subjects import Landmarks

GRID_TOLERANCE_MM = 1e-3


def check_same_grid(a: Volume, b: Volume, what: str) -> None:
    """Fail clearly when two label volumes that must overlay voxel by voxel do not share a grid."""
    if a.shape != b.shape or not np.allclose(a.affine, b.affine, atol=GRID_TOLERANCE_MM):
        raise ValueError(
            f"{what}: the volumes do not share a grid (shapes {a.shape} vs {b.shape}, "
            f"affines differ by up to {np.abs(a.affine - b.affine).max():.4g} mm)"
        )


def integer_labels(array: np.ndarray, what: str) -> np.ndarray:
    """A label array as integers; float arrays (NIfTI scaling) must hold whole numbers."""
    if np.issubdtype(array.dtype, np.integer):
        return array
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.all(np.isfinite(array)) or np.any(np.mod(array, 1) != 0):
        raise ValueError(f"{what}: label volume holds non-integer values (dtype {array.dtype})")
    return array.astype(np.int32)


def mean_by_label(ids: np.ndarray, points: np.ndarray) -> dict[int, np.ndarray]:
    """Mean point of each positive id, vectorised with ``np.bincount``: ids (N,), points (N, 3)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return {}
    counts = np.bincount(ids)
    present = np.nonzero(counts)[0]
    present = present[present > 0]
    sums = np.stack([np.bincount(ids, weights=points[:, axis])[present] for axis in range(3)], axis=1)
    return {int(label): mean for label, mean in zip(present, sums / counts[present, None])}


def centres_of_mass(volume: Volume, labels: np.ndarray, voxel_mask: np.ndarray) -> dict[int, np.ndarray]:
    """RAS centre of mass of each positive label among the voxels selected by ``voxel_mask``.

    The affine is linear, so the mean of the voxels' RAS positions is the RAS position of their mean
    continuous index. Labels with no selected voxel are absent.
    """
    index = np.nonzero(voxel_mask & (labels > 0))
    return mean_by_label(labels[index], volume.index_to_ras(np.stack(index, axis=1)))


def landmarks_from_labels(
    seg: Volume, subreg: Volume, kinds: Iterable[str] = ("body", "spinous")
) -> Landmarks:
    """Body / spinous-process centres of mass of each vertebra in ``seg`` (RAS mm).

    ``seg`` holds vertebra ids, ``subreg`` subregion ids on the same grid. A vertebra appears if it has
    voxels of at least one requested kind; kinds without voxels are left out for that vertebra.
    """
    kinds = tuple(kinds)
    unknown = set(kinds) - set(LANDMARK_KINDS)
    if unknown:
        raise ValueError(f"unknown landmark kinds {sorted(unknown)}; valid: {sorted(LANDMARK_KINDS)}")
    check_same_grid(seg, subreg, "landmarks_from_labels(seg, subreg)")
    vertebrae = integer_labels(np.asarray(seg.array), "landmarks_from_labels: seg")
    subregions = integer_labels(np.asarray(subreg.array), "landmarks_from_labels: subreg")
    landmarks: Landmarks = {}
    for kind in kinds:
        for vertebra, point in centres_of_mass(seg, vertebrae, subregions == LANDMARK_KINDS[kind]).items():
            landmarks.setdefault(vertebra, {})[kind] = point
    return dict(sorted(landmarks.items()))


def paired_points(
    fixed: Landmarks, moving: Landmarks, kinds: Iterable[str]
) -> tuple[list[tuple[int, str]], np.ndarray, np.ndarray]:
    """Landmarks present in both sets for the given kinds: (keys, fixed (N,3), moving (N,3)).

    Keys are (vertebra id, kind), sorted by vertebra then by the order of ``kinds``.
    """
    kinds = tuple(kinds)
    keys = [
        (vertebra, kind)
        for vertebra in sorted(set(fixed) & set(moving))
        for kind in kinds
        if kind in fixed[vertebra] and kind in moving[vertebra]
    ]
    fixed_points = np.array([fixed[v][k] for v, k in keys], dtype=np.float64).reshape(-1, 3)
    moving_points = np.array([moving[v][k] for v, k in keys], dtype=np.float64).reshape(-1, 3)
    return keys, fixed_points, moving_points
