"""Tables, figures and the offline report built from mr2ct run dirs or W&B runs (``python -m mr2ct.tables``)."""

from mr2ct.report.build import Report, build_report
from mr2ct.report.runs import RunRecord, collect_local, collect_wandb
from mr2ct.report.tables import Table, paper_tables

__all__ = ["Report", "RunRecord", "Table", "build_report", "collect_local", "collect_wandb", "paper_tables"]
