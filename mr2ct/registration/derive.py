"""MR landmarks derived from an MR-space segmentation, with a quality figure and plausibility checks.

This is the pure half of the loop of paper Fig. 1 (``python -m mr2ct.landmarks`` and
``registration.landmarks_from`` add the model that makes the segmentation): a segmentation of a synthetic CT
on the MR grid gives body and spinous-process centres in MR space. A predicted segmentation has stray
voxels and misplaced fragments, so each vertebra is first reduced to its largest connected component; the
share of the vertebra's voxels in that component is its quality figure (1.0: one clean piece). A vertebra
at either end of the set with less than ``PARTIAL_FRACTION`` of its neighbour's voxels is left out
(``kept: false`` in its quality): cut by the field of view, its centres are not the whole vertebra's, and the
CT may not hold it at all. Adjacent adult vertebrae differ by about 10-20 % in volume. A spinous-process
centre less than ``MIN_SPINOUS_DEPTH_MM`` behind its body centre (along RAS A) is left out too, the body
centre kept (``spinous_kept: false``): the spinous process lies 30-60 mm behind the body in adults, and a
centre closer than that comes from a spinous process the synthetic CT missed (a model translating the other
contrast put them 10-27 mm too far forward on the phantom while its body centres were within 1-3 mm).

Where the subject's CT is known (a paired cohort, which is what the landmarks are for), :func:`checked_against_ct`
also leaves out each spinous centre whose distance to its body centre differs from the same distance on the CT
by more than ``SPINOUS_CT_TOLERANCE_MM`` (``spinous_ct_difference_mm`` in the quality): a vertebra is rigid, so
the distance is the same on both, and a spinous centre that breaks it would twist the registration. On the sets a
CPU-scale model derived in the phantom's refinement loop (6 subjects, 28 spinous centres), the 8 it kept lay a
median 2.4 mm from the exact centres (one 15.6 mm: an error across the body-spinous line), the 20 it left out a
median 8 mm (3-27 mm); the body centres a median 1.0 mm.

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
* a vertebra between two others with less than ``FRAGMENT_FRACTION`` of the voxels of its larger
  neighbour: the field of view cannot cut it, so it is a fragment numbered as a vertebra, and every number
  on one side of it is off by one (a real body that the segmentation only half found stays well above);
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
MIN_SPINOUS_DEPTH_MM = 25.0
SPINOUS_CT_TOLERANCE_MM = 3.0
DERIVATION_VERSION = 2  # part of a prepared cache key: 2 checks spinous centres against the CT
PARTIAL_FRACTION = 0.5
FRAGMENT_FRACTION = 0.1
SI, AP = 2, 1  # RAS axes: superior, anterior


@dataclass(frozen=True)
class DerivedLandmarks:
    """Landmarks of one segmentation, the per-vertebra quality figures, and why they are implausible (if so)."""

    landmarks: Landmarks
    quality: dict[int, dict[str, float | bool]]  # vertebra -> voxels, largest_component_fraction, kept, spinous_kept
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


def spinous_depth_mm(kinds: dict[str, np.ndarray]) -> float:
    """How far (mm, along RAS A) a vertebra's spinous centre lies behind its body centre."""
    return float(kinds["body"][AP] - kinds["spinous"][AP])


def small_vertebrae(kept_voxels: dict[int, float], fraction: float) -> list[int]:
    """The vertebrae with less than ``fraction`` of the kept voxels of their larger neighbour."""
    ids = sorted(kept_voxels)
    small = []
    for index, vertebra in enumerate(ids):
        neighbours = [kept_voxels[ids[j]] for j in (index - 1, index + 1) if 0 <= j < len(ids)]
        if neighbours and kept_voxels[vertebra] < fraction * max(neighbours):
            small.append(vertebra)
    return small


def partial_ends(kept_voxels: dict[int, float]) -> list[int]:
    """The vertebrae under ``PARTIAL_FRACTION`` of their neighbour at the ends of the set, where the field of
    view cuts."""
    ids, small = sorted(kept_voxels), set(small_vertebrae(kept_voxels, PARTIAL_FRACTION))
    ends = []
    for run in (ids, ids[::-1]):
        for vertebra in run:
            if vertebra not in small or vertebra in ends:
                break
            ends.append(vertebra)
    return sorted(ends)


def plausibility_problems(landmarks: Landmarks, kept_voxels: dict[int, float] | None = None) -> list[str]:
    """Why a derived landmark set is not a spine (module doc); empty when it is plausible. ``kept_voxels`` (per
    vertebra, after cleaning) adds the check for fragments numbered as vertebrae."""
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
    for vertebra in small_vertebrae(kept_voxels or {}, FRAGMENT_FRACTION):
        problems.append(f"vertebra {vertebra}: {kept_voxels[vertebra]:.0f} voxels, under {FRAGMENT_FRACTION:g} "
                        f"of a neighbour's: a fragment numbered as a vertebra shifts the numbers beside it")
    for vertebra, kinds in sorted(landmarks.items()):
        if "body" in kinds and "spinous" in kinds:
            behind = spinous_depth_mm(kinds)
            if behind < MIN_POSTERIOR_MM:
                problems.append(f"vertebra {vertebra}: spinous centre {behind:.1f} mm behind its body "
                                f"(needs >= {MIN_POSTERIOR_MM:g} mm posterior)")
    return problems


def derive_landmarks(seg: Volume, subreg: Volume | None = None) -> DerivedLandmarks:
    """Landmarks of an MR-space segmentation (subregions used when given), cleaned to each vertebra's largest
    component, without partial vertebrae at its ends and spinous centres too close to their body (module doc),
    with quality figures and plausibility problems. Sacrum and rib labels are left out: they have no body or
    spinous process to register with."""
    labels = integer_labels(np.asarray(seg.array), "derive_landmarks: seg")
    labels = np.where(np.isin(labels, list(NON_VERTEBRA_LABELS)), 0, labels)  # sacrum and ribs are no vertebrae
    cleaned, quality = largest_components(labels)
    kept_voxels = {v: q["voxels"] * q["largest_component_fraction"] for v, q in quality.items()}
    partial = partial_ends(kept_voxels)
    cleaned[np.isin(cleaned, partial)] = 0
    for vertebra, figures in quality.items():
        figures["kept"] = vertebra not in partial
    if subreg is not None:
        check_same_grid(seg, subreg, "derive_landmarks(seg, subreg)")
        subreg = subreg.with_array(np.where(cleaned > 0, np.asarray(subreg.array), 0))
    landmarks = landmarks_from_segmentation(seg.with_array(cleaned), subreg)
    for vertebra, kinds in landmarks.items():
        if "body" in kinds and "spinous" in kinds:
            behind = spinous_depth_mm(kinds)
            if MIN_POSTERIOR_MM <= behind < MIN_SPINOUS_DEPTH_MM:  # closer still: refused below
                del kinds["spinous"]
            quality[vertebra]["spinous_kept"] = "spinous" in kinds
    remaining = {v: n for v, n in kept_voxels.items() if v not in partial}
    return DerivedLandmarks(landmarks, quality, plausibility_problems(landmarks, remaining))


def checked_against_ct(derived: DerivedLandmarks, ct: Landmarks) -> DerivedLandmarks:
    """``derived`` without the spinous centres whose distance to their body differs from the CT's by more than
    ``SPINOUS_CT_TOLERANCE_MM`` (module doc); the difference (MR minus CT, mm) and the outcome go to the quality.
    Vertebrae the CT lacks are left as they are: the registration pairs only landmarks both sets have."""
    landmarks = {v: dict(kinds) for v, kinds in derived.landmarks.items()}
    quality = {v: dict(figures) for v, figures in derived.quality.items()}
    for vertebra, kinds in landmarks.items():
        reference = ct.get(vertebra, {})
        if not {"body", "spinous"} <= set(kinds) or not {"body", "spinous"} <= set(reference):
            continue
        difference = float(np.linalg.norm(kinds["spinous"] - kinds["body"])
                           - np.linalg.norm(np.asarray(reference["spinous"]) - reference["body"]))
        quality[vertebra]["spinous_ct_difference_mm"] = difference
        if abs(difference) > SPINOUS_CT_TOLERANCE_MM:
            del kinds["spinous"]
            quality[vertebra]["spinous_kept"] = False
    return DerivedLandmarks(landmarks, quality, derived.problems)


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
