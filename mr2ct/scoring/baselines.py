"""Trivial reference predictions that any trained method must clearly beat."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mr2ct.core.io import Volume
from mr2ct.core.values import BACKGROUND
from mr2ct.data.datamodule import TestVolume
from mr2ct.scoring.volumes import image_quality, on_evaluation_grid


def mean_training_ct_slice(train_files: list[Path], min_spine_pixels: int) -> np.ndarray:
    """The mean of all training CT sagittal slices (model space) that contain spine, centred on one canvas."""
    slices = []
    for path in train_files:
        with np.load(path) as data:
            ct, seg = data["ct"], data["seg"]
        keep = (seg > 0).reshape(seg.shape[0], -1).sum(1) >= min_spine_pixels
        slices.extend(ct[keep])
    if not slices:
        raise ValueError("no training slice contains spine: cannot build the mean-CT baseline")
    height = max(s.shape[0] for s in slices)
    width = max(s.shape[1] for s in slices)
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    for s in slices:
        top, left = (height - s.shape[0]) // 2, (width - s.shape[1]) // 2
        total[top : top + s.shape[0], left : left + s.shape[1]] += s
        count[top : top + s.shape[0], left : left + s.shape[1]] += 1
    return np.where(count > 0, total / np.maximum(count, 1), BACKGROUND).astype(np.float32)


def centre_fit(canvas: np.ndarray, shape: tuple[int, int], fill: float = BACKGROUND) -> np.ndarray:
    """Crop or pad ``canvas`` around its centre to ``shape``."""
    out = np.full(shape, fill, dtype=canvas.dtype)
    src = [slice(max(0, (c - s) // 2), max(0, (c - s) // 2) + min(c, s)) for c, s in zip(canvas.shape, shape)]
    dst = [slice(max(0, (s - c) // 2), max(0, (s - c) // 2) + min(c, s)) for c, s in zip(canvas.shape, shape)]
    out[dst[0], dst[1]] = canvas[src[0], src[1]]
    return out


def mean_ct_baseline_metrics(mean_slice: np.ndarray, volumes: list[TestVolume]) -> list[dict[str, np.ndarray]]:
    """Per-slice image metrics of predicting the mean training CT slice for every slice of the prepared
    grid, scored like any method's prediction (on the evaluation grid)."""
    results = []
    for test in volumes:
        prediction = np.broadcast_to(centre_fit(mean_slice, test.mr.shape[1:]), test.mr.shape)
        on_grid = on_evaluation_grid(Volume(np.ascontiguousarray(prediction), test.affine), test.reference)
        results.append(image_quality(on_grid, test.reference))
    return results
