"""The paper's figures from run dirs: translation grid (Fig. 5), registration comparison (Fig. 4),
segmentation overlays on the MR and the super-resolved segmentation (Fig. 7).

Everything is shown on the subject's native MR grid (RAS+), at the spine's mid-sagittal slice: the
synthetic CT and its labels are already written there; the reference CT and labels are resampled from the
prepared grid. The registration figure stays on the prepared grid, where the registered CT was stored.
The test records come from the copy a training run keeps in its dir (``kept/test_data``), so figures build
from any working directory and from a run dir copied without its cache; the registration figure needs the
prepared training data, which only the cache holds. The super-resolution figure is on the 1 mm isotropic grid of
the subject's isotropic ground truth, where runs with ``iso=true`` wrote their ``*_sct_seg_iso`` labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mr2ct.core.io import Volume, load_nifti  # noqa: E402
from mr2ct.core.values import ct_to_model  # noqa: E402
from mr2ct.inference.checkpoint import kept_dir  # noqa: E402
from mr2ct.inference.outputs import onto_mr_grid  # noqa: E402
from mr2ct.pipeline.kept import TEST_DATA  # noqa: E402
from mr2ct.report.runs import RunRecord  # noqa: E402
from mr2ct.report.tables import REGISTRATION_LABELS, REGISTRATION_ORDER  # noqa: E402
from mr2ct.scoring.figures import sagittal_view, spine_centre_slice  # noqa: E402

LABEL_COLOURS = plt.get_cmap("tab20")


class NativeSubject:
    """A test subject on its native MR grid (the evaluation grid): MR (display-normalised), reference CT
    (model space) and labels, as the prepared test record holds them."""

    def __init__(self, record_path: Path):
        with np.load(record_path) as record:
            self.ct, self.seg = record["reference_ct"], record["reference_seg"]
            self.mr = (record["reference_mr"] + 1.0) / 2.0
        self.name = record_path.stem
        self.index = spine_centre_slice(self.seg)


def test_data_folders(run: RunRecord) -> list[Path]:
    """Where the test records of a run's own training data may be: the copy kept in its run dir (keyed like
    the prepared entry it came from), then the prepared entry in the cache it recorded."""
    if not run.prepared_dataset:
        return []
    prepared = Path(run.prepared_dataset)
    kept = [kept_dir(run.run_dir) / TEST_DATA / prepared.name] if run.run_dir is not None else []
    return [*kept, prepared]


def test_records(run: RunRecord, dataset: str) -> list[Path]:
    """The prepared test records of the training data's own test split (see :func:`test_data_folders`)."""
    if dataset != run.summary.get("data"):
        return []
    for folder in test_data_folders(run):
        records = sorted((folder / "test").glob("*.npz"))
        if records:
            return records
    return []


def load_prediction(run: RunRecord, dataset: str, subject: str, suffix: str) -> np.ndarray | None:
    if run.run_dir is None:
        return None
    path = run.run_dir / "predictions" / dataset / f"{subject}{suffix}.nii.gz"
    return load_nifti(path)[0].array if path.is_file() else None


def show(ax, image: np.ndarray | None, index: int, title: str | None, vmin: float, vmax: float) -> None:
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)
    if image is None:
        ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
        return
    ax.imshow(sagittal_view(image, index), cmap="gray", vmin=vmin, vmax=vmax)


def label_colours(view: np.ndarray) -> np.ndarray:
    """An RGBA image of a 2D label view, one colour per label id (cycling every 20 ids)."""
    return LABEL_COLOURS((view % 20) / 19.0)


def overlay_labels(ax, labels: np.ndarray | None, index: int) -> None:
    if labels is None:
        return
    view = sagittal_view(labels, index)
    coloured = label_colours(view)
    coloured[..., 3] = np.where(view > 0, 0.55, 0.0)
    ax.imshow(coloured)


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def method_grid(
    methods: Sequence[tuple[str, RunRecord]], dataset: str, path: Path, max_subjects: int, segmentation: bool
) -> Path | None:
    """Rows: test subjects; columns: MR, each method, reference. Translation grid (segmentation=False:
    synthetic CTs, reference CT) or segmentation overlays (labels on the MR, ground truth last)."""
    records = next((test_records(run, dataset) for _, run in methods if test_records(run, dataset)), [])[:max_subjects]
    if not records:
        return None
    columns = ["MR", *(label for label, _ in methods), "reference CT" if not segmentation else "ground truth"]
    fig, axes = plt.subplots(len(records), len(columns), figsize=(1.9 * len(columns), 2.6 * len(records)), squeeze=False)
    for r, record in enumerate(records):
        subject = NativeSubject(record)
        show(axes[r, 0], subject.mr, subject.index, "MR" if r == 0 else None, 0, 1)
        axes[r, 0].text(0, 1, subject.name, color="yellow", fontsize=7, va="top", transform=axes[r, 0].transAxes)
        for c, (label, run) in enumerate(methods, start=1):
            title = label if r == 0 else None
            if segmentation:
                show(axes[r, c], subject.mr, subject.index, title, 0, 1)
                labels = load_prediction(run, dataset, subject.name, "_sct_seg")
                overlay_labels(axes[r, c], labels, subject.index)
                if labels is None:
                    axes[r, c].text(0.5, 0.5, "missing", ha="center", va="center", color="red", transform=axes[r, c].transAxes)
            else:
                hu = load_prediction(run, dataset, subject.name, "_sct")
                show(axes[r, c], None if hu is None else ct_to_model(hu), subject.index, title, -1, 1)
        if segmentation:
            show(axes[r, -1], subject.mr, subject.index, columns[-1] if r == 0 else None, 0, 1)
            overlay_labels(axes[r, -1], subject.seg, subject.index)
        else:
            show(axes[r, -1], subject.ct, subject.index, columns[-1] if r == 0 else None, -1, 1)
    kind = "segmentation of the synthetic CT on the MR" if segmentation else "MR to CT translation"
    fig.suptitle(f"{kind}: {dataset} test split", fontsize=10)
    return save(fig, path)


def registration_figure(runs_by_mode: dict[str, RunRecord], dataset: str, path: Path) -> Path | None:
    """The MR with the CT as registered by each mode (bone in colour, its labels outlined), one training
    subject, the same mid-sagittal slice for every mode."""
    modes = [m for m in REGISTRATION_ORDER if m in runs_by_mode and runs_by_mode[m].prepared_dataset]
    records, subject = {}, ""
    for mode in modes:
        copies = sorted((Path(runs_by_mode[mode].prepared_dataset) / "train").glob("*__copy0.npz"))
        if copies:
            subject = copies[0].name.removesuffix("__copy0.npz")
            with np.load(copies[0]) as record:
                records[mode] = {k: record[k] for k in ("mr", "ct", "seg")}
    if not records:
        return None
    index = spine_centre_slice(records[list(records)[-1]]["seg"])
    fig, axes = plt.subplots(1, len(records), figsize=(3.2 * len(records), 4), squeeze=False)
    for ax, (mode, record) in zip(axes[0], records.items()):
        show(ax, record["mr"], index, f"{REGISTRATION_LABELS[mode]} ({mode})", -1, 1)
        bone = sagittal_view(record["ct"], index)
        ax.imshow(np.ma.masked_less(bone, 0.15), cmap="autumn", alpha=0.45, vmin=0.15, vmax=1)
        seg = sagittal_view(record["seg"], index)
        if seg.any():
            ax.contour(seg > 0, levels=[0.5], colors="cyan", linewidths=0.6)
    fig.suptitle(f"registered CT on the MR: {dataset}, training subject {subject}", fontsize=10)
    return save(fig, path)


def has_iso_outputs(run: RunRecord, dataset: str) -> bool:
    """Whether ``run`` wrote super-resolved labels (``iso=true``) for ``dataset``."""
    return run.run_dir is not None and any((run.run_dir / "predictions" / dataset).glob("*_sct_seg_iso.nii.gz"))


def isotropic_views(labels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A coronal and an axial view of RAS+ ``labels`` (superior and anterior up), both through the middle of
    the ground truth ``truth``: the coronal plane at its mean A, the axial plane at the centre of its middle
    vertebra. Both planes cut across the sagittal slices, where 3 mm slices become 1 mm."""
    vertebrae = np.unique(truth[truth > 0])
    axial = int(round(np.nonzero(truth == vertebrae[len(vertebrae) // 2])[2].mean()))
    coronal = int(round(np.nonzero(truth)[1].mean()))
    return np.rot90(labels[:, coronal, :]), np.rot90(labels[:, :, axial])


def isotropic_figure(run: RunRecord, dataset: str, path: Path, max_subjects: int) -> Path | None:
    """Super-resolution (paper Fig. 7): per test subject, the labels of the synthetic CT on the native MR grid
    (shown on the 1 mm grid by nearest neighbour, so its 3 mm slices stay visible), on the 1 mm isotropic grid,
    and the isotropic ground truth, each in a coronal and an axial view."""
    subjects = []
    for record_path in test_records(run, dataset):
        with np.load(record_path) as record:
            if "reference_iso_seg" not in record.files:
                continue
            truth = Volume(record["reference_iso_seg"], record["reference_iso_affine"])
        native = run.run_dir / "predictions" / dataset / f"{record_path.stem}_sct_seg.nii.gz"
        iso = run.run_dir / "predictions" / dataset / f"{record_path.stem}_sct_seg_iso.nii.gz"
        if native.is_file() and iso.is_file():
            subjects.append((record_path.stem, truth, native, iso))
        if len(subjects) == max_subjects:
            break
    if not subjects:
        return None
    columns = ["native MR grid", "1 mm isotropic", "isotropic ground truth"]
    fig, axes = plt.subplots(2 * len(subjects), 3, figsize=(7.5, 3.4 * len(subjects)), squeeze=False)
    for i, (name, truth, native, iso) in enumerate(subjects):
        labels = [onto_mr_grid(load_nifti(native)[0], truth, labels=True).array, load_nifti(iso)[0].array, truth.array]
        for c, volume in enumerate(labels):
            for r, view in enumerate(isotropic_views(volume, truth.array)):
                ax = axes[2 * i + r, c]
                ax.axis("off")
                coloured = label_colours(view)
                coloured[view == 0] = (0.0, 0.0, 0.0, 1.0)
                ax.imshow(coloured, interpolation="nearest")
                if 2 * i + r == 0:
                    ax.set_title(columns[c], fontsize=8)
        axes[2 * i, 0].text(0, 1, f"{name} coronal", color="yellow", fontsize=7, va="top", transform=axes[2 * i, 0].transAxes)
        axes[2 * i + 1, 0].text(0, 1, "axial", color="yellow", fontsize=7, va="top", transform=axes[2 * i + 1, 0].transAxes)
    fig.suptitle(f"super-resolved segmentation: {run.summary.get('model')} on {dataset}", fontsize=10)
    return save(fig, path)
