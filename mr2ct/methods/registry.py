"""Every translation method by its config name (``model=<name>``), found through its card."""

from __future__ import annotations

from mr2ct.methods.base import TranslationModule
from mr2ct.methods.card import MethodCard
from mr2ct.methods.cut import CUT, CUTSAUNet
from mr2ct.methods.diffusion import DDIMImage, DDIMNoise
from mr2ct.methods.pix2pix import Pix2Pix, Pix2PixSAUNet
from mr2ct.methods.syndiff import SynDiff
from mr2ct.methods.volumetric import DDIMImage3D, DDIMNoise3D, Pix2Pix3D

METHODS: dict[str, type[TranslationModule]] = {
    method.card.name: method
    for method in (Pix2Pix, Pix2PixSAUNet, CUT, CUTSAUNet, SynDiff, DDIMNoise, DDIMImage, Pix2Pix3D, DDIMNoise3D,
                   DDIMImage3D)
}
"""In the paper's table order."""


def method_class(name: str) -> type[TranslationModule]:
    if name not in METHODS:
        raise ValueError(f"model.name={name!r} is not a method; valid: {list(METHODS)}")
    return METHODS[name]


def method_card(name: str) -> MethodCard:
    return method_class(name).card
