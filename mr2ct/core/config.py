"""Structured-config schemas: every Hydra group option is validated against one of these dataclasses.

A misspelt key fails at start with the valid keys listed; a value outside an enumeration fails with
the valid choices. The YAML files in ``mr2ct/conf/`` only set values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from mr2ct.core.cache import default_cache_dir


class PhantomPreset(str, Enum):
    t1w = "t1w"
    t2w = "t2w"
    external = "external"
    external_corrected = "external_corrected"


class Region(str, Enum):
    cervical = "cervical"
    thoracic = "thoracic"
    lumbar = "lumbar"
    whole = "whole"


@dataclass
class PhantomConfig:
    """A procedurally generated dataset (mr2ct.phantom)."""

    preset: PhantomPreset = PhantomPreset.t1w
    region: Region = Region.lumbar
    subjects: int = 12
    seed: int = 0
    val_fraction: float = 0.17
    test_fraction: float = 0.17
    # MR landmark selection noise: per-axis standard deviation in mm (mean 3D displacement about 2.4 mm), like
    # manual clicks or automatic centroids from two modalities; 0 gives the exact centres of mass.
    landmark_noise_mm: float = 1.5


@dataclass
class DatasetConfig:
    """One set of subjects: the phantom (generated and cached) or a subject root on disk."""

    name: str = MISSING
    kind: str = "phantom"  # phantom | nifti
    root: Optional[str] = None  # subject root for kind=nifti (README, "Data layout")
    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass
class DataConfig(DatasetConfig):
    """The training data (its test split is always evaluated) plus further test-only sets."""

    test_sets: list[DatasetConfig] = field(default_factory=list)
    score_other_contrasts: bool = False  # also score test sets whose MR contrast differs (marked in results)


class RegistrationMode(str, Enum):
    none = "none"
    one_point = "one_point"
    two_point = "two_point"


@dataclass
class RegistrationConfig:
    mode: RegistrationMode = RegistrationMode.two_point
    # a trained run (dir or .ckpt) whose model derives the MR landmarks that subjects lack (paper Fig. 1 loop:
    # translate, segment the synthetic CT on the MR grid, take centres); cached with the prepared data
    landmarks_from: Optional[str] = None
    # with landmarks_from: derived landmarks replace those in mr_landmarks.json (false: clicked ones win)
    override_landmarks: bool = False


@dataclass
class PreprocessConfig:
    """How registered subjects become training arrays (cached by these values)."""

    spacing_inplane_mm: float = 2.0  # 2D: sagittal-plane spacing (slice thickness kept); paper 1.0
    spacing_iso_mm: float = 1.0  # 3D: isotropic spacing
    elastic_copies: int = 2  # deformed copies per training subject, on top of the original; paper 9
    elastic_sigma: float = 2.0  # displacement std in voxels of the coarse grid; paper U(2, 4.5) * 0.8
    elastic_points: int = 3
    mr_robust_max_percentile: float = 99.5
    min_spine_pixels: int = 10
    seed: int = 0  # elastic deformations; apart from the training seed so seed sweeps share the data


@dataclass
class LoaderConfig:
    crop_size: int = 64  # 2D crop side; 3D patch side on every axis unless patch_size is set
    # 3D patch per axis (left-right, posterior-anterior, inferior-superior), e.g. the paper's [32, 128, 128]
    patch_size: Optional[List[int]] = None
    # 3D: random patches drawn from each training volume per epoch (2D draws every spine slice once per epoch)
    patches_per_volume: int = 1
    batch_size: int = 8
    num_workers: int = 0
    jitter: float = 0.2  # MR brightness and contrast jitter, training batches only
    flip_ap: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.patches_per_volume, int) and self.patches_per_volume >= 1):
            raise ValueError(f"loader.patches_per_volume must be an int >= 1, got {self.patches_per_volume!r}")


class Sampler(str, Enum):
    ddim = "ddim"
    ddpm = "ddpm"


@dataclass
class InferenceConfig:
    """How a trained model translates whole volumes; changing it never requires retraining."""

    sampler: Sampler = Sampler.ddim
    t: int = 20
    eta: float = 1.0
    w: float = 0.0
    samples: int = 1
    batch_size: int = 16  # windows per network call
    # window side in voxels, one int for every axis or one per axis (3D: [X, Y, Z]); None: the method's default
    # tiling (its card). With batch_size it bounds the memory of a network call, whatever the volume's size.
    window: Any = None
    overlap: Optional[float] = None  # fraction of the window shared by neighbours; None: the card's default

    def __post_init__(self) -> None:
        sizes = [self.window] if isinstance(self.window, int) else self.window
        if self.window is not None and not (
            isinstance(sizes, (list, tuple)) and sizes and all(isinstance(s, int) and s > 0 for s in sizes)
        ):
            raise ValueError(f"inference.window must be null, a positive int or a list of them, got {self.window!r}")


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    gradient_clip_val: Optional[float] = None
    deterministic: bool = False
    enable_progress_bar: bool = True
    # also save last.ckpt every N optimiser steps, so a run killed mid-epoch resumes there (ckpt_path=last);
    # null: at epoch ends only. mr2ct's own setting, not passed to Lightning's Trainer.
    checkpoint_every_n_steps: Optional[int] = None


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | none
    project: str = "mr2ct"
    mode: str = "offline"  # W&B mode unless WANDB_MODE is set
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    """A translation method (``name``: its card in mr2ct.methods) with its optimiser and own settings.

    ``net``, ``loss`` and ``extra`` are typed by the method's card and checked when the method is built.
    """

    name: str = MISSING
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    net: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


# CT segmenter behind ``segmenter=``: one flat schema serves both kinds; each reads only its own fields.
# phantom_unet: training/numbering fields key its cache entry, runtime fields do not. command: an external program.
SEGMENTER_KINDS = ("phantom_unet", "command")
ANCHORS = ("caudal", "cranial")


@dataclass
class SegmenterConfig:
    kind: str = "phantom_unet"  # phantom_unet | command

    # --- phantom_unet: training data (phantom CTs on MR grids; a seed apart from the translation data)
    preset: str = "t1w"
    region: str = "lumbar"  # training region, and the region vertebrae are numbered in
    subjects: int = 10
    seed: int = 1000
    # --- phantom_unet: network and working grid
    channels: List[int] = field(default_factory=lambda: [16, 32, 64, 128])
    num_res_units: int = 1
    spacing_mm: float = 2.0  # in-plane working spacing of the sagittal slices
    context_mm: float = 3.0  # neighbour planes at +-context_mm (left-right) as extra channels; 0 disables
    spinous_class: bool = True  # spinous process as its own class (else part of "posterior")
    sacrum_class: bool = True  # the sacrum as its own class (else background), so S1 is not taken for L5
    # --- phantom_unet: optimisation
    steps: int = 600
    batch_size: int = 16
    crop_size: int = 96
    lr: float = 2e-3
    empty_slice_fraction: float = 0.15  # share of training crops from slices without bone
    # --- phantom_unet: augmentation (so synthetic-CT appearance is in distribution)
    hu_scale: float = 0.15  # HU multiplied by U(1 - s, 1 + s)
    hu_offset: float = 100.0  # HU shifted by U(-o, o)
    noise_hu: float = 60.0  # Gaussian noise with std U(0, noise_hu)
    blur_px: float = 1.2  # Gaussian blur with std U(0, blur_px) working pixels
    rotate_deg: float = 10.0
    zoom: float = 0.15  # in-plane zoom U(1 - z, 1 + z)
    # --- phantom_unet: vertebra numbering (mr2ct.segment.numbering)
    anchor: str = "caudal"  # the caudal-most body is the region's last vertebra; cranial: top is the first
    min_body_mm3: float = 500.0
    split_ratio: float = 1.9  # a body taller than this x the reference height is cut (fused bodies; numbering)
    # --- phantom_unet: runtime only (not part of the cache key)
    device: str = "auto"  # auto | cpu | cuda
    inference_batch_size: int = 32
    progress: bool = True

    # --- command: the external program
    command: str = ""  # e.g. "TotalSegmentator -i {input} -o {output} --ml"
    label_map: Dict[int, int] = field(default_factory=dict)  # program id -> VerSe id; other ids -> background
    subregion_command: Optional[str] = None
    subregion_label_map: Dict[int, int] = field(default_factory=dict)  # empty: ids are already 41..50
    required_paths: List[str] = field(default_factory=list)  # e.g. the program's weights
    timeout_s: Optional[float] = None


RUNTIME_FIELDS = ("device", "inference_batch_size", "progress")
COMMAND_FIELDS = ("command", "label_map", "subregion_command", "subregion_label_map", "required_paths", "timeout_s")


@dataclass
class PathsConfig:
    root_dir: str = "."
    cache_dir: str = "${mr2ct_cache_dir:}"  # the user's cache folder ($MR2CT_CACHE overrides), see core/cache.py
    output_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class TrainConfig:
    defaults: list[Any] = field(default_factory=list)
    data: DataConfig = MISSING
    registration: RegistrationConfig = MISSING
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = MISSING
    inference: InferenceConfig = MISSING
    segmenter: SegmenterConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    ckpt_path: Optional[str] = None
    iso: bool = False  # also write outputs on a 1 mm isotropic grid and score labels there (iso ground truth)
    experiment_name: str = "default"
    fail_on_purpose: bool = False  # tests: make this job raise after set-up (multirun failure handling)


@dataclass
class EvaluateConfig:
    """mr2ct.evaluate: a trained run (or checkpoint) re-evaluated with any inference settings."""

    defaults: list[Any] = field(default_factory=list)
    ckpt: str = MISSING  # a train run dir, or a .ckpt file inside one
    inference: InferenceConfig = MISSING
    segmenter: Optional[SegmenterConfig] = None  # None: the training run's segmenter (kept in its run dir)
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    iso: bool = False  # also write outputs on a 1 mm isotropic grid and score labels there (iso ground truth)
    experiment_name: str = "evaluate"
    # extra test sets to score, by name (the run's data.test_sets), whatever their MR contrast (marked when it
    # differs); null: those of the training contrast; []: the training data's test split only
    test_sets: Optional[List[str]] = None


def register_configs() -> None:
    """Attach the schemas to Hydra: every composed config is type-checked against TrainConfig/EvaluateConfig."""
    OmegaConf.register_new_resolver("mr2ct_cache_dir", default_cache_dir, replace=True)
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
