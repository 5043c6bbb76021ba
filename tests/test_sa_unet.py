"""SA-UNet: shapes in 2D and 3D, its building blocks against independent formulas, and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding

from mr2ct.diffusion import NoiseSchedule, null_condition_like, sample
from mr2ct.nets.sa_unet import (
    ChannelLayerNorm,
    FullAttention,
    LinearAttention,
    SAUNet,
    SinusoidalTimeEmbedding,
)


def _net_2d(**overrides) -> SAUNet:
    torch.manual_seed(0)
    return SAUNet(**{"in_channels": 2, "out_channels": 1, "dim": 16, "dim_mults": (1, 2, 4), **overrides})


def test_2d_with_attention_keeps_the_input_size() -> None:
    net = _net_2d()
    assert any(isinstance(m, LinearAttention) for m in net.modules())
    assert any(isinstance(m, FullAttention) for m in net.modules())
    x = torch.randn(3, 2, 32, 24)
    assert net(x, torch.tensor([0, 10, 999])).shape == (3, 1, 32, 24)


def test_3d_without_attention_with_averaged_skips() -> None:
    torch.manual_seed(0)
    net = SAUNet(4, 1, dim=8, dim_mults=(1, 2, 4), attention=False, dims=3, skip="average")
    assert not any(isinstance(m, (LinearAttention, FullAttention)) for m in net.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    # averaged skips: the first decoder block sees the deepest width once, not twice (concatenated)
    assert net.decoder[0].block1.block1.conv.in_channels == 32
    assert _net_2d().decoder[0].block1.block1.conv.in_channels == 2 * 64
    out = net(torch.randn(2, 4, 8, 12, 16), torch.tensor([5, 500]))
    assert out.shape == (2, 1, 8, 12, 16)


def test_time_embedding_changes_the_output() -> None:
    net = _net_2d().eval()
    x = torch.randn(2, 2, 16, 16)
    early, late = net(x, torch.tensor([0, 0])), net(x, torch.tensor([500, 500]))
    assert (early - late).abs().max() > 1e-4


def test_without_time_embedding_forward_takes_only_the_image() -> None:
    net = _net_2d(time_embedding=False)
    assert net.time_mlp is None
    assert net(torch.randn(1, 2, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="time_embedding=False"):
        net(torch.randn(1, 2, 16, 16), torch.tensor([3]))


def test_gradient_reaches_every_parameter() -> None:
    net = _net_2d()
    x = torch.randn(2, 2, 16, 16, requires_grad=True)
    net(x, torch.tensor([1, 700])).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_inputs_fail_with_clear_errors() -> None:
    net = _net_2d()
    t = torch.tensor([1])
    with pytest.raises(ValueError, match=r"divisible by 4"):
        net(torch.randn(1, 2, 30, 32), t)
    with pytest.raises(ValueError, match=r"expects \(B, 2, \*, \*\)"):
        net(torch.randn(1, 3, 32, 32), t)
    with pytest.raises(ValueError, match=r"needs t of shape \(1,\)"):
        net(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="not divisible by groups"):
        SAUNet(1, 1, dim=12)
    with pytest.raises(ValueError, match="skip must be"):
        SAUNet(1, 1, dim=16, skip="add")


def test_sinusoidal_embedding_matches_diffusers() -> None:
    t = torch.tensor([0, 1, 37, 999])
    expected = get_timestep_embedding(t, 64, flip_sin_to_cos=False, downscale_freq_shift=1)
    # float32 angles near t = 999 rad are resolved to ~6e-5, whichever order the factors are multiplied
    torch.testing.assert_close(SinusoidalTimeEmbedding(64)(t), expected, rtol=0, atol=1e-4)


def test_channel_layer_norm_is_layer_norm_over_channels() -> None:
    x = torch.randn(2, 6, 3, 4, 5)
    norm = ChannelLayerNorm(6)
    with torch.no_grad():
        norm.gain.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    expected = F.layer_norm(x.movedim(1, -1), (6,), norm.gain, norm.bias, eps=1e-5).movedim(-1, 1)
    torch.testing.assert_close(norm(x), expected)


def _qkv_per_head(attention: torch.nn.Module, x: torch.Tensor, heads: int) -> list[tuple[torch.Tensor, ...]]:
    """Per head h: (q, k, v) as (dim_head, voxels) matrices, read from the 1x1 projection's channel blocks."""
    qkv = attention.to_qkv(x)[0].flatten(1)  # (3 * heads * dim_head, voxels), first sample
    q, k, v = qkv.chunk(3, dim=0)
    return [tuple(m.chunk(heads, dim=0)[h] for m in (q, k, v)) for h in range(heads)]


def test_full_attention_matches_explicit_softmax_attention() -> None:
    torch.manual_seed(1)
    attention = FullAttention(8, dims=2, heads=2, dim_head=4)
    x = torch.randn(1, 8, 3, 5)
    heads = []
    for q, k, v in _qkv_per_head(attention, x, heads=2):
        weights = torch.softmax(q.T @ k / 2.0, dim=-1)  # (voxels, voxels), scale 1/sqrt(dim_head = 4)
        heads.append(v @ weights.T)  # (dim_head, voxels)
    expected = attention.to_out(torch.cat(heads).reshape(1, 8, 3, 5))
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-6)


def test_linear_attention_matches_its_defining_formula() -> None:
    """Per head: out = (softmax_voxels(k) v^T)^T (softmax_features(q) / sqrt(dim_head))."""
    torch.manual_seed(2)
    attention = LinearAttention(8, dims=3, heads=2, dim_head=4)
    x = torch.randn(1, 8, 2, 3, 4)
    heads = []
    for q, k, v in _qkv_per_head(attention, x, heads=2):
        context = k.softmax(dim=1) @ v.T  # (dim_head, dim_head)
        heads.append(context.T @ (q.softmax(dim=0) / 2.0))
    expected = attention.to_out(torch.cat(heads).reshape(1, 8, 2, 3, 4))
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_sa_unet_drives_the_conditional_sampler(dims: int) -> None:
    """The network as a diffusion model: input [x_t, condition] on channels, guided DDIM, x0 in [-1, 1]."""
    torch.manual_seed(3)
    if dims == 2:
        net, cond = _net_2d().eval(), torch.rand(2, 1, 16, 16) * 2 - 1
    else:
        net = SAUNet(2, 1, dim=8, dim_mults=(1, 2), attention=False, dims=3, skip="average").eval()
        cond = torch.rand(1, 1, 4, 8, 8) * 2 - 1
    out = sample(
        lambda x, t, c: net(torch.cat([x, c], dim=1), t),
        cond,
        NoiseSchedule.cosine(),
        "sample",
        steps=3,
        w=1.0,
        null_cond=null_condition_like(cond),
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == cond.shape and torch.isfinite(out).all() and out.abs().max() <= 1.0
