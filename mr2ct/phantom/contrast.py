"""Tissue classes -> CT Hounsfield units and MR signal (T1w, T2w, an external scanner).

The MR tables make the paper's ambiguities real: posterior-element marrow is close to epidural fat (T1w),
fat is close to CSF/water in T2w while they are 110 HU apart in CT, and cortical bone is dark in MR.
MR acquisition: thick sagittal slices (partial volume = mean over thin sub-slices), a smooth multiplicative
bias field and Rician noise. Each subject draws its own tissue values around these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mr2ct.phantom.render import Tissue

T = Tissue
CT_HU: dict[Tissue, tuple[float, float]] = {  # (low, high) of the per-subject value
    T.AIR: (-1000, -1000), T.FAT: (-120, -80), T.SOFT: (30, 50), T.MUSCLE: (40, 60), T.EPIDURAL_FAT: (-110, -70),
    T.CSF: (5, 15), T.CORD: (30, 40), T.ANNULUS: (80, 110), T.NUCLEUS: (60, 90), T.CORTICAL: (900, 1400),
    T.CANCELLOUS: (150, 300), T.POSTERIOR_MARROW: (250, 400),
}
CT_NOISE_HU = (12.0, 25.0)
CT_FRACTURE_SCLEROSIS_HU = 80.0  # a compressed body is denser


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


T1W = MrProtocol(
    contrast="t1w",
    intensities={T.AIR: 0, T.FAT: 900, T.SOFT: 420, T.MUSCLE: 330, T.EPIDURAL_FAT: 860, T.CSF: 130, T.CORD: 430,
                 T.ANNULUS: 300, T.NUCLEUS: 340, T.CORTICAL: 50, T.CANCELLOUS: 560, T.POSTERIOR_MARROW: 820},
    slice_mm=3.0, inplane_mm=1.0, sub_slices=3, noise=0.025, bias=0.35, degeneration_darkening=0.3,
    fracture_marrow=0.6,
)
T2W = MrProtocol(
    contrast="t2w",
    intensities={T.AIR: 0, T.FAT: 780, T.SOFT: 330, T.MUSCLE: 200, T.EPIDURAL_FAT: 760, T.CSF: 820, T.CORD: 420,
                 T.ANNULUS: 230, T.NUCLEUS: 820, T.CORTICAL: 40, T.CANCELLOUS: 420, T.POSTERIOR_MARROW: 580},
    slice_mm=3.0, inplane_mm=1.0, sub_slices=3, noise=0.025, bias=0.35, degeneration_darkening=1.0,
    fracture_marrow=1.4,
)
EXTERNAL = MrProtocol(  # another vendor's T2w (like MRSpineSeg): thicker slices, coarser pixels, more noise
    contrast="t2w",
    intensities={T.AIR: 0, T.FAT: 640, T.SOFT: 380, T.MUSCLE: 260, T.EPIDURAL_FAT: 620, T.CSF: 950, T.CORD: 500,
                 T.ANNULUS: 280, T.NUCLEUS: 900, T.CORTICAL: 70, T.CANCELLOUS: 380, T.POSTERIOR_MARROW: 470},
    slice_mm=4.0, inplane_mm=1.25, sub_slices=3, noise=0.04, bias=0.5, degeneration_darkening=0.9,
    fracture_marrow=1.3,
)
PROTOCOLS: dict[str, MrProtocol] = {"t1w": T1W, "t2w": T2W, "external": EXTERNAL, "external_corrected": EXTERNAL}


def tissue_lut(values: dict[Tissue, float]) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for tissue, value in values.items():
        lut[int(tissue)] = value
    return lut


def sample_ct_lut(rng: np.random.Generator) -> np.ndarray:
    """This subject's HU per tissue class (index = Tissue value)."""
    return tissue_lut({tissue: rng.uniform(low, high) for tissue, (low, high) in CT_HU.items()})


def sample_mr_lut(rng: np.random.Generator, protocol: MrProtocol) -> np.ndarray:
    """This subject's MR signal per tissue class: the protocol table scaled by +-8 % per tissue."""
    return tissue_lut({tissue: value * rng.uniform(0.92, 1.08) for tissue, value in protocol.intensities.items()})


def ct_hounsfield(tissue: np.ndarray, vertebra: np.ndarray, lut: np.ndarray, fractured: np.ndarray,
                  noise_hu: float, rng: np.random.Generator) -> np.ndarray:
    """HU image (int16) of a tissue map: table values, denser fractured bodies, Gaussian noise."""
    hu = lut[tissue]
    hu += (tissue == Tissue.CANCELLOUS) * fractured[vertebra] * np.float32(CT_FRACTURE_SCLEROSIS_HU)
    hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def mr_signal(tissue: np.ndarray, vertebra: np.ndarray, disc: np.ndarray, lut: np.ndarray,
              degeneration: np.ndarray, fractured: np.ndarray, protocol: MrProtocol) -> np.ndarray:
    """Noise-free MR signal of a thin-slice tissue map (float32)."""
    signal = lut[tissue]
    nucleus = tissue == Tissue.NUCLEUS
    towards = 0.8 * lut[int(Tissue.ANNULUS)]
    weight = protocol.degeneration_darkening * degeneration[disc[nucleus]]
    signal[nucleus] = (1.0 - weight) * signal[nucleus] + weight * towards
    marrow = tissue == Tissue.CANCELLOUS
    signal[marrow] *= np.where(fractured[vertebra[marrow]] > 0, protocol.fracture_marrow, 1.0).astype(np.float32)
    return signal


def acquire_mr(thin_signal: np.ndarray, protocol: MrProtocol, rng: np.random.Generator) -> np.ndarray:
    """Thick slices from thin ones (axis 0 holds ``sub_slices`` per slice), then bias field and Rician noise."""
    n = protocol.sub_slices
    signal = thin_signal.reshape(thin_signal.shape[0] // n, n, *thin_signal.shape[1:]).mean(axis=1)
    signal *= bias_field(signal.shape, protocol.bias, rng)
    sigma = protocol.noise * float(max(protocol.intensities.values()))
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.clip(np.rint(np.sqrt(real * real + imaginary * imaginary)), 0, 32767).astype(np.int16)


def bias_field(shape: tuple[int, ...], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a random smooth quadratic over the normalised volume, plus a posterior (coil-side) brightening."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    c = rng.uniform(-1.0, 1.0, 7).astype(np.float32)
    log_field = (c[0] * x + c[1] * y + c[2] * z + c[3] * x * x + c[4] * y * y + c[5] * z * z + c[6] * y * z) / 7.0
    log_field = log_field - 0.5 * y  # receive coil under the patient's back
    log_field *= amplitude / max(float(np.ptp(log_field)), 1e-6)
    return np.exp(log_field - log_field.mean()).astype(np.float32)
