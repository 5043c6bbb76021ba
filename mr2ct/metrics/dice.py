"""Dice of a segmentation of the synthetic CT against ground-truth labels in MR space.

Per volume: all bone (label > 0) against all bone. Per vertebra: each ground-truth vertebra against the
predicted voxels assigned to it, by one of two rules:

- "overlap" (default): the prediction is cut into units, one per connected component (6-connectivity) of
  each predicted label, and every unit goes to the ground-truth vertebra it overlaps most (ties: the
  smaller id); a unit that touches no ground-truth bone goes to the vertebra with the nearest centroid
  (in voxels), so hallucinated bone lowers a vertebra's Dice instead of vanishing. A vertebra's Dice
  compares its ground truth with the union of its units. The predicted ids are never read, so a
  segmenter that only says bone/no-bone, or numbers vertebrae wrongly, is scored on its shapes; every
  predicted voxel is credited to at most one vertebra; and where predicted ids are right each label is
  one unit that lands on its own vertebra, which is what "shift" gives too. Two vertebrae predicted as one
  connected piece are credited to one of them only: a merge is an error.
- "shift": the authors' rule. For ground-truth vertebra i, the best Dice of predicted label i + s over
  s in {-1, 0, 1}, widened to s in {-2, ..., 2} if that best is below 0.5. It tolerates a segmenter that
  numbers the spine off by one or two, but the same predicted voxels can be credited to two vertebrae.
  Use it to reproduce the paper's numbers.

Posterior Dice repeats both on the labels with the vertebral body (subregion 50) removed on both sides.

Labels that name other bones (the sacrum, 26, and the ribs, 101..112; ``NON_VERTEBRA_LABELS``) are removed
from prediction and ground truth before any Dice, as the paper leaves the sacrum out. Every other
predicted id counts as bone: predicted numbers are not trusted (see "overlap"), so only ids with another
meaning are dropped.
Dice of two empty masks is 1.0 (nothing to find, nothing found); per-vertebra results only contain
ground-truth vertebrae that are present, so this never enters a per-vertebra mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from mr2ct.core.labels import BODY, NON_VERTEBRA_LABELS

Assignment = Literal["overlap", "shift"]
DEFAULT_ASSIGNMENT: Assignment = "overlap"
SHIFT_THRESHOLD = 0.5


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    """Integer label map; float maps (as NIfTI loaders return) must hold whole non-negative numbers."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{name}: label map must hold whole numbers")
    labels = array.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name}: label map has negative ids")
    return labels


def _vertebrae_only(labels: np.ndarray) -> np.ndarray:
    """Labels with the other bones (sacrum, ribs) set to background."""
    return np.where(np.isin(labels, sorted(NON_VERTEBRA_LABELS)), 0, labels)


def _check_shapes(**arrays: np.ndarray) -> None:
    shapes = {name: np.shape(array) for name, array in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"label maps differ in shape: {shapes}")


def dice(pred_mask: np.ndarray, true_mask: np.ndarray) -> float:
    """2|P & T| / (|P| + |T|) of two binary masks; 1.0 when both are empty."""
    _check_shapes(pred_mask=pred_mask, true_mask=true_mask)
    pred, true = np.asarray(pred_mask, dtype=bool), np.asarray(true_mask, dtype=bool)
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, true).sum()) / total


def dice_per_volume(pred_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Dice of all predicted vertebra bone against all ground-truth vertebra bone (other bones left out)."""
    pred = _vertebrae_only(_as_labels(pred_labels, "pred_labels"))
    true = _vertebrae_only(_as_labels(true_labels, "true_labels"))
    return dice(pred > 0, true > 0)


def _contingency(rows: np.ndarray, true_index: np.ndarray, n_rows: int, n_true: int) -> np.ndarray:
    """Voxel counts of every (row id, ground-truth index) pair; index 0 is background on both axes."""
    flat = rows.ravel() * (n_true + 1) + true_index.ravel()
    return np.bincount(flat, minlength=(n_rows + 1) * (n_true + 1)).reshape(n_rows + 1, n_true + 1)


def _index_map(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Labels renumbered to 1..len(ids) in the order of the sorted `ids`; background stays 0."""
    index = np.searchsorted(ids, labels) + 1
    index[labels == 0] = 0
    return index


def _dice_shift(pred: np.ndarray, true: np.ndarray, true_ids: np.ndarray) -> dict[int, float]:
    pred_ids = np.unique(pred[pred > 0])
    counts = _contingency(_index_map(pred, pred_ids), _index_map(true, true_ids), len(pred_ids), len(true_ids))
    pred_sizes, true_sizes = counts.sum(axis=1), counts.sum(axis=0)

    def pair_dice(pred_id: int, column: int) -> float:
        row = np.searchsorted(pred_ids, pred_id)
        if row == len(pred_ids) or pred_ids[row] != pred_id:
            return 0.0
        return 2.0 * counts[row + 1, column] / (pred_sizes[row + 1] + true_sizes[column])

    result = {}
    for column, true_id in enumerate(true_ids.tolist(), start=1):
        best = max(pair_dice(true_id + s, column) for s in (-1, 0, 1))
        if best < SHIFT_THRESHOLD:
            best = max(best, *(pair_dice(true_id + s, column) for s in (-2, 2)))
        result[true_id] = best
    return result


def _prediction_units(pred: np.ndarray) -> tuple[np.ndarray, int]:
    """Map of units: each connected component of each predicted label gets its own id (1..n)."""
    units = np.zeros(pred.shape, dtype=np.int64)
    n_units = 0
    for label, box in enumerate(ndimage.find_objects(pred), start=1):
        if box is None:
            continue
        components, n_components = ndimage.label(pred[box] == label)
        inside = components > 0
        units[box][inside] = components[inside] + n_units
        n_units += n_components
    return units, n_units


def _dice_overlap(pred: np.ndarray, true: np.ndarray, true_ids: np.ndarray) -> dict[int, float]:
    units, n_units = _prediction_units(pred)
    true_index = _index_map(true, true_ids)
    counts = _contingency(units, true_index, n_units, len(true_ids))
    unit_counts, true_sizes = counts[1:, 1:], counts[:, 1:].sum(axis=0)
    unit_sizes = counts[1:].sum(axis=1)
    assigned = unit_counts.argmax(axis=1)
    detached = np.flatnonzero(unit_counts.sum(axis=1) == 0)
    if len(detached):
        true_centroids = np.array(ndimage.center_of_mass(true > 0, true_index, np.arange(1, len(true_ids) + 1)))
        unit_centroids = np.array(ndimage.center_of_mass(units > 0, units, detached + 1))
        distances = np.linalg.norm(unit_centroids[:, None, :] - true_centroids[None, :, :], axis=-1)
        assigned[detached] = distances.argmin(axis=1)
    overlap = unit_counts[np.arange(n_units), assigned]
    intersections = np.bincount(assigned, weights=overlap, minlength=len(true_ids))
    assigned_sizes = np.bincount(assigned, weights=unit_sizes, minlength=len(true_ids))
    scores = 2.0 * intersections / (assigned_sizes + true_sizes)
    return dict(zip(true_ids.tolist(), scores.tolist()))


def dice_per_vertebra(
    pred_labels: np.ndarray, true_labels: np.ndarray, assignment: Assignment = DEFAULT_ASSIGNMENT
) -> dict[int, float]:
    """Dice of each ground-truth vertebra id present; predicted voxels assigned by `assignment` (module doc)."""
    rules = {"overlap": _dice_overlap, "shift": _dice_shift}
    if assignment not in rules:
        raise ValueError(f"unknown assignment {assignment!r}; valid: {sorted(rules)}")
    pred = _vertebrae_only(_as_labels(pred_labels, "pred_labels"))
    true = _vertebrae_only(_as_labels(true_labels, "true_labels"))
    _check_shapes(pred_labels=pred, true_labels=true)
    true_ids = np.unique(true[true > 0])
    if not len(true_ids):
        return {}
    return rules[assignment](pred, true, true_ids)


def posterior_labels(labels: np.ndarray, subregions: np.ndarray) -> np.ndarray:
    """Vertebra labels with the vertebral body removed: voxels whose subregion is BODY become 0."""
    labels = _as_labels(labels, "labels")
    subregions = _as_labels(subregions, "subregions")
    _check_shapes(labels=labels, subregions=subregions)
    return np.where(subregions == BODY, 0, labels)


def dice_posterior(
    pred_labels: np.ndarray,
    pred_subreg: np.ndarray,
    true_labels: np.ndarray,
    true_subreg: np.ndarray,
    assignment: Assignment = DEFAULT_ASSIGNMENT,
) -> tuple[float, dict[int, float]]:
    """Posterior-structure Dice (body excluded on both sides): per volume, and per vertebra that has any."""
    pred = posterior_labels(pred_labels, pred_subreg)
    true = posterior_labels(true_labels, true_subreg)
    return dice_per_volume(pred, true), dice_per_vertebra(pred, true, assignment)


def mean_over_vertebrae(per_vertebra: Iterable[Mapping[int, float]]) -> float:
    """Mean Dice over all vertebrae of all volumes pooled (the paper's "per vertebra" column)."""
    values = [value for scores in per_vertebra for value in scores.values()]
    if not values:
        raise ValueError("mean_over_vertebrae: no vertebra scores to average")
    return float(np.mean(values))


@dataclass(frozen=True)
class SegmentationDice:
    """All Dice numbers of one predicted segmentation; posterior fields are None without subregions."""

    volume: float
    per_vertebra: dict[int, float]
    posterior_volume: float | None = None
    posterior_per_vertebra: dict[int, float] | None = None


def segmentation_dice(
    pred_labels: np.ndarray,
    true_labels: np.ndarray,
    pred_subreg: np.ndarray | None = None,
    true_subreg: np.ndarray | None = None,
    assignment: Assignment = DEFAULT_ASSIGNMENT,
) -> SegmentationDice:
    """Volume, per-vertebra and (when both subregion maps are given) posterior Dice in one call."""
    if (pred_subreg is None) != (true_subreg is None):
        raise ValueError("posterior Dice needs subregion maps for both prediction and ground truth")
    volume = dice_per_volume(pred_labels, true_labels)
    per_vertebra = dice_per_vertebra(pred_labels, true_labels, assignment)
    if pred_subreg is None:
        return SegmentationDice(volume, per_vertebra)
    posterior_volume, posterior_per_vertebra = dice_posterior(
        pred_labels, pred_subreg, true_labels, true_subreg, assignment
    )
    return SegmentationDice(volume, per_vertebra, posterior_volume, posterior_per_vertebra)
