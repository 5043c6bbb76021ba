"""Iterative refinement (paper Fig. 1): new MR landmarks from an MR-space segmentation.

A segmentation of a synthetic CT overlays its MRI, so its landmarks are MR landmarks; a second
registration round fits the CT against them (``register(subject, mode, mr_landmarks=...)``).

With subregion labels the landmarks are the usual body / spinous-process centres of mass. Without them
(a vertebra-instance segmentation only) they are estimated along the anterior-posterior (RAS A) axis of
the MR, in which sagittal spine images are acquired. For each vertebra, let its AP extent run from its
most anterior voxel (front) to its most posterior voxel (back), and a voxel's depth be its distance behind
the front as a fraction of that extent. Then

* body centre = centre of mass of the voxels with depth <= ``body_fraction`` (the vertebral body is the
  anterior part of a vertebra; pedicles, transverse and articular processes lie behind it);
* spinous centre = centre of mass of the voxels behind the spinal canal in the midline: of the vertebra's
  voxels within ``MIDLINE_MM`` (at least half a voxel) of its body centre in L-R, those behind the largest
  gap along A, when that gap is at least ``MIN_CANAL_MM`` (the canal; the spinous process is the midline
  bone behind it, while the articular and transverse processes, also far back, lie lateral). Without such a
  gap (a canal filled in or not segmented): the voxels with depth >= 1 - ``spinous_fraction``, the
  vertebra's most posterior part.

On the lumbar phantom (6 subjects, 3 mm slices, ground-truth labels) these estimates lie within a median
0.68 mm (at most 1.1 mm) of the body and 0.57 mm (at most 1.2 mm) of the spinous-process subregion centres of
mass; the posterior-fraction rule alone was 3.9 mm (at most 10 mm) off the spinous centres, pulled caudally
by the inferior articular processes of the lower lumbar vertebrae. The body rule fits lumbar proportions: on
the thoracic and cervical phantom the body estimates are a median 1.0 and 3.6 mm off (use subregions there).

Stray voxels stretch the extent, so clean a predicted segmentation first (e.g. keep each vertebra's
largest connected component).
"""

from __future__ import annotations

import numpy as np

from mr2ct.core.config import RegistrationMode
from mr2ct.core.io import Volume
from mr2ct.core.subjects import Subject
from mr2ct.registration.landmarks import (
    Landmarks,
    integer_labels,
    landmarks_from_labels,
    mean_by_label,
)
from mr2ct.registration.rigid import RigidTransform, register

BODY_FRACTION = 0.4
SPINOUS_FRACTION = 0.3
MIDLINE_MM = 2.0  # half-width of the midline slab; the spinous process is 5-10 mm wide in adults
MIN_CANAL_MM = 5.0  # the spinal canal is at least ~10 mm deep (AP) in adults


def extremes_by_label(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-id minimum and maximum of ``values``, as lookup arrays indexed by id."""
    size = int(ids.max()) + 1
    lowest, highest = np.full(size, np.inf), np.full(size, -np.inf)
    np.minimum.at(lowest, ids, values)
    np.maximum.at(highest, ids, values)
    return lowest, highest


def landmarks_from_segmentation(
    seg: Volume,
    subreg: Volume | None = None,
    body_fraction: float = BODY_FRACTION,
    spinous_fraction: float = SPINOUS_FRACTION,
) -> Landmarks:
    """MR landmarks from an MR-space vertebra segmentation (subregions used when given; module doc)."""
    if subreg is not None:
        return landmarks_from_labels(seg, subreg)
    if not (0 < body_fraction < 1 and 0 < spinous_fraction < 1):
        raise ValueError(f"fractions must lie in (0, 1), got body {body_fraction}, spinous {spinous_fraction}")
    labels = integer_labels(np.asarray(seg.array), "landmarks_from_segmentation: seg")
    index = np.nonzero(labels > 0)
    ids = labels[index].astype(np.int64)
    if ids.size == 0:
        return {}
    points = seg.index_to_ras(np.stack(index, axis=1))
    anterior = points[:, 1]
    back, front = (extreme[ids] for extreme in extremes_by_label(ids, anterior))
    depth = (front - anterior) / np.maximum(front - back, np.finfo(float).eps)
    landmarks: Landmarks = {}
    for kind, selected in (("body", depth <= body_fraction), ("spinous", depth >= 1 - spinous_fraction)):
        for vertebra, point in mean_by_label(ids[selected], points[selected]).items():
            landmarks.setdefault(vertebra, {})[kind] = point
    half_width = max(MIDLINE_MM, 0.5 * float(seg.spacing[0]) + 1e-6)
    for vertebra, kinds in landmarks.items():
        if "body" in kinds:
            behind = behind_the_canal(points[ids == vertebra], kinds["body"][0], half_width)
            if behind is not None:
                kinds["spinous"] = behind
    return dict(sorted(landmarks.items()))


def behind_the_canal(points: np.ndarray, midline: float, half_width: float) -> np.ndarray | None:
    """Centre of mass of one vertebra's voxels (RAS points) in the midline slab behind the largest gap along A,
    or None when the slab has no gap of at least ``MIN_CANAL_MM`` (module doc)."""
    slab = points[np.abs(points[:, 0] - midline) <= half_width]
    depths = np.unique(np.round(slab[:, 1], 3))  # A positions, posterior first
    if depths.size < 2:
        return None
    gaps = np.diff(depths)
    widest = int(np.argmax(gaps))
    if gaps[widest] < MIN_CANAL_MM:
        return None
    return slab[slab[:, 1] <= depths[widest]].mean(axis=0)


def refine_registration(
    subject: Subject,
    mode: str | RegistrationMode,
    mr_space_seg: Volume,
    mr_space_subreg: Volume | None = None,
) -> RigidTransform:
    """A second registration round whose MR landmarks come from an MR-space segmentation."""
    return register(subject, mode, mr_landmarks=landmarks_from_segmentation(mr_space_seg, mr_space_subreg))
