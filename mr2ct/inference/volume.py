"""Translation of whole volumes: batches of sagittal slices (2D) or windows (3D), tiled with overlap."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from tqdm.auto import tqdm

from mr2ct.core.config import InferenceConfig
from mr2ct.core.values import BACKGROUND
from mr2ct.methods.base import TranslationModule


@dataclass
class Translation:
    """Synthetic CT in model space; with ``samples`` > 1 the mean of the draws and their per-voxel std."""

    mean: np.ndarray
    std: np.ndarray | None


@torch.no_grad()
def translate_volume(
    method: TranslationModule,
    mr: np.ndarray,
    inference: InferenceConfig,
    roi_size: int,
    seed: int = 0,
    progress: bool = False,
) -> Translation:
    """MR (X, Y, Z) in model space -> synthetic CT of the same shape.

    2D methods see every sagittal slice (axis 0), ``inference.batch_size`` slices at a time; slices larger
    than the training crop are tiled with ``inference.overlap`` and blended with Gaussian weights (MONAI's
    sliding_window_inference). 3D methods see overlapping 3D windows of ``roi_size``. Sampling noise comes
    from one generator seeded with ``seed``, so stochastic samplers are reproducible.
    """
    method.eval()
    device = method.device
    generator = torch.Generator(device=device).manual_seed(seed)
    dims = method.model_cfg["dims"]

    def predictor(window: torch.Tensor) -> torch.Tensor:
        return method.translate(window, inference, generator)

    volume = torch.from_numpy(np.ascontiguousarray(mr, dtype=np.float32)).to(device)
    if dims == 2:
        inputs = volume[:, None]  # (X, 1, Y, Z): a batch of sagittal slices
        roi, chunk = (roi_size, roi_size), inference.batch_size
    else:
        inputs = volume[None, None]
        roi, chunk = (roi_size,) * 3, 1

    draws = []
    for _ in tqdm(range(inference.samples), desc="samples", disable=not progress or inference.samples == 1):
        pieces = [
            sliding_window_inference(
                inputs[start : start + chunk],
                roi_size=roi,
                sw_batch_size=inference.batch_size,
                predictor=predictor,
                overlap=inference.overlap,
                mode="gaussian",
                padding_mode="constant",
                cval=BACKGROUND,
            )
            for start in tqdm(range(0, inputs.shape[0], chunk), desc="slices", disable=not progress, leave=False)
        ]
        draws.append(torch.cat(pieces).reshape(volume.shape).clamp(-1, 1).cpu().numpy())
    stack = np.stack(draws)
    return Translation(mean=stack.mean(0), std=stack.std(0) if len(draws) > 1 else None)
