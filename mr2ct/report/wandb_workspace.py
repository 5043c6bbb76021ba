"""The W&B workspace (a saved view) for mr2ct runs, so the dashboard comes ready instead of built by hand.

Three sections over the runs of a project: the registration ablation (image quality, Dice and TRE by
landmarks, one bar per ``registration``), the method comparison (the same metrics, one bar per card
``method``) and training (loss and learning-rate curves). Bars average the runs of a group (seeds, sweep
jobs). The panels are declared below as data (:data:`SECTIONS`); the keys they name are the ones
``mr2ct.pipeline.run`` logs: config keys from the ablation summary, summary keys ``{dataset}/{metric}``.

Apply it once per project (needs the network and the optional extra ``pip install mr2ct[wandb-report]``,
i.e. wandb-workspaces, which pulls no torchvision)::

    python -m mr2ct.report.wandb_workspace project=mr2ct [entity=me] [dataset=phantom_t1w] [name=mr2ct]

It prints the workspace's URL.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

QUALITY = ("psnr", "ssim", "l1", "vifp")
DICE = ("dice_volume", "dice_vertebra", "dice_posterior_vertebra")


@dataclass(frozen=True)
class Panel:
    """A bar plot of summary metrics with one bar per value of the config key ``by``, or (``by`` None) a
    line plot of history metrics against the step; ``{dataset}`` in a metric is filled in."""

    title: str
    metrics: tuple[str, ...]
    by: str | None = None


SECTIONS: dict[str, tuple[Panel, ...]] = {
    "Registration ablation": (
        Panel("Image quality by landmarks", tuple(f"{{dataset}}/{m}" for m in QUALITY), by="registration"),
        Panel("Dice by landmarks", tuple(f"{{dataset}}/{m}" for m in DICE), by="registration"),
        Panel("Registration error (median TRE, mm)", ("registration/median_tre_mm",), by="registration"),
    ),
    "Method comparison": (
        Panel("Image quality by method", tuple(f"{{dataset}}/{m}" for m in QUALITY), by="method"),
        Panel("Dice by method", tuple(f"{{dataset}}/{m}" for m in DICE), by="method"),
    ),
    "Training": (
        Panel("Training loss", ("train/loss",)),
        Panel("Validation L1", ("val/l1",)),
        Panel("Learning rate", ("lr-Adam",)),
    ),
}
RUN_COLUMNS = ("method", "registration", "data", "inference.t", "inference.eta", "inference.w", "seed")


def panel_metrics(panel: Panel, dataset: str) -> list[str]:
    return [metric.format(dataset=dataset) for metric in panel.metrics]


def build_workspace(entity: str, project: str, dataset: str = "phantom_t1w", name: str = "mr2ct") -> Any:
    """The wandb-workspaces ``Workspace`` of :data:`SECTIONS` for ``entity/project`` (not saved)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def panel(spec: Panel) -> Any:
        metrics = panel_metrics(spec, dataset)
        if spec.by is None:
            return wr.LinePlot(title=spec.title, x="Step", y=metrics)
        return wr.BarPlot(title=spec.title, metrics=[wr.SummaryMetric(m) for m in metrics], orientation="v",
                          groupby=wr.Config(spec.by), groupby_aggfunc="mean", groupby_rangefunc="stderr")

    return ws.Workspace(
        entity=entity, project=project, name=name,
        sections=[ws.Section(name=title, panels=[panel(p) for p in panels], is_open=True)
                  for title, panels in SECTIONS.items()],
        runset_settings=ws.RunsetSettings(pinned_columns=[f"config:{key}" for key in RUN_COLUMNS]),
    )


def main(argv: list[str]) -> None:
    """``key=value`` arguments: project (required), entity (default: the logged-in user's), dataset, name."""
    options = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    unknown = set(options) - {"project", "entity", "dataset", "name"} or [a for a in argv if "=" not in a]
    if unknown or "project" not in options:
        sys.exit(f"error: usage: python -m mr2ct.report.wandb_workspace project=P [entity=E] [dataset=D] [name=N]"
                 f"{f' (not understood: {sorted(unknown)})' if unknown else ''}")
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        sys.exit("error: the W&B workspace needs the optional extra: pip install 'mr2ct[wandb-report]'")
    import wandb

    entity = options.get("entity") or wandb.Api().default_entity
    workspace = build_workspace(entity, options["project"], options.get("dataset", "phantom_t1w"),
                                options.get("name", "mr2ct"))
    print(workspace.save().url)


if __name__ == "__main__":
    main(sys.argv[1:])
