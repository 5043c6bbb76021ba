"""Image quality of synthetic CT against real CT: L1, MSE, PSNR, SSIM and VIFp on masked sagittal slices.

The paper's protocol: images are compared on [0, 1] ((x + 1) / 2 of model space, clipped), per sagittal
slice, with every pixel farther than 10 mm (the paper's 10 px at 1 mm) from the spine segmentation set to 0
in both images, so soft tissue the downstream task does not need is not scored. L1, MSE and PSNR average
over all pixels of the slice (the zeroed ones included, as the paper does), so values depend on the field
of view; mr2ct scores every method on the same grid (the subject's native MR grid), so they compare.

Deliberate differences from the authors' evaluation script (scripts/statistics/test_image_quality.py):
- the mask is a Euclidean disk (distance <= 10 mm, the paper's wording) where the script dilates with a
  cross 10 times (a diamond);
- PSNR and SSIM use data range 1 (the script let torchmetrics infer it from each image);
- VIFp takes the real CT as the reference image; the script passed the prediction in the reference slot
  of piq's vif_p. Like piq, images are scaled to [0, 255] first, the range sigma_nsq = 2 was chosen for.

Every function works on a stack of slices at once (torch, float64) so a whole volume costs a few
convolutions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mr2ct.core.values import to_unit_range

MASK_DISTANCE_MM = 10.0
"""The paper's 10 px mask at its 1 mm in-plane spacing, kept in millimetres on every grid."""
PSNR_CAP_DB = 100.0
"""PSNR of identical images is +inf; it is capped here so means and t-tests stay finite."""
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * 1.5 + 0.5): scikit-image's 11-tap Gaussian window
SSIM_K1, SSIM_K2 = 0.01, 0.03
VIFP_SIGMA_NSQ = 2.0
VIFP_EPS = 1e-10
VIFP_MIN_SIZE = 41
"""Smallest side for which all four VIFp scales keep at least one pixel after their 'valid' filters."""
METRIC_NAMES = ("l1", "mse", "psnr", "ssim", "vifp")
_SLICE_CHUNK = 32


def _disk_mask(seg_slice: np.ndarray, distance_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    bone = seg_slice > 0
    if not bone.any():
        return np.zeros(bone.shape, dtype=bool)
    return ndimage.distance_transform_edt(~bone, sampling=spacing) <= distance_mm


def spine_mask(
    seg: np.ndarray, distance_mm: float = MASK_DISTANCE_MM, spacing: tuple[float, float] = (1.0, 1.0)
) -> np.ndarray:
    """Pixels within ``distance_mm`` (Euclidean, inclusive) of the segmentation (label > 0), for pixels of
    ``spacing`` mm (the two in-plane axes of a sagittal slice).

    A 2D input is one sagittal slice. A 3D input (X, Y, Z) is treated as a stack of sagittal slices along
    axis 0 and masked slice by slice, because image quality is scored per sagittal slice.
    """
    seg = np.asarray(seg)
    spacing = tuple(float(s) for s in spacing)
    if seg.ndim == 2:
        return _disk_mask(seg, distance_mm, spacing)
    if seg.ndim == 3:
        return np.stack([_disk_mask(s, distance_mm, spacing) for s in seg])
    raise ValueError(f"spine_mask expects a 2D slice or a 3D volume, got shape {seg.shape}")


def _as_stack(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) or (N, H, W) -> float64 tensor (N, 1, H, W)."""
    tensor = torch.as_tensor(np.asarray(image, dtype=np.float64))
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3:
        raise ValueError(f"expected an image (H, W) or a stack (N, H, W), got shape {tuple(tensor.shape)}")
    return tensor[:, None]


def _check_pair(reference: torch.Tensor, distorted: torch.Tensor, min_size: int, name: str) -> None:
    if reference.shape != distorted.shape:
        raise ValueError(f"{name}: shapes differ, {tuple(reference.shape)} vs {tuple(distorted.shape)}")
    if min(reference.shape[-2:]) < min_size:
        raise ValueError(f"{name}: images must be at least {min_size} px per side, got {tuple(reference.shape[-2:])}")


def _gaussian_1d(radius: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _filter_valid(stack: torch.Tensor, kernel_1d: torch.Tensor) -> torch.Tensor:
    """Separable correlation with a symmetric 1D kernel along both image axes, 'valid' borders."""
    size = kernel_1d.numel()
    stack = F.conv2d(stack, kernel_1d.view(1, 1, size, 1))
    return F.conv2d(stack, kernel_1d.view(1, 1, 1, size))


def _local_moments(
    x: torch.Tensor, y: torch.Tensor, kernel_1d: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windowed means, variances and covariance (population form) of x and y."""
    mu_x, mu_y = _filter_valid(x, kernel_1d), _filter_valid(y, kernel_1d)
    var_x = _filter_valid(x * x, kernel_1d) - mu_x * mu_x
    var_y = _filter_valid(y * y, kernel_1d) - mu_y * mu_y
    cov_xy = _filter_valid(x * y, kernel_1d) - mu_x * mu_y
    return mu_x, mu_y, var_x, var_y, cov_xy


def l1(reference: np.ndarray, distorted: np.ndarray) -> np.ndarray:
    """Mean absolute difference per slice; (H, W) -> scalar array, (N, H, W) -> (N,)."""
    ref, dist = _as_stack(reference), _as_stack(distorted)
    _check_pair(ref, dist, 1, "l1")
    return (ref - dist).abs().mean(dim=(1, 2, 3)).numpy().squeeze()


def mse(reference: np.ndarray, distorted: np.ndarray) -> np.ndarray:
    """Mean squared difference per slice."""
    ref, dist = _as_stack(reference), _as_stack(distorted)
    _check_pair(ref, dist, 1, "mse")
    return ((ref - dist) ** 2).mean(dim=(1, 2, 3)).numpy().squeeze()


def psnr(reference: np.ndarray, distorted: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """10 log10(data_range^2 / MSE) per slice, capped at PSNR_CAP_DB (reached by identical slices)."""
    squared_error = np.asarray(mse(reference, distorted), dtype=np.float64)
    floor = data_range**2 * 10.0 ** (-PSNR_CAP_DB / 10.0)
    return 10.0 * np.log10(data_range**2 / np.maximum(squared_error, floor))


def ssim(reference: np.ndarray, distorted: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean SSIM per slice: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, population covariance.

    Equals skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range): scikit-image averages the SSIM map only over
    pixels at least 5 px from the border, exactly the 'valid' part computed here.
    """
    ref, dist = _as_stack(reference), _as_stack(distorted)
    _check_pair(ref, dist, 2 * SSIM_RADIUS + 1, "ssim")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y, var_x, var_y, cov_xy = _local_moments(ref, dist, _gaussian_1d(SSIM_RADIUS, SSIM_SIGMA))
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).numpy().squeeze()


def vifp(
    reference: np.ndarray, distorted: np.ndarray, data_range: float = 1.0, sigma_nsq: float = VIFP_SIGMA_NSQ
) -> np.ndarray:
    """Pixel-domain visual information fidelity (Sheikh & Bovik 2006), four scales, per slice.

    Images are scaled by 255 / data_range first (as piq's vif_p does), since sigma_nsq = 2 is a noise
    variance for 8-bit images; with data_range=255 the inputs are used as they are and the result equals
    sewar.full_ref.vifp(reference, distorted). A reference without any local variance carries no
    information; its VIFp is defined as 1.0 (piq's epsilon convention) instead of 0/0.
    """
    ref, dist = _as_stack(reference), _as_stack(distorted)
    _check_pair(ref, dist, VIFP_MIN_SIZE, "vifp")
    ref, dist = ref * (255.0 / data_range), dist * (255.0 / data_range)
    numerator = torch.zeros(ref.shape[0], dtype=torch.float64)
    denominator = torch.zeros(ref.shape[0], dtype=torch.float64)
    for scale in range(4):
        size = 2 ** (4 - scale) + 1
        kernel_1d = _gaussian_1d(size // 2, size / 5.0)
        if scale > 0:
            ref = _filter_valid(ref, kernel_1d)[..., ::2, ::2]
            dist = _filter_valid(dist, kernel_1d)[..., ::2, ::2]
        _, _, var_ref, var_dist, cov = _local_moments(ref, dist, kernel_1d)
        var_ref, var_dist = var_ref.clamp_min(0), var_dist.clamp_min(0)
        gain = cov / (var_ref + VIFP_EPS)
        noise_var = var_dist - gain * cov
        flat_ref, flat_dist = var_ref < VIFP_EPS, var_dist < VIFP_EPS
        gain = torch.where(flat_ref | flat_dist, 0.0, gain)
        noise_var = torch.where(flat_ref, var_dist, noise_var)
        noise_var = torch.where(flat_dist, 0.0, noise_var)
        var_ref = torch.where(flat_ref, 0.0, var_ref)
        noise_var = torch.where(gain < 0, var_dist, noise_var)
        gain = gain.clamp_min(0)
        noise_var = noise_var.clamp_min(VIFP_EPS)
        numerator += torch.log10(1 + gain**2 * var_ref / (noise_var + sigma_nsq)).sum(dim=(1, 2, 3))
        denominator += torch.log10(1 + var_ref / sigma_nsq).sum(dim=(1, 2, 3))
    no_information = denominator == 0
    score = torch.where(no_information, 1.0, numerator / torch.where(no_information, 1.0, denominator))
    return score.numpy().squeeze()


def masked_slice_metrics(
    pred_unit: np.ndarray, target_unit: np.ndarray, mask: np.ndarray
) -> dict[str, np.ndarray]:
    """All metrics on [0, 1] slice stacks (N, H, W) after zeroing pixels outside `mask` in both."""
    pred = np.where(mask, pred_unit, 0.0)
    target = np.where(mask, target_unit, 0.0)
    return {
        "l1": np.atleast_1d(l1(target, pred)),
        "mse": np.atleast_1d(mse(target, pred)),
        "psnr": np.atleast_1d(psnr(target, pred)),
        "ssim": np.atleast_1d(ssim(target, pred)),
        "vifp": np.atleast_1d(vifp(target, pred)),
    }


def image_metrics_volume(
    pred: np.ndarray, target: np.ndarray, seg: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0),
    distance_mm: float = MASK_DISTANCE_MM,
) -> dict[str, np.ndarray]:
    """Per-slice image quality of a synthetic CT volume (X, Y, Z) in model space against the real CT;
    ``spacing`` is the in-plane pixel size (axes 1, 2) in mm, which sets the mask's radius in pixels.

    Only sagittal slices (axis 0) that contain segmentation are scored; slices without spine are skipped
    rather than reported as NaN. Returns one array per metric (values kept for paired t-tests) and
    "slice_index", the axis-0 index of each scored slice.
    """
    pred, target, seg = np.asarray(pred), np.asarray(target), np.asarray(seg)
    if pred.ndim != 3 or pred.shape != target.shape or pred.shape != seg.shape:
        raise ValueError(
            f"image_metrics_volume needs 3D pred, target and seg of one shape, got "
            f"{pred.shape}, {target.shape}, {seg.shape}"
        )
    for name, volume in (("pred", pred), ("target", target)):
        if not np.isfinite(volume).all():
            raise ValueError(f"image_metrics_volume: {name} contains NaN or Inf")
    slice_index = np.flatnonzero((seg > 0).any(axis=(1, 2)))
    results: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, len(slice_index), _SLICE_CHUNK):
        chunk = slice_index[start : start + _SLICE_CHUNK]
        chunk_metrics = masked_slice_metrics(
            to_unit_range(pred[chunk]), to_unit_range(target[chunk]), spine_mask(seg[chunk], distance_mm, spacing)
        )
        for name in METRIC_NAMES:
            results[name].append(chunk_metrics[name])
    out = {name: np.concatenate(values) if values else np.zeros(0) for name, values in results.items()}
    out["slice_index"] = slice_index
    return out
