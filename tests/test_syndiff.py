"""SynDiff: the four-step schedule and posterior against closed forms, the seeded windowed sampler, and a
tiny unpaired run whose checkpoint loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mr2ct.core.config import InferenceConfig, LoaderConfig
from mr2ct.data.datamodule import SpineDataModule
from mr2ct.diffusion.large_steps import LargeStepSchedule, sample_large_steps
from mr2ct.inference.checkpoint import load_method
from mr2ct.inference.volume import translate_volume
from mr2ct.methods.syndiff import SynDiff, r1_penalty
from tests.conftest import TINY, compose_config, train_tiny

BETA_MIN, BETA_MAX, EPS, T = 0.1, 20.0, 1e-3, 4
TINY_SYNDIFF = [o for o in TINY if not o.startswith("model")] + [
    "model=syndiff",
    "model.net.channels=4",
    "model.net.mults=[1,2]",
    "model.net.attention_levels=[1]",
    "model.net.latent_dim=8",
    "model.net.style_dim=8",
    "model.extra.critic.channels=4",
    "model.extra.critic.mults=[2]",
    "model.extra.cycle.translator.channels=4",
    "model.extra.cycle.translator.blocks=1",
    "model.extra.cycle.critic.channels=4",
]


def vp_alpha_bar(s: float) -> float:
    """The VP SDE's signal fraction at time s: exp(-int_0^s beta(u) du), beta(u) = beta_min + u (beta_max - beta_min)."""
    return math.exp(-(BETA_MIN * s + 0.5 * s**2 * (BETA_MAX - BETA_MIN)))


def test_schedule_reads_the_vp_sde_at_four_evenly_spaced_times():
    schedule = LargeStepSchedule.vp(T, BETA_MIN, BETA_MAX, EPS)
    times = [EPS + (1 - EPS) * k / T for k in range(T + 1)]
    expected = [vp_alpha_bar(s) / vp_alpha_bar(times[0]) for s in times]
    np.testing.assert_allclose(schedule.alphas_cumprod.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(schedule.betas.numpy(), [0.47826, 0.84920, 0.95642, 0.98740], atol=5e-5)  # the reference's
    assert schedule.T == T and schedule.alphas_cumprod[0] == 1.0


def test_posterior_mean_and_variance_equal_their_closed_form():
    """Bayes on x_t ~ N(sqrt(abar_t) x0, 1 - abar_t) and x_{t+1} | x_t ~ N(sqrt(1 - beta) x_t, beta): precisions
    add, so var = 1 / (1 / (1 - abar_t) + (1 - beta) / beta) and mean = var (sqrt(abar_t) x0 / (1 - abar_t)
    + sqrt(1 - beta) x_{t+1} / beta); at t = 0 (abar_0 = 1) x_t is x0 itself."""
    schedule = LargeStepSchedule.vp(T, BETA_MIN, BETA_MAX, EPS)
    x0 = torch.tensor([0.3, -0.7, 0.9, 0.1], dtype=torch.float64).reshape(4, 1, 1, 1)
    x_next = torch.tensor([1.2, -0.4, 0.05, -2.0], dtype=torch.float64).reshape(4, 1, 1, 1)
    t = torch.arange(T)
    mean, variance = schedule.posterior(x0, x_next, t)
    for k in range(T):
        abar, beta = float(schedule.alphas_cumprod[k]), float(schedule.betas[k])
        if k == 0:
            expected_mean, expected_var = float(x0[k]), 0.0
        else:
            expected_var = 1 / (1 / (1 - abar) + (1 - beta) / beta)
            expected_mean = expected_var * (math.sqrt(abar) * float(x0[k]) / (1 - abar) + math.sqrt(1 - beta) * float(x_next[k]) / beta)
        assert float(mean[k]) == pytest.approx(expected_mean, rel=1e-10, abs=1e-12)
        assert float(variance[k]) == pytest.approx(expected_var, rel=1e-10, abs=1e-12)


def test_forward_pairs_have_the_schedules_marginals_and_correlation():
    torch.manual_seed(0)
    schedule = LargeStepSchedule.vp(T, BETA_MIN, BETA_MAX, EPS)
    n, x0 = 200_000, 0.6
    for k in range(T):
        t = torch.full((n,), k)
        x_t, x_next = schedule.q_pair(torch.full((n, 1), x0), t, torch.randn(n, 1), torch.randn(n, 1))
        abar, abar_next = float(schedule.alphas_cumprod[k]), float(schedule.alphas_cumprod[k + 1])
        assert x_next.mean().item() == pytest.approx(math.sqrt(abar_next) * x0, abs=0.01)
        assert x_next.var().item() == pytest.approx(1 - abar_next, abs=0.01)
        covariance = ((x_t - x_t.mean()) * (x_next - x_next.mean())).mean().item()
        assert covariance == pytest.approx(math.sqrt(1 - float(schedule.betas[k])) * (1 - abar), abs=0.01)


def test_sampler_walks_four_steps_with_a_fresh_latent_each_and_is_seeded():
    schedule = LargeStepSchedule.vp()
    calls = []

    def model_fn(x_next, t, cond, z):
        calls.append((t.tolist(), z.clone()))
        return torch.tanh(cond + 0.1 * z.mean(dim=1).view(-1, 1, 1, 1))

    cond = torch.linspace(-1, 1, 2 * 8 * 8).reshape(2, 1, 8, 8)
    first = sample_large_steps(model_fn, cond, schedule, latent_dim=5, generator=torch.Generator().manual_seed(0))
    assert [t for t, _ in calls] == [[3, 3], [2, 2], [1, 1], [0, 0]]
    latents = torch.stack([z for _, z in calls])
    assert latents.shape == (4, 2, 5) and len({tuple(z.flatten().tolist()) for z in latents}) == 4
    assert torch.equal(first, model_fn(None, torch.zeros(2), cond, latents[-1]))  # the last step returns x0
    again = sample_large_steps(model_fn, cond, schedule, 5, torch.Generator().manual_seed(0))
    other = sample_large_steps(model_fn, cond, schedule, 5, torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_r1_penalty_is_the_squared_input_gradient():
    weight = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    inputs = torch.randn(3, 1, 2, 2, requires_grad=True)
    score = (inputs[:, 0] * weight).sum(dim=(1, 2)) ** 2 / 2  # d score / d x = score' w = (w . x) w
    expected = ((inputs[:, 0] * weight).sum(dim=(1, 2)) ** 2 * weight.pow(2).sum()).mean()
    torch.testing.assert_close(r1_penalty(score, inputs), expected)


def tiny_method() -> SynDiff:
    return SynDiff(OmegaConf.to_container(compose_config(TINY_SYNDIFF).model, resolve=True, enum_to_str=True))


def test_translation_applies_the_ema_generator_in_windows_with_one_latent_per_image():
    method = tiny_method().eval()
    seen = []
    method.ema.module.register_forward_hook(lambda module, args, out: seen.append((args[0].shape, args[3].clone())))
    mr = torch.linspace(-1, 1, 2 * 40 * 56).reshape(2, 1, 40, 56)
    inference = InferenceConfig(window=32, batch_size=64)
    with torch.no_grad():
        first = method.translate(mr, inference, torch.Generator().manual_seed(3))
        again = method.translate(mr, inference, torch.Generator().manual_seed(3))
        other = method.translate(mr, inference, torch.Generator().manual_seed(4))
    assert first.shape == mr.shape and torch.equal(first, again) and not torch.equal(first, other)
    shapes, latents = zip(*seen[:4])  # the first translation: one call per step, all windows at once
    assert all(shape[1:] == (1, 32, 32) for shape in shapes) and shapes[0][0] == 2 * 2 * 2  # 2 images x 2 x 2 windows
    z = latents[0]
    assert torch.equal(z[:4], z[0].expand(4, -1)) and not torch.equal(z[0], z[4])  # one z per image, shared by its windows


@pytest.fixture(scope="module")
def syndiff_run(tmp_path_factory, cache_dir) -> Path:
    return train_tiny(tmp_path_factory.mktemp("syndiff") / "run", cache_dir, TINY_SYNDIFF)


def test_tiny_run_writes_results_with_an_unpaired_sampling_card(syndiff_run: Path):
    results = json.loads((syndiff_run / "results.json").read_text())
    assert results["status"] == "complete" and results["card"] == SynDiff.card.summary()
    assert results["card"]["paired"] is False and results["card"]["label"] == "SynDiff"
    assert results["card"]["reads"] == ["samples"]
    for block in results["datasets"].values():
        assert all(np.isfinite(v) for v in block["image_quality"]["aggregates"].values())


def test_checkpoint_loads_weights_only_and_translates_a_test_volume(syndiff_run: Path):
    results = json.loads((syndiff_run / "results.json").read_text())
    checkpoint = Path(results["checkpoint"])
    assert torch.load(checkpoint, weights_only=True)["state_dict"]
    method = load_method("syndiff", checkpoint)  # weights_only=True
    volume = SpineDataModule(results["prepared_dataset"], LoaderConfig()).test_volumes()[0]
    translation = translate_volume(method, volume.mr, InferenceConfig(batch_size=64), crop_size=32, seed=1)
    assert translation.mean.shape == volume.mr.shape and np.isfinite(translation.mean).all()
    assert np.abs(translation.mean).max() <= 1.0
