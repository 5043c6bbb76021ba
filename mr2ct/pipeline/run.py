"""What every entry point shares: the run dir record, loggers that always close, and results.json.

Modelled on lightning-hydra-template's task wrapper and nnDetection's run dirs: a run dir holds the
resolved config, meta.json (seed, git commit, package versions) and results.json, so any number in a
table traces back to the exact code and config that made it.
"""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mr2ct.core.runinfo import run_metadata, write_json
from mr2ct.methods.registry import method_card

log = logging.getLogger("mr2ct")

ABLATION_AXES = {
    "registration": "registration.mode",
    "data": "data.name",
    "inference.sampler": "inference.sampler",
    "inference.t": "inference.t",
    "inference.eta": "inference.eta",
    "inference.w": "inference.w",
    "inference.samples": "inference.samples",
    "seed": "seed",
}


PATH_KEYS = ("paths.root_dir", "paths.cache_dir", "paths.output_dir", "ckpt_path")


def make_paths_absolute(cfg: DictConfig) -> None:
    """Every path a run uses and records is absolute, so its run dir means the same from any working directory."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None:
            OmegaConf.update(cfg, key, str(Path(value).expanduser().resolve()))
    for dataset in [cfg.data, *cfg.data.test_sets]:
        if dataset.root is not None:
            dataset.root = str(Path(dataset.root).expanduser().resolve())


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def ablation_summary(cfg: DictConfig) -> dict[str, Any]:
    """Flat keys for the axes people compare runs by (W&B columns, table rows): the method as its card
    declares it, then the config values of every ablation axis."""
    card = method_card(cfg.model.name)
    described = {"model": card.name, "method": card.label, "paired": card.paired, "dims": card.dims}
    return {**described, **{key: _enum_value(OmegaConf.select(cfg, path)) for key, path in ABLATION_AXES.items()}}


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # not under Hydra (called from a test or a notebook)
        return False


class RunLogger:
    """The run's experiment logger (W&B, CSV or none) with one place that closes it."""

    def __init__(self, cfg: DictConfig, run_dir: Path, job_type: str):
        self.kind = cfg.logger.kind
        self.run = None
        self.lightning: Any = False
        if self.kind == "wandb":
            import wandb
            from lightning.pytorch.loggers import WandbLogger

            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(
                project=cfg.logger.project,
                group=cfg.logger.group or cfg.experiment_name,
                job_type=job_type,
                name=run_dir.name,
                tags=list(cfg.logger.tags),
                dir=str(run_dir),
                mode=os.environ.get("WANDB_MODE", cfg.logger.mode),
                config={**ablation_summary(cfg), "card": method_card(cfg.model.name).summary(),
                        "config": resolved_config(cfg)},
                reinit="finish_previous",
            )
            self.lightning = WandbLogger(experiment=self.run, save_dir=str(run_dir))
        elif self.kind == "csv":
            from lightning.pytorch.loggers import CSVLogger

            self.lightning = CSVLogger(save_dir=str(run_dir), name="csv", version="")
        elif self.kind != "none":
            raise ValueError(f"logger.kind={self.kind!r}; valid: wandb, csv, none")

    def log_results(self, results: dict[str, Any], figures: dict[str, Path]) -> None:
        if self.run is None:
            return
        import wandb

        self.run.summary.update(flatten_aggregates(results))
        for dataset, block in results["datasets"].items():
            self.run.summary[f"{dataset}/other_contrast"] = block["other_contrast"]
            per_slice = block["image_quality"]["per_slice"]
            columns = list(per_slice)
            rows = list(zip(*(per_slice[c] for c in columns)))
            self.run.log({f"{dataset}/per_slice": wandb.Table(columns=columns, data=[list(r) for r in rows])})
        if "registration" in results:
            rows = results["registration"]["per_subject"]
            columns = list(rows[0]) if rows else []
            self.run.summary["registration/median_tre_mm"] = results["registration"]["median_tre_mm"]
            self.run.log({"registration/report": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
        self.run.log({f"figures/{name}": wandb.Image(str(path)) for name, path in figures.items()})

    def close(self, exit_code: int) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def flatten_aggregates(results: dict[str, Any]) -> dict[str, float]:
    """``{dataset}/{metric}`` -> value, for W&B summaries and quick printing."""
    flat = {}
    for dataset, block in results["datasets"].items():
        for metric, value in block["image_quality"]["aggregates"].items():
            flat[f"{dataset}/{metric}"] = value
        for metric, value in block.get("dice", {}).get("aggregates", {}).items():
            flat[f"{dataset}/dice_{metric}"] = value
        for section in ("reference_ct_dice", "baseline_mean_ct"):
            for metric, value in block.get(section, {}).get("aggregates", {}).items():
                flat[f"{dataset}/{section}/{metric}"] = value
    return flat


def run_task(cfg: DictConfig, job_type: str, task: Callable[[DictConfig, Path, RunLogger], dict[str, Any]]) -> float | None:
    """Run ``task`` in the Hydra run dir: record config and meta first, results.json last, loggers closed.

    Returns the objective a sweeper may optimise (mean PSNR of the first dataset). In a multirun a failing
    job is recorded (results.json status 'failed', W&B run marked failed) and the sweep goes on; a single
    run re-raises so the command exits non-zero.
    """
    make_paths_absolute(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = resolved_config(cfg)
    (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(config))
    meta = run_metadata(cfg.seed)
    write_json(meta, run_dir / "meta.json")
    record = {"job_type": job_type, "summary": ablation_summary(cfg), "card": method_card(cfg.model.name).summary(),
              "meta": meta, "config": config}
    logger: RunLogger | None = None
    exit_code = 1
    try:
        logger = RunLogger(cfg, run_dir, job_type)
        results = {"status": "complete", **record, **task(cfg, run_dir, logger)}
        write_json(results, run_dir / "results.json")
        exit_code = 0
        return objective(results)
    except Exception as error:
        write_json({"status": "failed", **record, "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc()}, run_dir / "results.json")
        if is_multirun():
            log.exception("job failed (recorded in %s); the sweep goes on", run_dir / "results.json")
            return None
        raise
    finally:
        if logger is not None:
            logger.close(exit_code)


def objective(results: dict[str, Any]) -> float | None:
    datasets = list(results.get("datasets", {}).values())
    if not datasets:
        return None
    value = datasets[0]["image_quality"]["aggregates"].get("psnr")
    return None if value is None or not np.isfinite(value) else float(value)
