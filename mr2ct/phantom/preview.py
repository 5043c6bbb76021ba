"""Quick-look PNGs: one per phantom subject (mid-sagittal and axial slices of MR, CT, oracle CT and labels),
and a grid of regions for T1w and T2w, MR next to the oracle CT (drawn from subjects made elsewhere:
``python -m mr2ct.phantom.grid`` generates them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402

from mr2ct.core.io import Volume  # noqa: E402
from mr2ct.core.labels import BODY, vertebra_mask  # noqa: E402

CT_WINDOW = (-400, 1200)
GRID_REGIONS = ("cervical", "thoracic", "lumbar")
GRID_PRESETS = ("t1w", "t2w")
PARASAGITTAL_MM = 18.0  # the grid's second column pair cuts through pedicles and facet joints


def _sagittal(volume: Volume, index: int) -> tuple[np.ndarray, float]:
    """Slice ``index`` along left-right, superior up and anterior right, with its pixel aspect."""
    return volume.array[index].T[::-1], volume.spacing[2] / volume.spacing[1]


def _axial(volume: Volume, index: int) -> tuple[np.ndarray, float]:
    """Axial slice ``index``, radiological (patient right on the left, anterior up), with its pixel aspect."""
    return volume.array[:, :, index].T[::-1, ::-1], volume.spacing[1] / volume.spacing[0]


def _index(volume: Volume, point_ras: np.ndarray, axis: int) -> int:
    return int(np.clip(np.rint(volume.ras_to_index(point_ras)[axis]), 0, volume.shape[axis] - 1))


def _mr_window(volume: Volume) -> tuple[float, float]:
    return 0.0, float(np.percentile(volume.array, 99.5))


def _save(figure, path: Path, dpi: int = 80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    figure.savefig(tmp, dpi=dpi, format="png")
    plt.close(figure)
    tmp.replace(path)
    return path


def write_preview(subject, path: Path) -> Path:
    """Save the preview of a PhantomSubject; the axial row cuts through the middle vertebra's body centroid."""
    vertebrae = sorted(subject.mr_landmarks)
    middle = vertebrae[len(vertebrae) // 2]
    mr_point, ct_point = subject.mr_landmarks[middle]["body"], subject.ct_landmarks[middle]["body"]
    mr_mid, ct_mid = _index(subject.mr, mr_point, 0), _index(subject.ct, ct_point, 0)
    mr_axial, ct_axial = _index(subject.mr, mr_point, 2), _index(subject.ct, ct_point, 2)
    seg = subject.mr_seg.array
    labels = seg.astype(float) % 40 + (subject.mr_subreg.array == BODY) * 0.5
    overlay = subject.mr_seg.with_array(np.where(seg > 0, labels, np.nan))
    panels = [
        ("MR", subject.mr, "gray", _mr_window(subject.mr), mr_mid, mr_axial),
        ("CT (own pose)", subject.ct, "gray", CT_WINDOW, ct_mid, ct_axial),
        ("oracle CT (MR pose)", subject.oracle_ct, "gray", CT_WINDOW, mr_mid, mr_axial),
        ("MR + labels", subject.mr, "gray", _mr_window(subject.mr), mr_mid, mr_axial),
    ]
    figure, axes = plt.subplots(2, 4, figsize=(16, 9))
    for column, (title, volume, cmap, window, sagittal_index, axial_index) in enumerate(panels):
        for row, (cut, index) in enumerate(((_sagittal, sagittal_index), (_axial, axial_index))):
            image, aspect = cut(volume, index)
            axes[row, column].imshow(image, cmap=cmap, vmin=window[0], vmax=window[1], aspect=aspect,
                                     interpolation="nearest")
            if column == 3:
                label_image, _ = cut(overlay, index)
                axes[row, column].imshow(label_image, cmap="tab20", alpha=0.45, aspect=aspect, interpolation="nearest")
            axes[row, column].set_title(f"{title} {'sagittal' if row == 0 else 'axial'}", fontsize=9)
            axes[row, column].axis("off")
    figure.suptitle(f"{subject.name} ({subject.preset}, {subject.region}, {subject.split})")
    figure.tight_layout()
    return _save(figure, path)


def write_region_grid(subjects: dict[tuple[str, str], Any], path: Path, title: str) -> Path:
    """One row per region of ``subjects`` ((region, preset) -> subject): for T1w and T2w, the mid-sagittal MR
    next to the oracle CT (same slice), then the same pair PARASAGITTAL_MM to the patient's right (pedicles,
    foramina, facet joints, ribs)."""
    heights = [max(s.mr.shape[2] * s.mr.spacing[2] for (r, _), s in subjects.items() if r == region)
               for region in GRID_REGIONS]
    columns = [(preset, offset) for offset in (0.0, PARASAGITTAL_MM) for preset in GRID_PRESETS]
    figure, axes = plt.subplots(len(GRID_REGIONS), 2 * len(columns), figsize=(24, 24 * sum(heights) / 1400),
                                gridspec_kw={"wspace": 0.02, "hspace": 0.06, "height_ratios": heights})
    for row, region in enumerate(GRID_REGIONS):
        for column, (preset, offset) in enumerate(columns):
            subject = subjects[region, preset]
            centre = np.argwhere(vertebra_mask(subject.mr_seg.array)).mean(axis=0)
            slice_index = _index(subject.mr, subject.mr.index_to_ras(centre) + [offset, 0.0, 0.0], 0)
            for k, (volume, window) in enumerate(((subject.mr, _mr_window(subject.mr)), (subject.oracle_ct, CT_WINDOW))):
                image, aspect = _sagittal(volume, slice_index)
                axis = axes[row, 2 * column + k]
                axis.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="bilinear")
                side = f" +{offset:.0f} mm" if offset else ""
                axis.set_title(f"{region} {preset} {'MR' if k == 0 else 'CT'}{side}", fontsize=10)
                axis.axis("off")
    figure.suptitle(title)
    return _save(figure, path)
