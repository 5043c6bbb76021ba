"""DDIM and DDPM sampling with classifier-free guidance, for 2D and 3D tensors alike.

A step is a pure function of (model output, t, t_prev, x_t) as in diffusers' and MONAI's schedulers; only
``sample`` calls the network. Conventions:

- ``prediction="epsilon"`` (noise mode) or ``"sample"`` (image mode, the network predicts x0). Either way the
  output is converted to the pair (x0, eps) with the schedule's exact inverses, x0 is clamped to [-1, 1]
  (the paper clamps) and eps is then recomputed from the clamped x0 (diffusers'
  ``use_clipped_model_output=True``), so both modes run the same update.
- Timesteps are diffusers' "leading" spacing, which is also the reference code's ``range(0, T, T // steps)``
  reversed: T=1000, steps=20 gives 950, 900, ..., 0, and the last step goes to the clean level
  (t_prev = -1, abar = 1; diffusers' ``set_alpha_to_one=True``), so it returns the clamped x0.
- Guidance acts on the network output: out = (1 + w) out(cond) - w out(null_cond). Because x0 and eps are
  affine in the output with matching x_t terms, this is guidance of x0 and eps at once, in both modes
  (the reference code guided eps only and left x0 unguided).
- The null condition is an explicit tensor from the caller. mr2ct uses ``NULL_CONDITION_VALUE`` = -1, black
  in model space, as the paper says ("a black image"); the reference code used 0 (mid-gray).
- All noise comes from the caller's ``torch.Generator`` in a fixed order (x_T first, then one draw per step
  that adds noise), so eta = 1 is stochastic yet reproducible.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mr2ct.core.values import BACKGROUND, MODEL_MAX, MODEL_MIN
from mr2ct.diffusion.schedule import NoiseSchedule

Prediction = Literal["epsilon", "sample"]
SamplerName = Literal["ddim", "ddpm"]
ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]

NULL_CONDITION_VALUE = BACKGROUND


def null_condition_like(cond: Tensor) -> Tensor:
    """The paper's "black image" null condition: every condition voxel at -1 (black in model space)."""
    return torch.full_like(cond, NULL_CONDITION_VALUE)


def guided_prediction(
    model_fn: ModelFn, x_t: Tensor, t: Tensor, cond: Tensor, null_cond: Tensor | None, w: float
) -> Tensor:
    """Classifier-free guidance on the network output; w = 0 is one conditional call.

    For w != 0 the conditional and unconditional passes share one batched call of size 2B.
    """
    if w == 0:
        return model_fn(x_t, t, cond)
    if null_cond is None:
        raise ValueError(f"guidance w={w} needs a null condition tensor (e.g. null_condition_like(cond))")
    if null_cond.shape != cond.shape:
        raise ValueError(f"null condition shape {tuple(null_cond.shape)} differs from condition shape {tuple(cond.shape)}")
    out = model_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null_cond]))
    out_cond, out_uncond = out.chunk(2)
    return (1 + w) * out_cond - w * out_uncond


def x0_and_eps(
    model_output: Tensor, x_t: Tensor, t: int, schedule: NoiseSchedule, prediction: Prediction, clip_x0: bool = True
) -> tuple[Tensor, Tensor]:
    """The network output as the consistent pair (x0, eps); with clip_x0, eps is rederived from clamped x0."""
    if model_output.shape != x_t.shape:
        raise ValueError(f"model output shape {tuple(model_output.shape)} differs from x_t shape {tuple(x_t.shape)}")
    if prediction == "epsilon":
        x0, eps = schedule.predict_x0_from_eps(x_t, t, model_output), model_output
    elif prediction == "sample":
        x0, eps = model_output, None
    else:
        raise ValueError(f"prediction must be one of {get_args(Prediction)}, got {prediction!r}")
    if clip_x0:
        x0, eps = x0.clamp(MODEL_MIN, MODEL_MAX), None
    if eps is None:
        eps = schedule.predict_eps_from_x0(x_t, t, x0)
    return x0, eps


def _check_step(t: int, t_prev: int, schedule: NoiseSchedule) -> None:
    if not 0 <= t < schedule.T or t_prev >= t:
        raise ValueError(f"a step needs 0 <= t_prev < t < T or t_prev < 0, got t={t}, t_prev={t_prev}, T={schedule.T}")


def _add_noise(mean: Tensor, std: float, noise: Tensor | None) -> Tensor:
    if std == 0:
        return mean
    if noise is None:
        raise ValueError(f"this step adds noise with std {std:.3g}: pass a noise tensor")
    if noise.shape != mean.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from sample shape {tuple(mean.shape)}")
    return mean + std * noise


def ddim_step(
    model_output: Tensor,
    t: int,
    t_prev: int,
    x_t: Tensor,
    schedule: NoiseSchedule,
    eta: float,
    prediction: Prediction,
    noise: Tensor | None = None,
    clip_x0: bool = True,
) -> tuple[Tensor, Tensor]:
    """One DDIM update x_t -> x_{t_prev} (Song et al. eq. 12); returns (x_prev, x0_pred).

    sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev);
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma noise. t_prev < 0 means the
    clean level (abar_prev = 1), where sigma = 0 and x_prev = x0.
    """
    _check_step(t, t_prev, schedule)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM eta must lie in [0, 1], got {eta}")
    x0, eps = x0_and_eps(model_output, x_t, t, schedule, prediction, clip_x0)
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(max(t_prev, -1))
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
    direction = math.sqrt(max(1 - abar_prev - sigma**2, 0.0))
    mean = math.sqrt(abar_prev) * x0 + direction * eps
    return _add_noise(mean, sigma, noise), x0


def ddpm_posterior(
    x0: Tensor, x_t: Tensor, t: int, t_prev: int, schedule: NoiseSchedule
) -> tuple[Tensor, float]:
    """Mean and variance of q(x_{t_prev} | x_t, x0) (Ho et al. eq. 7), with beta = 1 - abar_t / abar_prev.

    For t_prev = t - 1 beta is the schedule's beta_t; a larger gap gives the strided posterior (as
    diffusers' DDPMScheduler with fewer inference steps).
    """
    _check_step(t, t_prev, schedule)
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(max(t_prev, -1))
    alpha = abar_t / abar_prev
    beta = 1 - alpha
    coef_x0 = math.sqrt(abar_prev) * beta / (1 - abar_t)
    coef_xt = math.sqrt(alpha) * (1 - abar_prev) / (1 - abar_t)
    variance = (1 - abar_prev) / (1 - abar_t) * beta
    return coef_x0 * x0 + coef_xt * x_t, variance


def ddpm_step(
    model_output: Tensor,
    t: int,
    t_prev: int,
    x_t: Tensor,
    schedule: NoiseSchedule,
    prediction: Prediction,
    noise: Tensor | None = None,
    clip_x0: bool = True,
) -> tuple[Tensor, Tensor]:
    """One ancestral DDPM update: a draw from q(x_{t_prev} | x_t, x0_pred) ("fixed_small" variance)."""
    x0, _ = x0_and_eps(model_output, x_t, t, schedule, prediction, clip_x0)
    mean, variance = ddpm_posterior(x0, x_t, t, t_prev, schedule)
    return _add_noise(mean, math.sqrt(variance), noise), x0


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """Descending "leading" timesteps: (steps-1)*k, ..., k, 0 with k = T // steps (the reference code's)."""
    if not 1 <= steps <= T:
        raise ValueError(f"number of sampling steps must lie in [1, T={T}], got {steps}")
    stride = T // steps
    return [i * stride for i in reversed(range(steps))]


@torch.no_grad()
def sample(
    model_fn: ModelFn,
    cond: Tensor,
    schedule: NoiseSchedule,
    prediction: Prediction,
    sampler: SamplerName = "ddim",
    steps: int = 20,
    eta: float = 1.0,
    w: float = 0.0,
    null_cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    out_channels: int = 1,
) -> Tensor:
    """Translate ``cond`` (B, C, *spatial) into x0 of shape (B, out_channels, *spatial), any spatial rank.

    model_fn(x_t, t_batch, cond) returns the network output for x_t (t_batch is a (B,) long tensor).
    DDIM uses ``eta``; DDPM ignores it (its posterior draw equals DDIM at eta = 1). The paper's DDPM walks
    all T steps: pass steps=schedule.T; fewer steps give the strided posterior.
    """
    if sampler not in get_args(SamplerName):
        raise ValueError(f"sampler must be one of {get_args(SamplerName)}, got {sampler!r}")
    if generator is not None and generator.device.type != cond.device.type:
        raise ValueError(f"generator is on {generator.device} but the condition is on {cond.device}")
    timesteps = ddim_timesteps(schedule.T, steps)
    shape = (cond.shape[0], out_channels, *cond.shape[2:])

    def draw() -> Tensor:
        return torch.randn(shape, generator=generator, device=cond.device, dtype=cond.dtype)

    x = draw()
    for i, t in enumerate(tqdm(timesteps, desc=f"{sampler} sampling", disable=not progress, leave=False)):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((shape[0],), t, device=cond.device, dtype=torch.long)
        out = guided_prediction(model_fn, x, t_batch, cond, null_cond, w)
        adds_noise = t_prev >= 0 and (sampler == "ddpm" or eta > 0)
        noise = draw() if adds_noise else None
        if sampler == "ddim":
            x, _ = ddim_step(out, t, t_prev, x, schedule, eta, prediction, noise)
        else:
            x, _ = ddpm_step(out, t, t_prev, x, schedule, prediction, noise)
    return x  # the last step lands on the clean level, so x is the final clamped x0
