"""A quick-look PNG per phantom subject: mid-sagittal and axial slices of MR, CT, oracle CT and labels."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)
import numpy as np  # noqa: E402

from mr2ct.core.io import Volume  # noqa: E402
from mr2ct.core.labels import BODY  # noqa: E402

CT_WINDOW = (-400, 1200)


def _sagittal(volume: Volume, index: int) -> tuple[np.ndarray, float]:
    """Slice ``index`` along left-right, superior up and anterior right, with its pixel aspect."""
    return volume.array[index].T[::-1], volume.spacing[2] / volume.spacing[1]


def _axial(volume: Volume, index: int) -> tuple[np.ndarray, float]:
    """Axial slice ``index``, radiological (patient right on the left, anterior up), with its pixel aspect."""
    return volume.array[:, :, index].T[::-1, ::-1], volume.spacing[1] / volume.spacing[0]


def _axial_index(volume: Volume, point_ras: np.ndarray) -> int:
    return int(np.clip(np.rint(volume.ras_to_index(point_ras)[2]), 0, volume.shape[2] - 1))


def write_preview(subject, path: Path) -> Path:
    """Save the preview of a PhantomSubject; the axial row cuts through the middle vertebra's body centroid."""
    vertebrae = sorted(subject.mr_landmarks)
    middle = vertebrae[len(vertebrae) // 2]
    mr_point, ct_point = subject.mr_landmarks[middle]["body"], subject.ct_landmarks[middle]["body"]
    mr_mid = int(np.clip(np.rint(subject.mr.ras_to_index(mr_point)[0]), 0, subject.mr.shape[0] - 1))
    ct_mid = int(np.clip(np.rint(subject.ct.ras_to_index(ct_point)[0]), 0, subject.ct.shape[0] - 1))
    mr_axial, ct_axial = _axial_index(subject.mr, mr_point), _axial_index(subject.ct, ct_point)
    labels = subject.mr_seg.array.astype(float) + (subject.mr_subreg.array == BODY) * 0.5
    overlay = subject.mr_seg.with_array(np.where(subject.mr_seg.array > 0, labels, np.nan))
    panels = [
        ("MR", subject.mr, "gray", None, mr_mid, mr_axial),
        ("CT (own pose)", subject.ct, "gray", CT_WINDOW, ct_mid, ct_axial),
        ("oracle CT (MR pose)", subject.oracle_ct, "gray", CT_WINDOW, mr_mid, mr_axial),
        ("MR + labels", subject.mr, "gray", None, mr_mid, mr_axial),
    ]
    figure, axes = plt.subplots(2, 4, figsize=(16, 9))
    for column, (title, volume, cmap, window, sagittal_index, axial_index) in enumerate(panels):
        for row, (cut, index) in enumerate(((_sagittal, sagittal_index), (_axial, axial_index))):
            image, aspect = cut(volume, index)
            vmin, vmax = window if window else (0, np.percentile(volume.array, 99.5))
            axes[row, column].imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
            if column == 3:
                label_image, _ = cut(overlay, index)
                axes[row, column].imshow(label_image, cmap="tab20", alpha=0.45, aspect=aspect, interpolation="nearest")
            axes[row, column].set_title(f"{title} {'sagittal' if row == 0 else 'axial'}", fontsize=9)
            axes[row, column].axis("off")
    figure.suptitle(f"{subject.name} ({subject.preset}, {subject.region}, {subject.split})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    figure.savefig(tmp, dpi=80, format="png")
    plt.close(figure)
    tmp.replace(path)
    return path
