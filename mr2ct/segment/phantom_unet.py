"""``segmenter=phantom_unet``: a 2D MONAI UNet on sagittal CT slices, trained on phantom CTs, cached.

Training data are phantom CTs rendered in the MR pose on the MR grid (each subject's ``oracle_ct`` with
``mr_seg``/``mr_subreg``): geometrically exactly what a synthetic CT looks like. Never MR, never synthetic
CT. The phantom uses its own seed (``SegmenterConfig.seed``), so the segmenter has not seen the CTs of the
translation data set's subjects. Intensity augmentation (HU scale and offset, blur, noise) and mild
rotation/zoom make it robust to the smoother, slightly biased look of synthetic CTs.

Slices: the CT is put into RAS+ voxel order; each sagittal plane (axis 0) is resampled in-plane to
``spacing_mm``; with ``context_mm > 0`` the planes ``context_mm`` to the left and right (linear
interpolation along left-right, clamped at the edges) are extra input channels, so the same physical
context reaches the network on 3 mm MR grids and on 1 mm CTs alike. Logits go back to the input grid
bilinearly and the argmax gives classes: background, body, posterior elements, (``spinous_class``) the
spinous process and (``sacrum_class``) the sacrum. The sacrum has its own class because S1 looks like a
vertebral body: learnt as background, its top was predicted as a body often enough that the lowest body
was S1, not L5, and every number was one off (caudal anchor); body seeds centred below the top of the
predicted sacrum (also pieces of a block fused with L5, after it is split) join it
(:func:`mr2ct.segment.numbering.number_vertebrae`). Vertebra numbers come from :mod:`mr2ct.segment.numbering`.

The cache entry (``mr2ct.core.cache.cached("segmenter", key, ...)``) holds ``weights.pt`` (a state_dict, loaded
with ``weights_only=True``), ``segmenter.json`` (the config) and ``heldout.json`` (Dice on the phantom
subjects not used for training: bone per volume, body, posterior, per vertebra, and vertebra-number
agreement). The key includes the phantom version, so a segmenter never outlives the phantom it learnt.

The entry of the default settings ships with the package (``mr2ct/segment/pretrained``), as a real CT
segmentation model ships its weights: a fresh install runs the main job without first training a segmenter
(about 1 min 45 s on 2 CPU cores). Other settings train on first use. ``make segmenter-weights`` rebuilds the
shipped entry after a change of the default settings or the phantom (a test fails until it is rebuilt).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from tqdm.auto import tqdm

from mr2ct.core.cache import cached, find_entry
from mr2ct.core.config import (
    COMMAND_FIELDS,
    RUNTIME_FIELDS,
    DataConfig,
    PhantomConfig,
    PhantomPreset,
    Region,
    SegmenterConfig,
)
from mr2ct.core.io import Volume
from mr2ct.core.labels import ARCH, BODY, SACRUM, SPINOUS_PROCESS, vertebra_mask
from mr2ct.core.values import AIR_HU, ct_to_model
from mr2ct.core.values import BACKGROUND as AIR_MODEL
from mr2ct.metrics.dice import (
    dice,
    dice_per_vertebra,
    dice_per_volume,
    dice_posterior,
    mean_over_vertebrae,
)
from mr2ct.segment.base import Segmentation, from_canonical, to_canonical
from mr2ct.segment.numbering import number_vertebrae, sacrum_top_mm

FORMAT_VERSION = 3  # 2: the sacrum class, sacral segments taken for bodies join the sacrum; 3: numbering
# splits fused bodies against a capped reference height, joins same-level pieces, and sends split pieces
# below the sacrum's top to the sacrum (held-out scores can change)
CACHE_KIND = "segmenter"
SHIPPED_DIR = Path(__file__).parent / "pretrained"  # a cache folder holding the default settings' entry
WEIGHTS, CONFIG_FILE, HELDOUT = "weights.pt", "segmenter.json", "heldout.json"
BACKGROUND, BODY_CLASS, POSTERIOR_CLASS, SPINOUS_CLASS = 0, 1, 2, 3
CLASS_SUBREGION = np.array([0, BODY, ARCH, SPINOUS_PROCESS], dtype=np.int16)


# ------------------------------------------------------------------------------------------ classes, grids
def n_classes(cfg: SegmenterConfig) -> int:
    return 3 + int(cfg.spinous_class) + int(cfg.sacrum_class)


def sacrum_class(cfg: SegmenterConfig) -> int | None:
    """The sacrum's class (the last one), or None when it is learnt as background."""
    return n_classes(cfg) - 1 if cfg.sacrum_class else None


def n_inputs(cfg: SegmenterConfig) -> int:
    return 3 if cfg.context_mm > 0 else 1


def subregion_classes(seg: np.ndarray, subreg: np.ndarray, spinous_class: bool, sacrum: int | None = None
                      ) -> np.ndarray:
    """Training classes from ground truth: vertebra bone split into body, spinous process, other posterior,
    and the sacrum as class ``sacrum`` (None: background). Ribs are background."""
    vertebra = vertebra_mask(seg)
    classes = np.where(vertebra, POSTERIOR_CLASS, BACKGROUND).astype(np.uint8)
    classes[vertebra & (subreg == BODY)] = BODY_CLASS
    if spinous_class:
        classes[vertebra & (subreg == SPINOUS_PROCESS)] = SPINOUS_CLASS
    if sacrum is not None:
        classes[seg == SACRUM] = sacrum
    return classes


def context_planes(hu: np.ndarray, spacing_lr: float, context_mm: float, planes: np.ndarray | None = None
                   ) -> np.ndarray:
    """(L, AP, SI) -> (P, C, AP, SI): sagittal planes ``planes`` (default all) with the planes +-context_mm
    beside them (C = 3; C = 1 without context), linearly interpolated along left-right, clamped at the edges."""
    planes = np.arange(hu.shape[0]) if planes is None else np.asarray(planes)
    if context_mm <= 0:
        return hu[planes][:, None]
    offsets = np.array([-context_mm, 0.0, context_mm]) / spacing_lr
    positions = np.clip(planes[:, None] + offsets[None, :], 0, hu.shape[0] - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, hu.shape[0] - 1)
    weight = (positions - low)[..., None, None].astype(np.float32)
    return (1 - weight) * hu[low] + weight * hu[high]


def working_size(shape_in_plane: tuple[int, int], spacing_in_plane: np.ndarray, spacing_mm: float) -> tuple[int, int]:
    """Pixel size of a sagittal plane resampled to ``spacing_mm`` over the same field of view."""
    return tuple(max(int(round(n * s / spacing_mm)), 1) for n, s in zip(shape_in_plane, spacing_in_plane))


def build_network(cfg: SegmenterConfig) -> UNet:
    levels = len(cfg.channels)
    if levels < 2:
        raise ValueError(f"segmenter.channels needs at least 2 levels, got {list(cfg.channels)}")
    return UNet(
        spatial_dims=2, in_channels=n_inputs(cfg), out_channels=n_classes(cfg), channels=tuple(cfg.channels),
        strides=(2,) * (levels - 1), num_res_units=cfg.num_res_units,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# -------------------------------------------------------------------------------------------- training data
@dataclass
class SliceStack:
    """One training volume on the working grid: HU planes (L, C, H, W) and classes (L, H, W)."""

    hu: torch.Tensor
    classes: torch.Tensor
    bone_slices: np.ndarray
    empty_slices: np.ndarray


def slice_stack(ct_hu: Volume, classes: np.ndarray, cfg: SegmenterConfig) -> SliceStack:
    """Resample a canonical (RAS+) CT and its class map to working-grid sagittal planes."""
    planes = torch.from_numpy(context_planes(ct_hu.array.astype(np.float32), ct_hu.spacing[0], cfg.context_mm))
    size = working_size(ct_hu.shape[1:], ct_hu.spacing[1:], cfg.spacing_mm)
    hu = F.interpolate(planes, size=size, mode="bilinear", align_corners=False)
    labels = F.interpolate(torch.from_numpy(classes)[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
    has_bone = (labels > 0).flatten(1).any(dim=1).numpy()
    return SliceStack(hu, labels, np.flatnonzero(has_bone), np.flatnonzero(~has_bone))


def sample_crops(stacks: list[SliceStack], cfg: SegmenterConfig, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``crop_size`` crops (HU, classes), centred near a random bone pixel of a random plane."""
    size, half = cfg.crop_size, cfg.crop_size // 2
    images, targets = [], []
    for _ in range(cfg.batch_size):
        stack = stacks[rng.integers(len(stacks))]
        use_empty = len(stack.empty_slices) and (rng.random() < cfg.empty_slice_fraction or not len(stack.bone_slices))
        index = int(rng.choice(stack.empty_slices if use_empty else stack.bone_slices))
        image, target = stack.hu[index], stack.classes[index]
        pad_h, pad_w = max(size - image.shape[1], 0), max(size - image.shape[2], 0)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=AIR_HU)
            target = F.pad(target, (0, pad_w, 0, pad_h), value=BACKGROUND)
        bone = torch.nonzero(target > 0)
        centre = bone[rng.integers(len(bone))].numpy() if len(bone) else np.array(target.shape) // 2
        centre = centre + rng.integers(-size // 4, size // 4 + 1, 2)
        top = np.clip(centre - half, 0, np.array(target.shape) - size)
        images.append(image[:, top[0]:top[0] + size, top[1]:top[1] + size])
        targets.append(target[top[0]:top[0] + size, top[1]:top[1] + size])
    return torch.stack(images), torch.stack(targets)


def augment(hu: torch.Tensor, classes: torch.Tensor, cfg: SegmenterConfig, rng: np.random.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation/zoom (labels nearest), then HU scale/offset, Gaussian blur and noise, per sample."""
    batch = hu.shape[0]
    angle = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, batch))
    zoom = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom, batch)
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = torch.tensor(np.stack([np.stack([cos, -sin, 0 * cos], 1), np.stack([sin, cos, 0 * cos], 1)], 1),
                         dtype=torch.float32)
    grid = F.affine_grid(theta, list(hu.shape), align_corners=False)
    hu = F.grid_sample(hu - AIR_HU, grid, mode="bilinear", align_corners=False) + AIR_HU  # outside = air
    classes = F.grid_sample(classes[:, None].float(), grid, mode="nearest", align_corners=False)[:, 0].long()

    scale = torch.tensor(rng.uniform(1 - cfg.hu_scale, 1 + cfg.hu_scale, batch), dtype=torch.float32)
    offset = torch.tensor(rng.uniform(-cfg.hu_offset, cfg.hu_offset, batch), dtype=torch.float32)
    hu = hu * scale.view(-1, 1, 1, 1) + offset.view(-1, 1, 1, 1)
    hu = torch.cat([gaussian_blur(hu[i:i + 1], rng.uniform(0, cfg.blur_px)) for i in range(batch)])
    noise_std = torch.tensor(rng.uniform(0, cfg.noise_hu, batch), dtype=torch.float32).view(-1, 1, 1, 1)
    noise = torch.from_numpy(rng.standard_normal(hu.shape, dtype=np.float32))
    return hu + noise_std * noise, classes


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with std ``sigma`` pixels (edges replicated)."""
    if sigma < 0.1:
        return image
    radius = int(np.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps = taps / taps.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(blurred, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


def train_network(volumes: list[tuple[Volume, np.ndarray]], cfg: SegmenterConfig) -> tuple[UNet, dict]:
    """Train the UNet on (canonical CT in HU, class map) pairs; returns the network and training stats."""
    if not volumes:
        raise ValueError("segmenter training needs at least one training volume")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 31])
    device = resolve_device(cfg.device)
    stacks = [slice_stack(ct, classes, cfg) for ct, classes in volumes]
    net = build_network(cfg).to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(cfg.steps, 1))
    start, cpu_start, losses = time.perf_counter(), time.process_time(), []
    net.train()
    bar = tqdm(range(cfg.steps), desc="segmenter training", unit="step", disable=not cfg.progress)
    for _ in bar:
        hu, classes = augment(*sample_crops(stacks, cfg, rng), cfg, rng)
        logits = net(ct_to_model(hu).to(device))
        loss = loss_fn(logits, classes[:, None].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    net.eval()
    stats = {"train_seconds": time.perf_counter() - start, "train_cpu_seconds": time.process_time() - cpu_start,
             "steps": cfg.steps,
             "final_loss": float(np.mean(losses[-20:])) if losses else None}
    return net.cpu(), stats


# ---------------------------------------------------------------------------------------------- inference
@torch.no_grad()
def predict_classes(net: UNet, ct_hu: Volume, cfg: SegmenterConfig) -> np.ndarray:
    """Class map (uint8) of a canonical (RAS+) CT in HU, on its own grid."""
    device = resolve_device(cfg.device)
    net = net.to(device).eval()
    hu = ct_hu.array.astype(np.float32, copy=False)
    shape = ct_hu.shape[1:]
    size = working_size(shape, ct_hu.spacing[1:], cfg.spacing_mm)
    multiple = 2 ** (len(cfg.channels) - 1)
    pad = [(-n) % multiple for n in size]
    classes = np.empty(ct_hu.shape, dtype=np.uint8)
    for first in range(0, ct_hu.shape[0], cfg.inference_batch_size):
        planes = np.arange(first, min(first + cfg.inference_batch_size, ct_hu.shape[0]))
        batch = torch.from_numpy(context_planes(hu, ct_hu.spacing[0], cfg.context_mm, planes)).to(device)
        batch = ct_to_model(F.interpolate(batch, size=size, mode="bilinear", align_corners=False))
        logits = net(F.pad(batch, (0, pad[1], 0, pad[0]), value=AIR_MODEL))[..., :size[0], :size[1]]
        logits = F.interpolate(logits, size=shape, mode="bilinear", align_corners=False)
        classes[planes] = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
    return classes


class PhantomUNetSegmenter:
    """A trained network plus the numbering rule; ``segment`` works on any grid and orientation."""

    def __init__(self, net: UNet, cfg: SegmenterConfig, heldout: dict | None = None, entry: Path | None = None):
        self.net, self.cfg, self.heldout, self.entry = net.eval(), cfg, heldout or {}, entry

    @classmethod
    def from_entry(cls, entry: Path, cfg: SegmenterConfig) -> "PhantomUNetSegmenter":
        net = build_network(cfg)
        net.load_state_dict(torch.load(entry / WEIGHTS, map_location="cpu", weights_only=True))
        heldout = json.loads((entry / HELDOUT).read_text())
        return cls(net, cfg, heldout, entry)

    def segment(self, ct_hu: Volume) -> Segmentation:
        if ct_hu.array.ndim != 3 or not np.all(np.isfinite(ct_hu.array)):
            raise ValueError(f"phantom_unet segmenter: expected a finite 3D CT, got shape {ct_hu.shape}")
        canonical, back = to_canonical(ct_hu)
        classes = predict_classes(self.net, canonical, self.cfg)
        sacrum = classes == sacrum_class(self.cfg)  # all False without a sacrum class
        labels = number_vertebrae(classes == BODY_CLASS, (classes > 0) & ~sacrum, canonical.affine, self.cfg.region,
                                  self.cfg.anchor, self.cfg.min_body_mm3, self.cfg.split_ratio,
                                  sacrum_top_mm(sacrum, canonical.affine))
        labels[sacrum] = SACRUM
        subregions = CLASS_SUBREGION[np.where(labels == SACRUM, BACKGROUND, classes)]
        return Segmentation(from_canonical(labels, back, ct_hu), from_canonical(subregions, back, ct_hu))


# ------------------------------------------------------------------------------------------ held-out Dice
def heldout_dice(segmentation: Segmentation, true_seg: np.ndarray, true_subreg: np.ndarray) -> dict[str, float]:
    """Bone per volume, body, posterior (body excluded), per vertebra (overlap rule), and numbered-id Dice."""
    pred, pred_subreg = segmentation.labels.array, segmentation.subregions.array
    true_ids = [int(v) for v in np.unique(true_seg[vertebra_mask(true_seg)])]
    return {
        "bone": dice_per_volume(pred, true_seg),
        "body": dice((pred > 0) & (pred_subreg == BODY), (true_seg > 0) & (true_subreg == BODY)),
        "posterior": dice_posterior(pred, pred_subreg, true_seg, true_subreg)[0],
        "per_vertebra": mean_over_vertebrae([dice_per_vertebra(pred, true_seg)]),
        "vertebra_id": float(np.mean([dice(pred == v, true_seg == v) for v in true_ids])),
    }


def mean_scores(per_subject: dict[str, dict[str, float]]) -> dict[str, float]:
    metrics = sorted(next(iter(per_subject.values()))) if per_subject else []
    return {m: float(np.mean([scores[m] for scores in per_subject.values()])) for m in metrics}


# ------------------------------------------------------------------------------------------------- cache
def cache_key(cfg: SegmenterConfig) -> dict:
    """Exactly what determines the trained weights and held-out numbers: the settings and the phantom version."""
    from mr2ct.phantom import PHANTOM_VERSION

    ignored = set(RUNTIME_FIELDS) | set(COMMAND_FIELDS)
    return {"format": FORMAT_VERSION, "phantom_version": PHANTOM_VERSION,
            **{k: v for k, v in asdict(cfg).items() if k not in ignored}}


def phantom_subjects(cfg: SegmenterConfig, cache_dir: str | Path) -> list:
    """The segmenter's own phantom data set (generated once into the cache, like any phantom)."""
    from mr2ct.core.subjects import load_subjects
    from mr2ct.data.sources import subject_root

    if cfg.subjects < 3:
        raise ValueError(f"segmenter.subjects={cfg.subjects}: need at least 3 (training plus held-out subjects)")
    phantom = PhantomConfig(preset=PhantomPreset(cfg.preset), region=Region(cfg.region), subjects=cfg.subjects,
                            seed=cfg.seed)
    root = subject_root(DataConfig(name="segmenter_phantom", kind="phantom", phantom=phantom), cache_dir,
                        progress=cfg.progress)
    subjects = load_subjects(root)
    missing = [s.name for s in subjects if s.oracle_ct is None or s.mr_seg is None or s.mr_subreg is None]
    if missing:
        raise ValueError(f"segmenter phantom {root}: subject(s) {missing} lack oracle_ct/mr_seg/mr_subreg")
    return subjects


def build_entry(cfg: SegmenterConfig, cache_dir: str | Path, folder: Path) -> None:
    """Train on the phantom's train split, save weights, and score the other subjects (heldout.json)."""
    subjects = phantom_subjects(cfg, cache_dir)
    training = [s for s in subjects if s.split == "train"]
    heldout = [s for s in subjects if s.split != "train"]
    volumes = [(s.oracle_ct,
                subregion_classes(s.mr_seg.array, s.mr_subreg.array, cfg.spinous_class, sacrum_class(cfg)))
               for s in training]
    net, stats = train_network(volumes, cfg)
    torch.save(net.state_dict(), folder / WEIGHTS)
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2, default=str))
    segmenter = PhantomUNetSegmenter(net, cfg)
    on_mr_grid = {s.name: heldout_dice(segmenter.segment(s.oracle_ct), s.mr_seg.array, s.mr_subreg.array)
                  for s in heldout}
    native = {s.name: heldout_dice(segmenter.segment(s.ct), s.ct_seg.array, s.ct_subreg.array) for s in heldout}
    report = {
        "mean": mean_scores(on_mr_grid),  # oracle CTs on the MR grid: what synthetic CTs look like
        "per_subject": on_mr_grid,
        "native_ct": {"mean": mean_scores(native), "per_subject": native},  # the CTs on their own 1 mm grid
        "training_subjects": [s.name for s in training],
        **stats,
    }
    (folder / HELDOUT).write_text(json.dumps(report, indent=2))


def load_or_train(cfg: SegmenterConfig, cache_dir: str | Path, kept_dir: Path | None = None) -> PhantomUNetSegmenter:
    """The segmenter for ``cfg``: the copy a training run kept in ``kept_dir`` when its settings match, else the
    shipped one when they are the default's, else the cached one, trained on first use."""
    key = cache_key(cfg)
    found = (find_entry(CACHE_KIND, key, kept_dir) if kept_dir is not None else None) or find_entry(
        CACHE_KIND, key, SHIPPED_DIR)
    entry = found or cached(CACHE_KIND, key, cache_dir, lambda folder: build_entry(cfg, cache_dir, folder))
    return PhantomUNetSegmenter.from_entry(entry, cfg)


def copy_entry(cfg: SegmenterConfig, source: Path, cache_dir: Path) -> Path:
    """``source``'s weights, settings and held-out scores as the entry for ``cfg`` in ``cache_dir``."""

    def copy(folder: Path) -> None:
        for name in (WEIGHTS, CONFIG_FILE, HELDOUT):
            shutil.copyfile(source / name, folder / name)

    return cached(CACHE_KIND, cache_key(cfg), cache_dir, copy)


def default_settings() -> SegmenterConfig:
    """The default run's segmenter settings (``segmenter=phantom_unet``), read from the config file."""
    from omegaconf import OmegaConf

    import mr2ct.conf

    default = Path(mr2ct.conf.__file__).parent / "segmenter" / "phantom_unet.yaml"
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SegmenterConfig), OmegaConf.load(default)))


def rebuild_shipped(cache_dir: str | Path) -> Path:
    """Train the default settings' segmenter (in ``cache_dir``, or take it from there) and make it the shipped
    entry, replacing the shipped entries of older settings (``make segmenter-weights``)."""
    cfg = default_settings()
    trained = cached(CACHE_KIND, cache_key(cfg), cache_dir, lambda folder: build_entry(cfg, cache_dir, folder))
    shutil.rmtree(SHIPPED_DIR / CACHE_KIND, ignore_errors=True)
    return copy_entry(cfg, trained, SHIPPED_DIR)


def keep(cfg: SegmenterConfig, cache_dir: str | Path, kept_dir: Path) -> Path:
    """Copy the segmenter's weights and settings into ``kept_dir`` (a run dir's own cache-like folder)."""
    return copy_entry(cfg, load_or_train(cfg, cache_dir).entry, kept_dir)
