"""W&B run names, groups and the readback of runs logged before the config keys were protected: pure
functions, no run or network needed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from mr2ct.core.cli import CONF_DIR
from mr2ct.core.config import register_configs
from mr2ct.methods.registry import method_card
from mr2ct.pipeline.run import ablation_summary, run_group, run_name
from mr2ct.report.runs import summary_from_wandb_config
from tests.conftest import compose_config


@pytest.fixture
def sweep_started_at():
    """Hydra's state as in a multirun whose sweep dir is multirun/registration_ablation/<start time>."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["experiment_name=registration_ablation", "hydra.mode=MULTIRUN",
                                 "hydra.sweep.dir=multirun/registration_ablation/2026-12-02_04-00-00"])
    HydraConfig.instance().set_config(cfg)
    yield cfg
    HydraConfig.instance().cfg = None


def test_a_sweep_groups_by_experiment_and_start_time_so_a_rerun_is_a_new_group(sweep_started_at):
    cfg = compose_config(["experiment_name=registration_ablation"])
    assert run_group(cfg, Path("multirun/registration_ablation/2026-12-02_04-00-00/3")) == \
        "registration_ablation-2026-12-02_04-00-00"
    cfg.logger.group = "mine"
    assert run_group(cfg, Path("anywhere")) == "mine"


def test_a_single_run_groups_by_its_own_start_time():
    cfg = compose_config(["experiment_name=x"])
    assert run_group(cfg, Path("outputs/x/2026-12-02_04-01-02")) == "x-2026-12-02_04-01-02"


def test_run_names_show_only_the_inference_settings_the_method_reads():
    pix2pix = compose_config(["model=pix2pix", "registration=one_point", "inference.t=7", "seed=3"])
    assert run_name(ablation_summary(pix2pix), method_card("pix2pix").reads) == "pix2pix one_point phantom_t1w seed=3"
    ddim = compose_config(["model=ddim_image", "inference.t=7"])
    assert "t=7" in run_name(ablation_summary(ddim), method_card("ddim_image").reads)


def test_a_run_whose_model_key_lightning_overwrote_still_reads_as_its_method():
    assert summary_from_wandb_config({"model": {"name": "cut", "lr": 2e-4}, "registration": "none"})["model"] == "cut"
    assert summary_from_wandb_config({"model": "cut"})["model"] == "cut"
