"""CUT: PatchNCE against its formula, the feature layers, and tiny unpaired runs whose checkpoints load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from mr2ct.core.config import InferenceConfig, LoaderConfig
from mr2ct.data.datamodule import SpineDataModule
from mr2ct.inference.checkpoint import load_method
from mr2ct.inference.volume import translate_volume
from mr2ct.methods.cut import CUT, CUTSAUNet, PatchNCE, patch_nce_loss, sample_patches
from mr2ct.pipeline.run import run_task
from mr2ct.train import train
from tests.conftest import TINY, compose_config

TAU = 0.07
TINY_DATA = [o for o in TINY if not o.startswith("model")]
TINY_CUT = {
    "cut": ["model=cut", "model.net.channels=4", "model.net.blocks=2", "model.net.nce_layers=[0,4,8]"],
    "cut_sa_unet": ["model=cut_sa_unet", "model.net.dim=8", "model.net.dim_mults=[1,2]", "model.net.heads=1",
                    "model.net.dim_head=8"],
}
TINY_NCE = ["model.loss.patches=16", "model.loss.projection=8", "model.extra.discriminator.channels=4"]


def direct_patch_nce(query: torch.Tensor, key: torch.Tensor, tau: float) -> float:
    """-log(exp(q_i.k_i / tau) / sum_j exp(q_i.k_j / tau)), j over the patches of the same image, averaged."""
    losses = []
    for q_image, k_image in zip(query.tolist(), key.tolist()):
        for i, q in enumerate(q_image):
            scores = [sum(a * b for a, b in zip(q, k)) / tau for k in k_image]
            losses.append(-scores[i] + math.log(sum(math.exp(s) for s in scores)))
    return sum(losses) / len(losses)


def unit(*vectors) -> torch.Tensor:
    return F.normalize(torch.tensor(vectors, dtype=torch.float64), dim=-1)


def test_patch_nce_equals_its_formula_on_hand_made_features():
    # image 0: three patches whose positives are their own axis; image 1: two patches, one key turned away
    query = [unit([1, 0, 0], [0, 1, 0], [0, 0, 1]), unit([1, 1, 0], [0, 1, 1], [1, 0, 1])]
    key = [unit([1, 0.2, 0], [0, 1, 0.3], [0.1, 0, 1]), unit([1, 1, 0.1], [0, -1, 1], [1, 0, 1])]
    query, key = torch.stack(query), torch.stack(key)
    loss = patch_nce_loss(query, key, TAU)
    assert loss.item() == pytest.approx(direct_patch_nce(query, key, TAU), rel=1e-9)
    # one hand check: an orthonormal query against its own keys: each positive scores 1/tau, negatives 0
    eye = torch.eye(3, dtype=torch.float64)[None]
    assert patch_nce_loss(eye, eye, TAU).item() == pytest.approx(-1 / TAU + math.log(math.exp(1 / TAU) + 2), rel=1e-9)
    assert patch_nce_loss(eye, eye, 1.0).item() == pytest.approx(-1 + math.log(math.e + 2), rel=1e-9)


def test_patch_nce_is_lower_for_matching_than_shuffled_features_and_keys_are_targets():
    torch.manual_seed(0)
    features = F.normalize(torch.randn(2, 64, 16), dim=-1)
    noisy = F.normalize(features + 0.3 * torch.randn_like(features), dim=-1).requires_grad_()
    shuffled = noisy[:, torch.randperm(64)]
    assert patch_nce_loss(features, noisy, TAU) < patch_nce_loss(features, shuffled, TAU) - 1.0
    query = features.clone().requires_grad_()
    patch_nce_loss(query, noisy, TAU).backward()
    assert query.grad.abs().sum() > 0 and noisy.grad is None


def test_patch_nce_heads_exist_before_any_batch_and_sample_the_same_positions():
    nce = PatchNCE([1, 8], patches=5, temperature=TAU, width=4)
    assert [tuple(h.mlp[0].weight.shape) for h in nce.heads] == [(4, 1), (4, 8)]
    features = torch.arange(2 * 8 * 6 * 6, dtype=torch.float32).reshape(2, 8, 6, 6)
    ids = torch.tensor([0, 7, 35])
    patches = sample_patches(features, ids)
    assert patches.shape == (2, 3, 8) and torch.equal(patches[1, 1], features[1, :, 1, 1])
    torch.manual_seed(0)
    nce = PatchNCE([8, 8], patches=16, temperature=TAU, width=16)
    inputs = [torch.randn(2, 8, 6, 6) for _ in range(2)]
    assert nce(inputs, inputs) < nce([f.flip(-1) for f in inputs], inputs)  # same positions read on both sides


@pytest.mark.parametrize("method", [CUT, CUTSAUNet])
def test_a_fresh_method_loads_a_trained_state_strictly(method):
    """The projection heads are built with the method, so a checkpoint's state fits a fresh one."""
    model = compose_config([*TINY_CUT[method.card.name], *TINY_NCE]).model
    cfg = OmegaConf.to_container(model, resolve=True, enum_to_str=True)
    trained = method(cfg)
    assert any(key.startswith("patch_nce.heads.") for key in trained.state_dict())
    method(cfg).load_state_dict(trained.state_dict(), strict=True)


def test_sa_unet_features_follow_every_down_convolution_and_the_first_up_convolution():
    cfg = {"name": "cut_sa_unet", "lr": 2e-4, "betas": [0.5, 0.999],
           "net": {"dim": 8, "dim_mults": [1, 2, 4], "heads": 1, "dim_head": 8}}
    method = CUTSAUNet(cfg)
    assert method.feature_widths() == [8, 16, 16]  # two down-convs (8, 16 channels), then the up-conv to 16
    assert [type(layer).__name__ for layer in method.feature_layers] == ["Conv2d", "Conv2d", "ConvTranspose2d"]


def test_one_step_on_an_unpaired_batch_trains_generator_heads_and_discriminator():
    module = CUT(OmegaConf.to_container(compose_config([*TINY_CUT["cut"], *TINY_NCE]).model, resolve=True))
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    batches = [{"mr": torch.rand(2, 1, 32, 32) * 2 - 1, "ct": torch.rand(2, 1, 32, 32) * 2 - 1}]
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert all(torch.isfinite(v) for v in trainer.logged_metrics.values())
    for part in ("generator.", "patch_nce.heads.", "discriminator."):
        assert any(not torch.equal(p, before[name]) for name, p in module.named_parameters() if name.startswith(part))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, cache_dir) -> dict[str, Path]:
    """A tiny training run of each CUT variant, by method name."""
    runs = {}
    for name, overrides in TINY_CUT.items():
        runs[name] = tmp_path_factory.mktemp(name) / "run"
        cfg = compose_config([*TINY_DATA, *overrides, *TINY_NCE, f"paths.cache_dir={cache_dir}",
                              f"paths.output_dir={runs[name]}", "logger=none"])
        run_task(cfg, "train", train)
    return runs


@pytest.mark.parametrize("method", [CUT, CUTSAUNet])
def test_tiny_run_writes_results_with_an_unpaired_card(tiny_runs: dict[str, Path], method):
    results = json.loads((tiny_runs[method.card.name] / "results.json").read_text())
    assert results["status"] == "complete" and results["card"] == method.card.summary()
    assert results["card"]["paired"] is False and results["card"]["reads"] == []
    for block in results["datasets"].values():
        assert all(np.isfinite(v) for v in block["image_quality"]["aggregates"].values())


def test_checkpoint_loads_weights_only_and_translates_a_test_volume(tiny_runs: dict[str, Path]):
    results = json.loads((tiny_runs["cut"] / "results.json").read_text())
    checkpoint = Path(results["checkpoint"])
    assert torch.load(checkpoint, weights_only=True)["state_dict"]
    method = load_method("cut", checkpoint)  # weights_only=True
    volume = SpineDataModule(results["prepared_dataset"], LoaderConfig()).test_volumes()[0]
    translation = translate_volume(method, volume.mr, InferenceConfig(batch_size=64), crop_size=32)
    assert translation.mean.shape == volume.mr.shape and np.isfinite(translation.mean).all()
    assert np.abs(translation.mean).max() <= 1.0
