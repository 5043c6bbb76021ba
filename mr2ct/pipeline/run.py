"""What every entry point shares: the run dir record, loggers that always close, and results.json.

Modelled on lightning-hydra-template's task wrapper and nnDetection's run dirs: a run dir holds the
resolved config, meta.json (seed, git commit, package versions) and results.json, so any number in a
table traces back to the exact code and config that made it.
"""

from __future__ import annotations

import csv
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
LAST_CHECKPOINT = "last"  # ckpt_path=last: resume the run dir's own checkpoints/last.ckpt when there is one


def make_paths_absolute(cfg: DictConfig) -> None:
    """Every path a run uses and records is absolute, so its run dir means the same from any working directory."""
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value is not None and not (key == "ckpt_path" and value == LAST_CHECKPOINT):
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


def wandb_lightning_logger(run: Any, run_dir: Path) -> Any:
    """Lightning's W&B logger on ``run`` that leaves the run config alone.

    ``save_hyperparameters()`` makes Lightning log the module's ``model`` argument (a nested dict) as
    hyperparameters, which would overwrite the flat ``model`` key (the method's name) that W&B groups and
    filters by; the full resolved config is already in the run config under ``config``.
    """
    from lightning.pytorch.loggers import WandbLogger

    class ConfigKeepingWandbLogger(WandbLogger):
        def log_hyperparams(self, params: Any) -> None:
            return None

    return ConfigKeepingWandbLogger(experiment=run, save_dir=str(run_dir))


def run_name(summary: dict[str, Any], card_reads: tuple[str, ...]) -> str:
    """A W&B run name from the ablation keys: method, registration, data, the inference settings the
    method's card reads, seed (``ddim_image two_point phantom_t1w t=20 eta=0 w=1 seed=0``)."""
    settings = [f"{name}={summary[f'inference.{name}']}" for name in card_reads if name != "samples"]
    return " ".join([str(summary["model"]), str(summary["registration"]), str(summary["data"]), *settings,
                     f"seed={summary['seed']}"])


def run_group(cfg: DictConfig, run_dir: Path) -> str:
    """``logger.group``, else the experiment name plus the sweep's (or single run's) start time, so a
    re-run sweep is a new group instead of adding to the old one."""
    if cfg.logger.group:
        return str(cfg.logger.group)
    started = Path(HydraConfig.get().sweep.dir).name if is_multirun() else run_dir.name
    return f"{cfg.experiment_name}-{started}"


CURVES_DIR = "csv"
LOSS_PLOT = "loss_curves.png"


class RunLogger:
    """The run's experiment loggers with one place that closes them.

    W&B (``logger.kind=wandb``) when asked, and always a local CSV of the training curves
    (``<run dir>/csv/metrics.csv``) with a loss plot (``loss_curves.png``) drawn from it at close, so the
    curves are on disk whatever the logger.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, job_type: str, commit: str | None = None):
        from lightning.pytorch.loggers import CSVLogger

        self.kind = cfg.logger.kind
        if self.kind not in ("wandb", "csv", "none"):
            raise ValueError(f"logger.kind={self.kind!r}; valid: wandb, csv, none")
        self.run_dir = run_dir
        self.run = None
        self.curves = CSVLogger(save_dir=str(run_dir), name=CURVES_DIR, version="")
        self.lightning: list[Any] = [self.curves]
        if self.kind == "wandb":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            card = method_card(cfg.model.name)
            summary = ablation_summary(cfg)
            self.run = wandb.init(
                project=cfg.logger.project,
                group=run_group(cfg, run_dir),
                job_type=job_type,
                name=run_name(summary, card.reads),
                tags=[*cfg.logger.tags, *([f"commit:{commit[:12]}"] if commit else [])],
                dir=str(run_dir),
                mode=os.environ.get("WANDB_MODE", cfg.logger.mode),
                config={**summary, "card": card.summary(), "config": resolved_config(cfg)},
                reinit="finish_previous",
                id=previous_wandb_id(run_dir) if cfg.get("ckpt_path") == LAST_CHECKPOINT else None,
                resume="allow",
            )
            self.lightning.insert(0, wandb_lightning_logger(self.run, run_dir))

    @property
    def callbacks(self) -> list[Any]:
        """Callbacks the Trainer needs for these loggers: the learning rate of every optimiser, per step."""
        from lightning.pytorch.callbacks import LearningRateMonitor

        return [LearningRateMonitor(logging_interval="step")]

    def log_results(self, results: dict[str, Any], figures: dict[str, Path]) -> None:
        if self.run is None:
            return
        import wandb

        def table(columns_to_values: dict[str, list]) -> Any:
            columns = list(columns_to_values)
            return wandb.Table(columns=columns, data=[list(row) for row in zip(*columns_to_values.values())])

        self.run.summary.update(flatten_aggregates(results))
        for dataset, block in results["datasets"].items():
            self.run.summary[f"{dataset}/other_contrast"] = block["other_contrast"]
            tables = {f"{dataset}/per_slice": block["image_quality"]["per_slice"]}
            for level in ("per_volume", "per_vertebra"):
                if block.get("dice", {}).get(level):
                    tables[f"{dataset}/dice_{level}"] = block["dice"][level]
            self.run.log({key: table(values) for key, values in tables.items()})
        if "registration" in results:
            rows = results["registration"]["per_subject"]
            columns = list(rows[0]) if rows else []
            self.run.summary["registration/median_tre_mm"] = results["registration"]["median_tre_mm"]
            self.run.log({"registration/report": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
        self.run.log({f"figures/{name}": wandb.Image(str(path)) for name, path in figures.items()})

    def close(self, exit_code: int) -> None:
        plot = None
        try:
            self.curves.finalize("success" if exit_code == 0 else "failed")
            plot = plot_loss_curves(Path(self.curves.log_dir) / "metrics.csv", self.run_dir / LOSS_PLOT)
        except Exception:  # a plot that cannot be drawn must not hide the run's own outcome
            log.exception("could not draw %s", self.run_dir / LOSS_PLOT)
        if self.run is not None:
            if plot is not None:
                import wandb

                self.run.log({"curves/loss": wandb.Image(str(plot))})
            self.run.finish(exit_code=exit_code)
            self.run = None


def previous_wandb_id(run_dir: Path) -> str | None:
    """The id of the W&B run a resumed run dir already holds (``wandb/<mode>-run-<time>-<id>``), so the
    resumed training continues that run."""
    runs = sorted(run_dir.glob("wandb/*run-*-*"), key=lambda path: path.stat().st_mtime)
    return runs[-1].name.rsplit("-", 1)[-1] if runs else None


def plot_loss_curves(metrics_csv: Path, target: Path) -> Path | None:
    """Every ``*loss*`` column of Lightning's metrics.csv against the step, in one PNG (None: no curves)."""
    if not metrics_csv.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = [c for c in (rows[0] if rows else {}) if "loss" in c]
    if not losses or "step" not in rows[0]:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for column in losses:
        points = [(int(r["step"]), float(r[column])) for r in rows if r[column] not in ("", None)]
        axis.plot([p[0] for p in points], [p[1] for p in points], label=column)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target


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
    if not is_rank_zero():
        return run_worker(cfg, run_dir, job_type, task)
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
        logger = RunLogger(cfg, run_dir, job_type, commit=meta["git"]["commit"])
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


def is_rank_zero() -> bool:
    """Whether this process is rank 0 (always, outside DDP); Lightning reads the rank from the environment
    its launcher or SLURM sets, before any process group exists."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def run_worker(cfg: DictConfig, run_dir: Path, job_type: str,
               task: Callable[[DictConfig, Path, RunLogger], dict[str, Any]]) -> None:
    """A DDP rank above 0: it trains its share of every batch and nothing else; rank 0 alone writes the run
    dir, results.json and the W&B run, and evaluates."""
    cfg.logger.kind = "none"
    task(cfg, run_dir, RunLogger(cfg, run_dir, job_type))


def objective(results: dict[str, Any]) -> float | None:
    datasets = list(results.get("datasets", {}).values())
    if not datasets:
        return None
    value = datasets[0]["image_quality"]["aggregates"].get("psnr")
    return None if value is None or not np.isfinite(value) else float(value)
