"""The schedule and samplers against independent references: closed forms, Bayes' rule and diffusers."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor

from mr2ct.diffusion import (
    NULL_CONDITION_VALUE,
    NoiseSchedule,
    cosine_alphas_cumprod,
    ddim_step,
    ddim_timesteps,
    ddpm_posterior,
    ddpm_step,
    guided_prediction,
    null_condition_like,
    q_sample,
    sample,
    x0_and_eps,
)

T = 1000
SHAPE = (2, 1, 6, 5)


def _with_our_schedule(scheduler: DDIMScheduler | DDPMScheduler) -> NoiseSchedule:
    """Give diffusers our float64 cosine schedule, so step comparisons test the update maths alone.

    diffusers keeps abar in float32 and forms beta_t = 1 - abar_t / abar_prev in float32, which near t = 0
    (beta ~ 4e-5) carries ~1e-3 relative error; chained over many steps that alone moves samples by ~1e-4.
    Our float64 schedule equals diffusers' to float32 precision (test_cosine_schedule_matches_diffusers).
    """
    schedule = NoiseSchedule.cosine(T)
    scheduler.alphas_cumprod = schedule.alphas_cumprod.clone()
    scheduler.final_alpha_cumprod = scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    return schedule


def _toy_model(prediction: str, pattern: Tensor) -> Callable:
    """A deterministic stand-in network whose x0 predictions overshoot [-1, 1], so clamping matters."""
    if prediction == "sample":
        return lambda x, t: 1.5 * torch.tanh(x) + 0.3 * pattern
    return lambda x, t: 0.7 * x + 0.5 * pattern



def test_cosine_schedule_matches_its_formula() -> None:
    abar = cosine_alphas_cumprod(T, s=0.008)
    f = [math.cos((u / T + 0.008) / 1.008 * math.pi / 2) ** 2 for u in range(T + 1)]
    expected = torch.tensor([f[t + 1] / f[0] for t in range(T)], dtype=torch.float64)
    # Only the last beta (1 - f(T)/f(T-1) = 1) reaches the 0.999 cap.
    torch.testing.assert_close(abar[:-1], expected[:-1], rtol=1e-12, atol=1e-15)
    assert abar[-1].item() == pytest.approx(abar[-2].item() * (1 - 0.999), rel=1e-12)
    assert abar.shape == (T,) and torch.all(abar[1:] < abar[:-1])


def test_cosine_schedule_matches_diffusers_squaredcos_cap_v2() -> None:
    reference = DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    ours = NoiseSchedule.cosine(T)
    torch.testing.assert_close(ours.betas.float(), reference.betas, rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod.float(), reference.alphas_cumprod, rtol=0, atol=1e-6)
    assert ours.T == T


def test_q_sample_matches_diffusers_add_noise_per_sample_timesteps() -> None:
    reference = DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    schedule = _with_our_schedule(reference)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    t = torch.tensor([3, 870])
    expected = reference.add_noise(x0, noise, t)
    torch.testing.assert_close(schedule.q_sample(x0, t, noise), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(q_sample(x0, t, noise, schedule.alphas_cumprod), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("t", [0, 1, 500, 998])
def test_x0_and_eps_conversions_invert_the_forward_process(t: int) -> None:
    """x_t built from (x0, eps) gives back exactly that eps from x0 and that x0 from eps (no sign slip)."""
    schedule = NoiseSchedule.cosine(T)
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.rand(SHAPE, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(SHAPE, generator=g, dtype=torch.float64)
    x_t = schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(schedule.predict_eps_from_x0(x_t, t, x0), eps, rtol=0, atol=1e-8)
    torch.testing.assert_close(schedule.predict_x0_from_eps(x_t, t, eps), x0, rtol=0, atol=1e-8)


def test_image_mode_and_noise_mode_take_the_same_step() -> None:
    """An x0 prediction and the eps derived from it move x_t identically, in DDIM and DDPM."""
    schedule = NoiseSchedule.cosine(T)
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    x0 = torch.rand(SHAPE, generator=g, dtype=torch.float64) * 1.8 - 0.9
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    eps = schedule.predict_eps_from_x0(x_t, 600, x0)
    for eta in (0.0, 1.0):
        from_x0 = ddim_step(x0, 600, 550, x_t, schedule, eta, "sample", noise)
        from_eps = ddim_step(eps, 600, 550, x_t, schedule, eta, "epsilon", noise)
        torch.testing.assert_close(from_x0, from_eps, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        ddpm_step(x0, 600, 599, x_t, schedule, "sample", noise),
        ddpm_step(eps, 600, 599, x_t, schedule, "epsilon", noise),
        rtol=0,
        atol=1e-10,
    )
    torch.testing.assert_close(x0_and_eps(eps, x_t, 600, schedule, "epsilon", clip_x0=False)[0], x0, rtol=0, atol=1e-10)


def test_ddim_timesteps_are_the_reference_codes_leading_spacing() -> None:
    assert ddim_timesteps(1000, 20) == list(range(0, 1000, 1000 // 20))[::-1]
    assert ddim_timesteps(1000, 20)[:2] == [950, 900] and ddim_timesteps(1000, 20)[-1] == 0
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="sampling steps"):
            ddim_timesteps(1000, bad)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_diffusers_over_a_full_sequence(prediction: str, eta: float) -> None:
    reference = DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="leading",
        prediction_type=prediction,
    )
    reference.set_timesteps(20)
    timesteps = ddim_timesteps(T, 20)
    assert reference.timesteps.tolist() == timesteps
    schedule = _with_our_schedule(reference)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(SHAPE, generator=g)
    model = _toy_model(prediction, torch.randn(SHAPE, generator=g))
    x_ref = x.clone()
    clamped_somewhere = False
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        noise = torch.randn(SHAPE, generator=g)
        x, x0 = ddim_step(model(x, t), t, t_prev, x, schedule, eta, prediction, noise)
        out = reference.step(model(x_ref, t), t, x_ref, eta=eta, use_clipped_model_output=True, variance_noise=noise)
        x_ref = out.prev_sample
        torch.testing.assert_close(x0, out.pred_original_sample, rtol=0, atol=1e-5)
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-5)
        clamped_somewhere |= bool((x0.abs() == 1).any())
    assert clamped_somewhere
    torch.testing.assert_close(x, x0)  # the last step lands on x0


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sample_matches_a_diffusers_sampling_loop(eta: float) -> None:
    """sample() = diffusers' DDIM loop started from the same x_T, with noise drawn in the documented order."""
    reference = DDIMScheduler(
        num_train_timesteps=T, beta_schedule="squaredcos_cap_v2", clip_sample=True, prediction_type="sample"
    )
    reference.set_timesteps(10)
    schedule = _with_our_schedule(reference)
    cond = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))

    def model_fn(x: Tensor, t: Tensor, c: Tensor) -> Tensor:
        return torch.tanh(0.8 * x + c) * (1 + t[:, None, None, None] / T)

    ours = sample(model_fn, cond, schedule, "sample", steps=10, eta=eta, generator=torch.Generator().manual_seed(5))

    g = torch.Generator().manual_seed(5)
    x = torch.randn(SHAPE, generator=g)
    for i, t in enumerate(reference.timesteps.tolist()):
        last = i == len(reference.timesteps) - 1
        noise = torch.zeros(SHAPE) if last or eta == 0 else torch.randn(SHAPE, generator=g)
        output = model_fn(x, torch.full((SHAPE[0],), t), cond)
        x = reference.step(output, t, x, eta=eta, use_clipped_model_output=True, variance_noise=noise).prev_sample
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("t, t_prev", [(1, 0), (400, 399), (999, 998), (700, 650), (0, -1)])
def test_ddpm_posterior_equals_bayes_rule(t: int, t_prev: int) -> None:
    """Mean and variance equal the product of q(x_t | x_prev) and q(x_prev | x0), Gaussians in x_prev."""
    schedule = NoiseSchedule.cosine(T)
    g = torch.Generator().manual_seed(t)
    x0, x_t = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g, dtype=torch.float64)
    mean, variance = ddpm_posterior(x0, x_t, t, t_prev, schedule)
    abar_t = schedule.alphas_cumprod[t].item()
    abar_prev = schedule.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
    alpha = abar_t / abar_prev
    if t_prev < 0:  # the prior on x_prev is a point mass at x0
        assert variance == 0.0
        torch.testing.assert_close(mean, x0, rtol=0, atol=1e-12)
        return
    precision = 1 / (1 - abar_prev) + alpha / (1 - alpha)
    expected_mean = (math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(alpha) * x_t / (1 - alpha)) / precision
    assert variance == pytest.approx(1 / precision, rel=1e-9)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-12)
    if t_prev == t - 1:
        assert schedule.betas[t].item() == pytest.approx(1 - alpha, rel=1e-9)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_ddpm_step_matches_diffusers_fixed_small_over_all_steps(prediction: str) -> None:
    reference = DDPMScheduler(
        num_train_timesteps=T,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        variance_type="fixed_small",
        prediction_type=prediction,
    )
    schedule = _with_our_schedule(reference)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)  # float64: 1000 chained float32 steps drift ~5e-6
    model = _toy_model(prediction, torch.randn(SHAPE, generator=g, dtype=torch.float64))
    x_ref = x.clone()
    ours_rng, reference_rng = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for t in range(T - 1, -1, -1):
        noise = torch.randn(SHAPE, generator=ours_rng, dtype=torch.float64) if t > 0 else None
        x, x0 = ddpm_step(model(x, t), t, t - 1, x, schedule, prediction, noise)
        out = reference.step(model(x_ref, t), t, x_ref, generator=reference_rng)
        x_ref = out.prev_sample
        torch.testing.assert_close(x0, out.pred_original_sample, rtol=0, atol=1e-10)
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-10)


def test_ddim_at_eta_one_is_the_ddpm_posterior_draw() -> None:
    """With x0 clamped and eps rederived, DDIM(eta=1) and DDPM are the same Gaussian, strided or not."""
    schedule = NoiseSchedule.cosine(T)
    g = torch.Generator().manual_seed(8)
    x_t, out, noise = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(3))
    for t, t_prev in [(500, 499), (950, 900), (50, 0), (0, -1)]:
        torch.testing.assert_close(
            ddim_step(out, t, t_prev, x_t, schedule, 1.0, "epsilon", noise),
            ddpm_step(out, t, t_prev, x_t, schedule, "epsilon", noise),
            rtol=0,
            atol=1e-9,
        )


class _CountingNet:
    """Records its calls; the output depends on x_t, t and the condition so guidance can be checked."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        self.calls += 1
        return 0.5 * x + torch.sin(cond) + t[:, None, None, None].float() / T


def test_guidance_w0_is_one_conditional_call_and_w_mixes_outputs() -> None:
    g = torch.Generator().manual_seed(9)
    x, cond = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    null = null_condition_like(cond)
    t = torch.tensor([10, 700])
    net = _CountingNet()
    conditional, unconditional = net(x, t, cond), net(x, t, null)
    net.calls = 0
    torch.testing.assert_close(guided_prediction(net, x, t, cond, None, 0.0), conditional)
    assert net.calls == 1
    torch.testing.assert_close(guided_prediction(net, x, t, cond, null, 1.0), 2 * conditional - unconditional)
    torch.testing.assert_close(guided_prediction(net, x, t, cond, null, 2.0), 3 * conditional - 2 * unconditional)
    assert torch.all(null == NULL_CONDITION_VALUE) and NULL_CONDITION_VALUE == -1.0
    with pytest.raises(ValueError, match="null condition"):
        guided_prediction(net, x, t, cond, None, 1.0)


def test_guided_eps_gives_the_guided_x0() -> None:
    """Guiding the eps output guides x0 the same way: x0(guided) = (1 + w) x0(cond) - w x0(uncond)."""
    schedule = NoiseSchedule.cosine(T)
    g = torch.Generator().manual_seed(10)
    x_t, eps_c, eps_u = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(3))
    w, t = 1.5, 300
    guided = (1 + w) * eps_c - w * eps_u

    def x0(eps: Tensor) -> Tensor:
        return x0_and_eps(eps, x_t, t, schedule, "epsilon", clip_x0=False)[0]

    torch.testing.assert_close(x0(guided), (1 + w) * x0(eps_c) - w * x0(eps_u), rtol=0, atol=1e-9)


def _tiny_net(dims: int) -> Callable:
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(2, 1, 3, padding=1)
    torch.nn.init.normal_(conv.weight, std=0.3, generator=torch.Generator().manual_seed(11))

    def model_fn(x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        scale = (1 + t.float() / T).reshape(-1, *([1] * (x.ndim - 1)))
        return torch.tanh(conv(torch.cat([x, cond], dim=1)) * scale)

    return model_fn


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 1, 4, 6, 8)])
@pytest.mark.parametrize("sampler, w", [("ddim", 0.0), ("ddim", 1.0), ("ddpm", 0.5)])
def test_sample_runs_on_2d_and_3d_tensors(shape: tuple[int, ...], sampler: str, w: float) -> None:
    schedule = NoiseSchedule.cosine(T)
    cond = torch.rand(shape, generator=torch.Generator().manual_seed(12)) * 2 - 1
    out = sample(
        _tiny_net(len(shape) - 2),
        cond,
        schedule,
        "sample",
        sampler=sampler,
        steps=8,
        w=w,
        null_cond=null_condition_like(cond),
        generator=torch.Generator().manual_seed(13),
    )
    assert out.shape == shape and out.dtype == cond.dtype
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


def test_seeded_sampling_is_reproducible_and_seed_dependent_at_eta_one() -> None:
    schedule = NoiseSchedule.cosine(T)
    cond = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(14)) * 2 - 1
    net = _tiny_net(2)

    def run(seed: int, eta: float = 1.0) -> Tensor:
        return sample(net, cond, schedule, "epsilon", steps=6, eta=eta, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(run(0), run(0), rtol=0, atol=0)
    assert (run(0) - run(1)).abs().max() > 1e-3
    torch.testing.assert_close(run(2, eta=0.0), run(2, eta=0.0), rtol=0, atol=0)


def test_ddpm_sampler_equals_ddim_at_eta_one_through_sample() -> None:
    schedule = NoiseSchedule.cosine(T)
    cond = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(15)) * 2 - 1
    net = _tiny_net(2)
    runs = [
        sample(net, cond, schedule, "sample", sampler=name, steps=25, eta=1.0, generator=torch.Generator().manual_seed(3))
        for name in ("ddim", "ddpm")
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-5)


def test_bad_arguments_fail_clearly() -> None:
    schedule = NoiseSchedule.cosine(T)
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="prediction must be one of"):
        ddim_step(x, 10, 5, x, schedule, 0.0, "v_prediction")
    with pytest.raises(ValueError, match="eta must lie in"):
        ddim_step(x, 10, 5, x, schedule, 1.5, "sample")
    with pytest.raises(ValueError, match="pass a noise tensor"):
        ddim_step(x, 10, 5, x, schedule, 1.0, "sample")
    with pytest.raises(ValueError, match="t_prev < t"):
        ddpm_step(x, 10, 10, x, schedule, "sample")
    with pytest.raises(ValueError, match="model output shape"):
        ddim_step(torch.zeros(2, 2, 6, 5), 10, 5, x, schedule, 0.0, "sample")
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample(_tiny_net(2), torch.zeros(1, 1, 4, 4), schedule, "sample", sampler="euler")
    with pytest.raises(ValueError, match="same length"):
        NoiseSchedule(betas=torch.zeros(3), alphas_cumprod=torch.zeros(4))
