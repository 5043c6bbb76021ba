"""Every option of every config group composes and validates; misspelt keys and values fail early."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from mr2ct.core.cli import CONF_DIR, unknown_key_messages
from mr2ct.methods.card import SettingsError
from mr2ct.methods.registry import METHODS, method_class
from mr2ct.pipeline.run import RunLogger
from mr2ct.pipeline.stages import build_method
from mr2ct.train import train
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
    if group == "experiment":
        assert container["experiment_name"] == option  # its runs go to outputs/<experiment>/, not default/
    else:
        chosen = OmegaConf.load(CONF_DIR / group / f"{option}.yaml")
        for key in chosen:
            if key == "defaults" or OmegaConf.is_missing(chosen, key) or OmegaConf.is_config(chosen[key]):
                continue
            assert str(container[group][key]) == str(chosen[key]), f"{group}.{key} not taken from {option}.yaml"


def test_default_config_is_the_papers_best_method_and_registration():
    cfg = compose_config()
    assert cfg.model.name == "ddim_image" and method_class(cfg.model.name).prediction == "sample"
    assert cfg.registration.mode.value == "two_point"
    assert (cfg.inference.sampler.value, cfg.inference.t, cfg.inference.eta) == ("ddim", 20, 1.0)


def test_every_model_option_is_a_method_with_a_card_and_every_method_has_an_option():
    options = sorted(path.stem for path in (CONF_DIR / "model").glob("*.yaml"))
    assert options == sorted(METHODS)
    for name in options:
        cfg = compose_config([f"model={name}"])
        method = build_method(cfg)  # the option's settings fit the card's schemas
        assert method.card.name == cfg.model.name == name and method.card.label


def test_misspelt_model_setting_fails_before_any_data_is_prepared(tmp_path):
    """A typo Hydra lets through (appended with +, or in a yaml file) fails when the method is built, the
    first thing train does: the cache stays empty."""
    cache = tmp_path / "cache"
    cfg = compose_config(["+model.net.dimm=8", f"paths.cache_dir={cache}", f"paths.output_dir={tmp_path / 'run'}",
                          "logger=none"])
    with pytest.raises(SettingsError, match=r"model\.net: unknown key\(s\) \['dimm'\]; valid keys: \['dim', "):
        train(cfg, tmp_path / "run", RunLogger(cfg, tmp_path / "run", "train"))
    assert not cache.exists() or not any(cache.iterdir())
    with pytest.raises(SettingsError, match="model.extra: condition_dropout=1.5 must lie in"):
        build_method(compose_config(["model.extra.condition_dropout=1.5"]))
    with pytest.raises(SettingsError, match="model.loss.l1"):
        build_method(compose_config(["model=pix2pix", "model.loss.l1=much"]))


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
        "unknown config key 'inference.etaa'; valid keys under 'inference': batch_size, eta, overlap, sampler, samples, t, w, window",
        "unknown config key 'model.net.chanels'; valid keys under 'model.net': channels, dropout, levels",
    ]


def test_cli_misspelt_override_exits_with_valid_keys():
    result = subprocess.run(
        [sys.executable, "-m", "mr2ct.train", "inference.etaa=1"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "valid keys under 'inference': batch_size, eta" in result.stderr
