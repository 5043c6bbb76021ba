"""Scoring of a trained method on whole test volumes: translate, write NIfTIs, compute metrics.

Used by both ``mr2ct.train`` (after fitting) and ``mr2ct.evaluate`` (any checkpoint, any inference
settings), so every number in results.json is computed by the same code. Every prediction, whatever grid
its method translates on (2D slices at the training spacing, 3D isotropic volumes), is first resampled onto
the test subject's evaluation grid, its native MR grid, and scored there against the reference: all
methods score the same pixels, and the 10 mm mask means the same millimetres for all. With ``iso`` the
synthetic CT and its labels also go onto a 1 mm isotropic grid, and the labels are scored there against the
isotropic ground truth where the subject has one (super-resolution, the paper's Figure 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from mr2ct.core.config import InferenceConfig
from mr2ct.core.io import Volume
from mr2ct.core.labels import vertebra_mask
from mr2ct.core.values import model_to_ct
from mr2ct.data.datamodule import Reference, TestVolume
from mr2ct.inference.outputs import onto_mr_grid, write_on_grid, write_on_mr_header
from mr2ct.inference.volume import iso_grid, segments_on_iso_grid, translate_volume
from mr2ct.methods.base import TranslationModule
from mr2ct.metrics.dice import SegmentationDice, mean_over_vertebrae, segmentation_dice
from mr2ct.metrics.image import image_metrics_volume
from mr2ct.segment import Segmentation, Segmenter

IMAGE_METRICS = ("l1", "mse", "psnr", "ssim", "vifp")


@dataclass
class VolumeResult:
    """One test volume's translation (model space, on the evaluation grid), its per-slice image metrics and
    the Dice of the CT segmenter on the synthetic CT and on the reference CT (the upper bound)."""

    name: str
    prediction: np.ndarray
    per_slice: dict[str, np.ndarray] = field(default_factory=dict)
    dice: SegmentationDice | None = None
    reference_dice: SegmentationDice | None = None
    iso_dice: SegmentationDice | None = None  # on the 1 mm grid, against the isotropic ground truth


def on_evaluation_grid(prediction: Volume, reference: Reference) -> np.ndarray:
    """A model-space prediction on any grid of the subject's space, resampled onto the evaluation grid."""
    return onto_mr_grid(prediction, Volume(reference.ct, reference.affine), labels=False).array


def image_quality(prediction: np.ndarray, reference: Reference) -> dict[str, np.ndarray]:
    """Per-slice image metrics of a prediction on the evaluation grid, masked around the vertebrae (ribs and
    sacrum are not the spine the paper's mask follows); the mask radius is in mm of that grid."""
    spacing = Volume(reference.ct, reference.affine).spacing
    spine = np.where(vertebra_mask(reference.seg), reference.seg, 0)
    return image_metrics_volume(prediction, reference.ct, spine, spacing=(spacing[1], spacing[2]))


def score_volumes(
    method: TranslationModule,
    volumes: list[TestVolume],
    inference: InferenceConfig,
    crop_size: int,
    out_dir: Path,
    seed: int,
    segmenter: Segmenter | None = None,
    progress: bool = True,
    iso: bool = False,
) -> list[VolumeResult]:
    """Translate every test volume, write its synthetic CT (HU) on the MR's own header, score it; with a
    segmenter, segment the synthetic and the reference CT and score both against the ground truth; with
    ``iso``, the same on the 1 mm isotropic grid (:func:`iso_outputs`)."""
    results = []
    for index, test in enumerate(tqdm(volumes, desc="translate test volumes", disable=not progress)):
        translation = translate_volume(method, test.mr, inference, crop_size, seed=seed + index)
        reference = test.reference
        prediction = on_evaluation_grid(Volume(translation.mean, test.affine), reference)
        on_grid = Volume(prediction, reference.affine)
        mr_image = nib.load(test.mr_path)
        write_on_mr_header(on_grid, mr_image, out_dir / f"{test.name}_sct.nii.gz", "ct")
        if translation.std is not None:
            write_on_mr_header(Volume(translation.std, test.affine), mr_image, out_dir / f"{test.name}_sct_std.nii.gz", "std")
        result = VolumeResult(test.name, prediction, image_quality(prediction, reference))
        segmentation = None
        if segmenter is not None:
            segmentation = segment_model_ct(segmenter, on_grid)
            result.dice = score_labels(segmentation, reference.seg, reference.subreg)
            write_on_mr_header(segmentation.labels, mr_image, out_dir / f"{test.name}_sct_seg.nii.gz", "labels")
            reference_segmentation = segment_model_ct(segmenter, Volume(reference.ct, reference.affine))
            result.reference_dice = score_labels(reference_segmentation, reference.seg, reference.subreg)
        if iso:
            result.iso_dice = iso_outputs(method, test, Volume(translation.mean, test.affine), segmentation,
                                          segmenter, out_dir)
        results.append(result)
    return results


def segment_model_ct(segmenter: Segmenter, ct_model: Volume) -> Segmentation:
    """Segment a CT in model space, on its own grid."""
    return segmenter.segment(ct_model.with_array(model_to_ct(ct_model.array).astype(np.float32)))


def score_labels(segmentation: Segmentation, seg: np.ndarray, subreg: np.ndarray) -> SegmentationDice:
    """Dice of a segmentation against ground-truth labels on its grid (posterior Dice when it has subregions)."""
    subregions = None if segmentation.subregions is None else segmentation.subregions.array
    return segmentation_dice(segmentation.labels.array, seg, subregions, subreg if subregions is not None else None)


def iso_outputs(method: TranslationModule, test: TestVolume, sct: Volume, native: Segmentation | None,
                segmenter: Segmenter | None, out_dir: Path) -> SegmentationDice | None:
    """Write the synthetic CT ``sct`` (model space, any grid) and its labels on the 1 mm isotropic grid (the
    grid of the subject's isotropic ground truth where it has one) as ``*_iso.nii.gz``; return the Dice of
    those labels against that ground truth (None without one).

    A 3D method's CT is segmented on that grid; a 2D method's labels are its ``native`` ones resampled
    (nearest), as :mod:`mr2ct.translate` writes them.
    """
    truth = test.iso_labels
    grid = (Volume(np.zeros(truth.seg.shape, np.float32), truth.affine) if truth is not None
            else iso_grid(Volume(test.reference.ct, test.reference.affine)))
    sct_iso = onto_mr_grid(sct, grid, labels=False)
    write_on_grid(sct_iso, grid, out_dir / f"{test.name}_sct_iso.nii.gz", "ct")
    if segmenter is None:
        return None
    if segments_on_iso_grid(method):
        segmentation = segment_model_ct(segmenter, sct_iso)
    else:
        segmentation = Segmentation(*(None if v is None else onto_mr_grid(v, grid, labels=True)
                                      for v in (native.labels, native.subregions)))
    write_on_grid(segmentation.labels, grid, out_dir / f"{test.name}_sct_seg_iso.nii.gz", "labels")
    return None if truth is None else score_labels(segmentation, truth.seg, truth.subreg)


def dice_summary(results: list[VolumeResult], attribute: str = "dice") -> dict[str, Any]:
    """Dice per volume and per vertebra (overall and posterior), per subject and pooled, for results.json."""
    scored = [(r.name, getattr(r, attribute)) for r in results if getattr(r, attribute) is not None]
    if not scored:
        return {}
    per_volume: dict[str, list] = {"subject": [], "volume": [], "vertebra": [], "posterior_volume": [], "posterior_vertebra": []}
    per_vertebra: dict[str, list] = {"subject": [], "vertebra": [], "dice": [], "posterior": []}
    for name, dice in scored:
        per_volume["subject"].append(name)
        per_volume["volume"].append(dice.volume)
        per_volume["vertebra"].append(float(np.mean(list(dice.per_vertebra.values()))) if dice.per_vertebra else 0.0)
        posterior = dice.posterior_per_vertebra or {}
        per_volume["posterior_volume"].append(dice.posterior_volume)
        per_volume["posterior_vertebra"].append(float(np.mean(list(posterior.values()))) if posterior else None)
        for vertebra, value in sorted(dice.per_vertebra.items()):
            per_vertebra["subject"].append(name)
            per_vertebra["vertebra"].append(int(vertebra))
            per_vertebra["dice"].append(value)
            per_vertebra["posterior"].append(posterior.get(vertebra))
    aggregates = {
        "volume": float(np.mean(per_volume["volume"])),
        "vertebra": mean_over_vertebrae(d.per_vertebra for _, d in scored),
    }
    if all(d.posterior_volume is not None for _, d in scored):
        aggregates["posterior_volume"] = float(np.mean(per_volume["posterior_volume"]))
        aggregates["posterior_vertebra"] = mean_over_vertebrae(d.posterior_per_vertebra or {} for _, d in scored)
    return {"aggregates": aggregates, "per_volume": per_volume, "per_vertebra": per_vertebra}


def image_quality_summary(per_volume: list[tuple[str, dict[str, np.ndarray]]]) -> dict[str, Any]:
    """Per-slice arrays (for paired tests) and their means, over all slices of all (name, metrics) volumes."""
    per_slice: dict[str, list] = {"subject": [], "slice": []}
    for name, metrics in per_volume:
        n = len(metrics["slice_index"])
        per_slice["subject"] += [name] * n
        per_slice["slice"] += [int(i) for i in metrics["slice_index"]]
        for metric in IMAGE_METRICS:
            per_slice.setdefault(metric, []).extend(float(v) for v in metrics[metric])
    aggregates = {metric: float(np.mean(per_slice[metric])) for metric in IMAGE_METRICS if per_slice.get(metric)}
    return {"aggregates": aggregates, "per_slice": per_slice}
