"""Diffusion maths shared by the 2D and 3D methods: the noise schedule and the DDIM/DDPM samplers, and
SynDiff's few large steps (schedule, posterior, sampler)."""

from mr2ct.diffusion.large_steps import LargeStepSchedule, sample_large_steps
from mr2ct.diffusion.sampler import (
    NULL_CONDITION_VALUE,
    Prediction,
    SamplerName,
    ddim_step,
    ddim_timesteps,
    ddpm_posterior,
    ddpm_step,
    guided_prediction,
    null_condition_like,
    sample,
    x0_and_eps,
)
from mr2ct.diffusion.schedule import NoiseSchedule, cosine_alphas_cumprod, q_sample

__all__ = [
    "NULL_CONDITION_VALUE",
    "LargeStepSchedule",
    "NoiseSchedule",
    "Prediction",
    "SamplerName",
    "cosine_alphas_cumprod",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_posterior",
    "ddpm_step",
    "guided_prediction",
    "null_condition_like",
    "q_sample",
    "sample",
    "sample_large_steps",
    "x0_and_eps",
]
