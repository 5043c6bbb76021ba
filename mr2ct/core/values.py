"""Value ranges: the one place that says how HU and MR intensities map to the networks' model space.

- Model space is [MODEL_MIN, MODEL_MAX] = [-1, 1] for every image a network sees or produces.
- CT: ``clip(HU / HU_SCALE, -1, 1)`` with HU_SCALE = 1000, so air (AIR_HU = -1000 HU) is -1 and dense
  cortical bone saturates at +1000 HU; back to HU with ``x * HU_SCALE``.
- MR: ``clip(MR / robust_max, 0, 1) * 2 - 1`` where ``robust_max`` is a high percentile (default 99.5) of
  the subject's native MR voxels: one hot voxel (flow artefact, fat at the coil) must not darken the image.
- BACKGROUND = -1 is what lies outside the data in model space: air in CT, no signal (black) in MR. Crops
  and windows are padded with it, and it is the null condition of classifier-free guidance (the paper's
  "black image").
"""

from __future__ import annotations

import numpy as np

MODEL_MIN, MODEL_MAX = -1.0, 1.0
HU_SCALE = 1000.0
AIR_HU = -1000.0
BACKGROUND = MODEL_MIN


def ct_to_model(hu):
    """HU -> model space, ``clip(HU / 1000, -1, 1)`` (numpy arrays and torch tensors alike)."""
    return (hu / HU_SCALE).clip(MODEL_MIN, MODEL_MAX)


def model_to_ct(x):
    """Model space -> HU (the inverse of :func:`ct_to_model` inside [-1000, 1000] HU)."""
    return x * HU_SCALE


def mr_robust_max(volume: np.ndarray, percentile: float) -> float:
    """The ``percentile`` of all voxels of a native MR volume: the intensity mapped to +1 in model space."""
    robust_max = float(np.percentile(np.asarray(volume, dtype=np.float64), percentile))
    if not robust_max > 0:
        raise ValueError(f"MR intensities have no positive {percentile}th percentile (blank or negative image)")
    return robust_max


def mr_to_model(mr, robust_max: float):
    """MR intensities -> model space, ``clip(MR / robust_max, 0, 1) * 2 - 1``."""
    if not robust_max > 0:
        raise ValueError(f"robust_max must be positive, got {robust_max}")
    return (mr / robust_max).clip(0.0, 1.0) * (MODEL_MAX - MODEL_MIN) + MODEL_MIN


def to_unit_range(model_space: np.ndarray) -> np.ndarray:
    """Model space -> [0, 1], clipped: the range image-quality metrics are computed on."""
    return np.clip((np.asarray(model_space, dtype=np.float64) - MODEL_MIN) / (MODEL_MAX - MODEL_MIN), 0.0, 1.0)
