"""``--help`` of every Hydra entry point: its own summary, an example of its own command, its options, and
exactly the config groups its config composes (prepare: those it reads), each with the group's options."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

import mr2ct.landmarks  # noqa: F401  (registers the landmarks, phantom and tables schemas)
import mr2ct.phantom.__main__  # noqa: F401
import mr2ct.tables  # noqa: F401
import mr2ct.translate  # noqa: F401
from mr2ct.core.cli import CONF_DIR
from mr2ct.core.config import register_configs

# entry point -> (its config, a key its options must explain, the groups it reads when fewer than it composes)
ENTRY_POINTS = {
    "train": ("config", "ckpt_path", None),
    "prepare": ("prepare", "preprocess.<key>", {"data", "registration", "model"}),
    "evaluate": ("evaluate", "test_sets", None),
    "translate": ("translate", "shard", None),
    "landmarks": ("landmarks", "overwrite", None),
    "tables": ("tables", "main_registration", None),
    "phantom": ("phantom", "landmark_noise_mm", None),
}


def listed_groups(text: str) -> dict[str, list[str]]:
    block = text.split("Config groups (group=option):\n", 1)[1].split("\n\n", 1)[0]
    if block.strip() == "none":
        return {}
    return {line.split(":")[0].strip(): line.split(":", 1)[1].strip().split(", ") for line in block.splitlines()}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_help_shows_its_own_options_an_example_and_only_the_groups_it_accepts(entry: str):
    config_name, option, reads = ENTRY_POINTS[entry]
    module = "mr2ct.phantom" if entry == "phantom" else f"mr2ct.{entry}"
    shown = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    assert text.startswith(f"mr2ct.{entry}: ") and f"\n  python -m mr2ct.{entry} " in text
    assert f"\n  {option} " in text and "Options (key=value):" in text
    choices = {group for group in choices_of(config_name) if not group.startswith("hydra/")}
    listed = listed_groups(text)
    assert set(listed) == (reads if reads is not None else choices) and set(listed) <= choices
    for group, options in listed.items():
        assert options == sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")), group


def choices_of(config_name: str) -> set[str]:
    """The config groups ``config_name`` composes (Hydra's runtime choices)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return set(compose(config_name=config_name, return_hydra_config=True).hydra.runtime.choices)
