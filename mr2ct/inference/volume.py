"""Translation of whole volumes: all sagittal slices (2D methods) or the volume (3D) as one input.

A volume is one translation, not a mosaic of independent ones: the method applies its network in windows at
every step (see :mod:`mr2ct.methods.windows`), so a sampling method draws one trajectory per volume.

Outputs may also go onto a 1 mm isotropic grid (``iso=true``), where a 3D method's synthetic CT is segmented
at its own resolution: super-resolution in the slice direction (the paper's Figure 7).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from mr2ct.core.config import InferenceConfig
from mr2ct.core.io import Volume
from mr2ct.core.values import MODEL_MAX, MODEL_MIN
from mr2ct.data.preprocess import prepared_grid_3d
from mr2ct.methods.base import TranslationModule

ISO_MM = 1.0


def iso_grid(native: Volume) -> Volume:
    """The 1 mm isotropic output grid covering ``native``'s field of view (RAS+ voxel order)."""
    return prepared_grid_3d(native, ISO_MM)


def segments_on_iso_grid(method: TranslationModule) -> bool:
    """Whether the method's iso labels come from segmenting its CT on the iso grid: a 3D method translates on an
    isotropic grid; a 2D method's CT keeps the MR's slice thickness, so its native-grid labels are resampled."""
    return method.card.dims == 3


@dataclass
class Translation:
    """Synthetic CT in model space; with ``samples`` > 1 the mean of the draws and their per-voxel std."""

    mean: np.ndarray
    std: np.ndarray | None


def resolved_inference(method: TranslationModule, inference: InferenceConfig, crop_size: int) -> InferenceConfig:
    """``inference`` with the window size filled in: the setting, else the method's tiling, else the
    training crop size ``crop_size``."""
    window = inference.window or method.card.tiling.window or crop_size
    return replace(inference, window=window)


@torch.no_grad()
def translate_volume(
    method: TranslationModule,
    mr: np.ndarray,
    inference: InferenceConfig,
    crop_size: int,
    seed: int = 0,
    progress: bool = False,
    bf16: bool = False,
) -> Translation:
    """MR (X, Y, Z) in model space -> synthetic CT of the same shape.

    2D methods get every sagittal slice (axis 0) as one batch, 3D methods the volume; the network sees
    windows of the training crop unless ``inference.window`` says otherwise. All sampling noise comes from
    one generator seeded with ``seed``, so stochastic samplers are reproducible and the result does not
    depend on ``inference.batch_size``. ``bf16`` runs the networks in bfloat16 autocast on a GPU (the sampler's
    arithmetic stays float32); on a CPU it does nothing.
    """
    method.eval()
    device = method.device
    generator = torch.Generator(device=device).manual_seed(seed)
    settings = resolved_inference(method, inference, crop_size)
    volume = torch.from_numpy(np.ascontiguousarray(mr, dtype=np.float32)).to(device)
    inputs = volume[:, None] if method.card.dims == 2 else volume[None, None]
    draws = []
    for _ in tqdm(range(inference.samples), desc="samples", disable=not progress or inference.samples == 1):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            out = method.translate(inputs, settings, generator)
        draws.append(out.float().reshape(volume.shape).clamp(MODEL_MIN, MODEL_MAX).cpu().numpy())
    stack = np.stack(draws)
    return Translation(mean=stack.mean(0), std=stack.std(0) if len(draws) > 1 else None)
