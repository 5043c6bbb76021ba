"""Command-line front door shared by the Hydra entry points: misspelt keys get the valid keys listed.

Hydra already lists the available options of a config group (``model=pix2pixx``) and OmegaConf lists an
enum's valid values; for a misspelt key (``inference.etaa=1``) Hydra only says the key is unknown. When
an entry point fails before its task starts, :func:`explain_unknown_keys` names the valid keys instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from mr2ct.core.config import register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def unknown_key_messages(overrides: list[str], config_name: str = "config") -> list[str]:
    """For each ``key=value`` override whose key the composed config lacks, a line listing valid keys."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        groups = [o for o in parsed if "." not in o.key_or_group and not o.is_add() and not o.is_delete()]
        choices = [f"{o.key_or_group}={_first_value(o)}" for o in groups if not o.key_or_group.startswith("hydra")]
        try:
            cfg = compose(config_name=config_name, overrides=choices)
        except Exception:  # a misspelt group option: Hydra's own message already lists the options
            return []
    messages = []
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_delete() or key.startswith("hydra") or "." not in key:
            continue
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            parent = _deepest_existing_parent(cfg, key)
            node = OmegaConf.select(cfg, parent) if parent else cfg
            valid = sorted(node.keys()) if OmegaConf.is_dict(node) else []
            messages.append(f"unknown config key '{key}'; valid keys under '{parent or '<root>'}': {', '.join(map(str, valid))}")
    return messages


def hydra_entry(main: Callable[[], object], config_name: str = "config") -> None:
    """Run a ``@hydra.main`` function; if Hydra rejects the command line, explain unknown keys."""
    try:
        main()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            try:
                lines = unknown_key_messages([a for a in sys.argv[1:] if "=" in a and not a.startswith("-")], config_name)
            except Exception:  # the explanation must never hide Hydra's own error
                lines = []
            for line in lines:
                print(line, file=sys.stderr)
        raise


class _Missing:
    pass


_MISSING = _Missing()


def _first_value(override) -> str:
    value = override.value()
    if override.is_sweep_override():
        value = next(iter(override.sweep_string_iterator()))
    return str(value)


def _deepest_existing_parent(cfg: DictConfig, key: str) -> str:
    parts = key.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:depth])
        if OmegaConf.select(cfg, parent, default=_MISSING) is not _MISSING:
            return parent
    return ""
