"""Structured-config schemas: every Hydra group option is validated against one of these dataclasses.

A misspelt key fails at start with the valid keys listed; a value outside an enumeration fails with
the valid choices. The YAML files in ``conf/`` only set values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Contrast(str, Enum):
    t1w = "t1w"
    t2w = "t2w"


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
    landmark_noise_mm: float = 0.0


@dataclass
class DataConfig:
    """Where subjects come from: the phantom (generated and cached) or a subject root on disk."""

    name: str = MISSING
    kind: str = "phantom"  # phantom | nifti
    root: Optional[str] = None  # subject root for kind=nifti (DESIGN.md section 3 layout)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)


class RegistrationMode(str, Enum):
    none = "none"
    one_point = "one_point"
    two_point = "two_point"


@dataclass
class RegistrationConfig:
    mode: RegistrationMode = RegistrationMode.two_point


@dataclass
class PreprocessConfig:
    """How registered subjects become training arrays (cached by these values)."""

    dims: int = 2
    spacing_inplane_mm: float = 2.0  # 2D: sagittal-plane spacing (slice thickness kept); paper 1.0
    spacing_iso_mm: float = 1.0  # 3D: isotropic spacing
    elastic_copies: int = 2  # deformed copies per training subject, on top of the original; paper 9
    elastic_sigma: float = 2.0  # displacement std in voxels of the coarse grid; paper U(2, 4.5) * 0.8
    elastic_points: int = 3
    mr_robust_max_percentile: float = 99.5
    min_spine_pixels: int = 10


@dataclass
class LoaderConfig:
    crop_size: int = 64
    batch_size: int = 8
    num_workers: int = 0
    jitter: float = 0.2  # MR brightness and contrast jitter, training batches only
    flip_ap: bool = True


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
    batch_size: int = 16
    overlap: float = 0.25  # fraction of the crop shared by neighbouring tiles


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


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | none
    project: str = "mr2ct"
    mode: str = "offline"  # W&B mode unless WANDB_MODE is set
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ModelConfig:
    """A translation method: ``target`` is the LightningModule class, ``net`` its network settings."""

    name: str = MISSING
    target: str = MISSING
    dims: int = 2
    paired: bool = True
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    net: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PathsConfig:
    root_dir: str = "."
    cache_dir: str = ".cache/mr2ct"
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
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 0
    ckpt_path: Optional[str] = None
    experiment_name: str = "default"
    fail_on_purpose: bool = False  # tests: make this job raise after set-up (multirun failure handling)


def register_configs() -> None:
    """Attach the schemas to Hydra so composed configs are type-checked against them."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(group="data", name="data_schema", node=DataConfig)
    store.store(group="registration", name="registration_schema", node=RegistrationConfig)
    store.store(group="model", name="model_schema", node=ModelConfig)
    store.store(group="inference", name="inference_schema", node=InferenceConfig)
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
