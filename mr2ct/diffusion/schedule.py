"""The cosine noise schedule and the forward process q(x_t | x_0).

Indexing follows diffusers' ``squaredcos_cap_v2`` (and the paper's code): ``alphas_cumprod[t]`` for
t = 0..T-1 is the signal fraction after t + 1 noising steps, i.e. abar(t) = f(t + 1) / f(0) with
f(u) = cos((u / T + s) / (1 + s) * pi / 2)^2, before clipping. t = 0 is the least noisy step (abar close
to 1), t = T - 1 is nearly pure noise. The "no noise at all" level (abar = 1) has no index; samplers reach
it as ``t_prev = -1``.

The schedule is computed in float64 and cast to the working dtype only when a coefficient is applied, so
float32 networks see the same coefficients as diffusers (which also builds its betas in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

MAX_BETA = 0.999


def cosine_alphas_cumprod(T: int = 1000, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal's cosine abar for t = 0..T-1, recomputed from betas clipped to [0, 0.999].

    The clip only bites at the last steps, where f(T) = 0 would otherwise make abar exactly zero.
    """
    if T < 1:
        raise ValueError(f"cosine schedule needs T >= 1 timesteps, got T={T}")
    if s < 0:
        raise ValueError(f"cosine schedule offset s must be >= 0, got s={s}")
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    abar_unclipped = f / f[0]
    betas = (1 - abar_unclipped[1:] / abar_unclipped[:-1]).clamp(0.0, MAX_BETA)
    return torch.cumprod(1 - betas, dim=0)


def _at(values: Tensor, t: int | Tensor, like: Tensor) -> Tensor:
    """values[t] as a tensor that broadcasts against ``like`` (per-sample when t is a (B,) tensor)."""
    if isinstance(t, Tensor) and t.ndim > 0:
        if t.shape[0] != like.shape[0]:
            raise ValueError(f"timesteps of shape {tuple(t.shape)} do not match batch size {like.shape[0]}")
        picked = values[t.to(values.device, torch.long)]
        return picked.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))
    return values[int(t)].to(like.device, like.dtype)


def q_sample(x0: Tensor, t: int | Tensor, noise: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Forward process: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (t is an int or a (B,) tensor)."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    return _at(alphas_cumprod.sqrt(), t, x0) * x0 + _at((1 - alphas_cumprod).sqrt(), t, x0) * noise


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete variance-preserving schedule and the conversions between x0 and epsilon predictions.

    ``predict_x0_from_eps`` and ``predict_eps_from_x0`` are exact inverses of each other given x_t, so a
    network trained in image mode (predicts x0) and one in noise mode (predicts eps) are sampled with the
    same arithmetic. (The reference code's image mode got the sign of eps wrong; these are checked against
    the forward process in the tests.)
    """

    betas: Tensor
    alphas_cumprod: Tensor

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008) -> NoiseSchedule:
        abar = cosine_alphas_cumprod(T, s)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return cls(betas=1 - abar / abar_prev, alphas_cumprod=abar)

    def __post_init__(self) -> None:
        if self.betas.shape != self.alphas_cumprod.shape or self.betas.ndim != 1:
            raise ValueError(
                f"betas {tuple(self.betas.shape)} and alphas_cumprod {tuple(self.alphas_cumprod.shape)} "
                "must be 1-D tensors of the same length"
            )

    @property
    def T(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha_bar(self, t: int) -> float:
        """abar_t as a float64 Python number; t = -1 is the clean level abar = 1 (the final DDIM target)."""
        if not -1 <= t < self.T:
            raise ValueError(f"timestep {t} outside [-1, {self.T - 1}]")
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def q_sample(self, x0: Tensor, t: int | Tensor, noise: Tensor) -> Tensor:
        return q_sample(x0, t, noise, self.alphas_cumprod)

    def predict_x0_from_eps(self, x_t: Tensor, t: int | Tensor, eps: Tensor) -> Tensor:
        """x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        abar = self.alphas_cumprod
        return _at(abar.rsqrt(), t, x_t) * x_t - _at(((1 - abar) / abar).sqrt(), t, x_t) * eps

    def predict_eps_from_x0(self, x_t: Tensor, t: int | Tensor, x0: Tensor) -> Tensor:
        """eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
        abar = self.alphas_cumprod
        return _at((1 - abar).rsqrt(), t, x_t) * x_t - _at((abar / (1 - abar)).sqrt(), t, x_t) * x0
