"""Windowed network calls: an input larger than the training crop, evaluated in overlapping windows.

The windows act on one network call, not on a whole translation: every window of the input goes through
the network, the outputs are blended with Gaussian weights (MONAI's sliding-window default) into one
full-size output, and the caller carries on with that. For diffusion this puts the windowing inside the
sampler, so each step is one global update with one noise draw for the whole input; tiling whole
translations instead would average independent samples of the windows (a hidden ensemble).

The same code serves 2D slices (B, C, H, W) and 3D volumes (B, C, X, Y, Z). Along an axis shorter than
the window the input is padded, centred (as MONAI's sliding window and the validation crops), to the
window size; this padded input is the *canvas*, and outputs are cropped back to the input's shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map
from torch import Tensor

from mr2ct.diffusion.sampler import ModelFn

# fn(*windows, index): the windows of each input stacked on the batch axis, and for each window the batch
# element it comes from, so per-element values (the diffusion timestep) can be repeated per window.
WindowFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Windows:
    """Window ``size`` (an int for every axis, or one per spatial axis), the fraction ``overlap`` of a
    window shared with its neighbour, and ``batch_size`` windows per network call."""

    size: int | tuple[int, ...]
    overlap: float = 0.25
    batch_size: int = 4

    def __post_init__(self) -> None:
        sizes = (self.size,) if isinstance(self.size, int) else tuple(self.size)
        if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(f"window size must be a positive int or a tuple of them, got {self.size!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"window overlap must lie in [0, 1), got {self.overlap}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"windows per network call must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.size, int):
            object.__setattr__(self, "size", sizes)

    def window_shape(self, rank: int) -> tuple[int, ...]:
        if isinstance(self.size, int):
            return (self.size,) * rank
        if len(self.size) != rank:
            raise ValueError(f"window size {self.size} has {len(self.size)} axes, the input has {rank} spatial axes")
        return self.size

    def canvas_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape the windows tile: the input's, raised to the window size where it is smaller."""
        return tuple(max(s, w) for s, w in zip(spatial, self.window_shape(len(spatial))))

    def origins(self, canvas: Sequence[int]) -> list[tuple[int, ...]]:
        """Window origins covering ``canvas``: per axis every ``step`` voxels, the last window flush with
        the end (MONAI's scan intervals, step = max(int(size * (1 - overlap)), 1)); all combinations."""
        per_axis = []
        for length, window in zip(canvas, self.window_shape(len(canvas))):
            if length < window:
                raise ValueError(f"canvas {tuple(canvas)} is smaller than the window; pad it first (Windows.pad)")
            step = max(int(window * (1 - self.overlap)), 1)
            per_axis.append([*range(0, length - window, step), length - window])
        return list(itertools.product(*per_axis))

    def pad(self, x: Tensor, value: float) -> Tensor:
        """``x`` (B, C, *spatial) padded with ``value``, centred, to its canvas; unchanged if it already is one."""
        spatial = x.shape[2:]
        widths = []
        for s, c in zip(reversed(spatial), reversed(self.canvas_shape(spatial))):  # F.pad lists the last axis first
            before = (c - s) // 2
            widths += [before, c - s - before]
        return F.pad(x, widths, value=value) if any(widths) else x

    def crop(self, x: Tensor, spatial: Sequence[int]) -> Tensor:
        """The inverse of ``pad``: the centred ``spatial`` part of a canvas-shaped ``x``."""
        if len(spatial) != x.ndim - 2 or any(s > c for s, c in zip(spatial, x.shape[2:])):
            raise ValueError(f"cannot crop spatial shape {tuple(spatial)} out of a tensor of shape {tuple(x.shape)}")
        return x[(..., *(slice((c - s) // 2, (c - s) // 2 + s) for s, c in zip(spatial, x.shape[2:])))]

    def apply(self, fn: WindowFn, inputs: Sequence[Tensor], pad_values: Sequence[float] | None = None) -> Tensor:
        """``fn`` evaluated on all windows of ``inputs`` (tensors of one batch and spatial shape, windowed at
        the same places), blended with Gaussian weights and cropped back to the inputs' spatial shape.

        ``fn(*windows, index)`` gets up to ``batch_size`` windows per input and the (n,) batch index of each.
        ``pad_values`` (one per input) fill the canvas where the inputs are smaller than a window; without
        them the inputs must already cover a window. If one window covers the canvas, ``fn`` is called once
        on the whole batch and its output returned as is, bit-identical to calling it without windows.
        """
        batch, spatial = inputs[0].shape[0], tuple(inputs[0].shape[2:])
        if any(x.shape[0] != batch or tuple(x.shape[2:]) != spatial for x in inputs):
            shapes = [tuple(x.shape) for x in inputs]
            raise ValueError(f"windowed inputs must share batch and spatial shape, got {shapes}")
        if pad_values is not None:
            if len(pad_values) != len(inputs):
                raise ValueError(f"{len(inputs)} inputs need as many pad values, got {len(pad_values)}")
            inputs = [self.pad(x, value) for x, value in zip(inputs, pad_values)]
        window = self.window_shape(len(spatial))
        canvas = tuple(inputs[0].shape[2:])
        origins = self.origins(canvas)
        if canvas == window:
            return self.crop(fn(*inputs, torch.arange(batch, device=inputs[0].device)), spatial)

        importance = compute_importance_map(window, mode="gaussian", sigma_scale=0.125, device=inputs[0].device)
        weight = torch.zeros(canvas, device=importance.device, dtype=importance.dtype)
        for origin in origins:
            weight[_slices(origin, window)] += importance
        total = None
        jobs = [(b, origin) for b in range(batch) for origin in origins]
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start : start + self.batch_size]
            index = torch.tensor([b for b, _ in chunk], device=inputs[0].device)
            windows = [torch.stack([x[b][(slice(None), *_slices(o, window))] for b, o in chunk]) for x in inputs]
            out = fn(*windows, index)
            if out.shape[0] != len(chunk) or tuple(out.shape[2:]) != window:
                raise ValueError(f"{len(chunk)} windows of shape {window} gave an output of shape {tuple(out.shape)}")
            if total is None:  # channels and dtype come from the network, not the inputs
                dtype = torch.promote_types(out.dtype, torch.float32)
                total = out.new_zeros((batch, out.shape[1], *canvas), dtype=dtype)
                importance, weight = importance.to(dtype), weight.to(dtype)
            for k, (b, o) in enumerate(chunk):
                total[b][(slice(None), *_slices(o, window))] += out[k] * importance
        return self.crop((total / weight).to(out.dtype), spatial)


def _slices(origin: tuple[int, ...], window: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(o, o + w) for o, w in zip(origin, window))


def windowed_model_fn(net_fn: ModelFn, windows: Windows) -> ModelFn:
    """``net_fn(x_t, t, cond)`` as a sampler ``ModelFn`` evaluated in windows of x_t and cond at the same
    places, with t repeated per window; x_t and cond must be canvas-shaped (at least a window per axis).

    A method samples on the padded condition, so the sampler draws its noise once per step for the whole
    canvas, and crops the result::

        canvas = windows.pad(mr, BACKGROUND)
        x0 = sample(windowed_model_fn(net_fn, windows), canvas, schedule, ...,
                    null_cond=null_condition_like(canvas), generator=generator)
        ct = windows.crop(x0, mr.shape[2:])
    """

    def model_fn(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return windows.apply(lambda x, c, index: net_fn(x, t[index], c), (x_t, cond))

    return model_fn
