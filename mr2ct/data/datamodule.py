"""The Lightning data module over a prepared dataset.

Training batches: paired MR/CT crops with MR brightness and contrast jitter and a random anterior-posterior
flip. For unpaired methods the MR and the CT of a pair come from different subjects: the two are shuffled
separately and cropped and flipped independently, so no pixel correspondence leaks into training; the CT
pool is still the CT registered with the chosen mode. Validation batches: fixed centre crops of the stored
arrays, never augmented. Images are (B, 1, H, W) with H = anterior-posterior and W = inferior-superior
(a sagittal slice ``volume[i]`` in RAS+ order), or (B, 1, X, Y, Z) patches in 3D; regions outside the data
are filled with -1 (air in CT, black in MR). 3D patches (``loader.patch_size`` per axis, else ``crop_size``
cubes) also carry ``position``: the (B, 3, X, Y, Z) crop of the volume's position ramps
(:mod:`mr2ct.data.positions`), flipped with the patch.

Randomness never depends on the number of workers: the sampler hands each item its own seed, drawn from
``seed`` and the epoch, so the same seed gives the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mr2ct.core.config import LoaderConfig
from mr2ct.core.labels import vertebra_mask
from mr2ct.core.values import BACKGROUND
from mr2ct.data.positions import position_ramps
from mr2ct.data.preprocess import load_manifest, record_filenames

EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class Reference:
    """The ground truth of a test volume on its evaluation grid: the subject's native MR grid (RAS+).

    Every method is scored here, whatever grid it translates on, so 2D and 3D rows score the same pixels,
    and its outputs are written here, on the MR's own header.
    """

    mr: np.ndarray  # model space, for figures
    ct: np.ndarray  # model space
    seg: np.ndarray  # VerSe ids
    subreg: np.ndarray
    affine: np.ndarray  # native MR grid -> RAS mm

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ct.shape


@dataclass(frozen=True)
class IsoLabels:
    """Ground-truth labels on a 1 mm isotropic grid over the MR's field of view (where the subject has them):
    where super-resolved segmentations are scored."""

    seg: np.ndarray
    subreg: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class TestVolume:
    """A whole evaluation volume: the model input on the method's prepared grid and the reference."""

    name: str
    contrast: str
    mr: np.ndarray  # (X, Y, Z) model space, on the prepared grid
    affine: np.ndarray  # prepared grid -> RAS mm
    reference: Reference
    mr_path: str  # the subject's MR file, whose header outputs are written on (stored absolute, or relative to a run's kept copy)
    iso_labels: IsoLabels | None = None


# ---------------------------------------------------------------------------------------------- pure helpers
def window(shape: Sequence[int], start: Sequence[int], size: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source slices into an array of ``shape`` and destination slices into a ``size`` canvas for a crop at
    ``start`` (which may lie partly outside the array: the rest of the canvas is padding)."""
    source = tuple(slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, size, shape))
    destination = tuple(slice(src.start - s, src.stop - s) for src, s in zip(source, start))
    return source, destination


def crop(
    image: np.ndarray,
    start: Sequence[int],
    size: Sequence[int],
    flip_axis: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """A ``size`` crop at ``start`` padded with -1; ``transform`` acts on the data part only, before padding."""
    source, destination = window(image.shape, start, size)
    canvas = np.full(tuple(size), BACKGROUND, dtype=np.float32)
    region = image[source]
    canvas[destination] = region if transform is None else transform(region)
    return canvas if flip_axis is None else np.flip(canvas, axis=flip_axis)


def crop_shape(loader_cfg: LoaderConfig, dims: int) -> list[int]:
    """The training and validation view: a ``crop_size`` square (2D); a ``patch_size`` patch, else a
    ``crop_size`` cube (3D)."""
    if dims == 3 and loader_cfg.patch_size is not None:
        if len(loader_cfg.patch_size) != 3:
            raise ValueError(f"loader.patch_size needs 3 sides (left-right, posterior-anterior, inferior-superior), "
                             f"got {list(loader_cfg.patch_size)}")
        return [int(n) for n in loader_cfg.patch_size]
    return [loader_cfg.crop_size] * dims


def positions_of_crop(volume_shape: Sequence[int], start: Sequence[int], size: Sequence[int],
                      flip_axis: int | None = None) -> np.ndarray:
    """The position ramps of a 3D crop (3, *size), flipped along ``flip_axis`` of the crop like its image."""
    ramps = position_ramps(volume_shape, start, size)
    return ramps if flip_axis is None else np.flip(ramps, axis=flip_axis)


def random_start(shape: Sequence[int], size: Sequence[int], rng: np.random.Generator) -> list[int]:
    """A uniformly random crop origin; where the image is smaller than the crop, a random padding split."""
    return [int(rng.integers(min(0, d - n), max(0, d - n) + 1)) for d, n in zip(shape, size)]


def centre_start(shape: Sequence[int], size: Sequence[int]) -> list[int]:
    """The crop origin of a centred crop (negative where the image is smaller: padded on both sides)."""
    return [(d - n) // 2 for d, n in zip(shape, size)]


def start_around(
    centre: Sequence[int], shape: Sequence[int], size: Sequence[int]
) -> list[int]:
    """The origin of a crop centred on ``centre``, moved to stay inside the image where the image allows."""
    return [int(np.clip(c - n // 2, min(0, d - n), max(0, d - n))) for c, d, n in zip(centre, shape, size)]


def jitter_mr(mr: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness then contrast factors drawn from U(1 - s, 1 + s), applied to [0, 1]-scaled MR as
    torchvision's ColorJitter does (contrast blends with the image mean), then mapped back to [-1, 1]."""
    if strength <= 0:
        return mr
    x = ((mr + 1.0) / 2.0) * rng.uniform(1 - strength, 1 + strength)
    x = x.clip(0.0, 1.0)
    mean = x.mean()
    x = (mean + rng.uniform(1 - strength, 1 + strength) * (x - mean)).clip(0.0, 1.0)
    return (x * 2.0 - 1.0).astype(np.float32)


def spine_slices(seg: np.ndarray, min_spine_pixels: int) -> np.ndarray:
    """Sagittal slice indices (axis 0) with at least ``min_spine_pixels`` vertebra voxels (ribs and sacrum
    do not count: a slice through the ribs alone shows no spine)."""
    return np.flatnonzero(vertebra_mask(seg).reshape(seg.shape[0], -1).sum(axis=1) >= min_spine_pixels)


def spine_box(seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest vertebra voxel index along each axis (the whole volume if there is none)."""
    found = np.argwhere(vertebra_mask(seg))
    if len(found) == 0:
        return np.zeros(seg.ndim, dtype=int), np.asarray(seg.shape) - 1
    return found.min(axis=0), found.max(axis=0)


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]


def training_subjects(manifest: dict) -> list[str]:
    """The subject of each training file, in file order (a subject's elastic copies share it)."""
    names, files = manifest["subjects"]["train"], manifest["files"]["train"]
    per_subject = len(files) // max(len(names), 1)
    subject_of = {path: name for name in names for path in record_filenames("train", name, per_subject)}
    unknown = [path for path in files if path not in subject_of]
    if unknown:
        raise ValueError(f"training files {unknown[:3]} belong to no training subject of the manifest")
    return [subject_of[path] for path in files]


# ---------------------------------------------------------------------------------------------- sampling
def unpaired_partners(subjects: np.ndarray, mr_order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A CT position for every MR position in ``mr_order``: a fresh permutation, repaired by swaps so no
    pair shares a subject (``subjects`` holds each position's subject).

    A clash at i swaps with a random j that clashes with neither partner; one exists while no subject holds
    more than half of the samples. Past that, the clash draws its CT from another subject at random (that
    CT then appears twice in the epoch).
    """
    ct_order = rng.permutation(len(mr_order))
    for i in np.flatnonzero(subjects[ct_order] == subjects[mr_order]):
        subject = subjects[mr_order[i]]
        if subjects[ct_order[i]] != subject:  # resolved as the partner of an earlier swap
            continue
        swappable = np.flatnonzero((subjects[ct_order] != subject) & (subjects[mr_order] != subject))
        if len(swappable):
            j = rng.choice(swappable)
            ct_order[[i, j]] = ct_order[[j, i]]
        else:
            ct_order[i] = rng.choice(np.flatnonzero(subjects != subject))
    return ct_order


class SeededSampler(Sampler):
    """Yields ``(position, item_seed)``: a fresh permutation and fresh item seeds every epoch, all from ``seed``."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0
        self.items_done = 0  # of the next epoch, already trained on before a resume

    def __len__(self) -> int:
        return self.length

    def resume(self, epoch: int, items_done: int) -> None:
        """Continue epoch ``epoch``'s order after its first ``items_done`` items (a run resumed mid-epoch)."""
        self.epoch, self.items_done = epoch, items_done

    def _remaining(self, keys: Iterator) -> Iterator:
        skip, self.items_done = self.items_done, 0
        return islice(keys, skip, None)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(self.length)
        seeds = rng.integers(0, 2**63 - 1, size=self.length)
        return self._remaining(zip(order.tolist(), seeds.tolist()))


class UnpairedSampler(SeededSampler):
    """Yields ``(mr_position, ct_position, item_seed)``: MR and CT shuffled separately every epoch, never
    from the same subject (``subjects``: each position's subject id), all from ``seed``."""

    def __init__(self, subjects: Sequence[int], seed: int):
        super().__init__(len(subjects), seed)
        self.subjects = np.asarray(subjects)
        if len(np.unique(self.subjects)) < 2:
            raise ValueError("unpaired training needs training samples from at least two subjects")

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        mr_order = rng.permutation(self.length)
        ct_order = unpaired_partners(self.subjects, mr_order, rng)
        seeds = rng.integers(0, 2**63 - 1, size=self.length)
        return self._remaining(zip(mr_order.tolist(), ct_order.tolist(), seeds.tolist()))


class TrainSet(Dataset):
    """Random paired training views (keys from :class:`SeededSampler`). A sample is a sagittal slice (2D) or a
    volume (3D: a patch around the spine, ``loader.patches_per_volume`` samples per volume, each its own random
    patch); ``subjects`` names each volume's subject."""

    def __init__(self, volumes: list[dict], subjects: Sequence[str], dims: int, loader_cfg: LoaderConfig,
                 min_spine_pixels: int):
        self.volumes, self.dims, self.cfg = volumes, dims, loader_cfg
        self.size = crop_shape(loader_cfg, dims)
        if dims == 2:
            self.samples = [(v, int(s)) for v, vol in enumerate(volumes) for s in spine_slices(vol["seg"], min_spine_pixels)]
        else:
            self.samples = [(v, -1) for v in range(len(volumes)) for _ in range(loader_cfg.patches_per_volume)]
            self.boxes = [spine_box(vol["seg"]) for vol in volumes]
        if not self.samples:
            raise ValueError(f"no training sample has >= {min_spine_pixels} spine pixels")
        subject_ids = {name: i for i, name in enumerate(dict.fromkeys(subjects))}
        self.sample_subjects = np.array([subject_ids[subjects[volume]] for volume, _ in self.samples])

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, position: int, key: str) -> np.ndarray:
        volume, index = self.samples[position]
        array = self.volumes[volume][key]
        return array[index] if self.dims == 2 else array

    def _start(self, position: int, rng: np.random.Generator) -> list[int]:
        shape = self._image(position, "mr").shape
        if self.dims == 2:
            return random_start(shape, self.size, rng)
        low, high = self.boxes[self.samples[position][0]]
        centre = [int(rng.integers(lo, hi + 1)) for lo, hi in zip(low, high)]
        return start_around(centre, shape, self.size)

    def _flip(self, rng: np.random.Generator) -> int | None:
        return -2 if self.cfg.flip_ap and rng.random() < 0.5 else None  # AP is axis -2 in 2D and 3D

    def _jitter(self, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        return partial(jitter_mr, strength=self.cfg.jitter, rng=rng)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        position, item_seed = key
        rng = np.random.default_rng(item_seed)
        start, flip = self._start(position, rng), self._flip(rng)
        image = self._image(position, "mr")
        mr = crop(image, start, self.size, flip, self._jitter(rng))
        ct = crop(self._image(position, "ct"), start, self.size, flip)
        item = {"mr": _as_tensor(mr), "ct": _as_tensor(ct)}
        if self.dims == 3:
            item["position"] = torch.from_numpy(positions_of_crop(image.shape, start, self.size, flip).copy())
        return item


class UnpairedTrainSet(TrainSet):
    """Unpaired training views (keys from :class:`UnpairedSampler`): the MR of one sample and the CT of
    another, each with its own crop and flip; the MR jittered as in paired training."""

    def _view(self, position: int, key: str, rng: np.random.Generator, transform=None) -> np.ndarray:
        return crop(self._image(position, key), self._start(position, rng), self.size, self._flip(rng), transform)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        mr_position, ct_position, item_seed = key
        rng = np.random.default_rng(item_seed)
        mr = self._view(mr_position, "mr", rng, self._jitter(rng))
        ct = self._view(ct_position, "ct", rng)
        return {"mr": _as_tensor(mr), "ct": _as_tensor(ct)}


class ValSet(Dataset):
    """Fixed validation views: centre crops of spine slices (2D) or a patch at the spine's centre, with its
    position ramps (3D)."""

    def __init__(self, volumes: list[dict], dims: int, size: Sequence[int], min_spine_pixels: int):
        self.volumes, self.dims, self.size = volumes, dims, list(size)
        if dims == 2:
            self.samples = [(v, int(s)) for v, vol in enumerate(volumes) for s in spine_slices(vol["seg"], min_spine_pixels)]
        else:
            self.samples = [(v, -1) for v in range(len(volumes))]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        volume, index = self.samples[position]
        record = self.volumes[volume]
        if self.dims == 2:
            mr, ct = record["mr"][index], record["ct"][index]
            start = centre_start(mr.shape, self.size)
        else:
            mr, ct = record["mr"], record["ct"]
            low, high = spine_box(record["seg"])
            start = start_around((low + high) // 2, mr.shape, self.size)
        item = {"mr": _as_tensor(crop(mr, start, self.size)), "ct": _as_tensor(crop(ct, start, self.size))}
        if self.dims == 3:
            item["position"] = torch.from_numpy(positions_of_crop(mr.shape, start, self.size))
        return item


# ---------------------------------------------------------------------------------------------- module
class SpineDataModule(L.LightningDataModule):
    """Batches from a prepared dataset (``mr2ct.data.preprocess.prepare_dataset``)."""

    def __init__(
        self,
        prepared_dir: str | Path,
        loader_cfg: LoaderConfig,
        dims: int = 2,
        paired: bool = True,
        min_spine_pixels: int = 10,
        seed: int = 0,
    ):
        super().__init__()
        self.prepared_dir = Path(prepared_dir)
        self.loader_cfg, self.dims, self.paired = loader_cfg, dims, paired
        self.min_spine_pixels, self.seed = min_spine_pixels, seed
        self.manifest = load_manifest(self.prepared_dir)
        if self.manifest["dims"] != dims:
            raise ValueError(f"{self.prepared_dir} holds {self.manifest['dims']}D data, the data module was asked for {dims}D")
        self.train_set: TrainSet | None = None
        self.val_set: ValSet | None = None
        self._sampler: SeededSampler | None = None

    @property
    def train_files(self) -> list[Path]:
        """The prepared training files (every elastic copy of every training subject)."""
        return [self.prepared_dir / relative for relative in self.manifest["files"]["train"]]

    def _records(self, split: str, keys: dict[str, str]) -> list[dict[str, np.ndarray]]:
        """Load a split's files once, keeping ``keys`` (stored name -> name used here)."""
        records = []
        for relative in self.manifest["files"][split]:
            with np.load(self.prepared_dir / relative) as stored:
                records.append({name: stored[key] for key, name in keys.items()})
        return records

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            volumes = self._records("train", {"mr": "mr", "ct": "ct", "seg": "seg"})
            subjects = training_subjects(self.manifest)
            if self.paired:
                self.train_set = TrainSet(volumes, subjects, self.dims, self.loader_cfg, self.min_spine_pixels)
                self._sampler = SeededSampler(len(self.train_set), self.seed)
            else:
                self.train_set = UnpairedTrainSet(volumes, subjects, self.dims, self.loader_cfg, self.min_spine_pixels)
                self._sampler = UnpairedSampler(self.train_set.sample_subjects, self.seed)
        if self.val_set is None and stage in (None, "fit", "validate"):
            # Validation scores the same target as training: the CT registered with the chosen mode.
            volumes = self._records("val", {"mr": "mr", "target_ct": "ct", "target_seg": "seg"})
            self.val_set = ValSet(volumes, self.dims, crop_shape(self.loader_cfg, self.dims), self.min_spine_pixels)

    def _loader(self, dataset: Dataset, sampler: Sampler | None) -> DataLoader:
        workers = self.loader_cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=self.loader_cfg.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    @property
    def train_sampler(self) -> SeededSampler | None:
        """The training order (after ``setup('fit')``), for a run that resumes mid-epoch."""
        return self._sampler

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.train_set, self._sampler)

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, None)

    def test_volumes(self, split: str = "test") -> list[TestVolume]:
        """Whole evaluation volumes with their evaluation reference (independent of the registration mode)."""
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {EVAL_SPLITS}, got {split!r}")
        volumes = []
        for relative in self.manifest["files"][split]:
            with np.load(self.prepared_dir / relative) as stored:
                reference = Reference(*(stored[f"reference_{key}"] for key in ("mr", "ct", "seg", "subreg", "affine")))
                iso = (IsoLabels(*(stored[f"reference_iso_{key}"] for key in ("seg", "subreg", "affine")))
                       if "reference_iso_seg" in stored else None)
                volumes.append(TestVolume(Path(relative).stem, str(stored["contrast"]), stored["mr"], stored["affine"],
                                          reference, str(self.prepared_dir / str(stored["mr_path"])), iso))
        return volumes
