"""Dice against MONAI's DiceMetric and per-vertebra / posterior Dice on hand-made label maps with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric
from scipy import ndimage

from mr2ct.core.labels import ARCH, BODY, SACRUM, SPINOUS_PROCESS, rib_label, vertebra_mask
from mr2ct.metrics import (
    dice,
    dice_per_vertebra,
    dice_per_volume,
    dice_posterior,
    mean_over_vertebrae,
    posterior_labels,
    segmentation_dice,
)

ASSIGNMENTS = ("overlap", "shift")


def _monai_dice(pred: np.ndarray, true: np.ndarray) -> float:
    metric = DiceMetric(include_background=True, reduction="none")
    as_tensor = lambda mask: torch.as_tensor(mask[None, None], dtype=torch.float32)  # noqa: E731
    return float(metric(as_tensor(pred), as_tensor(true)).item())


@pytest.mark.parametrize("seed", range(4))
def test_dice_equals_monai_on_random_label_maps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 4, size=(12, 14, 10)) * (rng.random((12, 14, 10)) < 0.5)
    true = rng.integers(0, 4, size=(12, 14, 10)) * (rng.random((12, 14, 10)) < 0.3)
    assert dice_per_volume(pred, true) == pytest.approx(_monai_dice(pred > 0, true > 0), abs=1e-6)
    for label in (1, 2, 3):
        assert dice(pred == label, true == label) == pytest.approx(_monai_dice(pred == label, true == label), abs=1e-6)


def test_dice_of_two_empty_masks_is_one_and_of_disjoint_masks_zero() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    assert dice(empty, empty) == 1.0
    one, other = empty.copy(), empty.copy()
    one[0, 0], other[3, 3] = True, True
    assert dice(one, other) == 0.0
    assert dice(one, empty) == 0.0


def _spine(ids: tuple[int, ...] = (20, 21, 22, 23), heights: tuple[int, ...] = (4, 5, 6, 7)) -> np.ndarray:
    """Vertebrae as boxes stacked along axis 2 (I->S), each followed by a 2-voxel gap (the disc)."""
    labels = np.zeros((6, 8, sum(heights) + 2 * len(heights)), dtype=np.int16)
    top = 0
    for vertebra, height in zip(ids, heights):
        labels[1:5, 2:6, top : top + height] = vertebra
        top += height + 2
    return labels


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_perfect_prediction_scores_one(assignment: str) -> None:
    true = _spine()
    assert dice_per_vertebra(true, true, assignment) == {20: 1.0, 21: 1.0, 22: 1.0, 23: 1.0}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_missing_vertebra_scores_zero(assignment: str) -> None:
    true = _spine()
    pred = np.where(true == 22, 0, true)
    assert dice_per_vertebra(pred, true, assignment) == {20: 1.0, 21: 1.0, 22: 0.0, 23: 1.0}


def test_merged_vertebrae_known_answers() -> None:
    """GT 20 (64 voxels) and 21 (80) predicted as one label 20 that also fills the disc between (32)."""
    true = _spine()
    pred = true.copy()
    pred[1:5, 2:6, 0:11] = 20
    merged = 64 + 32 + 80
    # overlap: the merged piece goes to 21 (80 voxels of overlap against 64); 20 gets nothing.
    assert dice_per_vertebra(pred, true, "overlap") == pytest.approx(
        {20: 0.0, 21: 2 * 80 / (merged + 80), 22: 1.0, 23: 1.0}
    )
    # shift: 20 compares with pred 20; 21 takes pred 20 too (s = -1), the same voxels credited twice.
    assert dice_per_vertebra(pred, true, "shift") == pytest.approx(
        {20: 2 * 64 / (merged + 64), 21: 2 * 80 / (merged + 80), 22: 1.0, 23: 1.0}
    )


@pytest.mark.parametrize("offset", [1, -1, 2])
def test_shifted_labels_are_recovered_by_both_rules(offset: int) -> None:
    true = _spine()
    pred = np.where(true > 0, true + offset, 0)
    for assignment in ASSIGNMENTS:
        assert dice_per_vertebra(pred, true, assignment) == {20: 1.0, 21: 1.0, 22: 1.0, 23: 1.0}


def test_only_overlap_survives_a_segmenter_without_vertebra_ids() -> None:
    true = _spine()
    bone_only = (true > 0).astype(np.int16)
    far_shift = np.where(true > 0, true - 3, 0)  # (+3 would turn 23 into 26, the sacrum, which Dice ignores)
    for pred in (bone_only, far_shift):
        assert dice_per_vertebra(pred, true, "overlap") == {20: 1.0, 21: 1.0, 22: 1.0, 23: 1.0}
        assert dice_per_vertebra(pred, true, "shift") == {20: 0.0, 21: 0.0, 22: 0.0, 23: 0.0}


def test_detached_false_positive_counts_against_the_nearest_vertebra() -> None:
    true = _spine()
    pred = true.copy()
    pred[1:3, 7, 24:26] = 5  # 4 voxels just anterior of vertebra 23 (z 21..27), touching no bone
    scores = dice_per_vertebra(pred, true, "overlap")
    assert scores[23] == pytest.approx(2 * 112 / (112 + 4 + 112))
    assert [scores[v] for v in (20, 21, 22)] == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("seed", range(3))
def test_rules_agree_on_correctly_labelled_imperfect_predictions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = _spine()
    pred = true.copy()
    boundary = (true > 0) & ~ndimage.binary_erosion(true > 0)
    flip = boundary & (rng.random(true.shape) < 0.3)
    pred[flip] = 0
    overlap, shift = dice_per_vertebra(pred, true, "overlap"), dice_per_vertebra(pred, true, "shift")
    assert overlap == pytest.approx(shift)
    assert overlap[20] == pytest.approx(dice(pred == 20, true == 20))


def _spine_with_subregions() -> tuple[np.ndarray, np.ndarray]:
    """Each vertebra box split along axis 1 (P->A): anterior half body, posterior half arch + spinous."""
    labels = _spine()
    subregions = np.zeros_like(labels)
    bone = labels > 0
    subregions[:, 4:, :][bone[:, 4:, :]] = BODY
    subregions[:, 3, :][bone[:, 3, :]] = ARCH
    subregions[:, :3, :][bone[:, :3, :]] = SPINOUS_PROCESS
    return labels, subregions


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_posterior_dice_excludes_the_body(assignment: str) -> None:
    true, true_sub = _spine_with_subregions()
    # Body perfect, posterior elements missing: overall Dice is high, posterior Dice is 0.
    body_only = np.where(true_sub == BODY, true, 0)
    assert dice_per_volume(body_only, true) == pytest.approx(2 * 0.5 / 1.5)
    volume, per_vertebra = dice_posterior(body_only, true_sub, true, true_sub, assignment)
    assert volume == 0.0
    assert per_vertebra == {20: 0.0, 21: 0.0, 22: 0.0, 23: 0.0}
    # Posterior perfect, bodies wrong (vertebra 21's body absent, 22's filled with a wrong id): still 1.0.
    broken_body = true.copy()
    broken_body[(true == 21) & (true_sub == BODY)] = 0
    broken_body[(true == 22) & (true_sub == BODY)] = 7
    pred_sub = np.where(broken_body > 0, true_sub, 0)
    volume, per_vertebra = dice_posterior(broken_body, pred_sub, true, true_sub, assignment)
    assert volume == 1.0
    assert per_vertebra == {20: 1.0, 21: 1.0, 22: 1.0, 23: 1.0}


def test_vertebra_without_posterior_ground_truth_is_left_out() -> None:
    true, true_sub = _spine_with_subregions()
    true_sub[(true == 23) & (true_sub != 0)] = BODY  # only the body of 23 in the field of view
    _, per_vertebra = dice_posterior(true, true_sub, true, true_sub)
    assert sorted(per_vertebra) == [20, 21, 22]
    np.testing.assert_array_equal(posterior_labels(true, true_sub)[true == 23], 0)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_sacrum_and_rib_labels_change_no_dice_value(assignment: str) -> None:
    """Other bones in prediction, ground truth or both, touching the vertebrae or not, change nothing."""
    true, true_sub = _spine_with_subregions()
    rng = np.random.default_rng(0)
    pred = np.where(rng.random(true.shape) < 0.1, 0, true)  # an imperfect prediction
    pred_sub = np.where(pred > 0, true_sub, 0)
    baseline = segmentation_dice(pred, true, pred_sub, true_sub, assignment)

    def with_other_bones(labels: np.ndarray) -> np.ndarray:
        labels = labels.copy()
        labels[:, :, -2:] = SACRUM  # below the last vertebra's gap, touching nothing
        labels[0, :, 0:4] = rib_label(12)  # beside vertebra 20, touching it
        labels[5, 7, 10:14] = rib_label(11)
        return labels

    for pred_labels, true_labels in ((with_other_bones(pred), true), (pred, with_other_bones(true)),
                                     (with_other_bones(pred), with_other_bones(true))):
        assert not np.array_equal(pred_labels, pred) or not np.array_equal(true_labels, true)
        assert segmentation_dice(pred_labels, true_labels, pred_sub, true_sub, assignment) == baseline
    assert np.array_equal(vertebra_mask(with_other_bones(true)), true > 0)


def test_mean_over_vertebrae_pools_all_volumes() -> None:
    assert mean_over_vertebrae([{20: 1.0, 21: 0.5}, {20: 0.0}]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no vertebra"):
        mean_over_vertebrae([{}, {}])


def test_segmentation_dice_collects_everything() -> None:
    true, true_sub = _spine_with_subregions()
    pred = np.where(true == 22, 0, true)
    result = segmentation_dice(pred, true, np.where(pred > 0, true_sub, 0), true_sub)
    assert result.volume == pytest.approx(dice(pred > 0, true > 0))
    assert result.per_vertebra[22] == 0.0
    assert result.posterior_per_vertebra == {20: 1.0, 21: 1.0, 22: 0.0, 23: 1.0}
    assert segmentation_dice(pred, true).posterior_volume is None
    with pytest.raises(ValueError, match="both"):
        segmentation_dice(pred, true, pred_subreg=true_sub)


def test_bad_inputs_are_rejected_clearly() -> None:
    true = _spine()
    with pytest.raises(ValueError, match="differ in shape"):
        dice_per_vertebra(true[:-1], true)
    with pytest.raises(ValueError, match="whole numbers"):
        dice_per_vertebra(true + 0.5, true)
    with pytest.raises(ValueError, match="unknown assignment"):
        dice_per_vertebra(true, true, "nearest")  # type: ignore[arg-type]
    assert dice_per_vertebra(true.astype(np.float32), true) == {20: 1.0, 21: 1.0, 22: 1.0, 23: 1.0}
    assert dice_per_vertebra(true, np.zeros_like(true)) == {}
