"""``python -m mr2ct.prepare [overrides]``: build (or find) the cached prepared dataset and say where it is.

Runs only the subject -> registration -> preprocessing stage, e.g.
``python -m mr2ct.prepare registration=one_point data=phantom_t2w``.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mr2ct.cli import hydra_entry
from mr2ct.config import register_configs
from mr2ct.data.preprocess import REGISTRATION_REPORT, prepare_dataset

register_configs()


def median_tre_mm(prepared_dir: str | Path) -> float | None:
    """The median landmark error of a prepared dataset's registration report (None if no subject has one)."""
    with open(Path(prepared_dir) / REGISTRATION_REPORT, newline="") as handle:
        values = [float(row["tre_mm"]) for row in csv.DictReader(handle) if row["tre_mm"] not in ("", None)]
    return statistics.median(values) if values else None


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    prepared = prepare_dataset(cfg.data, cfg.registration, cfg.preprocess, cfg.paths.cache_dir)
    median = median_tre_mm(prepared)
    print(f"prepared dataset: {prepared.resolve()}")
    print(f"registration ({cfg.registration.mode}): median tre_mm = "
          + ("n/a" if median is None else f"{median:.3f}"))
    return median


if __name__ == "__main__":
    hydra_entry(main)
