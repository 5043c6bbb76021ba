"""Runs in, report out: every table in three formats with its p-values, the figures and index.html."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from mr2ct.report.figures import has_iso_outputs, isotropic_figure, method_grid, registration_figure, test_data_folders
from mr2ct.report.render import (
    not_included_markdown,
    pvalues_csv,
    pvalues_markdown,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
    write_text,
)
from mr2ct.report.runs import RunRecord, split_by_status
from mr2ct.report.tables import Table, paper_tables


@dataclass
class Report:
    tables: dict[str, Table]
    not_included: list[RunRecord]
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    figures_not_made: list[str] = field(default_factory=list)  # one line per figure that could not be made: why
    index: Path | None = None


def representative_runs(table: Table, train_data: str) -> list[tuple[str, RunRecord]]:
    """(row label, first run of the row trained on ``train_data``) for each row of ``table`` with such a run."""
    chosen = []
    for row in table.rows:
        runs = [r for r in row.runs if r.summary.get("data") == train_data and r.run_dir is not None]
        if runs:
            chosen.append((row.label, runs[0]))
    return chosen


def build_figures(
    tables: dict[str, Table], complete: list[RunRecord], figure_dir: Path, max_subjects: int
) -> tuple[list[Path], list[str]]:
    """Fig. 5-like translation grids and segmentation overlays (Table 1's rows), Fig. 4-like registration
    comparisons (one run per registration mode), one of each per training data set, a Fig. 7-like super-resolved
    segmentation per data set that a run scored with ``iso=true`` (a 3D method's first); and for each figure that
    could not be made, a line saying which data it lacked (a report never loses figures silently)."""
    figures: list[Path] = []
    not_made: list[str] = []

    def add(figure: Path | None, path: Path, needs: str, folders: Sequence[Path]) -> None:
        if figure is not None:
            figures.append(figure)
        else:
            looked = ", ".join(sorted({str(folder) for folder in folders})) or "none recorded"
            not_made.append(f"{path.name}: {needs} not found (looked in {looked})")

    main = tables["table1_image_quality"]
    for group in main.groups:
        methods = representative_runs(main, group.train_data)
        folders = [folder for _, run in methods for folder in test_data_folders(run)]
        for kind, segmentation in (("translation", False), ("segmentation", True)):
            path = figure_dir / f"{kind}_{group.train_data}.png"
            if methods:
                add(method_grid(methods, group.train_data, path, max_subjects, segmentation), path, "test data", folders)
    trained = [r for r in complete if r.job_type == "train"]
    for data in sorted({r.summary.get("data") for r in trained}, key=str):
        by_mode: dict[str, RunRecord] = {}
        for run in sorted(trained, key=lambda r: r.name):
            if run.summary.get("data") == data and run.prepared_dataset:
                by_mode.setdefault(run.summary.get("registration"), run)
        if len(by_mode) > 1:
            path = figure_dir / f"registration_{data}.png"
            add(registration_figure(by_mode, data, path), path, "prepared training data (only the cache holds it)",
                [Path(run.prepared_dataset) / "train" for run in by_mode.values()])
    iso_runs: dict[str, RunRecord] = {}
    for run in sorted(complete, key=lambda r: (r.card.get("dims") != 3, r.name)):
        for dataset in run.datasets:
            if has_iso_outputs(run, dataset):
                iso_runs.setdefault(dataset, run)
    for dataset, run in sorted(iso_runs.items()):
        path = figure_dir / f"isotropic_{dataset}.png"
        add(isotropic_figure(run, dataset, path, max_subjects), path, "test data with isotropic ground truth",
            test_data_folders(run))
    return figures, not_made


def build_report(
    runs: list[RunRecord], out_dir: str | Path, methods: dict[str, str], sources: Sequence[str],
    main_registration: str = "two_point", only: Sequence[str] | None = None, figures: bool = True,
    figure_subjects: int = 4,
) -> Report:
    """Write every table (Markdown, CSV, LaTeX, p-values), the runs left out, the figures and index.html.
    ``methods`` maps the methods expected in Tables 1-3 to their labels, in table order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    complete, not_included = split_by_status(runs)
    tables = paper_tables(complete, methods, main_registration)
    if only:
        unknown = sorted(set(only) - set(tables))
        if unknown:
            raise ValueError(f"tables={list(only)}: unknown {unknown}; valid: {sorted(tables)}")
        selected = {name: table for name, table in tables.items() if name in only}
    else:
        selected = tables
    report = Report(selected, not_included)
    for name, table in selected.items():
        report.files += [
            write_text(to_markdown(table), out_dir / f"{name}.md"),
            write_text(to_csv(table), out_dir / f"{name}.csv"),
            write_text(to_latex(table), out_dir / f"{name}.tex"),
            write_text(pvalues_csv(table), out_dir / f"{name}_pvalues.csv"),
            write_text(pvalues_markdown(table), out_dir / f"{name}_pvalues.md"),
        ]
    report.files.append(write_text(not_included_markdown(not_included), out_dir / "runs_not_included.md"))
    if figures:
        report.figures, report.figures_not_made = build_figures(tables, complete, out_dir / "figures", figure_subjects)
    title = "mr2ct report"
    report.index = write_text(to_html(title, sources, list(selected.values()), not_included, report.figures, out_dir), out_dir / "index.html")
    return report
