"""Shared test helpers: compose the real configs with tiny overrides (lightning-hydra-template style)."""

from __future__ import annotations

import locale
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mr2ct.core.cli import CONF_DIR
from mr2ct.core.config import register_configs
from mr2ct.pipeline.run import run_task
from mr2ct.train import train

# A tiny but complete run: 4 phantom subjects, narrow nets, two optimisation steps, no W&B network.
TINY = [
    "model=pix2pix",
    "data.phantom.subjects=4",
    "data.phantom.val_fraction=0.17",
    "data.phantom.test_fraction=0.17",
    "trainer=smoke",
    "loader.crop_size=32",
    "loader.batch_size=4",
    "preprocess.elastic_copies=1",
    "preprocess.spacing_inplane_mm=3.0",
    "inference.t=2",
    "inference.batch_size=8",
    "model.net.channels=4",
    "model.net.levels=3",
    "segmenter.subjects=3",
    "segmenter.steps=2",
    "segmenter.channels=[4,8]",
    "segmenter.crop_size=32",
    "data.test_sets.0.phantom.subjects=1",
    "data.test_sets.1.phantom.subjects=1",
]
# The same tiny run with the conditional diffusion model (image mode) instead of Pix2Pix.
TINY_DDIM = [o for o in TINY if not o.startswith("model")] + [
    "model=ddim_image",
    "model.net.dim=8",
    "model.net.dim_mults=[1,2]",
    "model.net.heads=1",
    "model.net.dim_head=8",
]


def compose_config(overrides: list[str] = (), config_name: str = "config") -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def train_tiny(run_dir: Path, cache_dir: Path, overrides: list[str]) -> Path:
    """Train a tiny run (no W&B) into ``run_dir`` with the session cache; the run dir, for module fixtures."""
    run_task(compose_config([*overrides, "logger=none", f"paths.cache_dir={cache_dir}", f"paths.output_dir={run_dir}"]),
             "train", train)
    return run_dir


SESSION_LOCALE = locale.setlocale(locale.LC_ALL)


@pytest.fixture(autouse=True)
def restored_locale():
    """GDCM's DICOM writer (the tests make DICOM series with it; mr2ct only reads DICOM) sets the C locale for the
    whole process, after which Python decodes subprocess output as ASCII: every test ends in the session's locale."""
    yield
    locale.setlocale(locale.LC_ALL, SESSION_LOCALE)


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The tests' stand-in for the user's cache folder: no test (nor its subprocesses) writes to ~/.cache."""
    before = os.environ.get("MR2CT_CACHE")
    os.environ["MR2CT_CACHE"] = str(tmp_path_factory.mktemp("user_cache"))
    yield
    if before is None:
        os.environ.pop("MR2CT_CACHE")
    else:
        os.environ["MR2CT_CACHE"] = before


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One phantom/prepare cache for the whole test session (cache entries are keyed by config)."""
    return tmp_path_factory.mktemp("cache")
