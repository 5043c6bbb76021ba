"""The paper's tables as data: rows of averaged runs, columns of (test set, metric), best values marked,
and paired t-tests: of the best row against every other row, or (registration ablation) of each method's
2-landmark row against its 1- and 0-landmark rows.

Rows are configurations: method, registration and the inference settings the method's card says it reads;
several runs of one configuration (seeds) are averaged and counted. Labels come from the cards, so a new
method needs no change here. Columns are grouped by the data the model was trained on and the test set
it was scored on. Per-sample values (per slice for image quality, per volume or per vertebra for Dice) are
averaged over a row's runs sample by sample and feed the paired t-tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

import numpy as np

from mr2ct.metrics.stats import TTestResult, paired_ttest
from mr2ct.report.runs import RunRecord

METHOD_FIELDS = ("model", "registration")
REGISTRATION_ORDER = ("none", "one_point", "two_point")
REGISTRATION_LABELS = {"none": "no registration", "one_point": "1 landmark", "two_point": "2 landmarks"}

RowKey = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Metric:
    """One result column: where its aggregate lives in a dataset block and how to read its samples."""

    key: str  # aggregate key inside the section
    label: str
    section: str  # image_quality | dice
    higher_is_better: bool
    digits: int


IMAGE_QUALITY = (
    Metric("l1", "L1", "image_quality", False, 4),
    Metric("mse", "MSE", "image_quality", False, 4),
    Metric("psnr", "PSNR", "image_quality", True, 2),
    Metric("ssim", "SSIM", "image_quality", True, 3),
    Metric("vifp", "VIFp", "image_quality", True, 3),
)
DICE = (Metric("volume", "Dice per vol.", "dice", True, 2), Metric("vertebra", "Dice per vert.", "dice", True, 2))
POSTERIOR_DICE = (
    Metric("posterior_volume", "posterior Dice per vol.", "dice", True, 2),
    Metric("posterior_vertebra", "posterior Dice per vert.", "dice", True, 2),
)
PSNR = IMAGE_QUALITY[2]
ISOTROPIC_DICE = tuple(Metric(m.key, m.label, "dice_iso", True, 2) for m in (*DICE, *POSTERIOR_DICE))


@dataclass(frozen=True)
class ColumnGroup:
    """Runs trained on ``train_data`` scored on the test set ``dataset`` (``other_contrast``: an MR contrast
    the models were not trained on, scored only when asked)."""

    train_data: str
    dataset: str
    other_contrast: bool = False

    @property
    def key(self) -> str:
        return self.dataset if self.dataset == self.train_data else f"{self.train_data}>{self.dataset}"

    @property
    def label(self) -> str:
        if self.dataset == self.train_data:
            return self.dataset
        return f"{self.dataset} (model: {self.train_data}{', other contrast' if self.other_contrast else ''})"


@dataclass
class Cell:
    value: float | None  # mean over the runs that have it; None: no run of this row in this column
    runs: int
    samples: dict[Hashable, float] | None  # per-sample values averaged over runs, keyed by sample id
    best: bool = False


@dataclass
class Row:
    label: str
    key: RowKey
    runs: list[RunRecord]
    cells: list[Cell]  # one per column, in Table.columns order

    @property
    def has_runs(self) -> bool:
        return bool(self.runs)


@dataclass(frozen=True)
class PValue:
    """The paired t-test of a reference row against another row in one column (None p: not testable, see note)."""

    group: ColumnGroup
    metric: Metric
    reference_row: str
    other_row: str
    result: TTestResult | None
    note: str = ""


@dataclass
class Table:
    name: str
    title: str
    groups: list[ColumnGroup]
    metrics: Sequence[Metric]
    rows: list[Row]
    note: str = ""
    pvalues: list[PValue] = field(default_factory=list)
    comparisons: str = "the best row against every other row"  # what the p-values compare, for the reports

    @property
    def columns(self) -> list[tuple[ColumnGroup, Metric]]:
        return [(group, metric) for group in self.groups for metric in self.metrics]


# ---------------------------------------------------------------------------------------------- per-sample values
def metric_samples(block: dict[str, Any], metric: Metric) -> dict[Hashable, float] | None:
    """Per-sample values behind an aggregate: (subject, slice) for image quality, subject for Dice per
    volume, (subject, vertebra) for Dice per vertebra; None where the run holds none."""
    section = block.get(metric.section) or {}
    if metric.section == "image_quality":
        per_slice = section.get("per_slice")
        if not per_slice or metric.key not in per_slice:
            return None
        return {(s, int(i)): float(v) for s, i, v in zip(per_slice["subject"], per_slice["slice"], per_slice[metric.key])}
    if metric.key in ("volume", "posterior_volume"):
        per_volume = section.get("per_volume")
        if not per_volume:
            return None
        return {s: float(v) for s, v in zip(per_volume["subject"], per_volume[metric.key]) if v is not None}
    per_vertebra = section.get("per_vertebra")
    if not per_vertebra:
        return None
    column = "dice" if metric.key == "vertebra" else "posterior"
    return {(s, int(v)): float(d) for s, v, d in zip(per_vertebra["subject"], per_vertebra["vertebra"], per_vertebra[column]) if d is not None}


def average_samples(samples: list[dict[Hashable, float] | None]) -> dict[Hashable, float] | None:
    """Sample-wise mean over runs, on the samples every run has (None when a run has no samples)."""
    if not samples or any(s is None for s in samples):
        return None
    keys = [k for k in samples[0] if all(k in s for s in samples[1:])]
    return {k: float(np.mean([s[k] for s in samples])) for k in keys}


def make_cell(runs: list[RunRecord], group: ColumnGroup, metric: Metric) -> Cell:
    blocks = [r.datasets[group.dataset] for r in runs if r.summary.get("data") == group.train_data and group.dataset in r.datasets]
    blocks = [b for b in blocks if (b.get(metric.section) or {}).get("aggregates", {}).get(metric.key) is not None]
    if not blocks:
        return Cell(None, 0, None)
    value = float(np.mean([b[metric.section]["aggregates"][metric.key] for b in blocks]))
    return Cell(value, len(blocks), average_samples([metric_samples(b, metric) for b in blocks]))


# ---------------------------------------------------------------------------------------------- rows
def row_key(run: RunRecord) -> RowKey:
    """Method and registration, plus the inference settings the method's card says it reads."""
    fields = (*METHOD_FIELDS, *(f"inference.{setting}" for setting in run.card.get("reads", ())))
    return tuple((f, run.summary.get(f)) for f in fields)


def format_number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_label(fields: dict[str, Any]) -> str:
    """The paper's way of naming the inference settings a row has: 'η=1, t=20, w=0', 'DDPM t=1000, w=0'."""
    ddpm = fields.get("inference.sampler") == "ddpm"
    named = (("η", "eta"), ("t", "t"), ("w", "w"))
    parts = [f"{symbol}={format_number(fields[f'inference.{key}'])}" for symbol, key in named
             if f"inference.{key}" in fields and not (ddpm and key == "eta")]
    text = ("DDPM " if ddpm else "") + ", ".join(parts)
    samples = fields.get("inference.samples")
    return text + (f", {samples} samples" if samples not in (None, 1) else "")


def row_label(fields: dict[str, Any], method_label: str, show_registration: bool) -> str:
    """The card's label, the inference settings the card reads, and the registration when asked."""
    settings = settings_label(fields)
    label = f"{method_label} {settings}" if settings else method_label
    if show_registration:
        label += f", {REGISTRATION_LABELS.get(fields.get('registration'), fields.get('registration'))}"
    return label


def row_sort_key(fields: dict[str, Any], method_order: Sequence[str]) -> tuple:
    model = fields.get("model")
    registration = fields.get("registration")
    return (
        method_order.index(model) if model in method_order else len(method_order), str(model),
        REGISTRATION_ORDER.index(registration) if registration in REGISTRATION_ORDER else len(REGISTRATION_ORDER),
        tuple((f, str(v)) for f, v in fields.items() if f.startswith("inference.")),
    )


# ---------------------------------------------------------------------------------------------- tables
def column_groups(runs: list[RunRecord], own_test_only: bool) -> list[ColumnGroup]:
    """(training data, test set) pairs in the runs: each training data's own test split first."""
    groups: dict[tuple[str, str], bool] = {}
    train_data = list(dict.fromkeys(r.summary.get("data") for r in runs))
    for data in sorted(train_data, key=lambda d: (d not in ("phantom_t1w", "phantom_t2w"), str(d))):
        groups[(data, data)] = False
        if not own_test_only:
            for run in runs:
                if run.summary.get("data") == data:
                    for dataset, block in run.datasets.items():
                        groups[(data, dataset)] = groups.get((data, dataset), False) or bool(block.get("other_contrast"))
    present = [(data, dataset) for data, dataset in groups
               if any(dataset in r.datasets for r in runs if r.summary.get("data") == data)]
    return [ColumnGroup(data, dataset, groups[(data, dataset)]) for data, dataset in present]


def build_table(
    name: str,
    title: str,
    runs: list[RunRecord],
    metrics: Sequence[Metric],
    expected: Sequence[dict[str, Any]],
    method_labels: dict[str, str],
    own_test_only: bool = True,
    show_registration: bool = False,
    note: str = "",
    within_method_registration_tests: bool = False,
) -> Table:
    """Group complete runs into rows, fill the cells, add a 'no runs' row for every expected configuration
    (a partial row key such as {"model": "cut"}) that no run matches, mark the best values, run the tests.

    Row labels come from the runs' cards; ``method_labels`` (method name -> label, in table order) names
    the expected rows without runs and orders the rows.
    """
    grouped: dict[RowKey, list[RunRecord]] = {}
    for run in sorted(runs, key=lambda r: r.name):
        grouped.setdefault(row_key(run), []).append(run)
    groups = column_groups(runs, own_test_only)
    rows = []
    for key, members in grouped.items():
        fields = dict(key)
        label = members[0].card.get("label") or method_labels.get(fields["model"]) or str(fields["model"])
        rows.append(Row(row_label(fields, label, show_registration), key, members,
                        [make_cell(members, g, m) for g in groups for m in metrics]))
    for partial in expected:
        if not any(all(dict(row.key).get(f) == v for f, v in partial.items()) for row in rows):
            fields = {f: partial.get(f) for f in METHOD_FIELDS}
            label = row_label(fields, method_labels.get(fields["model"], str(fields["model"])), show_registration)
            rows.append(Row(label, tuple(fields.items()), [], [Cell(None, 0, None) for _ in groups for _ in metrics]))
    rows.sort(key=lambda row: row_sort_key(dict(row.key), list(method_labels)))
    if not rows:
        rows.append(Row("no runs of this kind", (), [], []))
    table = Table(name, title, groups, metrics, rows, note)
    mark_best(table)
    if within_method_registration_tests:
        table.pvalues, table.comparisons = registration_tests(table), REGISTRATION_COMPARISONS
    else:
        table.pvalues = best_row_tests(table)
    return table


def formatted(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def best_index(table: Table, column: int) -> int | None:
    """The row with the best unrounded value in a column (None if no row has one)."""
    _, metric = table.columns[column]
    present = [(i, row.cells[column].value) for i, row in enumerate(table.rows) if row.cells[column].value is not None]
    if not present:
        return None
    pick = max if metric.higher_is_better else min
    return pick(present, key=lambda item: item[1])[0]


def mark_best(table: Table) -> None:
    """Mark every value that equals the best one at the printed precision (ties within rounding together)."""
    for column, (_, metric) in enumerate(table.columns):
        best = best_index(table, column)
        if best is None:
            continue
        shown = formatted(table.rows[best].cells[column].value, metric.digits)
        for row in table.rows:
            cell = row.cells[column]
            cell.best = cell.value is not None and formatted(cell.value, metric.digits) == shown


def row_test(table: Table, column: int, reference: Row, other: Row) -> PValue:
    """Paired t-test of two rows' per-sample values in one column."""
    group, metric = table.columns[column]
    a, b = reference.cells[column].samples, other.cells[column].samples
    if a is None or b is None:
        return PValue(group, metric, reference.label, other.label, None, "no per-sample values")
    try:
        return PValue(group, metric, reference.label, other.label, paired_ttest(a, b))
    except ValueError as error:
        return PValue(group, metric, reference.label, other.label, None, str(error))


def best_row_tests(table: Table) -> list[PValue]:
    """Paired t-test of the best row against every other row with a value, in every column."""
    tests = []
    for column in range(len(table.columns)):
        best = best_index(table, column)
        if best is None:
            continue
        for index, row in enumerate(table.rows):
            if index != best and row.cells[column].value is not None:
                tests.append(row_test(table, column, table.rows[best], row))
    return tests


REGISTRATION_COMPARISONS = "each method's 2-landmark row against its 1- and 0-landmark rows (the paper's test)"


def registration_tests(table: Table) -> list[PValue]:
    """Within each method and inference setting: the two_point row against the one_point and none rows,
    in every column where both have values (the paper's "from one to two points per vertebra")."""
    by_configuration: dict[RowKey, dict[Any, Row]] = {}
    for row in table.rows:
        configuration = tuple((f, v) for f, v in row.key if f != "registration")
        by_configuration.setdefault(configuration, {})[dict(row.key).get("registration")] = row
    tests = []
    for rows in by_configuration.values():
        reference = rows.get("two_point")
        for other in (rows.get("one_point"), rows.get("none")):
            if reference is None or other is None:
                continue
            for column in range(len(table.columns)):
                if reference.cells[column].value is not None and other.cells[column].value is not None:
                    tests.append(row_test(table, column, reference, other))
    return tests


# ---------------------------------------------------------------------------------------------- the paper's tables
def is_job(run: RunRecord, job_type: str) -> bool:
    return run.complete and run.job_type == job_type


def paper_tables(
    runs: list[RunRecord], methods: dict[str, str], main_registration: str = "two_point"
) -> dict[str, Table]:
    """Tables 1-3 (train runs with the main registration), S1/S2 (evaluate runs of methods whose card reads
    inference settings: the inference ablation), the isotropic Dice (runs scored with ``iso=true``) and the
    registration ablation (train runs, method x
    registration). ``methods`` maps the expected methods' names to their labels, in table order."""
    main = [r for r in runs if is_job(r, "train") and r.summary.get("registration") == main_registration]
    evaluated = [r for r in runs if is_job(r, "evaluate") and r.card.get("reads")]
    isotropic = [r for r in runs if r.complete and any("dice_iso" in block for block in r.datasets.values())]
    trained = [r for r in runs if is_job(r, "train")]
    expected = [{"model": m} for m in methods]
    ablated = sorted({r.summary.get("model") for r in trained}, key=str)
    registration_expected = [{"model": m, "registration": g} for m in ablated for g in REGISTRATION_ORDER]
    main_note = f"Training runs registered with {main_registration}; best values marked; runs = runs averaged per column group."
    return {
        "table1_image_quality": build_table(
            "table1_image_quality", "Table 1: image quality of the synthetic CT on the test split of the training data",
            main, IMAGE_QUALITY, expected, methods, note=main_note),
        "table2_dice": build_table(
            "table2_dice", "Table 2: Dice per volume and per vertebra on every test set", main, DICE, expected, methods,
            own_test_only=False, note=main_note),
        "table3_posterior_dice": build_table(
            "table3_posterior_dice", "Table 3: posterior-structure Dice (vertebral body excluded) per volume and per vertebra",
            main, POSTERIOR_DICE, expected, methods, own_test_only=False, note=main_note),
        "tableS1_inference_image_quality": build_table(
            "tableS1_inference_image_quality", "Table S1: image quality under the inference ablation (sampler, t, eta, w)",
            evaluated, IMAGE_QUALITY, [], methods, note="Evaluate runs (mr2ct.evaluate) of trained checkpoints."),
        "tableS2_inference_dice": build_table(
            "tableS2_inference_dice", "Table S2: Dice under the inference ablation (sampler, t, eta, w)",
            evaluated, DICE, [], methods, own_test_only=False, note="Evaluate runs (mr2ct.evaluate) of trained checkpoints."),
        "table_isotropic_dice": build_table(
            "table_isotropic_dice", "Dice of the super-resolved segmentation: on the 1 mm isotropic grid against the "
            "isotropic ground truth (paper Fig. 7)", isotropic, ISOTROPIC_DICE, [], methods, own_test_only=False,
            note="Training and evaluate runs scored with iso=true; a 2D method's labels are its native ones resampled."),
        "registration_ablation": build_table(
            "registration_ablation", "Registration ablation: method x landmarks per vertebra (0, 1, 2)",
            trained, (*DICE, *POSTERIOR_DICE, PSNR), registration_expected, methods, show_registration=True,
            note="Training runs; Dice and PSNR on the test split of the training data.",
            within_method_registration_tests=True),
    }
