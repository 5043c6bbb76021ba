"""Figures people would rather look at than read: translation panels of test volumes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mr2ct.data.datamodule import TestVolume  # noqa: E402


def sagittal_view(volume: np.ndarray, index: int) -> np.ndarray:
    """Sagittal slice ``index`` of a RAS+ volume, oriented for display (superior up, anterior left)."""
    return np.rot90(volume[index])[:, ::-1]


def spine_centre_slice(seg: np.ndarray) -> int:
    """The sagittal slice with the most spine voxels (the mid-sagittal plane of the spine)."""
    return int(np.argmax((seg > 0).reshape(seg.shape[0], -1).sum(1)))


def translation_panel(test: TestVolume, prediction: np.ndarray, path: Path) -> Path:
    """MR | synthetic CT | reference CT | |difference| on the spine's mid-sagittal slice of the evaluation
    grid (``prediction`` lies on it), as a PNG."""
    reference = test.reference
    index = spine_centre_slice(reference.seg)
    images = [reference.mr, prediction, reference.ct, np.abs(prediction - reference.ct)]
    titles = ["MR", "synthetic CT", "reference CT", "|difference|"]
    fig, axes = plt.subplots(1, 4, figsize=(12, 4.5))
    for ax, image, title in zip(axes, images, titles):
        vmin, vmax = (0, 1) if title.startswith("|") else (-1, 1)
        ax.imshow(sagittal_view(image, index), cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{test.name}, sagittal slice {index}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
