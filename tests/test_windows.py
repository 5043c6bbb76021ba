"""Windowed network calls inside the sampler: exact when untiled, one global noise draw, honest blending."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mr2ct.core.values import BACKGROUND
from mr2ct.diffusion import NoiseSchedule, null_condition_like, sample
from mr2ct.methods.windows import Windows, windowed_model_fn
from mr2ct.nets.sa_unet import SAUNet

SCHEDULE = NoiseSchedule.cosine(1000)
STEPS = 3


def _tiny_saunet() -> SAUNet:
    torch.manual_seed(0)
    return SAUNet(in_channels=2, out_channels=1, dims=2, dim=8, dim_mults=[1, 2], heads=1, dim_head=8).eval()


def _net_fn(net: SAUNet):
    """The diffusion method's denoise: the network sees [x_t, cond] on channels."""
    return lambda x_t, t, cond: net(torch.cat([x_t, cond], dim=1), t)


def _pointwise(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
    """A toy denoiser that commutes with windowing: any tiling of it is the untiled call."""
    return 0.8 * cond - 0.3 * x_t


def _counting(sizes: list[int]):
    """The pointwise denoiser, recording the batch size of every call."""

    def fn(x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        sizes.append(x_t.shape[0])
        return _pointwise(x_t, t, cond)

    return fn


def _sample(model_fn, cond: Tensor, eta: float, prediction: str = "sample", w: float = 0.0, seed: int = 7) -> Tensor:
    return sample(
        model_fn, cond, SCHEDULE, prediction=prediction, steps=STEPS, eta=eta, w=w,
        null_cond=null_condition_like(cond), generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("prediction", ["sample", "epsilon"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_one_window_over_the_slice_is_bit_identical_to_the_untiled_sampler(eta: float, prediction: str) -> None:
    net_fn = _net_fn(_tiny_saunet())
    cond = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        untiled = _sample(net_fn, cond, eta, prediction)
        windowed = _sample(windowed_model_fn(net_fn, Windows(16, overlap=0.5, batch_size=1)), cond, eta, prediction)
    assert torch.equal(windowed, untiled)


def test_overlapping_windows_share_one_noise_draw_per_step() -> None:
    cond = torch.rand((2, 1, 64, 64), generator=torch.Generator().manual_seed(2)) * 2 - 1
    outputs = []
    for size, expected_windows in [((64, 64), 1), ((40, 64), 2), ((40, 40), 4)]:
        windows = Windows(size, overlap=0.25, batch_size=3)
        assert len(windows.origins((64, 64))) == expected_windows
        outputs.append(_sample(windowed_model_fn(_pointwise, windows), cond, eta=1.0))
    for tiled in outputs[1:]:
        torch.testing.assert_close(tiled, outputs[0], rtol=0, atol=1e-5)


def test_overlap_sets_the_number_of_network_calls() -> None:
    batch, batch_size = 2, 3
    cond = torch.zeros((batch, 1, 64, 64))
    calls = {}
    for overlap, windows_per_slice in [(0.0, 4), (0.5, 9)]:
        sizes = []
        windows = Windows(32, overlap=overlap, batch_size=batch_size)
        assert len(windows.origins((64, 64))) == windows_per_slice
        _sample(windowed_model_fn(_counting(sizes), windows), cond, eta=1.0)
        assert len(sizes) == STEPS * math.ceil(windows_per_slice * batch / batch_size)
        assert max(sizes) == batch_size and sum(sizes) == STEPS * windows_per_slice * batch
        calls[overlap] = len(sizes)
    assert calls[0.5] > calls[0.0]


def test_constant_network_blends_to_the_constant_with_its_own_channels() -> None:
    x = torch.randn((2, 1, 50, 37))
    windows = Windows(16, overlap=0.25, batch_size=5)
    out = windows.apply(lambda w, index: torch.full((w.shape[0], 3, 16, 16), 0.37), [x])
    assert out.shape == (2, 3, 50, 37)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape, size", [((2, 1, 50, 37), 16), ((2, 2, 20, 18, 13), (8, 8, 6))], ids=["2d", "3d"])
def test_identity_network_gives_back_its_input(shape: tuple[int, ...], size) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    windows = Windows(size, overlap=0.5, batch_size=4)
    per_axis = {len({o[axis] for o in windows.origins(shape[2:])}) for axis in range(len(shape) - 2)}
    assert min(per_axis) >= 3, "several windows per axis"

    def identity_plus_batch_index(w: Tensor, index: Tensor) -> Tensor:
        return w + 10.0 * index.reshape(-1, *[1] * (w.ndim - 1))

    out = windows.apply(identity_plus_batch_index, [x])
    offset = 10.0 * torch.arange(shape[0]).reshape(-1, *[1] * (len(shape) - 1))
    torch.testing.assert_close(out, x + offset, rtol=0, atol=1e-5)


def test_small_inputs_are_padded_centred_and_cropped_back() -> None:
    x = torch.randn((1, 1, 10, 40), generator=torch.Generator().manual_seed(4))
    windows = Windows(16, overlap=0.25)
    assert windows.canvas_shape((10, 40)) == (16, 40)
    canvas = windows.pad(x, BACKGROUND)
    assert canvas.shape == (1, 1, 16, 40)
    assert torch.equal(canvas[:, :, 3:13], x) and torch.all(canvas[:, :, :3] == BACKGROUND)
    assert torch.all(canvas[:, :, 13:] == BACKGROUND) and torch.equal(windows.crop(canvas, (10, 40)), x)

    seen = []

    def identity(w: Tensor, index: Tensor) -> Tensor:
        seen.append(w.shape[2:])
        return w

    out = windows.apply(identity, [x], pad_values=[BACKGROUND])
    assert out.shape == x.shape and set(seen) == {(16, 16)}
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)
    single = Windows(48).apply(lambda w, index: w * 2, [x], pad_values=[BACKGROUND])  # one window, no blending
    assert torch.equal(single, x * 2)
    with pytest.raises(ValueError, match="pad it first"):
        windows.apply(identity, [x])


def test_guidance_through_the_windowed_model_function() -> None:
    net_fn = _net_fn(_tiny_saunet())
    mr = torch.rand((2, 1, 12, 30), generator=torch.Generator().manual_seed(5)) * 2 - 1
    windows = Windows(16, overlap=0.5, batch_size=3)
    canvas = windows.pad(mr, BACKGROUND)
    with torch.no_grad():
        ct = windows.crop(_sample(windowed_model_fn(net_fn, windows), canvas, eta=1.0, w=1.5), mr.shape[2:])
    assert ct.shape == mr.shape and torch.isfinite(ct).all()
    # With a pointwise denoiser the guided, windowed sampler is the guided untiled one.
    untiled = _sample(_pointwise, canvas, eta=1.0, w=1.5)
    windowed = _sample(windowed_model_fn(_pointwise, windows), canvas, eta=1.0, w=1.5)
    torch.testing.assert_close(windowed, untiled, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 0},
        {"size": (16, -1)},
        {"size": 16, "overlap": 1.0},
        {"size": 16, "overlap": -0.1},
        {"size": 16, "batch_size": 0},
    ],
)
def test_bad_arguments_are_rejected(kwargs) -> None:
    with pytest.raises(ValueError):
        Windows(**kwargs)


def test_window_rank_must_match_the_input() -> None:
    with pytest.raises(ValueError, match="spatial axes"):
        Windows((16, 16)).apply(lambda w, index: w, [torch.zeros((1, 1, 16, 16, 16))])
