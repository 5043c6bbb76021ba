"""Console scripts (``mr2ct-train`` etc., declared in pyproject.toml): each runs its entry point's Hydra main as
``python -m mr2ct.<name>`` does. The entry module is imported only when its command runs, so one command
never pays for another's imports."""

from __future__ import annotations

from importlib import import_module

from mr2ct.core.cli import hydra_entry


def _run(module: str, config_name: str) -> None:
    hydra_entry(import_module(module).main, config_name=config_name)


def train() -> None:
    _run("mr2ct.train", "config")


def evaluate() -> None:
    _run("mr2ct.evaluate", "evaluate")


def translate() -> None:
    _run("mr2ct.translate", "translate")


def landmarks() -> None:
    _run("mr2ct.landmarks", "landmarks")


def tables() -> None:
    _run("mr2ct.tables", "tables")


def phantom() -> None:
    _run("mr2ct.phantom.__main__", "phantom")
