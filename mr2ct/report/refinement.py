"""``python -m mr2ct.report.refinement runs=[ROUND0,ROUND1,...] passes=[LOG1,LOG2,...] out=FILE``: the tables of
the landmark loop (paper Fig. 1; experiments/registration_refinement.sh and landmark_bootstrap.sh).

Per refinement round (a training run dir): the median over subjects of the error of the MR landmarks the round
registered with against the exact ones (``landmark_error_mm``: centres of mass of ``mr_seg``/``mr_subreg``),
the median registration error against the phantom's true transform (``true_error_mm``), both from the run's
registration report (:mod:`mr2ct.registration.report`), how many subjects used derived landmarks, and the
posterior Dice (per volume) of the round's model on its training data's test split, from results.json.
Per bootstrap pass (a ``mr2ct.landmarks`` log): how many subjects succeeded, failed and were skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from mr2ct.core.cli import hydra_entry, refuse_user_errors
from mr2ct.core.io import atomic_write_text
from mr2ct.report.render import markdown_table

ROUND_COLUMNS = ("round", "landmarks_from", "derived", "median_landmark_error_mm", "median_true_error_mm",
                 "median_tre_mm", "posterior_dice")
PASS_COLUMNS = ("pass", "checkpoint", "ok", "failed", "skipped")


@dataclass
class RefinementReportConfig:
    """mr2ct.report.refinement: see the module docstring."""

    defaults: list[Any] = field(default_factory=list)
    runs: List[str] = field(default_factory=list)  # training run dirs, round 0 first
    passes: List[str] = field(default_factory=list)  # mr2ct.landmarks logs (log=...), first pass first
    out: Optional[str] = None  # Markdown file for the tables (also printed); a .json twin holds the rows


ConfigStore.instance().store(name="refinement_schema", node=RefinementReportConfig)


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{what}={path}: cannot read ({error})") from error


def round_row(index: int, run_dir: Path) -> dict[str, Any]:
    """One round's row from its run dir's results.json."""
    results = read_json(run_dir / "results.json", "runs")
    if "registration" not in results or "datasets" not in results:
        raise ValueError(f"runs={run_dir}: results.json has no registration or datasets (status "
                         f"{results.get('status')!r}); a finished training run is needed")
    registration = results["registration"]
    data_name = results.get("summary", {}).get("data") or next(iter(results["datasets"]))
    dice = results["datasets"].get(data_name, {}).get("dice", {}).get("aggregates", {})
    source = registration.get("landmarks_from")
    return {
        "round": index,
        "landmarks_from": Path(source["run_dir"]).name if source else "files",
        "derived": registration.get("derived_landmarks", 0),
        "median_landmark_error_mm": registration.get("median_landmark_error_mm"),
        "median_true_error_mm": registration.get("median_true_error_mm"),
        "median_tre_mm": registration.get("median_tre_mm"),
        "posterior_dice": dice.get("posterior_volume"),
    }


def pass_row(index: int, log_path: Path) -> dict[str, Any]:
    """One bootstrap pass's counts from its mr2ct.landmarks log."""
    log = read_json(log_path, "passes")
    if "counts" not in log:
        raise ValueError(f"passes={log_path}: not a mr2ct.landmarks log (no 'counts')")
    return {"pass": index + 1, "checkpoint": log.get("run_dir", log.get("checkpoint")), **log["counts"]}


def markdown(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    return markdown_table(columns, [[cell(row.get(c)) for c in columns] for row in rows])


def refinement_report(runs: list[str], passes: list[str]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """The Markdown tables and their rows (``rounds``, ``passes``)."""
    rows = {"rounds": [round_row(i, Path(r)) for i, r in enumerate(runs)],
            "passes": [pass_row(i, Path(p)) for i, p in enumerate(passes)]}
    parts = []
    if rows["rounds"]:
        parts.append("## Registration refinement (per round; medians over subjects)\n\n" + markdown(rows["rounds"], ROUND_COLUMNS))
    if rows["passes"]:
        parts.append("## Landmark bootstrap (subjects per pass)\n\n" + markdown(rows["passes"], PASS_COLUMNS))
    return "\n\n".join(parts) + "\n", rows


@hydra.main(version_base="1.3", config_path="../conf", config_name="refinement")
def main(cfg: DictConfig) -> None:
    with refuse_user_errors():
        if not cfg.runs and not cfg.passes:
            raise ValueError("runs=[...] and passes=[...] are both empty: nothing to report")
        text, rows = refinement_report(list(cfg.runs), list(cfg.passes))
        if cfg.out is not None:
            out = Path(cfg.out).expanduser()
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(text, out)
            atomic_write_text(json.dumps(rows, indent=1), out.with_suffix(".json"))
    print(text, end="")


if __name__ == "__main__":
    hydra_entry(main, config_name="refinement")
