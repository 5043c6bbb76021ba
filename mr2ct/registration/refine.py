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
* spinous centre = centre of mass of the voxels with depth >= 1 - ``spinous_fraction`` (the spinous
  process is the vertebra's most posterior part).

The defaults (0.4, 0.3) put these estimates within a median 0.35 mm (body) and 0.8 mm (spinous) of the
subregion centres of mass on the lumbar phantom.

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
    return dict(sorted(landmarks.items()))


def refine_registration(
    subject: Subject,
    mode: str | RegistrationMode,
    mr_space_seg: Volume,
    mr_space_subreg: Volume | None = None,
) -> RigidTransform:
    """A second registration round whose MR landmarks come from an MR-space segmentation."""
    return register(subject, mode, mr_landmarks=landmarks_from_segmentation(mr_space_seg, mr_space_subreg))
