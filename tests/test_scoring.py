"""One scoring grid for every method: predictions from 2D and 3D grids are scored on the same pixels, and
whole volumes are one translation whose network calls follow the window settings."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mr2ct.core.config import InferenceConfig
from mr2ct.core.io import Volume
from mr2ct.data.datamodule import Reference
from mr2ct.data.preprocess import prepared_grid_2d, prepared_grid_3d
from mr2ct.inference.volume import translate_volume
from mr2ct.metrics.image import spine_mask
from mr2ct.pipeline.stages import build_method
from mr2ct.scoring.volumes import image_quality, on_evaluation_grid
from tests.conftest import TINY_DDIM, compose_config

WEIGHTS = np.array([0.004, -0.003, 0.002])  # model-space CT per RAS mm: smooth, linear, inside [-1, 1]


def native_grid() -> Volume:
    """A sagittal MR grid: 4 mm slices, 1 mm in-plane, an oblique origin."""
    affine = np.diag([4.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-14.0, -30.0, -40.0]
    return Volume(np.zeros((8, 60, 80), np.float32), affine)


def linear_field(grid: Volume) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1)
    return (grid.index_to_ras(index) @ WEIGHTS).astype(np.float32)


def reference() -> Reference:
    grid = native_grid()
    seg = np.zeros(grid.shape, np.int16)
    seg[2:6, 25:35, 20:60] = 21  # the spine, well inside the field of view
    ct = linear_field(grid)
    return Reference(mr=ct, ct=ct, seg=seg, subreg=np.zeros_like(seg, np.uint8), affine=grid.affine)


def test_2d_and_3d_predictions_are_scored_on_the_same_pixels():
    truth = reference()
    native = Volume(truth.ct, truth.affine)
    grids = {"2d": prepared_grid_2d(native, 2.0), "3d": prepared_grid_3d(native, 1.5)}
    assert grids["2d"].shape != grids["3d"].shape
    scores = {}
    for name, grid in grids.items():
        prediction = on_evaluation_grid(grid.with_array(linear_field(grid)), truth)  # exact, then linear back
        assert prediction.shape == truth.ct.shape  # every method ends on the evaluation grid
        scores[name] = image_quality(prediction, truth)
        shifted = on_evaluation_grid(grid.with_array(linear_field(grid) + 0.1), truth)
        scores[f"{name} shifted"] = image_quality(shifted, truth)
    np.testing.assert_array_equal(scores["2d"]["slice_index"], scores["3d"]["slice_index"])
    np.testing.assert_array_equal(scores["2d"]["slice_index"], [2, 3, 4, 5])
    for metric in ("l1", "mse", "psnr", "ssim", "vifp"):
        # a linear field survives both round trips inside the mask: both grids score the same, perfectly
        np.testing.assert_allclose(scores["2d"][metric], scores["3d"][metric], rtol=1e-4, atol=1e-5)
    assert np.all(scores["2d"]["l1"] < 1e-5) and np.all(scores["2d"]["ssim"] > 0.9999)
    # an error of 0.1 in model space is 0.05 on the [0, 1] scale, over exactly the masked pixels of each slice
    mask_fraction = spine_mask(truth.seg[2:6], spacing=(1.0, 1.0)).mean(axis=(1, 2))
    for name in ("2d shifted", "3d shifted"):
        np.testing.assert_allclose(scores[name]["l1"], 0.05 * mask_fraction, rtol=1e-3)


def test_the_mask_radius_is_millimetres_on_any_grid():
    seg = np.zeros((41, 41), np.int16)
    seg[20, 20] = 1
    fine = spine_mask(seg, spacing=(1.0, 1.0))
    coarse = spine_mask(seg, spacing=(2.0, 2.0))
    assert fine.sum() == 317 and coarse.sum() == 81  # disks of 10 px and of 5 px: both 10 mm


@pytest.fixture(scope="module")
def tiny_ddim():
    torch.manual_seed(0)
    return build_method(compose_config(TINY_DDIM)).eval()


def count_network_calls(method) -> list[int]:
    calls = []
    method.ema.module.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return calls


def test_overlap_changes_the_network_calls_of_a_volume_translation(tiny_ddim):
    mr = np.random.default_rng(0).uniform(-1, 1, (3, 40, 56)).astype(np.float32)
    calls = count_network_calls(tiny_ddim)
    settings = InferenceConfig(t=2, eta=1.0, window=16, batch_size=64)
    translate_volume(tiny_ddim, mr, replace(settings, overlap=0.0), crop_size=16)
    without = list(calls)
    calls.clear()
    translate_volume(tiny_ddim, mr, replace(settings, overlap=0.5), crop_size=16)
    # 16-pixel windows over a 40 x 56 slice: 3 x 4 positions without overlap, 4 x 6 with half a window shared
    assert sum(without) == 2 * 3 * 3 * 4 and sum(calls) == 2 * 3 * 4 * 6


def test_a_volume_is_one_trajectory_whatever_the_network_batch(tiny_ddim):
    """The noise is drawn once per step for the whole volume: how many windows go through the network at
    once (inference.batch_size) changes nothing, with eta = 1."""
    mr = np.random.default_rng(1).uniform(-1, 1, (3, 40, 56)).astype(np.float32)
    settings = InferenceConfig(t=3, eta=1.0, window=16, overlap=0.25)
    small = translate_volume(tiny_ddim, mr, replace(settings, batch_size=2), crop_size=16, seed=7).mean
    large = translate_volume(tiny_ddim, mr, replace(settings, batch_size=50), crop_size=16, seed=7).mean
    np.testing.assert_allclose(small, large, atol=1e-5)
    other_seed = translate_volume(tiny_ddim, mr, replace(settings, batch_size=2), crop_size=16, seed=8).mean
    assert np.abs(small - other_seed).max() > 1e-3


def test_ribs_and_sacrum_do_not_widen_the_image_quality_mask():
    truth = reference()
    with_other_bones = truth.seg.copy()
    with_other_bones[:, 50:58, 20:60] = 26  # sacrum-like label far from the vertebrae
    with_other_bones[1, 5:10, 5:10] = 105  # a rib in a slice without vertebrae
    prediction = truth.ct + 0.2
    plain = image_quality(prediction, truth)
    other = image_quality(prediction, replace(truth, seg=with_other_bones))
    for metric in ("slice_index", "l1", "ssim"):
        np.testing.assert_array_equal(plain[metric], other[metric])
