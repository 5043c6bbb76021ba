"""A trained run as inference sees it: where its checkpoint is, its resolved config, the folder of what it kept
for later use (test data, segmenter), and the method loaded from its weights. Entry points that use a trained
model (evaluate, translate, landmarks) share this."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from mr2ct.core.config import TrainConfig
from mr2ct.methods.base import TranslationModule
from mr2ct.methods.registry import method_class

KEPT = "kept"


class Device(Enum):
    """Where the networks run (``device=`` of translate and landmarks); an enum so ``device=gpu`` is refused at
    start with the valid choices."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def kept_dir(run_dir: Path) -> Path:
    """The run dir's folder of what inference needs again (mr2ct.pipeline.kept fills it)."""
    return Path(run_dir) / KEPT


def locate_checkpoint(ckpt: str | Path) -> tuple[Path, Path]:
    """(run dir, checkpoint file) from either a train run dir or a .ckpt file inside one."""
    path = Path(ckpt).expanduser().resolve()
    if path.is_dir():
        checkpoint = path / "checkpoints" / "last.ckpt"
        run_dir = path
    else:
        checkpoint, run_dir = path, path.parent.parent
    if not checkpoint.is_file():
        raise FileNotFoundError(f"ckpt={ckpt}: no checkpoint at {checkpoint}")
    if not (run_dir / "config_resolved.yaml").is_file():
        raise FileNotFoundError(f"ckpt={ckpt}: {run_dir} is not an mr2ct run dir (no config_resolved.yaml)")
    return run_dir, checkpoint


def trained_config(train_run: Path) -> DictConfig:
    """A training run's resolved config, typed against TrainConfig."""
    return OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(train_run / "config_resolved.yaml"))


def resolve_device(name: str) -> torch.device:
    """``auto`` (a GPU when one is visible), ``cpu`` or ``cuda``; ``cuda`` without a GPU is refused up front."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda: no CUDA GPU is visible to torch; use device=cpu or device=auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name}: expected auto, cpu or cuda")
    return torch.device(name)


def load_method(name: str, checkpoint: Path, device: torch.device | None = None) -> TranslationModule:
    """The trained method ``name`` from its checkpoint (weights only: no code runs on load), on ``device``
    (default: the GPU when present)."""
    method = method_class(name).load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    return method.to(device or resolve_device("auto"))
