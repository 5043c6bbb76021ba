"""Diffusion in a few large steps (Xiao et al.'s denoising diffusion GAN, as SynDiff uses it): the schedule,
the forward pairs and the posterior q(x_t | x_{t+1}, x_0), and the sampler.

The VP SDE (beta(s) = beta_min + s (beta_max - beta_min)) is read at T + 1 evenly spaced times
s_k = eps + (1 - eps) k / T, which gives abar_k = exp(-s_k^2 (beta_max - beta_min) / 2 - s_k beta_min),
normalised so level 0 is the clean image (abar_0 = 1); level T is nearly pure noise (T = 4: abar_4 = 4e-5).
Step k -> k + 1 scales by sqrt(1 - beta_k) and adds noise of variance beta_k = 1 - abar_{k+1} / abar_k.
With so few steps the true reverse step is far from Gaussian, which is why a GAN learns it: the generator
predicts x_0, and x_t is drawn from the Gaussian posterior q(x_t | x_{t+1}, x_0).

Timesteps: t in 0..T-1 names the step from level t + 1 back to level t (SynDiff's convention); tensors of
shape (B,) give each batch element its own step. Coefficients are float64 and cast where applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

# model_fn(x_{t+1}, t, condition, z) -> predicted x_0
LatentModelFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def _per_sample(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast against ``like``."""
    if t.shape != (like.shape[0],):
        raise ValueError(f"timesteps of shape {tuple(t.shape)} do not match batch size {like.shape[0]}")
    picked = values[t.to(values.device, torch.long)]
    return picked.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class LargeStepSchedule:
    """abar of levels 0..T (float64, abar_0 = 1) and what follows from it."""

    alphas_cumprod: Tensor

    @classmethod
    def vp(cls, steps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> LargeStepSchedule:
        if steps < 1 or not 0 < beta_min < beta_max or not 0 < eps < 1:
            raise ValueError(f"VP schedule needs steps >= 1, 0 < beta_min < beta_max and 0 < eps < 1, got "
                             f"steps={steps}, beta_min={beta_min}, beta_max={beta_max}, eps={eps}")
        s = eps + (1 - eps) * torch.arange(steps + 1, dtype=torch.float64) / steps
        log_abar = -0.5 * s**2 * (beta_max - beta_min) - s * beta_min
        return cls(torch.exp(log_abar - log_abar[0]))

    @property
    def T(self) -> int:
        return int(self.alphas_cumprod.shape[0]) - 1

    @property
    def betas(self) -> Tensor:
        """beta_t of the step from level t to t + 1, t = 0..T-1."""
        return 1 - self.alphas_cumprod[1:] / self.alphas_cumprod[:-1]

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, for levels t in 0..T."""
        abar = self.alphas_cumprod
        return _per_sample(abar.sqrt(), t, x0) * x0 + _per_sample((1 - abar).sqrt(), t, x0) * noise

    def q_pair(self, x0: Tensor, t: Tensor, noise: Tensor, noise_next: Tensor) -> tuple[Tensor, Tensor]:
        """(x_t, x_{t+1}) drawn jointly: x_t from q(x_t | x0), then one forward step with fresh noise."""
        x_t = self.q_sample(x0, t, noise)
        x_next = _per_sample((1 - self.betas).sqrt(), t, x0) * x_t + _per_sample(self.betas.sqrt(), t, x0) * noise_next
        return x_t, x_next

    def posterior(self, x0: Tensor, x_next: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_{t+1}, x0) (Ho et al. eq. 7 for the step t -> t + 1):
        mean = sqrt(abar_t) beta / (1 - abar_{t+1}) x0 + sqrt(1 - beta) (1 - abar_t) / (1 - abar_{t+1}) x_{t+1},
        variance = beta (1 - abar_t) / (1 - abar_{t+1}), zero at t = 0 where the mean is x0."""
        abar, abar_next, beta = self.alphas_cumprod[:-1], self.alphas_cumprod[1:], self.betas
        coef_x0 = abar.sqrt() * beta / (1 - abar_next)
        coef_next = (1 - beta).sqrt() * (1 - abar) / (1 - abar_next)
        mean = _per_sample(coef_x0, t, x0) * x0 + _per_sample(coef_next, t, x0) * x_next
        return mean, _per_sample(beta * (1 - abar) / (1 - abar_next), t, x0)

    def posterior_sample(self, x0: Tensor, x_next: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        """A draw from q(x_t | x_{t+1}, x0); ``noise`` None gives the mean (the last step has no variance)."""
        mean, variance = self.posterior(x0, x_next, t)
        return mean if noise is None else mean + variance.sqrt() * noise


@torch.no_grad()
def sample_large_steps(
    model_fn: LatentModelFn,
    cond: Tensor,
    schedule: LargeStepSchedule,
    latent_dim: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x_0 (B, 1, *spatial) for the condition ``cond`` (B, C, *spatial): from noise at level T, T steps each
    predicting x_0 with a fresh latent z (B, latent_dim) and drawing x_t from the posterior.

    Every draw comes from ``generator`` in a fixed order: x_T, then per step z and, except at the last
    step, the posterior noise.
    """
    shape = (cond.shape[0], 1, *cond.shape[2:])

    def draw(*size: int) -> Tensor:
        return torch.randn(size, generator=generator, device=cond.device, dtype=cond.dtype)

    x = draw(*shape)
    for step in reversed(range(schedule.T)):
        t = torch.full((shape[0],), step, device=cond.device, dtype=torch.long)
        x0 = model_fn(x, t, cond, draw(shape[0], latent_dim))
        x = schedule.posterior_sample(x0, x, t, draw(*shape) if step > 0 else None)
    return x

