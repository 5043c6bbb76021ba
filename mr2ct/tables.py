"""``python -m mr2ct.tables runs=PATH_OR_GLOB out_dir=DIR``: the paper's tables, figures and an offline report.

Runs come from run dirs, sweep dirs or globs (``runs='[multirun/a/*,outputs/b]'``), or with
``source=wandb project=P group=G [entity=E]`` from W&B's public API. Writes, into ``out_dir``: every table
as Markdown, CSV and LaTeX, its paired t-test p-values, the runs left out, PNG figures and index.html.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.methods.registry import METHODS, method_card
from mr2ct.report import Report, build_report, collect_local, collect_wandb
from mr2ct.report.runs import RunRecord


@dataclass
class TablesConfig:
    runs: Any = None  # a path or glob, or a list of them (source=local)
    out_dir: str = MISSING
    source: str = "local"  # local | wandb
    project: str = "mr2ct"
    group: Optional[str] = None
    entity: Optional[str] = None
    methods: Optional[List[str]] = None  # expected rows of Tables 1-3 (method names); null: every method
    main_registration: str = "two_point"  # the registration of the runs in Tables 1-3
    tables: Optional[List[str]] = None  # build only these (e.g. [registration_ablation]); null: all
    figures: bool = True
    figure_subjects: int = 4  # test subjects (rows) per figure


def register_tables_schema() -> None:
    ConfigStore.instance().store(name="tables_schema", node=TablesConfig)


register_tables_schema()


def expected_methods(names: list[str] | None) -> dict[str, str]:
    """Name -> label (from the method cards) of the methods Tables 1-3 expect; null: every method."""
    return {name: method_card(name).label for name in (list(METHODS) if names is None else names)}


def collect_runs(cfg: DictConfig, api: Any = None) -> tuple[list[RunRecord], list[str]]:
    """(runs, source descriptions) from the configured source; ``api`` replaces ``wandb.Api()``."""
    if cfg.source == "local":
        runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else cfg.runs
        if not runs:
            raise ValueError("mr2ct.tables: runs= is required with source=local (a run dir, sweep dir or glob)")
        patterns = [runs] if isinstance(runs, str) else [str(r) for r in runs]
        return collect_local(patterns), patterns
    if cfg.source == "wandb":
        if api is None:
            import wandb

            api = wandb.Api()
        where = f"W&B {cfg.entity + '/' if cfg.entity else ''}{cfg.project}" + (f", group {cfg.group}" if cfg.group else "")
        return collect_wandb(api, cfg.project, cfg.group, cfg.entity), [where]
    raise ValueError(f"mr2ct.tables: source={cfg.source!r}; valid: local, wandb")


def log_figures_to_wandb(report: Report, cfg: DictConfig, init: Callable[..., Any]) -> None:
    """One W&B run (job_type 'tables') in the source group holding the figures."""
    import wandb

    run = init(project=cfg.project, entity=cfg.entity, group=cfg.group, job_type="tables", name="tables",
               mode=os.environ.get("WANDB_MODE", "online"), dir=str(cfg.out_dir))
    try:
        run.log({f"figures/{path.stem}": wandb.Image(str(path)) for path in report.figures})
    finally:
        run.finish()


def run_tables(cfg: DictConfig, api: Any = None, wandb_init: Callable[..., Any] | None = None) -> Report:
    """Collect, build and write the report; with source=wandb also log its figures to W&B."""
    runs, sources = collect_runs(cfg, api)
    report = build_report(
        runs, cfg.out_dir, expected_methods(cfg.methods), sources, main_registration=cfg.main_registration,
        only=cfg.tables, figures=cfg.figures, figure_subjects=cfg.figure_subjects,
    )
    if cfg.source == "wandb" and report.figures:
        if wandb_init is None:
            import wandb

            wandb_init = wandb.init
        log_figures_to_wandb(report, cfg, wandb_init)
    return report


@hydra.main(version_base="1.3", config_path="conf", config_name="tables")
def main(cfg: DictConfig) -> None:
    with refuse_user_errors():
        report = run_tables(cfg)
    print(f"mr2ct tables: {len(report.tables)} tables, {len(report.figures)} figures, "
          f"{len(report.not_included)} runs not included")
    for line in report.figures_not_made:
        print(f"  figure not made: {line}")
    print(f"  report: {Path(cfg.out_dir).resolve() / 'index.html'}")


if __name__ == "__main__":
    hydra_entry(main, config_name="tables")
