"""Vertebra identity from a body / posterior class map: split the bone into vertebrae and number them.

The rule (and its limits):

1. Seeds: connected components (6-connectivity) of the vertebral-body class; components smaller than
   ``min_body_mm3`` are dropped as debris. Components at the same level (their cranio-caudal extents overlap
   by at least half the shorter one: pieces of one body cut apart in a thin or blurred prediction) are one
   seed. Bodies are separated by discs, so each seed is one vertebra, unless a disc was predicted as bone
   (a degenerated disc, or a synthetic CT that blurs it): a seed taller than ``split_ratio`` times the
   reference body height is cut into n pieces, each cut at the narrowest cross-section near its expected
   position. The reference height is the median seed height capped by the region's adult body height
   (``BODY_HEIGHT_MM``), or that height alone with fewer than three seeds, so fused blocks that are the
   majority cannot inflate it. A block of n bodies with discs a third of a body high is
   n·b + (n−1)·b/3 tall, so n = round((h/b + 1/3) / (4/3)).
2. Order: seeds are sorted by the inferior->superior (RAS z) coordinate of their centroid in mm. Given the
   top of the sacrum, seeds centred below it are sacral segments taken for bodies (S1 looks like one, and
   may be fused with L5 into one block until the split): they are labelled sacrum and not numbered.
3. Numbers: with ``anchor="caudal"`` the lowest body is the region's last vertebra (L5, T12 or C7) and
   the others count upwards (L4, L3, ...; past the region into the one above: lumbar with six bodies
   gives T12..L5); with ``anchor="cranial"`` the highest body is the region's first vertebra and the
   others count downwards. Numbers are clipped to the VerSe range C1..L5.
4. Growth: every bone voxel takes the number of the body it reaches first by a breadth-first walk inside
   the predicted bone (so an arch goes to the body its pedicles join); bone not connected to any body
   (a detached spinous tip) takes the number of the nearest numbered bone voxel in mm.

Limits: the numbers are right only if the field of view ends at the anchor vertebra and no body is
missed or split; the split of fused bodies fails for a fusion no taller than ``split_ratio`` reference
heights, and C2 (body and dens, twice a cervical body) is cut in two; without any body
the whole bone gets the anchor number. Per-vertebra Dice with the "overlap" rule (mr2ct.metrics.dice)
ignores the numbers and scores the split alone.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from mr2ct.core.config import ANCHORS
from mr2ct.core.labels import REGIONS, SACRUM, VERTEBRA_IDS

FIRST_ID, LAST_ID = VERTEBRA_IDS["C1"], VERTEBRA_IDS["L5"]
# Typical adult vertebral body height (mm) per region, the cap of the reference height (module doc): C3-C7
# about 14-15, T1-T12 16-25, L1-L5 26-29. "whole" takes the largest, leaving the median to decide.
BODY_HEIGHT_MM = {"cervical": 15.0, "thoracic": 22.0, "lumbar": 27.0, "whole": 27.0}
DISC_TO_BODY = 1.0 / 3.0  # disc height over body height (adult lumbar about 10/27, cervical 5/15)


def compact(kept: np.ndarray, count: int) -> np.ndarray:
    """Lookup table from labels 0..count to 1..len(kept) for the ``kept`` labels (in order), 0 for the rest."""
    table = np.zeros(count + 1, dtype=np.int32)
    table[kept] = np.arange(1, len(kept) + 1)
    return table


def body_seeds(body: np.ndarray, spacing: np.ndarray, min_body_mm3: float) -> tuple[np.ndarray, int]:
    """Connected components of the body mask with at least ``min_body_mm3`` volume, relabelled 1..n."""
    components, count = ndimage.label(body)
    if count == 0:
        return components, 0
    voxel_mm3 = float(np.prod(spacing))
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:] * voxel_mm3
    keep = np.flatnonzero(sizes >= min_body_mm3) + 1
    return compact(keep, count)[components], len(keep)


def si_axis(affine: np.ndarray) -> int:
    """The voxel axis closest to inferior-superior."""
    return int(np.argmax(np.abs(affine[2, :3])))


def merge_same_level(seeds: np.ndarray, count: int, affine: np.ndarray) -> tuple[np.ndarray, int]:
    """Join seeds whose cranio-caudal extents overlap by at least half the shorter one (one body in pieces)."""
    if count < 2:
        return seeds, count
    axis = si_axis(affine)
    boxes = ndimage.find_objects(seeds, max_label=count)
    extents = sorted(((box[axis].start, box[axis].stop, label) for label, box in enumerate(boxes, start=1)))
    target = np.arange(count + 1)
    level_start, level_stop, level_label = extents[0]
    for start, stop, label in extents[1:]:
        overlap = min(stop, level_stop) - start
        if overlap >= 0.5 * min(stop - start, level_stop - level_start):
            target[label] = level_label
            level_stop = max(level_stop, stop)
        else:
            level_start, level_stop, level_label = start, stop, label
    labels = np.unique(target[1:])
    return compact(labels, count)[target][seeds], len(labels)


def split_tall_seeds(seeds: np.ndarray, count: int, affine: np.ndarray, split_ratio: float,
                     body_height_mm: float) -> tuple[np.ndarray, int]:
    """Cut seeds taller than ``split_ratio`` x the reference body height (module doc) at their narrowest
    cross-sections."""
    if count == 0:
        return seeds, count
    axis = si_axis(affine)
    step_mm = float(np.linalg.norm(affine[:3, axis]))
    boxes = ndimage.find_objects(seeds, max_label=count)
    heights = np.array([box[axis].stop - box[axis].start for box in boxes], dtype=float)  # voxels
    cap = body_height_mm / step_mm
    reference = min(float(np.median(heights)), cap) if count >= 3 else cap
    seeds = seeds.copy()
    for label, (box, height) in enumerate(zip(boxes, heights), start=1):
        if height <= split_ratio * reference:
            continue
        pieces = max(int(round((height / reference + DISC_TO_BODY) / (1 + DISC_TO_BODY))), 2)
        inside = seeds[box] == label
        area = np.convolve(inside.sum(axis=tuple(a for a in range(3) if a != axis)), np.ones(3) / 3, mode="same")
        window = max(int(height / (2 * pieces)), 1)
        cuts = []
        for j in range(1, pieces):
            expected = int(round(j * height / pieces))
            low, high = max(expected - window, 1), min(expected + window, int(height) - 1)
            # A seed only a few voxels tall leaves no search window: cut where the equal split says.
            cuts.append(low + int(np.argmin(area[low:high])) if high > low else min(max(expected, 1), int(height) - 1))
        along = np.arange(int(height)).reshape([-1 if a == axis else 1 for a in range(3)])
        piece = np.searchsorted(np.array(cuts), along, side="right")  # 0 .. pieces-1 along the axis
        new_labels = np.where(piece == 0, label, count + piece)
        seeds[box][inside] = np.broadcast_to(new_labels, inside.shape)[inside]
        count += pieces - 1
    return seeds, count


def seed_numbers(centroids_z_mm: np.ndarray, region: str, anchor: str) -> np.ndarray:
    """VerSe id of each seed from its centroid height (RAS z, mm), numbered from the region's anchor."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; valid: {sorted(REGIONS)}")
    if anchor not in ANCHORS:
        raise ValueError(f"unknown anchor {anchor!r}; valid: {list(ANCHORS)}")
    first, last = REGIONS[region]
    rank_from_top = np.argsort(np.argsort(-np.asarray(centroids_z_mm), kind="stable"), kind="stable")
    if anchor == "caudal":
        ids = last - (len(centroids_z_mm) - 1 - rank_from_top)
    else:
        ids = first + rank_from_top
    return np.clip(ids, FIRST_ID, LAST_ID)


def sacrum_top_mm(sacrum: np.ndarray, affine: np.ndarray) -> float | None:
    """Height (RAS z, mm) of the top of the sacrum's largest component; None without a sacrum."""
    parts, n_parts = ndimage.label(sacrum)
    if n_parts == 0:
        return None
    largest = 1 + int(np.argmax(np.bincount(parts.ravel(), minlength=n_parts + 1)[1:]))
    return float((np.argwhere(parts == largest) @ affine[:3, :3].T + affine[:3, 3])[:, 2].max())


def number_vertebrae(
    body: np.ndarray,
    bone: np.ndarray,
    affine: np.ndarray,
    region: str,
    anchor: str = "caudal",
    min_body_mm3: float = 500.0,
    split_ratio: float = 1.9,
    sacrum_top: float | None = None,
) -> np.ndarray:
    """VerSe label map (int16) of ``bone`` split into vertebrae around the ``body`` seeds (module rule). Seeds
    centred below ``sacrum_top`` (RAS z, mm) are sacral segments taken for bodies: they grow as the sacrum
    (``SACRUM``) and are not numbered, as S1 named L5 would shift every number by one."""
    body, bone = np.asarray(body, dtype=bool), np.asarray(bone, dtype=bool) | np.asarray(body, dtype=bool)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if region not in BODY_HEIGHT_MM:
        raise ValueError(f"unknown region {region!r}; valid: {sorted(REGIONS)}")
    seeds, count = merge_same_level(*body_seeds(body, spacing, min_body_mm3), affine)
    seeds, count = split_tall_seeds(seeds, count, affine, split_ratio, BODY_HEIGHT_MM[region])
    labels = np.zeros(bone.shape, dtype=np.int16)
    if count == 0:
        labels[bone] = REGIONS[region][1] if anchor == "caudal" else REGIONS[region][0]
        return labels
    centroids = np.array(ndimage.center_of_mass(seeds > 0, seeds, np.arange(1, count + 1)))
    heights = (centroids @ affine[:3, :3].T + affine[:3, 3])[:, 2]
    sacral = heights < sacrum_top if sacrum_top is not None else np.zeros(count, dtype=bool)
    ids = np.zeros(count + 1, dtype=np.int16)
    ids[1:][sacral] = SACRUM
    if not sacral.all():
        ids[1:][~sacral] = seed_numbers(heights[~sacral], region, anchor)
    box = ndimage.find_objects(bone.astype(np.uint8))[0]  # work inside the bone's bounding box only
    labels[box] = ids[grow_seeds(seeds[box], bone[box], spacing)]
    return labels


def grow_seeds(seeds: np.ndarray, mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Each ``mask`` voxel gets the seed it reaches first inside ``mask``; unreached ones the nearest grown voxel's."""
    grown = watershed(np.zeros(mask.shape, dtype=np.uint8), markers=seeds, mask=mask, connectivity=1)
    unreached = mask & (grown == 0)
    if unreached.any():
        _, nearest = ndimage.distance_transform_edt(grown == 0, sampling=spacing, return_indices=True)
        grown[unreached] = grown[tuple(index[unreached] for index in nearest)]
    return np.where(mask, grown, 0)
