"""Collect finished runs from run dirs on disk or from W&B, in one record type the tables read.

A run is *complete* only when its results.json says so and holds per-dataset results. Everything else
(failed, killed before results.json, still running in W&B) is kept as a record with a reason, so the
report can list it under "runs not included" instead of silently dropping or averaging it.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from mr2ct.pipeline.run import ABLATION_AXES
from mr2ct.scoring.volumes import IMAGE_METRICS

RESULTS = "results.json"
CONFIG = "config_resolved.yaml"


@dataclass(frozen=True)
class RunRecord:
    """One run as the report sees it: its ablation summary, per-dataset results and where it lives."""

    name: str
    status: str  # complete | failed | incomplete
    job_type: str | None
    summary: dict[str, Any]
    datasets: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None  # local run dir (predictions, figures); None when not on this machine
    prepared_dataset: str | None = None
    reason: str | None = None  # why a run that is not complete is left out
    card: dict[str, Any] = field(default_factory=dict)  # the method's card as the run recorded it

    @property
    def complete(self) -> bool:
        return self.status == "complete"


# ---------------------------------------------------------------------------------------------- local runs
def find_run_dirs(patterns: Sequence[str]) -> list[Path]:
    """Run dirs (holding results.json or config_resolved.yaml) under each path or glob, each found once.

    A pattern that matches nothing is an error: a typo must not give an empty table that looks real.
    """
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(str(pattern))))
        if not matches:
            raise FileNotFoundError(f"runs={pattern}: no such file or directory")
        for match in map(Path, matches):
            if match.is_file() and match.name in (RESULTS, CONFIG):
                match = match.parent
            if not match.is_dir():
                raise ValueError(f"runs={pattern}: {match} is neither a run dir nor a folder of run dirs")
            if (match / RESULTS).is_file() or (match / CONFIG).is_file():
                found[match.resolve()] = None
                continue
            markers = [*match.rglob(RESULTS), *match.rglob(CONFIG)]
            for marker in sorted(markers):
                found[marker.parent.resolve()] = None
    return list(found)


def summary_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """The ablation summary (as results.json has it) read from a resolved config."""
    summary = {"model": (config.get("model") or {}).get("name")}
    for key, path in ABLATION_AXES.items():
        node: Any = config
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        summary[key] = node
    return summary


def read_run_dir(run_dir: Path) -> RunRecord:
    """A run dir as a record; unreadable or missing results make an incomplete record, never an exception."""
    results_path = run_dir / RESULTS
    if not results_path.is_file():
        config = yaml.safe_load((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).is_file() else {}
        return RunRecord(str(run_dir), "incomplete", None, summary_from_config(config or {}), run_dir=run_dir,
                         reason="no results.json (still running or killed)")
    try:
        results = json.loads(results_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return RunRecord(str(run_dir), "incomplete", None, {}, run_dir=run_dir, reason=f"{RESULTS} unreadable: {error}")
    status = results.get("status", "incomplete")
    summary = results.get("summary") or summary_from_config(results.get("config", {}))
    common = dict(job_type=results.get("job_type"), summary=summary, run_dir=run_dir, card=results.get("card") or {})
    if status == "complete" and results.get("datasets"):
        return RunRecord(str(run_dir), "complete", datasets=results["datasets"],
                         prepared_dataset=results.get("prepared_dataset"), **common)
    reason = results.get("error") or ("complete but without dataset results" if status == "complete" else f"status {status}")
    return RunRecord(str(run_dir), "failed" if status == "failed" else "incomplete", reason=reason, **common)


def collect_local(patterns: str | Sequence[str]) -> list[RunRecord]:
    """Every run dir under the given paths/globs (a sweep dir finds its job dirs recursively)."""
    patterns = [patterns] if isinstance(patterns, (str, Path)) else list(patterns)
    if not patterns:
        raise ValueError("runs= is empty: give run dirs, sweep dirs or globs (runs=multirun/x or runs='[a,b]')")
    return [read_run_dir(run_dir) for run_dir in find_run_dirs(patterns)]


# ---------------------------------------------------------------------------------------------- W&B runs
WANDB_STATES = {"finished": "complete", "failed": "failed", "crashed": "failed"}


def datasets_from_wandb_summary(summary: dict[str, Any], read_table: Any) -> dict[str, Any]:
    """Rebuild results.json's per-dataset blocks from a W&B summary as mr2ct.pipeline.run flattens it.

    ``{ds}/{metric}`` -> image quality, ``{ds}/dice_{x}`` -> Dice, ``{ds}/{section}/{x}`` -> that section;
    ``{ds}/per_slice``, ``{ds}/dice_per_volume`` and ``{ds}/dice_per_vertebra`` (logged tables) -> the
    per-slice and per-volume values behind the p-values, read through ``read_table(entry)``. The public API
    gives nested summary values as ``SummarySubDict`` (a mapping that is not a ``dict``), so a table entry is
    recognised as any mapping.
    """
    datasets: dict[str, Any] = {}
    for key, value in summary.items():
        parts = key.split("/")
        if len(parts) < 2:
            continue
        block = datasets.setdefault(parts[0], {"image_quality": {"aggregates": {}}})
        if len(parts) == 2 and is_mapping(value):
            columns = _table_columns(read_table(dict(value.items())))
            if columns is None:
                continue
            if parts[1] == "per_slice":
                block["image_quality"]["per_slice"] = columns
            elif parts[1] in ("dice_per_volume", "dice_per_vertebra"):
                block.setdefault("dice", {"aggregates": {}})[parts[1].removeprefix("dice_")] = columns
        elif len(parts) == 2 and parts[1] in IMAGE_METRICS:
            block["image_quality"]["aggregates"][parts[1]] = value
        elif len(parts) == 2 and parts[1].startswith("dice_"):
            block.setdefault("dice", {"aggregates": {}})["aggregates"][parts[1].removeprefix("dice_")] = value
        elif len(parts) == 2 and parts[1] == "other_contrast":
            block["other_contrast"] = bool(value)
        elif len(parts) == 3:
            block.setdefault(parts[1], {"aggregates": {}})["aggregates"][parts[2]] = value
    return {name: block for name, block in datasets.items() if block["image_quality"]["aggregates"] or "dice" in block}


def is_mapping(value: Any) -> bool:
    """A dict, or the public API's ``SummarySubDict`` (which has ``items`` but is not a ``Mapping``)."""
    return isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys") and not isinstance(value, str))


def _table_columns(table: dict[str, Any] | None) -> dict[str, list] | None:
    if table is None:
        return None
    columns, rows = table["columns"], table["data"]
    return {c: [row[i] for row in rows] for i, c in enumerate(columns)}


def summary_from_wandb_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ablation summary from a W&B run config; runs logged before the ``model`` key was protected hold
    Lightning's hyperparameter dict there, whose ``name`` is the method."""
    summary = {key: config.get(key) for key in ("model", *ABLATION_AXES)}
    if is_mapping(summary["model"]):
        summary["model"] = summary["model"].get("name")
    return summary


def wandb_table_reader(run: Any) -> Any:
    """A function that downloads a table-file summary entry of ``run`` and returns its JSON (or None)."""
    def read(entry: dict[str, Any]) -> dict[str, Any] | None:
        if entry.get("_type") != "table-file" or not entry.get("path"):
            return None
        with tempfile.TemporaryDirectory() as folder:
            run.file(entry["path"]).download(root=folder, replace=True)
            return json.loads((Path(folder) / entry["path"]).read_text())
    return read


def collect_wandb(api: Any, project: str, group: str | None, entity: str | None = None) -> list[RunRecord]:
    """The runs of a W&B project (and group) through the public API object ``api`` (``wandb.Api()``)."""
    path = f"{entity}/{project}" if entity else project
    filters = {"group": group} if group else {}
    records = []
    for run in api.runs(path, filters=filters):
        config = dict(run.config)
        summary = summary_from_wandb_config(config)
        card = config.get("card") or {}
        local = (config.get("config") or {}).get("paths", {}).get("output_dir")
        run_dir = Path(local) if local and Path(local).is_dir() else None
        name = "/".join(run.path) if getattr(run, "path", None) else run.id
        status = WANDB_STATES.get(run.state, "incomplete")
        if status != "complete":
            records.append(RunRecord(name, status, run.job_type, summary, run_dir=run_dir, reason=f"W&B state {run.state}",
                                     card=card))
            continue
        datasets = datasets_from_wandb_summary(dict(run.summary.items()), wandb_table_reader(run))
        if not datasets:
            records.append(RunRecord(name, "incomplete", run.job_type, summary, run_dir=run_dir,
                                     reason="no results in the W&B summary", card=card))
            continue
        prepared = _results_field(run_dir, "prepared_dataset")
        records.append(RunRecord(name, "complete", run.job_type, summary, datasets, run_dir, prepared, card=card))
    return records


def _results_field(run_dir: Path | None, key: str) -> Any:
    if run_dir is None or not (run_dir / RESULTS).is_file():
        return None
    try:
        return json.loads((run_dir / RESULTS).read_text()).get(key)
    except json.JSONDecodeError:
        return None


def split_by_status(runs: Iterable[RunRecord]) -> tuple[list[RunRecord], list[RunRecord]]:
    """(complete runs, runs not included)."""
    runs = list(runs)
    return [r for r in runs if r.complete], [r for r in runs if not r.complete]
