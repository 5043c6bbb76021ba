"""``python -m mr2ct.phantom out_dir=DIR subjects=N seed=S preset=PRESET region=REGION preview=true``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.utils import to_absolute_path
from omegaconf import MISSING, OmegaConf

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.config import PhantomConfig
from mr2ct.phantom.generate import generate_dataset


@dataclass
class PhantomRunConfig(PhantomConfig):
    """PhantomConfig plus where to write and whether to draw preview PNGs."""

    out_dir: str = MISSING
    preview: bool = False
    progress: bool = True


ConfigStore.instance().store(name="phantom_schema", node=PhantomRunConfig)


@hydra.main(version_base="1.3", config_path="../conf", config_name="phantom")
def main(config: PhantomRunConfig) -> str:
    with refuse_user_errors():
        phantom = OmegaConf.to_object(config)
        out_dir = generate_dataset(phantom, Path(to_absolute_path(config.out_dir)), preview=config.preview,
                                   progress=config.progress)
    print(f"wrote {config.subjects} {phantom.preset.value} subjects to {out_dir}")
    return str(out_dir)


if __name__ == "__main__":
    hydra_entry(main, config_name="phantom")
