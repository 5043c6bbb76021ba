"""Data-stage benchmark: preparation time of a 12-subject lumbar T1w phantom, and the training
loader's throughput against what a training step consumes, as ratios measured in one run.

    python benchmarks/bench_data.py [--subjects 12] [--cache-dir DIR] [--batches 40] [--steps 20]

The consumer is the default model of ``mr2ct.train`` (composed from mr2ct/conf/, any overrides appended),
trained by Lightning on the same data module for a few batches; its slices/s include the loader, so the
ratio loader / training says how much headroom the loader leaves.

    python benchmarks/bench_data.py -- model=pix2pix     # overrides after "--"
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir

from mr2ct.core.cli import CONF_DIR
from mr2ct.core.config import register_configs
from mr2ct.data.datamodule import SpineDataModule
from mr2ct.data.preprocess import prepare_dataset
from mr2ct.data.sources import subject_root
from mr2ct.methods.registry import method_card
from mr2ct.pipeline.stages import build_method


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


def training_slices_per_second(cfg, module: SpineDataModule, batches: int) -> float:
    """Slices per second the default model's training consumes (Lightning fit, after one warm-up batch)."""
    method = build_method(cfg)

    def fit(limit: int) -> float:
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=1, limit_train_batches=limit, limit_val_batches=0, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )
        start = time.perf_counter()
        trainer.fit(method, datamodule=module)
        return time.perf_counter() - start

    warm = fit(1)
    return (batches - 1) * cfg.loader.batch_size / max(fit(batches) - warm, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="config overrides for the default model, e.g. model=pix2pix")
    args = parser.parse_args()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="mr2ct-bench-"))

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"data.phantom.subjects={args.subjects}", f"paths.output_dir={cache_dir}", *args.overrides])
    data, registration, preprocess, loader_cfg = cfg.data, cfg.registration, cfg.preprocess, cfg.loader
    dims = method_card(cfg.model.name).dims

    start = time.perf_counter()
    subject_root(data, cache_dir, progress=False)
    phantom_s = time.perf_counter() - start
    start = time.perf_counter()
    prepared = prepare_dataset(data, registration, preprocess, dims, cache_dir, progress=False)
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    prepare_dataset(data, registration, preprocess, dims, cache_dir, progress=False)
    cached_s = time.perf_counter() - start

    module = SpineDataModule(prepared, loader_cfg, dims=dims, min_spine_pixels=preprocess.min_spine_pixels)
    start = time.perf_counter()
    module.setup("fit")
    setup_s = time.perf_counter() - start
    loader_rate = loader_slices_per_second(module, args.batches)
    train_rate = training_slices_per_second(cfg, module, args.steps)

    print(f"cache dir: {cache_dir}")
    print(f"phantom generation ({args.subjects} subjects, lumbar T1w): {phantom_s:8.1f} s")
    print(f"preparation (registration two_point, {preprocess.elastic_copies} elastic copies): {prepare_s:8.1f} s"
          f"  ({prepare_s / args.subjects:.2f} s/subject)")
    print(f"second preparation call (cache hit): {cached_s:8.3f} s")
    print(f"data module setup (load {len(module.manifest['files']['train'])} train files, "
          f"{len(module.train_set)} slices): {setup_s:.2f} s")
    print(f"loader throughput (crop {loader_cfg.crop_size}, batch {loader_cfg.batch_size}, "
          f"workers {loader_cfg.num_workers}): {loader_rate:8.0f} slices/s")
    print(f"training of the default model ({cfg.model.name}) consumes: {train_rate:8.1f} slices/s")
    print(f"ratio loader / training consumption: {loader_rate / train_rate:.1f}x "
          f"({'loader is not' if loader_rate > train_rate else 'LOADER IS'} the bottleneck)")


if __name__ == "__main__":
    main()
