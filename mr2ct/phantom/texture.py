"""Bone texture: periodic random fields sampled in each bone's local frame.

A bone carries the same texture in the MR and in the CT pose because the fields are looked up at local
coordinates. Two tiles per subject: the *trabecular* field (band-passed noise turned into sheets at its
zero crossings, elongated cranio-caudally like the vertical trabeculae of a vertebral body) sets how much
bone a marrow voxel holds; the *marrow* field (smooth blobs) drives what MR sees on its own: marrow
variation, fatty islands and, sampled very coarsely, the cortical thickness along a bone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage

TILE_VOXELS = 64
TILE_MM = 0.75  # tile period 48 mm: larger than a vertebral body is deep
TRABECULAR_WAVELENGTH_MM = 6.0  # spacing of the band-passed field; its zero-crossing sheets lie ~3 mm apart
TRABECULAR_VERTICAL_STRETCH = 2.0  # plates run cranio-caudally (vertical trabeculae dominate)
TRABECULAR_PLATE_WIDTH = 0.6  # sheet thickness in units of the field's SD around its zero crossings
MARROW_WAVELENGTH_MM = 5.0


@dataclass(frozen=True)
class TextureTiles:
    """Zero-mean, unit-SD periodic fields on a TILE_VOXELS^3 grid of TILE_MM spacing."""

    trabecular: np.ndarray
    marrow: np.ndarray


def _band_limited(rng: np.random.Generator, wavelength_mm: float, stretch_z: float, band: float) -> np.ndarray:
    """Periodic Gaussian noise whose spectrum is a shell (``band`` > 0) or a ball (``band`` = 0) around
    1 / wavelength, with frequencies along z compressed by ``stretch_z``."""
    n = TILE_VOXELS
    noise = rng.standard_normal((n, n, n), dtype=np.float32)
    k = fft.fftfreq(n, d=TILE_MM).astype(np.float32)
    kz = fft.rfftfreq(n, d=TILE_MM).astype(np.float32)
    radius = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + (stretch_z * kz[None, None, :]) ** 2)
    centre = 1.0 / wavelength_mm
    if band > 0:
        gain = np.exp(-0.5 * ((radius - centre) / (band * centre)) ** 2)
    else:
        gain = np.exp(-0.5 * (radius / centre) ** 2)
    field = fft.irfftn(fft.rfftn(noise) * gain, s=noise.shape).astype(np.float32)
    return (field - field.mean()) / field.std()


def sample_tiles(rng: np.random.Generator) -> TextureTiles:
    """This subject's texture tiles."""
    plates = _band_limited(rng, TRABECULAR_WAVELENGTH_MM, TRABECULAR_VERTICAL_STRETCH, band=0.35)
    bone = np.exp(-((plates / TRABECULAR_PLATE_WIDTH) ** 2))  # bone near the zero crossings: sheets
    bone = (bone - bone.mean()) / bone.std()
    marrow = _band_limited(rng, MARROW_WAVELENGTH_MM, 1.0, band=0.0)
    return TextureTiles(bone.astype(np.float32), marrow)


def sample(tile: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, offset: np.ndarray,
           scale: float = 1.0) -> np.ndarray:
    """The tile at local points (mm; 1-D arrays), magnified by 1/``scale`` and shifted by ``offset`` (voxels)."""
    coordinates = np.stack([x, y, z]).astype(np.float32)
    coordinates *= np.float32(scale / TILE_MM)
    coordinates += np.asarray(offset, np.float32)[:, None]
    return ndimage.map_coordinates(tile, coordinates, order=1, mode="grid-wrap", prefilter=False)
