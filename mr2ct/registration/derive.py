"""MR landmarks derived from an MR-space segmentation, with a quality figure and plausibility checks.

This is the pure half of the loop of paper Fig. 1 (``python -m mr2ct.landmarks`` and
``registration.landmarks_from`` add the model that makes the segmentation): a segmentation of a synthetic CT
on the MR grid gives body and spinous-process centres in MR space. A predicted segmentation has stray
voxels and misplaced fragments, so each vertebra is first reduced to its largest connected component; the
share of the vertebra's voxels in that component is its quality figure (1.0: one clean piece).

A derived set is refused, with the reason, when it is not anatomically plausible (:func:`plausibility_problems`),
so a failed translation never silently becomes a registration:

* fewer than ``MIN_VERTEBRAE`` vertebrae with a body centre (a two_point fit needs 3 landmark pairs and
  a one_point fit 3 bodies);
* vertebra ids out of order along the cranio-caudal axis: VerSe ids grow caudally (C1=1 ... L5=24), so a
  larger id must lie lower (smaller RAS S) than every smaller id;
* the distance between the body centres of neighbouring ids outside ``BODY_SPACING_MM`` per level:
  [12, 55] mm. Adult body height plus disc is about 15-20 mm in the cervical, 20-35 mm in the thoracic and
  35-45 mm in the lumbar spine; the bounds leave room for small and large patients and compressed bodies,
  and catch merged neighbours (two bodies under one id: a gap far too long) and split bodies (far too short).
  Ids that skip a level are judged per skipped level.
* a spinous-process centre not at least ``MIN_POSTERIOR_MM`` behind its body centre along RAS A (sagittal
  spine images are acquired with A as the anterior-posterior axis; the spinous process lies 30-60 mm behind
  the body in adults).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from mr2ct.core.io import Volume
from mr2ct.core.labels import NON_VERTEBRA_LABELS
from mr2ct.core.subjects import write_landmarks
from mr2ct.registration.landmarks import Landmarks, check_same_grid, integer_labels
from mr2ct.registration.refine import landmarks_from_segmentation

MIN_VERTEBRAE = 3
BODY_SPACING_MM = (12.0, 55.0)
MIN_POSTERIOR_MM = 10.0
SI, AP = 2, 1  # RAS axes: superior, anterior


@dataclass(frozen=True)
class DerivedLandmarks:
    """Landmarks of one segmentation, the per-vertebra quality figures, and why they are implausible (if so)."""

    landmarks: Landmarks
    quality: dict[int, dict[str, float]]  # vertebra -> voxels, largest_component_fraction
    problems: list[str]

    @property
    def plausible(self) -> bool:
        return not self.problems


def largest_components(labels: np.ndarray) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """Each vertebra id reduced to its largest 26-connected component; per id its voxel count (before) and
    the fraction of those voxels in the kept component."""
    cleaned = np.zeros_like(labels)
    quality: dict[int, dict[str, float]] = {}
    for index, box in enumerate(ndimage.find_objects(np.maximum(labels, 0))):
        if box is None:
            continue
        vertebra = index + 1  # find_objects lists label 1 first
        mask = labels[box] == vertebra
        components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(components.ravel())[1:]
        cleaned[box][components == int(np.argmax(sizes)) + 1] = vertebra
        quality[vertebra] = {"voxels": int(mask.sum()), "largest_component_fraction": float(sizes.max() / mask.sum())}
    return cleaned, quality


def plausibility_problems(landmarks: Landmarks) -> list[str]:
    """Why a derived landmark set is not a spine (module doc); empty when it is plausible."""
    bodies = {v: kinds["body"] for v, kinds in sorted(landmarks.items()) if "body" in kinds}
    if len(bodies) < MIN_VERTEBRAE:
        return [f"too few vertebrae: {len(bodies)} with a body centre ({sorted(bodies)}), need {MIN_VERTEBRAE}"]
    problems = []
    ids = list(bodies)
    for upper, lower in zip(ids, ids[1:]):
        if bodies[lower][SI] >= bodies[upper][SI]:
            problems.append(f"vertebra ids out of order: {lower} lies at or above {upper} "
                            f"(S {bodies[lower][SI]:.1f} vs {bodies[upper][SI]:.1f} mm; ids grow caudally)")
    low, high = BODY_SPACING_MM
    for upper, lower in zip(ids, ids[1:]):
        per_level = float(np.linalg.norm(bodies[lower] - bodies[upper])) / (lower - upper)
        if not low <= per_level <= high:
            problems.append(f"body spacing {upper}-{lower}: {per_level:.1f} mm per level, outside the anatomical "
                            f"[{low:g}, {high:g}] mm")
    for vertebra, kinds in sorted(landmarks.items()):
        if "body" in kinds and "spinous" in kinds:
            behind = float(kinds["body"][AP] - kinds["spinous"][AP])
            if behind < MIN_POSTERIOR_MM:
                problems.append(f"vertebra {vertebra}: spinous centre {behind:.1f} mm behind its body "
                                f"(needs >= {MIN_POSTERIOR_MM:g} mm posterior)")
    return problems


def derive_landmarks(seg: Volume, subreg: Volume | None = None) -> DerivedLandmarks:
    """Landmarks of an MR-space segmentation (subregions used when given), cleaned to each vertebra's largest
    component, with quality figures and plausibility problems. Sacrum and rib labels are left out: they have
    no body or spinous process to register with."""
    labels = integer_labels(np.asarray(seg.array), "derive_landmarks: seg")
    labels = np.where(np.isin(labels, list(NON_VERTEBRA_LABELS)), 0, labels)  # sacrum and ribs are no vertebrae
    cleaned, quality = largest_components(labels)
    if subreg is not None:
        check_same_grid(seg, subreg, "derive_landmarks(seg, subreg)")
        subreg = subreg.with_array(np.where(cleaned > 0, np.asarray(subreg.array), 0))
    landmarks = landmarks_from_segmentation(seg.with_array(cleaned), subreg)
    return DerivedLandmarks(landmarks, quality, plausibility_problems(landmarks))


def write_if_plausible(derived: DerivedLandmarks, path: Path, provenance: dict) -> bool:
    """Write a plausible derived set atomically as a landmarks JSON (RAS) with its provenance and quality;
    an implausible one writes nothing, so a bad segmentation can never reach a registration. Returns
    whether it wrote."""
    if not derived.plausible:
        return False
    write_landmarks(derived.landmarks, path, coordinate_system="RAS",
                    provenance={**provenance, "quality": {str(v): q for v, q in sorted(derived.quality.items())}})
    return True


def landmark_errors_mm(landmarks: Landmarks, reference: Landmarks) -> np.ndarray:
    """Distances (mm) between the landmarks present in both sets (every kind)."""
    return np.array([np.linalg.norm(np.asarray(point) - reference[v][kind])
                     for v, kinds in landmarks.items() if v in reference
                     for kind, point in kinds.items() if kind in reference[v]], dtype=np.float64)
