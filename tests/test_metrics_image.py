"""Image-quality metrics against scikit-image (SSIM), sewar (VIFp) and hand formulas; the spine mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sewar.full_ref import vifp as sewar_vifp
from skimage.metrics import structural_similarity

from mr2ct.metrics import (
    image_metrics_volume,
    l1,
    mse,
    psnr,
    spine_mask,
    ssim,
    to_unit_range,
    vifp,
)
from mr2ct.metrics.image import PSNR_CAP_DB


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.min()) / (field.max() - field.min())


def _noisy_checkerboard(rng: np.random.Generator, shape: tuple[int, int], square: int) -> np.ndarray:
    rows, cols = np.indices(shape)
    board = ((rows // square + cols // square) % 2).astype(np.float64)
    return np.clip(0.2 + 0.6 * board + 0.05 * rng.standard_normal(shape), 0, 1)


def _image_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Reference/distorted pairs on [0, 1]: random, smooth field, noisy checkerboard, masked spine-like."""
    rng = np.random.default_rng(7)
    random = rng.random((64, 80))
    smooth = _smooth_field(rng, (96, 72), 3.0)
    board = _noisy_checkerboard(rng, (64, 64), 8)
    masked = smooth * (ndimage.distance_transform_edt(np.arange(96)[:, None] % 40 > 5) < 10)
    return [
        ("random", random, np.clip(random + 0.1 * rng.standard_normal(random.shape), 0, 1)),
        ("smooth", smooth, ndimage.gaussian_filter(smooth, 1.5)),
        ("checkerboard", board, _noisy_checkerboard(rng, (64, 64), 8)),
        ("masked", masked, np.clip(masked * 0.8 + 0.05, 0, 1) * (masked > 0)),
    ]


@pytest.mark.parametrize("name, reference, distorted", _image_pairs())
def test_ssim_equals_scikit_image(name: str, reference: np.ndarray, distorted: np.ndarray) -> None:
    expected = structural_similarity(
        reference, distorted, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
    )
    assert float(ssim(reference, distorted)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name, reference, distorted", _image_pairs())
def test_vifp_equals_sewar(name: str, reference: np.ndarray, distorted: np.ndarray) -> None:
    """On [0, 1] images VIFp is sewar's on the 8-bit scale; with data_range=255 it is sewar's on the raw input."""
    assert float(vifp(reference, distorted)) == pytest.approx(
        sewar_vifp(reference * 255, distorted * 255), abs=1e-6
    )
    assert float(vifp(reference, distorted, data_range=255)) == pytest.approx(
        sewar_vifp(reference, distorted), abs=1e-6
    )


def test_vifp_of_identical_images_is_one_and_flat_reference_is_defined() -> None:
    image = _smooth_field(np.random.default_rng(1), (48, 48), 2.0)
    assert float(vifp(image, image)) == pytest.approx(1.0, abs=1e-9)
    assert float(vifp(np.full((48, 48), 0.3), image)) == 1.0


def test_stack_of_slices_equals_slice_by_slice() -> None:
    rng = np.random.default_rng(3)
    reference = np.stack([_smooth_field(rng, (48, 56), 2.0) for _ in range(3)])
    distorted = np.clip(reference + 0.05 * rng.standard_normal(reference.shape), 0, 1)
    for metric in (l1, mse, psnr, ssim, vifp):
        stacked = metric(reference, distorted)
        assert stacked.shape == (3,)
        np.testing.assert_allclose(stacked, [metric(r, d) for r, d in zip(reference, distorted)], atol=1e-12)


def test_l1_mse_psnr_equal_hand_formulas() -> None:
    rng = np.random.default_rng(4)
    reference, distorted = rng.random((20, 30)), rng.random((20, 30))
    squared = np.mean((reference - distorted) ** 2)
    assert float(l1(reference, distorted)) == pytest.approx(np.mean(np.abs(reference - distorted)))
    assert float(mse(reference, distorted)) == pytest.approx(squared)
    assert float(psnr(reference, distorted)) == pytest.approx(10 * np.log10(1 / squared))
    assert float(psnr(reference * 4, distorted * 4, data_range=4)) == pytest.approx(10 * np.log10(1 / squared))


def test_psnr_of_identical_images_is_capped_not_inf() -> None:
    image = np.random.default_rng(5).random((16, 16))
    assert float(psnr(image, image)) == PSNR_CAP_DB
    assert float(psnr(image, image + 1e-3)) == pytest.approx(60.0)


def test_size_and_shape_errors_are_explicit() -> None:
    with pytest.raises(ValueError, match="at least 41"):
        vifp(np.zeros((40, 60)), np.zeros((40, 60)))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((20, 20)), np.zeros((20, 21)))


def test_spine_mask_is_a_euclidean_disk_of_radius_10() -> None:
    seg = np.zeros((41, 41), dtype=np.int16)
    seg[20, 20] = 5
    mask = spine_mask(seg)
    rows, cols = np.indices(seg.shape)
    np.testing.assert_array_equal(mask, (rows - 20) ** 2 + (cols - 20) ** 2 <= 100)
    assert mask.sum() == 317  # integer points in a disk of radius 10


def test_spine_mask_of_a_volume_works_per_sagittal_slice() -> None:
    seg = np.zeros((3, 30, 30), dtype=np.int16)
    seg[0, 10:12, 10:12] = 1
    seg[2, 20, 5] = 3
    mask = spine_mask(seg)
    for index in range(3):
        np.testing.assert_array_equal(mask[index], spine_mask(seg[index]))
    assert not mask[1].any()


def _spine_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model-space target and prediction (X=6, 64, 64) with spine in sagittal slices 1..4 only."""
    seg = np.zeros((6, 64, 64), dtype=np.int16)
    seg[1:5, 20:44, 28:36] = 21
    target = 2 * np.stack([_smooth_field(rng, (64, 64), 2.0) for _ in range(6)]) - 1
    pred = np.clip(target + 0.1 * rng.standard_normal(target.shape), -1, 1)
    return pred, target, seg


def test_volume_metrics_score_spine_slices_with_the_masked_reference_metrics() -> None:
    pred, target, seg = _spine_volume(np.random.default_rng(6))
    result = image_metrics_volume(pred, target, seg)
    np.testing.assert_array_equal(result["slice_index"], [1, 2, 3, 4])
    for position, index in enumerate(result["slice_index"]):
        keep = spine_mask(seg[index])
        p, t = to_unit_range(pred[index]) * keep, to_unit_range(target[index]) * keep
        assert result["l1"][position] == pytest.approx(np.mean(np.abs(p - t)))
        assert result["mse"][position] == pytest.approx(np.mean((p - t) ** 2))
        assert result["psnr"][position] == pytest.approx(10 * np.log10(1 / np.mean((p - t) ** 2)))
        assert result["ssim"][position] == pytest.approx(
            structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1),
            abs=1e-6,
        )
        assert result["vifp"][position] == pytest.approx(sewar_vifp(t * 255, p * 255), abs=1e-6)


def test_pixels_farther_than_10_px_from_the_spine_do_not_matter() -> None:
    rng = np.random.default_rng(8)
    pred, target, seg = _spine_volume(rng)
    before = image_metrics_volume(pred, target, seg)
    outside = ~spine_mask(seg)
    changed_pred, changed_target = pred.copy(), target.copy()
    changed_pred[outside] = rng.uniform(-1, 1, outside.sum())
    changed_target[outside] = rng.uniform(-1, 1, outside.sum())
    after = image_metrics_volume(changed_pred, changed_target, seg)
    for name in ("l1", "mse", "psnr", "ssim", "vifp"):
        np.testing.assert_array_equal(before[name], after[name])
    near = spine_mask(seg) & ~(seg > 0)
    changed_pred[near] = -changed_pred[near]
    assert not np.array_equal(before["l1"], image_metrics_volume(changed_pred, target, seg)["l1"])


def test_perfect_prediction_scores_perfectly_and_finite() -> None:
    _, target, seg = _spine_volume(np.random.default_rng(9))
    result = image_metrics_volume(target, target, seg)
    np.testing.assert_array_equal(result["l1"], 0.0)
    np.testing.assert_array_equal(result["psnr"], PSNR_CAP_DB)
    np.testing.assert_allclose(result["ssim"], 1.0)
    np.testing.assert_allclose(result["vifp"], 1.0)


def test_model_space_values_outside_range_are_clipped() -> None:
    _, target, seg = _spine_volume(np.random.default_rng(10))
    overshoot = np.where(target > 0.5, 3.0, target)
    clipped = np.where(target > 0.5, 1.0, target)
    np.testing.assert_array_equal(
        image_metrics_volume(overshoot, target, seg)["mse"], image_metrics_volume(clipped, target, seg)["mse"]
    )


def test_volume_without_spine_gives_empty_arrays_and_bad_input_is_rejected() -> None:
    pred, target, seg = _spine_volume(np.random.default_rng(11))
    empty = image_metrics_volume(pred, target, np.zeros_like(seg))
    assert all(values.size == 0 for values in empty.values())
    with pytest.raises(ValueError, match="one shape"):
        image_metrics_volume(pred[:-1], target, seg)
    broken = pred.copy()
    broken[2, 30, 30] = np.nan
    with pytest.raises(ValueError, match="pred contains NaN"):
        image_metrics_volume(broken, target, seg)
