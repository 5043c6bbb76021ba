"""Every option of every config group composes and validates; misspelt keys and values fail early."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from mr2ct.core.cli import CONF_DIR, unknown_key_messages
from tests.conftest import compose_config

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_resolves(group, option):
    overrides = [f"{group}={option}"]
    if group == "data" and option == "nifti":
        overrides.append("data.root=/some/subject/root")
    cfg = compose_config(overrides + ["paths.output_dir=/tmp/out"])
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert container["paths"]["output_dir"] == "/tmp/out"
    if group != "experiment":
        chosen = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
        for key in chosen:
            if key == "defaults" or OmegaConf.is_missing(chosen, key) or OmegaConf.is_config(chosen[key]):
                continue
            assert str(container[group][key]) == str(chosen[key]), f"{group}.{key} not taken from {option}.yaml"


def test_default_config_is_the_papers_best_method_and_registration():
    cfg = compose_config()
    assert cfg.model.name == "ddim_image" and cfg.model.extra.prediction == "sample"
    assert cfg.registration.mode.value == "two_point"
    assert (cfg.inference.sampler.value, cfg.inference.t, cfg.inference.eta) == ("ddim", 20, 1.0)
    assert cfg.preprocess.dims == cfg.model.dims


def test_misspelt_key_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="etaa"):
        compose_config(["inference.etaa=1"])


def test_invalid_enum_value_lists_choices():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["inference.sampler=ddimm"])
    message = str(error.value) + str(error.value.__cause__)
    assert "ddim" in message and "ddpm" in message


def test_unknown_group_option_lists_available():
    with pytest.raises(Exception) as error:
        compose_config(["registration=three_point"])
    assert "two_point" in str(error.value) and "one_point" in str(error.value)


def test_misspelt_key_message_lists_the_valid_keys():
    messages = unknown_key_messages(["model=pix2pix", "inference.etaa=1", "loader.crop_size=32", "model.net.chanels=8"])
    assert messages == [
        "unknown config key 'inference.etaa'; valid keys under 'inference': batch_size, eta, overlap, sampler, samples, t, w",
        "unknown config key 'model.net.chanels'; valid keys under 'model.net': channels, dropout, kind, levels",
    ]


def test_cli_misspelt_override_exits_with_valid_keys():
    result = subprocess.run(
        [sys.executable, "-m", "mr2ct.train", "inference.etaa=1"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "valid keys under 'inference': batch_size, eta" in result.stderr
