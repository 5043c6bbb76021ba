"""Data-stage benchmark (issue 4): preparation time of a 12-subject lumbar T1w phantom, and the training
loader's throughput against what a training step consumes, as ratios measured in one run.

    python benchmarks/bench_data.py [--subjects 12] [--cache-dir DIR] [--batches 40] [--steps 20]

The consumer is a small stand-in conv net (forward + backward + Adam step on (batch, 1, crop, crop));
swap in the real default model to compare against it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from mr2ct.config import DataConfig, LoaderConfig, PhantomConfig, PreprocessConfig, RegistrationConfig
from mr2ct.data.datamodule import SpineDataModule
from mr2ct.data.preprocess import prepare_dataset
from mr2ct.data.sources import subject_root


def stand_in_net() -> nn.Module:
    """Three 3x3 convolutions (16-32 channels): a lower bound on what a real 2D generator costs per slice."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(),
        nn.Conv2d(32, 1, 3, padding=1), nn.Tanh(),
    )


def loader_slices_per_second(module: SpineDataModule, batches: int) -> float:
    """Slices per second the training loader delivers (batches drawn over as many epochs as needed)."""
    loader = module.train_dataloader()
    seen, start = 0, time.perf_counter()
    while True:
        for batch in loader:
            seen += batch["mr"].shape[0]
            batches -= 1
            if batches == 0:
                return seen / (time.perf_counter() - start)


def training_slices_per_second(net: nn.Module, batch_size: int, crop: int, steps: int) -> float:
    """Slices per second one training step of ``net`` consumes (L1 loss, Adam), after one warm-up step."""
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-4)
    mr, ct = torch.rand(batch_size, 1, crop, crop) * 2 - 1, torch.rand(batch_size, 1, crop, crop) * 2 - 1

    def step() -> None:
        optimiser.zero_grad()
        nn.functional.l1_loss(net(mr), ct).backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="mr2ct-bench-"))

    data = OmegaConf.structured(DataConfig(name="phantom_t1w", phantom=PhantomConfig(subjects=args.subjects)))
    registration = OmegaConf.structured(RegistrationConfig())
    preprocess = OmegaConf.structured(PreprocessConfig())
    loader_cfg = LoaderConfig()

    start = time.perf_counter()
    subject_root(data, cache_dir, progress=False)
    phantom_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = prepare_dataset(data, registration, preprocess, cache_dir, progress=False)
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    prepare_dataset(data, registration, preprocess, cache_dir, progress=False)
    cached_s = time.perf_counter() - start

    module = SpineDataModule(prepared, loader_cfg, dims=2, min_spine_pixels=preprocess.min_spine_pixels)
    start = time.perf_counter()
    module.setup("fit")
    setup_s = time.perf_counter() - start
    loader_rate = loader_slices_per_second(module, args.batches)
    train_rate = training_slices_per_second(stand_in_net(), loader_cfg.batch_size, loader_cfg.crop_size, args.steps)

    print(f"cache dir: {cache_dir}")
    print(f"phantom generation ({args.subjects} subjects, lumbar T1w): {phantom_s:8.1f} s")
    print(f"preparation (registration two_point, {preprocess.elastic_copies} elastic copies): {prepare_s:8.1f} s"
          f"  ({prepare_s / args.subjects:.2f} s/subject)")
    print(f"second preparation call (cache hit): {cached_s:8.3f} s")
    print(f"data module setup (load {len(module.manifest['files']['train'])} train files, "
          f"{len(module.train_set)} slices): {setup_s:.2f} s")
    print(f"loader throughput (crop {loader_cfg.crop_size}, batch {loader_cfg.batch_size}, "
          f"workers {loader_cfg.num_workers}): {loader_rate:8.0f} slices/s")
    print(f"stand-in training step consumes:            {train_rate:8.0f} slices/s")
    print(f"ratio loader / training consumption: {loader_rate / train_rate:.1f}x "
          f"({'loader is not' if loader_rate > train_rate else 'LOADER IS'} the bottleneck)")


if __name__ == "__main__":
    main()
