"""Tissue classes -> CT Hounsfield units and MR signal (T1w, T2w, an external scanner), and acquisition.

The tables make the paper's ambiguities real: posterior-element marrow is close to epidural fat (T1w),
fat is close to CSF/water in T2w while they are 110 HU apart in CT, cortical bone, vessels with flow
voids, calcifications and gas are all dark in MR. Marrow follows the bone texture differently in the two
modalities: CT sees the trabecular bone (its HU rise with the local bone fraction), MR sees the marrow
between the trabeculae, which the bone fraction lowers only a little, plus its own variation and fatty
islands that CT sees only faintly. Modic changes and haemangiomas are marked in MR and subtle in CT; a
vacuum cleft is gas in CT but, in an already dark degenerated disc, no signal of its own in MR.

CT acquisition: the reconstruction kernel blurs the image (a Gaussian point-spread function) and shapes
the noise, so the noise is spatially correlated with the same kernel. MR acquisition: thick sagittal
slices (partial volume = mean over thin sub-slices), truncated k-space along the anterior-posterior phase
direction (Gibbs ringing at sharp edges), a smooth multiplicative bias field and Rician noise. Each
subject draws its own tissue values around these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mr2ct.phantom.render import LabelMaps
from mr2ct.phantom.tissues import IS_MARROW, Tissue

T = Tissue
# (low, high) of each subject's value. Typical values: fat -120..-80, muscle 40..60, blood 35..50 unenhanced,
# CSF 0..15, disc 60..110, lung parenchyma -900..-750 (e.g. Lamba et al., RadioGraphics 2014; Hounsfield
# 1980); trabecular bone of adult vertebral bodies 120..300 HU falling with age (QCT norms, Cann 1985);
# cortex at 1 mm voxels 1100..1600 (partial volume of the ~1800 HU compact bone).
CT_HU: dict[Tissue, tuple[float, float]] = {
    T.AIR: (-1000, -1000), T.FAT: (-120, -80), T.SOFT: (30, 50), T.MUSCLE: (40, 60), T.EPIDURAL_FAT: (-110, -70),
    T.CSF: (5, 15), T.CORD: (30, 40), T.ANNULUS: (80, 110), T.NUCLEUS: (60, 90), T.CORTICAL: (1100, 1600),
    T.CANCELLOUS: (160, 280), T.POSTERIOR_MARROW: (260, 400), T.LUNG: (-880, -780), T.VESSEL: (35, 50),
    T.LIGAMENT: (50, 90), T.NERVE: (30, 45), T.GAS: (-950, -850), T.CALCIFICATION: (350, 800),
}
# Marrow lesions relative to the subject's cancellous bone: Modic 1 slightly sclerotic, Modic 2 and
# haemangiomas fatty (lower) with, for haemangiomas, coarse vertical trabeculae (stronger texture).
CT_RELATIVE_TO_CANCELLOUS: dict[Tissue, tuple[float, float]] = {
    T.MODIC_OEDEMA: (10, 40), T.MODIC_FATTY: (-40, -15), T.HAEMANGIOMA: (-50, -20),
}
CT_TEXTURE_GAIN: dict[Tissue, float] = {T.CANCELLOUS: 1.0, T.POSTERIOR_MARROW: 0.8, T.MODIC_OEDEMA: 1.0,
                                        T.MODIC_FATTY: 1.0, T.HAEMANGIOMA: 1.6}
CT_TRABECULAR_HU = (50.0, 90.0)  # SD of the trabecular texture before the kernel blur, per subject
CT_FATTY_ISLAND_HU = 35.0  # a fatty marrow island lowers HU this much (fat replacing haematopoietic marrow)
CT_NOISE_HU = (12.0, 25.0)  # SD of the (correlated) image noise, per subject
CT_KERNEL_MM = 0.6  # Gaussian sigma of the reconstruction kernel: image blur and noise correlation length
CT_FRACTURE_SCLEROSIS_HU = 80.0  # a compressed body is denser
FATTY_ISLAND_THRESHOLD = 1.0  # marrow field (SDs) where fatty islands begin ...
FATTY_ISLAND_WIDTH = 0.6  # ... and how quickly they become fully fatty


@dataclass(frozen=True)
class MrProtocol:
    """One scanner/sequence: tissue signal table (arbitrary units), geometry, noise and artefacts."""

    contrast: str
    intensities: dict[Tissue, float]
    slice_mm: float
    inplane_mm: float
    sub_slices: int  # thin renderings averaged per slice (odd, so the middle one sits on the slice centre)
    noise: float  # Rician sigma as a fraction of the brightest tissue
    bias: float  # peak-to-peak amplitude of the log bias field
    degeneration_darkening: float  # how far a fully degenerated nucleus drops towards the annulus
    fracture_marrow: float  # marrow signal factor in a compressed (oedematous) body
    fatty_island_gain: float  # relative brightening of a fully fatty marrow island
    kspace_fraction: float = 0.72  # acquired fraction of k-space along anterior-posterior (1: no ringing)
    marrow_bone: float = 0.04  # relative signal lost per SD of trabecular bone (bone displaces marrow)
    marrow_variation: float = 0.06  # relative marrow variation per SD of the marrow field


T1W = MrProtocol(
    contrast="t1w",
    intensities={T.AIR: 0, T.FAT: 900, T.SOFT: 420, T.MUSCLE: 330, T.EPIDURAL_FAT: 860, T.CSF: 130, T.CORD: 430,
                 T.ANNULUS: 300, T.NUCLEUS: 340, T.CORTICAL: 50, T.CANCELLOUS: 560, T.POSTERIOR_MARROW: 820,
                 T.LUNG: 20, T.VESSEL: 40, T.LIGAMENT: 300, T.NERVE: 420, T.GAS: 340, T.CALCIFICATION: 60,
                 T.MODIC_OEDEMA: 300, T.MODIC_FATTY: 780, T.HAEMANGIOMA: 760},
    slice_mm=3.0, inplane_mm=1.0, sub_slices=3, noise=0.025, bias=0.35, degeneration_darkening=0.3,
    fracture_marrow=0.6, fatty_island_gain=0.35,
)
T2W = MrProtocol(
    contrast="t2w",
    intensities={T.AIR: 0, T.FAT: 780, T.SOFT: 330, T.MUSCLE: 200, T.EPIDURAL_FAT: 760, T.CSF: 820, T.CORD: 420,
                 T.ANNULUS: 230, T.NUCLEUS: 820, T.CORTICAL: 40, T.CANCELLOUS: 420, T.POSTERIOR_MARROW: 580,
                 T.LUNG: 15, T.VESSEL: 30, T.LIGAMENT: 180, T.NERVE: 450, T.GAS: 820, T.CALCIFICATION: 50,
                 T.MODIC_OEDEMA: 650, T.MODIC_FATTY: 520, T.HAEMANGIOMA: 760},
    slice_mm=3.0, inplane_mm=1.0, sub_slices=3, noise=0.025, bias=0.35, degeneration_darkening=1.0,
    fracture_marrow=1.4, fatty_island_gain=0.2, kspace_fraction=0.7,
)
EXTERNAL = MrProtocol(  # another vendor's T2w (like MRSpineSeg): thicker slices, coarser pixels, more noise
    contrast="t2w",
    intensities={T.AIR: 0, T.FAT: 640, T.SOFT: 380, T.MUSCLE: 260, T.EPIDURAL_FAT: 620, T.CSF: 950, T.CORD: 500,
                 T.ANNULUS: 280, T.NUCLEUS: 900, T.CORTICAL: 70, T.CANCELLOUS: 380, T.POSTERIOR_MARROW: 470,
                 T.LUNG: 20, T.VESSEL: 50, T.LIGAMENT: 220, T.NERVE: 500, T.GAS: 900, T.CALCIFICATION: 70,
                 T.MODIC_OEDEMA: 600, T.MODIC_FATTY: 470, T.HAEMANGIOMA: 700},
    slice_mm=4.0, inplane_mm=1.25, sub_slices=3, noise=0.04, bias=0.5, degeneration_darkening=0.9,
    fracture_marrow=1.3, fatty_island_gain=0.2, kspace_fraction=0.65,
)
PROTOCOLS: dict[str, MrProtocol] = {"t1w": T1W, "t2w": T2W, "external": EXTERNAL, "external_corrected": EXTERNAL}


@dataclass(frozen=True)
class CtLook:
    """One subject's CT: HU per tissue class (index = Tissue value), texture strength and noise level."""

    lut: np.ndarray
    trabecular_hu: float
    noise_hu: float


def tissue_lut(values: dict[Tissue, float]) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for tissue, value in values.items():
        lut[int(tissue)] = value
    return lut


def sample_ct(rng: np.random.Generator) -> CtLook:
    """This subject's CT look."""
    values = {tissue: rng.uniform(low, high) for tissue, (low, high) in CT_HU.items()}
    values.update({tissue: values[T.CANCELLOUS] + rng.uniform(low, high)
                   for tissue, (low, high) in CT_RELATIVE_TO_CANCELLOUS.items()})
    return CtLook(tissue_lut(values), float(rng.uniform(*CT_TRABECULAR_HU)), float(rng.uniform(*CT_NOISE_HU)))


def sample_mr_lut(rng: np.random.Generator, protocol: MrProtocol) -> np.ndarray:
    """This subject's MR signal per tissue class: the protocol table scaled by +-8 % per tissue.

    Gas takes the nucleus value: at MR resolution a cleft in a collapsed, dark disc has no signal of its own.
    """
    lut = tissue_lut({tissue: value * rng.uniform(0.92, 1.08) for tissue, value in protocol.intensities.items()})
    lut[int(T.GAS)] = lut[int(T.NUCLEUS)]
    return lut


def fatty_islands(marrow: np.ndarray) -> np.ndarray:
    """Fat fraction of the marrow (0..1) from the marrow field: islands where it is high."""
    return np.clip((marrow - FATTY_ISLAND_THRESHOLD) / FATTY_ISLAND_WIDTH, 0.0, 1.0)


def ct_values(maps: LabelMaps, look: CtLook, fractured: np.ndarray) -> np.ndarray:
    """Noise-free HU (float32) of a label map: table values, trabecular texture, fatty islands, sclerosis."""
    hu = look.lut[maps.tissue]
    marrow = np.nonzero(IS_MARROW[maps.tissue])
    tissue = maps.tissue[marrow]
    gain = tissue_lut(CT_TEXTURE_GAIN) * np.float32(look.trabecular_hu)
    value = hu[marrow] + gain[tissue] * maps.trabecular[marrow]
    value -= np.float32(CT_FATTY_ISLAND_HU) * fatty_islands(maps.marrow[marrow])
    value += (tissue == Tissue.CANCELLOUS) * fractured[maps.bone[marrow]] * np.float32(CT_FRACTURE_SCLEROSIS_HU)
    hu[marrow] = value
    return hu


def acquire_ct(hu: np.ndarray, spacing: np.ndarray, noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """Reconstruct: blur with the kernel and add noise shaped by the same kernel (SD ``noise_hu``); int16."""
    sigma = CT_KERNEL_MM / np.asarray(spacing, float)
    image = rng.standard_normal(hu.shape, dtype=np.float32)
    image *= np.float32(noise_hu / _filtered_noise_sd(sigma))
    image += hu
    ndimage.gaussian_filter(image, sigma, output=image)
    np.rint(image, out=image)
    return np.clip(image, -1024, 3071, out=image).astype(np.int16)


def _filtered_noise_sd(sigma: np.ndarray, truncate: float = 4.0) -> float:
    """SD of unit white noise after ndimage.gaussian_filter with ``sigma`` (voxels, per axis)."""
    energy = 1.0
    for s in sigma:
        radius = int(truncate * s + 0.5)
        weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(s, 1e-6)) ** 2)
        energy *= float(np.sum((weights / weights.sum()) ** 2))
    return float(np.sqrt(energy))


def ct_hounsfield(maps: LabelMaps, look: CtLook, fractured: np.ndarray, spacing: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """The CT image (int16 HU) of a label map on a grid of the given spacing (mm)."""
    return acquire_ct(ct_values(maps, look, fractured), spacing, look.noise_hu, rng)


def mr_signal(maps: LabelMaps, lut: np.ndarray, degeneration: np.ndarray, fractured: np.ndarray,
              protocol: MrProtocol) -> np.ndarray:
    """Noise-free MR signal of a thin-slice label map (float32)."""
    signal = lut[maps.tissue]
    nucleus = np.nonzero((maps.disc > 0) & ((maps.tissue == Tissue.NUCLEUS) | (maps.tissue == Tissue.GAS)))
    towards = 0.8 * lut[int(Tissue.ANNULUS)]
    weight = protocol.degeneration_darkening * degeneration[maps.disc[nucleus]]
    signal[nucleus] = (1.0 - weight) * signal[nucleus] + weight * towards
    marrow = np.nonzero(IS_MARROW[maps.tissue])
    tissue, island = maps.tissue[marrow], fatty_islands(maps.marrow[marrow])
    factor = (1.0 - protocol.marrow_bone * maps.trabecular[marrow] + protocol.marrow_variation * maps.marrow[marrow]
              + protocol.fatty_island_gain * island)
    fracture = (fractured[maps.bone[marrow]] > 0) & (tissue == Tissue.CANCELLOUS)
    factor[fracture] *= np.float32(protocol.fracture_marrow)
    signal[marrow] *= np.maximum(factor, 0.0)
    return signal


def acquire_mr(thin_signal: np.ndarray, protocol: MrProtocol, rng: np.random.Generator) -> np.ndarray:
    """Thick slices from thin ones (axis 0 holds ``sub_slices`` per slice), then truncated k-space,
    bias field and Rician noise."""
    n = protocol.sub_slices
    signal = thin_signal.reshape(thin_signal.shape[0] // n, n, *thin_signal.shape[1:]).mean(axis=1)
    signal = truncate_kspace(signal, protocol.kspace_fraction, axis=1)
    signal *= bias_field(signal.shape, protocol.bias, rng)
    sigma = protocol.noise * float(max(protocol.intensities.values()))
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.clip(np.rint(np.sqrt(real * real + imaginary * imaginary)), 0, 32767).astype(np.int16)


def truncate_kspace(signal: np.ndarray, fraction: float, axis: int) -> np.ndarray:
    """Keep the central ``fraction`` of k-space along ``axis`` (phase encoding): a lower resolution with
    Gibbs ringing next to sharp edges."""
    if fraction >= 1.0:
        return signal
    spectrum = np.fft.rfft(signal, axis=axis)
    keep = round(fraction * spectrum.shape[axis])
    spectrum[(slice(None),) * axis + (slice(keep, None),)] = 0
    return np.fft.irfft(spectrum, n=signal.shape[axis], axis=axis).astype(np.float32)


def bias_field(shape: tuple[int, ...], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a random smooth quadratic over the normalised volume, plus a posterior (coil-side) brightening."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    c = rng.uniform(-1.0, 1.0, 7).astype(np.float32)
    log_field = (c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * z * z + c[6] * y * z) / 7.0
    log_field = log_field - 0.5 * y  # receive coil under the patient's back
    log_field *= amplitude / max(float(np.ptp(log_field)), 1e-6)
    return np.exp(log_field - log_field.mean()).astype(np.float32)
