"""Evaluation metrics: image quality on masked sagittal slices, Dice of segmentations, paired t-tests."""

from mr2ct.metrics.dice import (
    DEFAULT_ASSIGNMENT,
    SegmentationDice,
    dice,
    dice_per_vertebra,
    dice_per_volume,
    dice_posterior,
    mean_over_vertebrae,
    posterior_labels,
    segmentation_dice,
)
from mr2ct.metrics.image import (
    METRIC_NAMES,
    image_metrics_volume,
    l1,
    masked_slice_metrics,
    mse,
    psnr,
    spine_mask,
    ssim,
    to_unit_range,
    vifp,
)
from mr2ct.metrics.stats import TTestResult, paired_ttest, summarize

__all__ = [
    "DEFAULT_ASSIGNMENT",
    "METRIC_NAMES",
    "SegmentationDice",
    "TTestResult",
    "dice",
    "dice_per_vertebra",
    "dice_per_volume",
    "dice_posterior",
    "image_metrics_volume",
    "l1",
    "masked_slice_metrics",
    "mean_over_vertebrae",
    "mse",
    "paired_ttest",
    "posterior_labels",
    "psnr",
    "segmentation_dice",
    "spine_mask",
    "ssim",
    "summarize",
    "to_unit_range",
    "vifp",
]
