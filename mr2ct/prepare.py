"""``python -m mr2ct.prepare [overrides]``: build (or find) the cached prepared dataset and say where it is.

Runs only the subject -> registration -> preprocessing stage, for the configured method (2D or 3D), e.g.
``python -m mr2ct.prepare registration=one_point data=phantom_t2w``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.config import register_configs
from mr2ct.data.preprocess import REGISTRATION_REPORT, prepare_dataset
from mr2ct.methods.registry import method_card
from mr2ct.pipeline.landmarks import landmark_source
from mr2ct.registration import median_tre_mm, read_registration_report

register_configs()


@hydra.main(config_path="conf", config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    dims = method_card(cfg.model.name).dims  # the data are prepared for the configured method's dims
    with refuse_user_errors():
        prepared = prepare_dataset(cfg.data, cfg.registration, cfg.preprocess, dims, cfg.paths.cache_dir,
                                   landmark_source=landmark_source(cfg.registration, cfg.paths.cache_dir))
    median = median_tre_mm(read_registration_report(prepared / REGISTRATION_REPORT))
    print(f"prepared dataset: {prepared.resolve()}")
    print(f"registration ({cfg.registration.mode}): median tre_mm = "
          + ("n/a" if median is None else f"{median:.3f}"))
    return median


if __name__ == "__main__":
    hydra_entry(main, config_name="prepare")
